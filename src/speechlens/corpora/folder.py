"""Corpus kind ``folder``: a folder of audio files described by a manifest table.

Spec keys (times in seconds, rates in Hz; relative paths are relative to ``path``):

- ``path``: the corpus folder; every audio file must lie inside it (after resolving
  symlinks and ``..``).
- ``manifest``: TSV (or CSV, by extension ``.csv``) with columns ``utterance_id, audio,
  speaker, language, text`` and optionally ``gender`` (``unknown`` when missing or
  empty); extra columns are kept. Default ``manifest.tsv``.
- ``alignments`` (optional): a folder of Praat TextGrids named ``<utterance_id>.TextGrid``
  or a segments table with columns ``utterance_id, tier, start_s, end_s, label``.
- ``tiers``: TextGrid tier name -> contract tier name; default :data:`DEFAULT_TIERS`.
  A given mapping replaces the default; unmapped and point tiers are ignored (logged).
  In a segments table, tiers named in the mapping are renamed, others kept.
- ``sample_rate``: rate of the written audio, default 16000. Every file is mixed to
  mono, resampled (soxr) and written as 16-bit WAV ``audio/<utterance_id>.wav``.
- ``on_bad_audio``: ``fail`` (default) stops at the first unusable file (in manifest
  order) naming its manifest row, path and the reason; ``skip`` leaves it out, lists it
  with the reason in ``skipped.tsv`` inside the corpus folder and logs the count. Unusable
  = any :class:`~speechlens.audio.AudioError` (unreadable, corrupt, truncated, unsupported,
  empty, silent, NaN/inf samples, implausible rate) or longer than ``max_duration_s``.
- ``max_duration_s`` (optional): audio longer than this (seconds, read from the header)
  is bad audio. Set it to the shortest input limit of the models to extract (Whisper's
  encoder takes at most 30 s) so that ``skip`` drops such files here, at corpus time;
  without it the features stage stops naming the too-long utterances.
- ``fill_silence``: default true; gaps before, between and after the intervals of a tier
  become ``sil`` intervals so that each tier tiles the audio.

Cell values are stripped and runs of whitespace (tabs, newlines) become one space; labels
are also NFC-normalised, empty labels become ``sil``, and labels with control characters
are errors. Times are rounded to the microsecond (the precision of ``segments.tsv``).
Intervals reaching at most :data:`~speechlens.corpora.alignments.END_TOLERANCE_S` (10 ms)
outside the audio are clipped to it; further out is an error (see
:mod:`speechlens.corpora.alignments`). Errors are
:class:`~speechlens.corpora.contract.CorpusError` naming the file, its row (the line
number, header = row 1) or TextGrid tier, and the offending values.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from speechlens import audio, schema
from speechlens.corpora.alignments import (
    Alignments,
    check_alignments,
    read_segment_table,
    read_textgrid,
    segments_frame,
)
from speechlens.corpora.contract import TSV, CorpusError, write_corpus
from speechlens.corpora.tables import clean, read_table, require_columns

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ["utterance_id", "audio", "speaker", "language", "text"]
DEFAULT_TIERS = {"phones": "phone", "words": "word", "phone": "phone", "word": "word"}
_BAD_ID = re.compile(r"[/\\\s\x00-\x1f\x7f]|^\.")
SKIPPED_COLUMNS = ["utterance_id", "audio", "manifest_row", "reason"]


@dataclass(frozen=True)
class Options:
    """The spec, checked, with defaults filled and paths resolved."""

    root: Path
    manifest: Path
    alignments: Path | None
    tiers: dict[str, str]
    sample_rate: int
    skip_bad_audio: bool
    fill_silence: bool
    max_duration_s: float | None = None


@dataclass(frozen=True)
class Row:
    """One manifest row: its line number, cleaned values and resolved audio path."""

    line: int
    values: dict[str, str]
    source: Path

    @property
    def id(self) -> str:
        return self.values["utterance_id"]


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a ``folder`` corpus described by ``spec`` into ``out_dir`` (atomically).

    The manifest and alignments are read and checked before any audio is converted;
    audio is converted with ``threads`` worker threads.
    """
    opts = parse_spec(spec)
    rows = read_manifest(opts.manifest, opts.root)
    alignments = read_alignments(opts, {row.id for row in rows})

    def fill(tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        results = convert_audio(rows, tmp / "audio", opts, threads)
        kept = [
            (row, res)
            for row, res in zip(rows, results, strict=True)
            if isinstance(res, audio.AudioInfo)
        ]
        log_conversions([info for _, info in kept])
        if opts.skip_bad_audio:
            write_skipped(tmp / "skipped.tsv", rows, results)
        if not kept:
            raise CorpusError(f"{opts.manifest}: no usable audio; see skipped.tsv for reasons")
        durations = [(row.id, info.duration_s) for row, info in kept]
        segments = segments_frame(durations, alignments, opts.fill_silence)
        return utterance_table(kept), segments

    write_corpus(out_dir, fill)
    log.info("built folder corpus %s from %s", out_dir, opts.manifest)


def parse_spec(spec: Mapping) -> Options:
    """Check the spec and fill its defaults (the schema's ``$defs.folder``); raises
    :class:`CorpusError`."""
    spec = schema.merge(dict(spec), "$defs.folder")
    if not spec.get("path"):
        raise CorpusError("folder corpus spec: `path` (the corpus folder) is required")
    root = Path(spec["path"]).expanduser().resolve()
    if not root.is_dir():
        raise CorpusError(f"folder corpus spec: `path` {spec['path']} is not a folder")
    if spec["on_bad_audio"] not in ("fail", "skip"):
        raise CorpusError(
            f"folder corpus spec: on_bad_audio {spec['on_bad_audio']!r} not fail/skip"
        )
    rate = spec["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise CorpusError(f"folder corpus spec: sample_rate {rate!r} is not a positive integer")
    tiers = spec.get("tiers") or DEFAULT_TIERS
    if not isinstance(tiers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in tiers.items()
    ):
        raise CorpusError(f"folder corpus spec: tiers {tiers!r} is not a mapping of names")
    max_s = spec.get("max_duration_s")
    if max_s is not None and (
        isinstance(max_s, bool) or not isinstance(max_s, int | float) or not max_s > 0
    ):
        raise CorpusError(f"folder corpus spec: max_duration_s {max_s!r} is not a positive number")
    alignments = spec.get("alignments")
    return Options(
        root=root,
        manifest=_under(root, spec["manifest"]),
        alignments=_under(root, alignments) if alignments else None,
        tiers=dict(tiers),
        sample_rate=rate,
        skip_bad_audio=spec["on_bad_audio"] == "skip",
        fill_silence=bool(spec["fill_silence"]),
        max_duration_s=None if max_s is None else float(max_s),
    )


def _under(root: Path, path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


# --- manifest ------------------------------------------------------------------------------


def read_manifest(path: Path, root: Path) -> list[Row]:
    """Read and check the manifest; audio paths must exist inside ``root``."""
    header, records = read_table(path)
    require_columns(path, header, REQUIRED_COLUMNS)
    if not records:
        raise CorpusError(f"{path}: no utterances")
    seen: dict[str, int] = {}
    rows = []
    for line, record in records:
        values = {key: clean(value) for key, value in record.items()}
        where = f"{path} row {line}"
        check_id(values["utterance_id"], where, seen)
        seen[values["utterance_id"].casefold()] = line
        if not values.get("gender"):
            values["gender"] = "unknown"
        rows.append(Row(line, values, _audio_path(values["audio"], root, where)))
    return rows


def check_id(utt: str, where: str, seen: dict[str, int]) -> None:
    """Ids name the output files: non-empty, file-name safe, unique ignoring case."""
    if not utt:
        raise CorpusError(f"{where}: empty utterance_id")
    if _BAD_ID.search(utt):
        raise CorpusError(
            f"{where}: utterance_id {utt!r} is not usable as a file name "
            "(no slashes, whitespace or control characters, no leading '.')"
        )
    if utt.casefold() in seen:
        raise CorpusError(
            f"{where}: duplicate utterance_id {utt!r} (first on row {seen[utt.casefold()]}; "
            "ids differing only in case would clash on case-insensitive file systems)"
        )


def _audio_path(value: str, root: Path, where: str) -> Path:
    """Resolve a manifest audio path (symlinks, ``..``); it must be a file inside ``root``."""
    if not value:
        raise CorpusError(f"{where}: empty audio path")
    resolved = (root / value).resolve()  # an absolute value replaces root
    if not resolved.is_relative_to(root):
        raise CorpusError(
            f"{where}: audio {value!r} resolves to {resolved}, outside the corpus folder {root}"
        )
    if not resolved.is_file():
        raise CorpusError(f"{where}: audio {value!r} is not an existing file ({resolved})")
    return resolved


# --- alignments ----------------------------------------------------------------------------


def read_alignments(opts: Options, known: set[str]) -> Alignments:
    """Read the alignments (TextGrid folder or segments table) and check their structure.

    Checks labels, ``start < end`` and overlaps within a tier; bounds against the audio
    come later (:func:`~speechlens.corpora.alignments.fit_tier`), once durations are known.
    """
    if opts.alignments is None:
        return {}
    if opts.alignments.is_dir():
        raw = read_textgrids(opts.alignments, known, opts.tiers, opts.manifest)
    elif opts.alignments.is_file():
        raw = read_segment_table(opts.alignments, known, opts.tiers, opts.manifest)
    else:
        raise CorpusError(f"alignments {opts.alignments}: no such file or folder")
    return check_alignments(raw)


def read_textgrids(
    folder: Path, known: set[str], tiers: Mapping[str, str], manifest: Path
) -> Alignments:
    """Read ``<utterance_id>.TextGrid`` files (interval tiers named in ``tiers``)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".textgrid")
    if not paths:
        raise CorpusError(f"alignments {folder}: no .TextGrid files")
    ignored: Counter[str] = Counter()
    out: Alignments = {}
    for path in paths:
        if path.stem not in known:
            raise CorpusError(f"{path}: unknown utterance_id {path.stem!r} (not in {manifest})")
        out[path.stem] = read_textgrid(path, tiers, ignored)
    if not any(out.values()):
        raise CorpusError(
            f"alignments {folder}: no TextGrid has a tier named in `tiers` {sorted(tiers)}; "
            f"ignored: {dict(ignored)}"
        )
    if ignored:
        log.info("%s: ignored TextGrid tiers (tier: files) %s", folder, dict(ignored))
    missing = len(known - set(out))
    if missing:
        log.info("%s: %d utterances have no TextGrid and get no segments", folder, missing)
    return out


# --- audio and output tables ------------------------------------------------------------------


def convert_audio(
    rows: list[Row], audio_dir: Path, opts: Options, threads: int
) -> list[audio.AudioInfo | audio.AudioError]:
    """Convert every row's audio to ``audio_dir/<id>.wav``; one result per row, in order.

    Unless ``opts.skip_bad_audio``, the first bad file (in manifest order) raises
    :class:`CorpusError` naming the manifest row, the audio file and the reason.
    """
    work = partial(
        _convert,
        audio_dir=audio_dir,
        sample_rate=opts.sample_rate,
        max_duration_s=opts.max_duration_s,
    )
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    results = pool.map(work, rows) if pool else map(work, rows)
    out = []
    try:
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, audio.AudioError) and not opts.skip_bad_audio:
                raise CorpusError(
                    f"{opts.manifest} row {row.line}: utterance {row.id!r}: bad audio {result}"
                ) from result
            out.append(result)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def _convert(
    row: Row, *, audio_dir: Path, sample_rate: int, max_duration_s: float | None
) -> audio.AudioInfo | audio.AudioError:
    try:
        samples, rate, info = audio.load_with_info(
            row.source, sample_rate=sample_rate, max_duration_s=max_duration_s
        )
    except audio.AudioError as err:
        return err
    audio.write_wav(audio_dir / f"{row.id}.wav", samples, rate)
    return info


def write_skipped(path: Path, rows: list[Row], results: list) -> None:
    """Write ``skipped.tsv``: one row per skipped utterance with the reason."""
    skipped = [
        (row.id, row.values["audio"], row.line, result.reason)
        for row, result in zip(rows, results, strict=True)
        if isinstance(result, audio.AudioError)
    ]
    for utt, source, line, reason in skipped:
        log.warning("skipped utterance %r (%s, manifest row %d): %s", utt, source, line, reason)
    log.log(
        logging.WARNING if skipped else logging.INFO,
        "on_bad_audio skip: skipped %d of %d utterances (listed with reasons in skipped.tsv)",
        len(skipped),
        len(rows),
    )
    pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).to_csv(path, **TSV)


def log_conversions(infos: list[audio.AudioInfo]) -> None:
    """Log how many files were mixed to mono and resampled (and from which channel counts
    and rates); ``utterances.tsv`` keeps them per file (``source_channels``,
    ``source_sample_rate``)."""
    mixed = Counter(info.channels for info in infos if info.mixed_to_mono)
    resampled = Counter(info.native_rate for info in infos if info.resampled)
    if mixed:
        log.info(
            "mixed %d of %d files to mono (channels: files) %s",
            sum(mixed.values()),
            len(infos),
            dict(sorted(mixed.items())),
        )
    if resampled:
        log.info(
            "resampled %d of %d files with soxr (native Hz: files) %s",
            sum(resampled.values()),
            len(infos),
            dict(sorted(resampled.items())),
        )


def utterance_table(kept: list[tuple[Row, audio.AudioInfo]]) -> pd.DataFrame:
    """The ``utterances.tsv`` table: manifest values plus audio, duration and provenance."""
    records = []
    for row, info in kept:
        records.append(
            {
                **row.values,
                "audio": f"audio/{row.id}.wav",
                "duration_s": info.duration_s,
                "sample_rate": info.sample_rate,
                "source_audio": row.values["audio"],
                "source_channels": info.channels,
                "source_sample_rate": info.native_rate,
            }
        )
    return pd.DataFrame.from_records(records)
