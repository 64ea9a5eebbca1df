"""Shared by the public-corpus kinds (librispeech, timit, commonvoice, voxceleb).

A kind lists its utterances as :class:`Source` records (and optionally their alignments),
:func:`sample` picks the slice a study asks for, and :func:`build_folder_corpus` writes
them as a manifest (and a segments table) into a temporary staging folder and builds the
corpus through the ``folder`` kind (:func:`speechlens.corpora.folder.build`): the same
audio conversion (mono, soxr to ``sample_rate``, 16-bit WAV), checks, ``on_bad_audio``
handling and atomic writing as every other corpus.

Sampling keys (all optional, ``null`` = no limit), applied within each language:

- ``max_speakers``: speakers drawn (without replacement) with the seed;
- ``utterances_per_speaker``: utterances drawn per kept speaker;
- ``max_utterances``: utterances drawn from what is left.

Draws come from a NumPy generator seeded by ``(seed, language)`` over records sorted by
utterance id, so a slice does not depend on file-system order or on other languages.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens.corpora import folder
from speechlens.corpora.alignments import Alignments, check_alignments
from speechlens.corpora.contract import SEGMENT_COLUMNS, TSV, CorpusError

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("max_speakers", "utterances_per_speaker", "max_utterances")
FOLDER_KEYS = ("sample_rate", "on_bad_audio", "fill_silence", "max_duration_s")


@dataclass(frozen=True)
class Source:
    """One utterance of a corpus release.

    ``audio`` is the audio file relative to the release folder; ``extra`` holds free
    columns kept in ``utterances.tsv`` (chapter, dialect, split, ...).
    """

    utterance_id: str
    audio: str
    speaker: str
    language: str
    gender: str = "unknown"
    text: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, str]:
        return {
            "utterance_id": self.utterance_id,
            "audio": self.audio,
            "speaker": self.speaker,
            "language": self.language,
            "gender": self.gender or "unknown",
            "text": self.text,
            **self.extra,
        }


def sample(sources: Iterable[Source], spec: Mapping) -> list[Source]:
    """The slice of ``sources`` asked for by ``spec``'s sampling keys, sorted by id."""
    limits = {key: spec.get(key) for key in SAMPLING_KEYS}
    for key, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise CorpusError(f"corpus spec: {key} {value!r} is not a positive integer or null")
        if value is not None and value < 1:
            raise CorpusError(f"corpus spec: {key} {value!r} is not a positive integer or null")
    seed = int(spec.get("seed") or 0)
    by_language: dict[str, list[Source]] = {}
    for source in sources:
        by_language.setdefault(source.language, []).append(source)
    out: list[Source] = []
    for language in sorted(by_language):
        group = sorted(by_language[language], key=lambda s: s.utterance_id)
        rng = np.random.default_rng([seed, zlib.crc32(language.encode())])
        out += _sample_group(group, rng, **limits)
    return sorted(out, key=lambda s: s.utterance_id)


def _sample_group(
    group: list[Source],
    rng: np.random.Generator,
    max_speakers: int | None,
    utterances_per_speaker: int | None,
    max_utterances: int | None,
) -> list[Source]:
    speakers = sorted({s.speaker for s in group})
    if max_speakers is not None and len(speakers) > max_speakers:
        speakers = sorted(_draw(rng, speakers, max_speakers))
    by_speaker = {speaker: [] for speaker in speakers}
    for source in group:
        if source.speaker in by_speaker:
            by_speaker[source.speaker].append(source)
    pool: list[Source] = []
    for speaker in speakers:
        utts = by_speaker[speaker]
        if utterances_per_speaker is not None and len(utts) > utterances_per_speaker:
            utts = _draw(rng, utts, utterances_per_speaker)
        pool += utts
    if max_utterances is not None and len(pool) > max_utterances:
        pool = _draw(rng, pool, max_utterances)
    return pool


def _draw(rng: np.random.Generator, items: list, k: int) -> list:
    """``k`` of ``items`` without replacement, in their given order."""
    keep = np.sort(rng.choice(len(items), size=k, replace=False))
    return [items[i] for i in keep]


def build_folder_corpus(
    sources: list[Source],
    root: Path,
    out_dir: Path,
    spec: Mapping,
    *,
    alignments: Alignments | None = None,
    threads: int = 1,
    what: str = "corpus",
) -> None:
    """Build ``out_dir`` from ``sources`` (audio relative to ``root``) via the folder kind.

    ``alignments`` (utterance id -> contract tier -> segments) are checked for overlaps
    here, so that errors name their source files, then staged as a segments table.
    ``spec``'s :data:`FOLDER_KEYS` (``sample_rate``, ``on_bad_audio``, ...) are passed on.
    """
    if not sources:
        raise CorpusError(f"{what}: no utterances found (or left after sampling)")
    out_dir = Path(out_dir).resolve()  # the staged manifest is named by an absolute path
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-source-", dir=out_dir.parent))
    try:
        manifest = staging / "manifest.tsv"
        pd.DataFrame.from_records([s.row() for s in sources]).to_csv(manifest, **TSV)
        folder_spec = {
            "path": str(root),
            "manifest": str(manifest),
            "tiers": {},
            **{key: spec[key] for key in FOLDER_KEYS if spec.get(key) is not None},
        }
        if alignments:
            kept = {s.utterance_id for s in sources}
            checked = check_alignments({u: t for u, t in alignments.items() if u in kept})
            folder_spec["alignments"] = str(_stage_segments(checked, staging / "segments.tsv"))
        folder.build(folder_spec, out_dir, threads=threads)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built %s (%d utterances listed) into %s", what, len(sources), out_dir)


def _stage_segments(alignments: Alignments, path: Path) -> Path:
    records = [
        (utt, tier, seg.start, seg.end, seg.label)
        for utt, tiers in sorted(alignments.items())
        for tier, segments in tiers.items()
        for seg in segments
    ]
    pd.DataFrame(records, columns=SEGMENT_COLUMNS).to_csv(path, **TSV)
    return path
