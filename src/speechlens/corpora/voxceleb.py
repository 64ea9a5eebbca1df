"""Corpus kind ``voxceleb``: VoxCeleb-style speaker folders, for speaker identification.

VoxCeleb is obtained by each user from its site (after a request form), so this kind reads
a local copy. Spec keys (besides the sampling keys of :mod:`speechlens.corpora.sources`,
``seed``, ``sample_rate``, ``on_bad_audio``, ``max_duration_s`` and ``fill_silence``
as for ``folder``):

- ``path``: the folder of speaker folders, ``<speaker>/<video>/<clip>.wav`` (VoxCeleb1's
  ``wav/id10001/1zcIwhmdeo4/00001.wav``);
- ``meta`` (optional): the speaker table, e.g. VoxCeleb1's ``vox1_meta.csv`` (tab
  separated despite its name) or VoxCeleb2's ``vox2_meta.csv`` (comma separated): the
  first column is the speaker id; a ``Gender`` column (``m``/``f``) gives the gender and a
  ``Nationality`` column, when present, is kept as ``nationality``. Relative to ``path``.
- ``language``: the ``language`` column, default ``unknown`` (VoxCeleb is multilingual
  and unlabelled for language).

Audio is read by soundfile (WAV, FLAC, ...). VoxCeleb2 ships AAC in ``.m4a``, which
libsndfile cannot read: convert it to WAV or FLAC beforehand (e.g. ``ffmpeg -i x.m4a
x.wav``). Utterance ids are ``<speaker>-<video>-<clip>``; ``video`` is an extra column.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path

from speechlens import schema
from speechlens.corpora.contract import CorpusError
from speechlens.corpora.sources import Source, build_folder_corpus, sample
from speechlens.corpora.tables import clean

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a VoxCeleb-style corpus described by ``spec`` into ``out_dir`` (atomically)."""
    spec = schema.merge(dict(spec), "$defs.voxceleb")
    if not spec.get("path"):
        raise CorpusError("voxceleb corpus spec: `path` (a folder of speaker folders) is required")
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise CorpusError(f"voxceleb corpus spec: `path` {root} is not a folder")
    meta = read_meta(root / spec["meta"]) if spec.get("meta") else {}
    sources = list_clips(root, spec["language"], meta)
    build_folder_corpus(
        sample(sources, spec), root, out_dir, spec, threads=threads, what=f"voxceleb {root}"
    )


def list_clips(root: Path, language: str, meta: Mapping[str, Mapping[str, str]]) -> list[Source]:
    """Every ``<speaker>/<video>/<clip>`` audio file below ``root``."""
    sources = []
    m4a = 0
    for path in sorted(root.glob("*/*/*")):
        suffix = path.suffix.lower()
        if suffix == ".m4a":
            m4a += 1
        if suffix not in AUDIO_SUFFIXES or not path.is_file():
            continue
        clip, video, speaker = path.stem, path.parent.name, path.parent.parent.name
        info = meta.get(speaker, {})
        if meta and not info:
            log.warning("%s: speaker %r not in the meta table", path, speaker)
        extra = {"video": video}
        if "nationality" in info:
            extra["nationality"] = info["nationality"]
        sources.append(
            Source(
                utterance_id=f"{speaker}-{video}-{clip}",
                audio=str(path.relative_to(root)),
                speaker=speaker,
                language=language,
                gender=info.get("gender", "unknown"),
                extra=extra,
            )
        )
    if not sources:
        hint = f" ({m4a} .m4a files: convert them to WAV first)" if m4a else ""
        raise CorpusError(f"{root}: no <speaker>/<video>/<clip>.wav|flac|ogg files{hint}")
    if m4a:
        log.warning("%s: %d .m4a files ignored (convert them to WAV to use them)", root, m4a)
    return sources


def read_meta(path: Path) -> dict[str, dict[str, str]]:
    """Speaker id -> {gender, nationality} from a VoxCeleb meta table (tab or comma)."""
    if not path.is_file():
        raise CorpusError(f"voxceleb meta {path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if "\t" in first else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows:
        raise CorpusError(f"voxceleb meta {path}: empty file")
    header = [clean(cell).lower() for cell in rows[0]]
    if "gender" not in header:
        raise CorpusError(f"voxceleb meta {path}: no Gender column (found {rows[0]})")
    g, n = header.index("gender"), header.index("nationality") if "nationality" in header else None
    out = {}
    for line_no, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CorpusError(
                f"voxceleb meta {path} row {line_no}: {len(row)} fields, "
                f"the header has {len(header)}"
            )
        gender = clean(row[g]).lower()
        if gender not in GENDERS:
            raise CorpusError(f"voxceleb meta {path} row {line_no}: gender {row[g]!r} not m/f")
        out[clean(row[0])] = {"gender": GENDERS[gender]}
        if n is not None:
            out[clean(row[0])]["nationality"] = clean(row[n])
    return out
