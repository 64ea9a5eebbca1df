"""Time alignments for built corpora: reading, checking and fitting labelled intervals.

Shared by corpus kinds with alignments (Praat TextGrids, segment tables, ...):

1. read intervals as :class:`Segment` lists per tier (:func:`read_textgrid`,
   :func:`read_segment_table`, or :func:`make_segment` for other formats);
2. check each tier's structure (:func:`check_tier`, :func:`check_alignments`);
3. once the audio durations are known, fit each tier to its audio (:func:`fit_tier`) and
   build the ``segments.tsv`` table (:func:`segments_frame`).

Labels are NFC-normalised, runs of whitespace (tabs, newlines) become one space, and
empty labels become ``sil``; any Unicode text (IPA, accents, scripts) is accepted, but a
label with other control characters (NUL, BEL, ESC, ... category ``Cc``) is an error, as
such bytes come from a broken encoding rather than a transcription. Times are rounded to
the microsecond (the precision of ``segments.tsv``). Intervals reaching at most
:data:`END_TOLERANCE_S` (10 ms) outside the audio (before 0 or after its end) are clipped
to it; further out is an error. Errors are
:class:`~speechlens.corpora.contract.CorpusError` naming the file and its row or tier.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pandas as pd
from praatio import textgrid
from praatio.utilities.constants import INTERVAL_TIER

from speechlens.corpora.contract import SEGMENT_COLUMNS, SILENCE, CorpusError
from speechlens.corpora.tables import clean, read_table, require_columns

END_TOLERANCE_S = 0.010
TIME_DECIMALS = 6
_EPS_S = 0.5 * 10**-TIME_DECIMALS


@dataclass(frozen=True)
class Segment:
    """A labelled interval (seconds); ``where`` names its file and row or tier."""

    start: float
    end: float
    label: str
    where: str


# utterance_id -> tier -> segments
Alignments = dict[str, dict[str, list[Segment]]]


# --- reading -------------------------------------------------------------------------------


def normalise_label(label: str) -> str:
    """NFC, whitespace runs (tabs, newlines) to one space, stripped; empty -> ``sil``."""
    return clean(unicodedata.normalize("NFC", label)) or SILENCE


def make_segment(start: float, end: float, label: str, where: str) -> Segment:
    """A segment with times rounded to the microsecond; raises if ``end <= start`` or the
    label holds control characters."""
    label = normalise_label(label)
    control = sorted({f"U+{ord(c):04X}" for c in label if unicodedata.category(c) == "Cc"})
    if control:
        raise CorpusError(f"{where}: label {label!r} has control characters {control}")
    start, end = round(float(start), TIME_DECIMALS), round(float(end), TIME_DECIMALS)
    if not end > start:
        raise CorpusError(f"{where}: end_s {end:.6f} <= start_s {start:.6f} (label {label!r})")
    return Segment(start, end, label, where)


def parse_seconds(value: str, column: str, where: str) -> float:
    """A table cell as finite seconds; raises naming ``where`` and ``column``."""
    try:
        seconds = float(value)
    except ValueError:
        raise CorpusError(f"{where}: {column} {value!r} is not a number") from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise CorpusError(f"{where}: {column} {value!r} is not finite")
    return seconds


def read_textgrid(
    path: Path, tiers: Mapping[str, str], ignored: Counter | None = None
) -> dict[str, list[Segment]]:
    """Segments of one TextGrid's interval tiers named in ``tiers`` (TextGrid -> contract
    tier name), by contract tier; counts unmapped and point tiers in ``ignored``."""
    ignored = Counter() if ignored is None else ignored
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=True, reportingMode="silence")
    except Exception as err:  # praatio raises many types on malformed input
        raise CorpusError(
            f"{path}: cannot read TextGrid ({type(err).__name__}: {clean(str(err))})"
        ) from err
    out: dict[str, list[Segment]] = {}
    sources: dict[str, str] = {}
    for tier in tg.tiers:
        target = tiers.get(tier.name)
        if tier.tierType != INTERVAL_TIER:
            ignored[f"{tier.name} (point tier)"] += 1
        elif target is None:
            ignored[tier.name] += 1
        elif target in out:
            raise CorpusError(
                f"{path}: tiers {sources[target]!r} and {tier.name!r} both map to {target!r}"
            )
        else:
            where = f"{path} tier {tier.name!r}"
            out[target] = [make_segment(e.start, e.end, e.label, where) for e in tier.entries]
            sources[target] = tier.name
    return out


def read_segment_table(
    path: Path, known: set[str], tiers: Mapping[str, str], source: Path | str
) -> Alignments:
    """Read a segments table (``utterance_id, tier, start_s, end_s, label``).

    Utterance ids must be in ``known`` (listed in ``source``, which errors name); tiers
    named in ``tiers`` are renamed, others kept.
    """
    header, records = read_table(path)
    require_columns(path, header, SEGMENT_COLUMNS)
    out: Alignments = {}
    for line, record in records:
        where = f"{path} row {line}"
        utt, tier = clean(record["utterance_id"]), clean(record["tier"])
        if utt not in known:
            raise CorpusError(f"{where}: unknown utterance_id {utt!r} (not in {source})")
        if not tier:
            raise CorpusError(f"{where}: empty tier")
        start, end = (parse_seconds(record[c], c, where) for c in ("start_s", "end_s"))
        segment = make_segment(start, end, record["label"], where)
        out.setdefault(utt, {}).setdefault(tiers.get(tier, tier), []).append(segment)
    return out


# --- checking and fitting ------------------------------------------------------------------


def check_tier(segments: Iterable[Segment]) -> list[Segment]:
    """Sort one tier's segments by start time; raise on the first overlap."""
    ordered = sorted(segments, key=lambda s: (s.start, s.end))
    for prev, seg in pairwise(ordered):
        if seg.start < prev.end - _EPS_S:
            raise CorpusError(
                f"{seg.where}: interval {_show(seg)} overlaps {_show(prev)}"
                + ("" if seg.where == prev.where else f" from {prev.where}")
            )
    return ordered


def check_alignments(alignments: Alignments) -> Alignments:
    """:func:`check_tier` on every tier of every utterance (sorted copies)."""
    return {
        utt: {tier: check_tier(segments) for tier, segments in tiers.items()}
        for utt, tiers in alignments.items()
    }


def _show(seg: Segment) -> str:
    return f"{seg.start:.6f}-{seg.end:.6f} s {seg.label!r}"


def fit_tier(segments: list[Segment], duration_s: float, fill_silence: bool) -> list[Segment]:
    """Fit one sorted, checked tier to audio lasting ``duration_s`` seconds.

    Intervals reaching at most :data:`END_TOLERANCE_S` outside ``[0, duration_s]`` are
    clipped (dropped if nothing is left); further out raises. With ``fill_silence`` the
    gaps become ``sil`` intervals so that the tier tiles ``[0, duration_s]``.
    """
    duration_s = round(duration_s, TIME_DECIMALS)
    fitted = []
    for seg in segments:
        if seg.start < -END_TOLERANCE_S or seg.end > duration_s + END_TOLERANCE_S:
            raise CorpusError(
                f"{seg.where}: interval {_show(seg)} lies outside the audio "
                f"(0-{duration_s:.6f} s, tolerance {END_TOLERANCE_S * 1000:.0f} ms)"
            )
        start, end = max(seg.start, 0.0), min(seg.end, duration_s)
        if end - start > _EPS_S:
            fitted.append(Segment(start, end, seg.label, seg.where))
    return _fill_gaps(fitted, duration_s) if fill_silence else fitted


def _fill_gaps(segments: list[Segment], duration_s: float) -> list[Segment]:
    """Insert ``sil`` into the gaps of sorted, non-overlapping segments over the audio."""
    out, cursor = [], 0.0
    for seg in segments:
        if seg.start - cursor > _EPS_S:
            out.append(Segment(cursor, seg.start, SILENCE, "fill_silence"))
        out.append(seg)
        cursor = seg.end
    if duration_s - cursor > _EPS_S:
        out.append(Segment(cursor, duration_s, SILENCE, "fill_silence"))
    return out


def segments_frame(
    durations: Iterable[tuple[str, float]], alignments: Alignments, fill_silence: bool
) -> pd.DataFrame:
    """The ``segments.tsv`` table for ``(utterance_id, duration_s)`` pairs, in their order.

    Each checked tier of ``alignments`` is fitted to its utterance (:func:`fit_tier`);
    utterances without alignments get no rows.
    """
    records = [
        (utt, tier, seg.start, seg.end, seg.label)
        for utt, duration_s in durations
        for tier, segments in alignments.get(utt, {}).items()
        for seg in fit_tier(segments, duration_s, fill_silence)
    ]
    return pd.DataFrame(records, columns=SEGMENT_COLUMNS)
