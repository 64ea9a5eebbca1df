"""Corpus kind ``hf_dataset``: one config and split of a Hugging Face dataset (its parquet).

Spec keys (defaults in the schema's ``$defs.hf_dataset``):

- ``repo`` (``owner/name``) with a pinned ``revision`` (a commit hash), downloaded through
  huggingface_hub's cache (``cache_dir``; ``HF_HUB_OFFLINE=1`` reads the cache only); or
  ``path``, a local folder of parquet files. ``config``, ``split`` and ``data_files`` pick
  the split's files (see :mod:`speechlens.corpora.hf_files`).
- ``columns``: the dataset column of each contract column: ``audio`` (default ``audio``: the
  ``datasets`` Audio struct ``{bytes, path}``, or a binary column of encoded audio),
  ``utterance_id`` (null: ``<split>-<row in the split>``, zero-padded to 6 digits),
  ``text`` (null: empty), ``speaker`` (null: ``unknown``), ``language`` (null: the
  ``language`` key, default ``unknown``) and ``gender`` (null: ``unknown``; ``m``/``f``/
  ``male``/``female`` in any case become ``male``/``female``). A mapped column the files
  lack is an error naming the config key and listing the dataset's columns.
- Every other column with scalar values (strings, numbers, booleans) is kept in
  ``utterances.tsv`` as a label column for utterance-level tasks (``level: utterance,
  source: label``); integer ``ClassLabel`` columns (named in the parquet's ``huggingface``
  schema metadata) are written as their class names, ``-1`` (no label) as an empty cell.
  A kept column whose name is a contract or provenance column gets the prefix ``hf_``.
  Columns of lists, structs or bytes are left out (logged).
- The slice keys of the other kinds (``max_speakers``, ``utterances_per_speaker``,
  ``max_utterances``, ``seed``; :func:`speechlens.corpora.sources.sample`).
- ``sample_rate``, ``on_bad_audio``, ``max_duration_s``: as for kind ``folder``. A row's
  audio bytes go to a temporary file that :func:`speechlens.audio.load_with_info`, the
  folder kind's loader, decodes (soundfile), checks and resamples (soxr); the result is
  written as 16-bit WAV ``audio/<utterance_id>.wav``. ``fail`` stops at the first bad row
  naming its parquet file and row (0-based, as ``datasets`` counts); ``skip`` lists the bad
  rows with the reason in ``skipped.tsv``.

``utterances.tsv`` also holds ``source_file`` and ``source_row`` (where each utterance came
from), ``source_channels`` and ``source_sample_rate``. ``hf_dataset.json`` beside it records
the repository, requested revision and snapshot commit (or the local path), config, split,
the patterns that chose the files, and every file's size, row count and sha256.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from speechlens import audio, schema
from speechlens.corpora import hf_files
from speechlens.corpora.contract import SEGMENT_COLUMNS, TSV, CorpusError, write_corpus
from speechlens.corpora.download import sha256sum
from speechlens.corpora.folder import log_conversions
from speechlens.corpora.hf_table import CONTRACT_KEYS, Row, Table, audio_cells, read_rows
from speechlens.corpora.sources import Source, sample

log = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["utterance_id", "source_file", "source_row", "reason"]
PROVENANCE_FILE = "hf_dataset.json"
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class Options:
    """The spec, checked, with the schema's defaults filled."""

    spec: dict
    repo: str | None
    revision: str | None
    path: Path | None
    columns: dict[str, str | None]
    skip_bad_audio: bool


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build an ``hf_dataset`` corpus described by ``spec`` into ``out_dir`` (atomically).

    The rows' labels are read and checked, and the slice drawn, before any audio is decoded;
    audio is decoded with ``threads`` worker threads, one parquet row group at a time.
    """
    opts = parse_spec(spec)
    files = locate(opts)
    table = read_rows(files, opts.columns, opts.spec["split"], opts.spec["language"])
    rows = select(table.rows, opts.spec)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    def fill(tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        with tempfile.TemporaryDirectory(
            prefix=f".tmp-{out_dir.name}-bytes-", dir=out_dir.parent
        ) as staging:
            results = convert(rows, files, tmp / "audio", Path(staging), opts, threads)
        kept = [
            (r, i) for r, i in zip(rows, results, strict=True) if isinstance(i, audio.AudioInfo)
        ]
        log_conversions([info for _, info in kept])
        if opts.skip_bad_audio:
            write_skipped(tmp / "skipped.tsv", rows, results)
        if not kept:
            raise CorpusError(f"{files.root}: no usable audio; see skipped.tsv for reasons")
        record = provenance(opts, files, table, len(kept), len(rows) - len(kept))
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return utterance_table(kept), pd.DataFrame(columns=SEGMENT_COLUMNS)

    write_corpus(out_dir, fill)
    log.info("built hf_dataset corpus %s from %s", out_dir, opts.repo or opts.path)


def parse_spec(spec: Mapping) -> Options:
    """Check the spec and fill its defaults; raises :class:`CorpusError` naming the key."""
    spec = schema.merge(dict(spec), "$defs.hf_dataset")
    if bool(spec["repo"]) == bool(spec["path"]):
        raise CorpusError(
            "hf_dataset corpus spec: give exactly one of `repo` (a hub dataset, with "
            "`revision`) and `path` (a local folder of parquet files)"
        )
    if spec["repo"] and not spec["revision"]:
        raise CorpusError(
            f"hf_dataset corpus spec: `revision` is required with repo {spec['repo']!r}: "
            "the commit hash to pin (40 hex digits)"
        )
    path = None
    if spec["path"]:
        path = Path(spec["path"]).expanduser().resolve()
        if not path.is_dir():
            raise CorpusError(f"hf_dataset corpus spec: `path` {spec['path']} is not a folder")
    if spec["on_bad_audio"] not in ("fail", "skip"):
        raise CorpusError(f"hf_dataset corpus spec: on_bad_audio {spec['on_bad_audio']!r}")
    columns = dict(spec["columns"])
    unknown = sorted(set(columns) - {"audio", *CONTRACT_KEYS})
    if unknown:
        raise CorpusError(f"hf_dataset corpus spec: columns.{unknown[0]} is not a contract column")
    for key, value in columns.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise CorpusError(f"hf_dataset corpus spec: columns.{key} {value!r} is not a name")
    if not columns.get("audio"):
        raise CorpusError("hf_dataset corpus spec: columns.audio (the audio column) is required")
    return Options(
        spec=spec,
        repo=spec["repo"],
        revision=spec["revision"],
        path=path,
        columns=columns,
        skip_bad_audio=spec["on_bad_audio"] == "skip",
    )


def locate(opts: Options) -> hf_files.DataFiles:
    """The split's parquet files: from the hub (through its cache) or below ``path``."""
    s = opts.spec
    if opts.repo:
        return hf_files.hub_snapshot(
            opts.repo, opts.revision, s["config"], s["split"], s["data_files"], s["cache_dir"]
        )
    return hf_files.choose(opts.path, s["config"], s["split"], s["data_files"], str(opts.path))


def select(rows: list[Row], spec: Mapping) -> list[Row]:
    """The slice asked for by the sampling keys (:func:`sources.sample`), sorted by id."""
    by_id = {row.id: row for row in rows}
    sources = [
        Source(
            row.id,
            row.where,
            row.values["speaker"],
            row.values["language"],
            row.values["gender"],
            row.values["text"],
        )
        for row in rows
    ]
    return [by_id[s.utterance_id] for s in sample(sources, spec)]


# --- audio -----------------------------------------------------------------------------------


def convert(
    rows: list[Row],
    files: hf_files.DataFiles,
    audio_dir: Path,
    staging: Path,
    opts: Options,
    threads: int,
) -> list[audio.AudioInfo | audio.AudioError]:
    """Decode every row's audio into ``audio_dir/<id>.wav``; one result per row, in order.

    Unless ``skip``, the first bad row (in file order) raises :class:`CorpusError` naming its
    parquet file, row, utterance and the reason.
    """
    work = partial(
        _convert,
        audio_dir=audio_dir,
        staging=staging,
        sample_rate=opts.spec["sample_rate"],
        max_duration_s=opts.spec["max_duration_s"],
    )
    results: dict[int, audio.AudioInfo | audio.AudioError] = {}
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        for batch in audio_cells(rows, files, opts.columns["audio"]):
            outs = pool.map(work, batch) if pool else map(work, batch)
            for (row, _), out in zip(batch, outs, strict=True):
                if isinstance(out, audio.AudioError) and not opts.skip_bad_audio:
                    raise CorpusError(
                        f"{files.root / row.file} row {row.row}: utterance {row.id!r}: "
                        f"bad audio bytes ({out.reason})"
                    ) from out
                results[row.index] = out
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return [results[row.index] for row in rows]


def _convert(
    item: tuple[Row, object],
    *,
    audio_dir: Path,
    staging: Path,
    sample_rate: int,
    max_duration_s: float | None,
) -> audio.AudioInfo | audio.AudioError:
    row, cell = item
    data, name = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
    if not data:
        hint = f"; only a path {name!r}: the audio is not embedded in the parquet" if name else ""
        return audio.AudioError(row.where, f"no audio bytes{hint}")
    suffix = Path(name).suffix.lower() if name else ""
    staged = staging / f"{row.id}{suffix if _SUFFIX.match(suffix) else ''}"
    staged.write_bytes(data)
    try:
        samples, rate, info = audio.load_with_info(
            staged, sample_rate=sample_rate, max_duration_s=max_duration_s
        )
    except audio.AudioError as err:
        return audio.AudioError(row.where, err.reason)
    finally:
        staged.unlink(missing_ok=True)
    audio.write_wav(audio_dir / f"{row.id}.wav", samples, rate)
    return info


# --- outputs ---------------------------------------------------------------------------------


def utterance_table(kept: list[tuple[Row, audio.AudioInfo]]) -> pd.DataFrame:
    """``utterances.tsv``: contract and label values, audio, duration and provenance."""
    records = [
        {
            **row.values,
            "audio": f"audio/{row.id}.wav",
            "duration_s": info.duration_s,
            "sample_rate": info.sample_rate,
            "source_file": row.file,
            "source_row": row.row,
            "source_channels": info.channels,
            "source_sample_rate": info.native_rate,
        }
        for row, info in kept
    ]
    return pd.DataFrame.from_records(records)


def write_skipped(path: Path, rows: list[Row], results: list) -> None:
    """``skipped.tsv``: one row per skipped utterance with its parquet file, row and reason."""
    skipped = [
        (row.id, row.file, row.row, result.reason)
        for row, result in zip(rows, results, strict=True)
        if isinstance(result, audio.AudioError)
    ]
    for utt, rel, row, reason in skipped:
        log.warning("skipped utterance %r (%s row %d): %s", utt, rel, row, reason)
    log.log(
        logging.WARNING if skipped else logging.INFO,
        "on_bad_audio skip: skipped %d of %d utterances (listed with reasons in skipped.tsv)",
        len(skipped),
        len(rows),
    )
    pd.DataFrame(skipped, columns=SKIPPED_COLUMNS).to_csv(path, **TSV)


def provenance(
    opts: Options, files: hf_files.DataFiles, table: Table, kept: int, skipped: int
) -> dict:
    """The record written to ``hf_dataset.json``: source, revision, files with sha256."""
    s = opts.spec
    return {
        "repo": opts.repo,
        "revision": opts.revision,
        "commit": files.commit,
        "path": str(opts.path) if opts.path else None,
        "config": s["config"],
        "split": s["split"],
        "patterns": list(files.patterns),
        "chosen_by": files.chosen_by,
        "files": [
            {
                "path": rel,
                "bytes": (files.root / rel).stat().st_size,
                "rows": table.file_rows[rel],
                "sha256": sha256sum(files.root / rel),
            }
            for rel in files.files
        ],
        "columns": opts.columns,
        "label_columns": table.labels,
        "left_out_columns": table.dropped,
        "class_labels": table.class_labels,
        "rows": len(table.rows),
        "utterances": kept,
        "skipped": skipped,
        "versions": {p: _version(p) for p in ("huggingface_hub", "pyarrow", "soundfile", "soxr")},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
