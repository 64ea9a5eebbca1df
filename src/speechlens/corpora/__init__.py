"""Corpus kinds. Each module exposes ``build(spec, out_dir, *, threads=1)``.

``spec`` is the corpus' config entry (validated, defaults filled); ``build`` writes the
corpus contract (see :mod:`speechlens.corpora.contract`) to ``out_dir`` atomically.
Adding a corpus kind = one module here + one entry in :data:`CORPORA`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from speechlens.corpora import (
    commonvoice,
    folder,
    hf_dataset,
    librispeech,
    synthetic,
    timit,
    voxceleb,
)

CORPORA: dict[str, Callable[..., None]] = {
    "synthetic": synthetic.build,
    "folder": folder.build,
    "librispeech": librispeech.build,
    "timit": timit.build,
    "commonvoice": commonvoice.build,
    "voxceleb": voxceleb.build,
    "hf_dataset": hf_dataset.build,
}


def build_corpus(spec: Mapping, out_dir: str | Path, *, threads: int = 1) -> None:
    """Build the corpus described by ``spec`` (a config entry with a ``kind``) into ``out_dir``."""
    kind = spec.get("kind")
    if kind not in CORPORA:
        raise KeyError(f"corpus kind {kind!r} unknown; known kinds: {sorted(CORPORA)}")
    CORPORA[kind](spec, Path(out_dir), threads=threads)
