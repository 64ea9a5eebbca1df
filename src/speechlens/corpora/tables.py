"""Reading the input tables of built corpora (manifests, segment tables).

TSV, or CSV by extension ``.csv``; UTF-8 with optional BOM. Rows keep their line number
(header = line 1) so that errors can name them. Errors are
:class:`~speechlens.corpora.contract.CorpusError` naming the file and row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from speechlens.corpora.contract import CorpusError


def clean(value: str) -> str:
    """Strip a cell and turn each run of whitespace (tabs, newlines) into one space."""
    return " ".join(value.split())


def read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a TSV, or a CSV when the name ends in ``.csv``; UTF-8, optional BOM.

    Returns the header and the data rows as ``(line, {column: raw value})``, ``line``
    being the row's first line in the file (header = line 1); blank lines are skipped.
    """
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    header: list[str] | None = None
    rows = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=sep)
            for line, record in _numbered(reader):
                if not any(cell.strip() for cell in record):
                    continue
                if header is None:
                    header = [cell.strip() for cell in record]
                    _check_header(path, header)
                elif len(record) != len(header):
                    raise CorpusError(
                        f"{path} row {line}: {len(record)} fields, the header has {len(header)}"
                    )
                else:
                    rows.append((line, dict(zip(header, record, strict=True))))
    except (UnicodeDecodeError, csv.Error) as err:
        raise CorpusError(f"{path}: cannot parse ({err})") from err
    if header is None:
        raise CorpusError(f"{path}: empty file (no header)")
    return header, rows


def require_columns(path: Path, header: list[str], required: list[str]) -> None:
    """Raise unless ``header`` has every column in ``required``."""
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(f"{path}: missing columns {missing} (found {header})")


def _numbered(reader) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, record)`` from a csv reader."""
    start = 1
    for record in reader:
        yield start, record
        start = reader.line_num + 1


def _check_header(path: Path, header: list[str]) -> None:
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise CorpusError(f"{path}: repeated column names {repeated}")
