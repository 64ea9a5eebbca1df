"""The corpus contract of DESIGN.md: column sets, validation and the atomic writer.

A corpus folder holds

- ``utterances.tsv``: one row per utterance, columns :data:`UTTERANCE_COLUMNS` first
  (free extra columns after them); ``audio`` is relative to the corpus folder;
- ``segments.tsv``: one row per labelled interval, columns :data:`SEGMENT_COLUMNS`,
  times in seconds from the start of the utterance's audio;
- ``audio/``: the audio files (16-bit PCM WAV for built corpora).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from speechlens.atomic import atomic_path

UTTERANCE_COLUMNS = [
    "utterance_id",
    "audio",
    "speaker",
    "language",
    "gender",
    "text",
    "duration_s",
    "sample_rate",
]
SEGMENT_COLUMNS = ["utterance_id", "tier", "start_s", "end_s", "label"]
SILENCE = "sil"
TSV = {"sep": "\t", "index": False, "lineterminator": "\n", "float_format": "%.6f"}


class CorpusError(ValueError):
    """Bad corpus input; the message names the file, row or key at fault."""


def validate_tables(utterances: pd.DataFrame, segments: pd.DataFrame, where: str) -> None:
    """Check both tables against the contract; raise :class:`CorpusError` naming ``where``.

    Checks: required columns; unique utterance ids; positive durations; segments with
    known utterance ids, ``start_s < end_s``, ``0 <= start_s`` and ``end_s`` within the
    utterance duration (1 ms tolerance); no overlap within one (utterance, tier).
    """
    for name, df, cols in (
        ("utterances.tsv", utterances, UTTERANCE_COLUMNS),
        ("segments.tsv", segments, SEGMENT_COLUMNS),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise CorpusError(f"{where}/{name}: missing columns {missing}")
    dup = utterances["utterance_id"][utterances["utterance_id"].duplicated()]
    if len(dup):
        raise CorpusError(f"{where}/utterances.tsv: duplicate utterance_id {dup.iloc[0]!r}")
    bad = utterances[~(utterances["duration_s"] > 0)]
    if len(bad):
        row = bad.index[0]
        raise CorpusError(
            f"{where}/utterances.tsv row {row + 2}: utterance {bad.iloc[0]['utterance_id']!r} "
            "has no audio (duration_s <= 0)"
        )
    if segments.empty:
        return
    known = set(utterances["utterance_id"])
    unknown = segments[~segments["utterance_id"].isin(known)]
    if len(unknown):
        raise CorpusError(
            f"{where}/segments.tsv row {unknown.index[0] + 2}: unknown utterance_id "
            f"{unknown.iloc[0]['utterance_id']!r}"
        )
    _check_rows(segments, ~(segments["start_s"] < segments["end_s"]), where, "end_s <= start_s")
    _check_rows(segments, segments["start_s"] < 0, where, "start_s < 0")
    duration = segments["utterance_id"].map(utterances.set_index("utterance_id")["duration_s"])
    _check_rows(segments, segments["end_s"] > duration + 1e-3, where, "end_s beyond the audio")
    ordered = segments.sort_values(["utterance_id", "tier", "start_s"], kind="stable")
    prev_end = ordered.groupby(["utterance_id", "tier"], sort=False)["end_s"].shift()
    overlap = ordered[ordered["start_s"] < prev_end - 1e-6]
    if len(overlap):
        _check_rows(
            segments,
            segments.index.isin(overlap.index),
            where,
            "overlaps the previous segment of its tier",
        )


def _check_rows(segments: pd.DataFrame, mask, where: str, what: str) -> None:
    if mask.any():
        row = segments[mask].iloc[0]
        index = segments.index[mask][0]
        raise CorpusError(
            f"{where}/segments.tsv row {index + 2}: {what} (utterance {row['utterance_id']!r}, "
            f"tier {row['tier']!r}, {row['start_s']:.4f}-{row['end_s']:.4f} s)"
        )


def order_columns(utterances: pd.DataFrame) -> pd.DataFrame:
    """Contract columns first, extra columns after them in their given order."""
    extra = [c for c in utterances.columns if c not in UTTERANCE_COLUMNS]
    return utterances[UTTERANCE_COLUMNS + extra]


def write_corpus(
    out_dir: str | Path, fill: Callable[[Path], tuple[pd.DataFrame, pd.DataFrame]]
) -> None:
    """Build a corpus folder atomically.

    ``fill(tmp_dir)`` writes audio under ``tmp_dir / "audio"`` and returns the
    (utterances, segments) tables; they are validated, written as TSV (contract columns
    first, extra columns of either table kept after them), and the whole folder is
    renamed onto ``out_dir`` only when everything succeeded.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "audio").mkdir()
        utterances, segments = fill(tmp)
        utterances = order_columns(utterances.reset_index(drop=True))
        extra = [c for c in segments.columns if c not in SEGMENT_COLUMNS]
        segments = segments[SEGMENT_COLUMNS + extra].reset_index(drop=True)
        validate_tables(utterances, segments, str(out_dir))
        utterances.to_csv(tmp / "utterances.tsv", **TSV)
        segments.to_csv(tmp / "segments.tsv", **TSV)


def read_tables(
    utterances_tsv: str | Path, segments_tsv: str | Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate a corpus' two tables; returns (utterances, segments).

    Ids, speakers and labels are read as strings (a speaker ``007`` stays ``007``); empty
    cells stay empty strings rather than NaN.
    """
    as_str = {"utterance_id": str, "speaker": str, "label": str, "text": str, "tier": str}
    utterances = pd.read_csv(utterances_tsv, sep="\t", dtype=as_str, keep_default_na=False)
    segments = pd.read_csv(segments_tsv, sep="\t", dtype=as_str, keep_default_na=False)
    validate_tables(utterances, segments, str(Path(utterances_tsv).parent))
    return utterances, segments


def read_corpus(corpus_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate a built corpus folder; returns (utterances, segments)."""
    corpus_dir = Path(corpus_dir)
    return read_tables(corpus_dir / "utterances.tsv", corpus_dir / "segments.tsv")
