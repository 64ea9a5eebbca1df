"""The rows of a Hugging Face dataset's parquet files: contract values, label columns, audio.

:func:`read_rows` reads every column but the audio (so a slice can be drawn before any audio
is read) and checks that each mapped column exists: a missing one is a
:class:`~speechlens.corpora.contract.CorpusError` naming the config key (``columns.<key>``)
and listing the dataset's columns. :func:`audio_cells` then reads the audio column of the
wanted rows only, one parquet row group at a time. Read with pyarrow directly: no
``datasets`` and no torchcodec.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from speechlens.corpora.contract import UTTERANCE_COLUMNS, CorpusError
from speechlens.corpora.folder import check_id
from speechlens.corpora.hf_files import DataFiles
from speechlens.corpora.tables import clean

log = logging.getLogger(__name__)

CONTRACT_KEYS = ("utterance_id", "text", "speaker", "language", "gender")
PROVENANCE_COLUMNS = ["source_file", "source_row", "source_channels", "source_sample_rate"]
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}


@dataclass(frozen=True)
class Row:
    """One dataset row: its place (``file``, ``row`` in it, ``index`` in the split) and its
    cleaned contract and label values."""

    file: str
    row: int
    index: int
    values: dict[str, str]

    @property
    def id(self) -> str:
        return self.values["utterance_id"]

    @property
    def where(self) -> str:
        return f"{self.file} row {self.row}"


@dataclass
class Table:
    """The split's rows (audio aside) and what became of its columns."""

    rows: list[Row] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # dataset column -> output column
    dropped: dict[str, str] = field(default_factory=dict)  # dataset column -> arrow type
    class_labels: dict[str, list[str]] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)


def read_rows(
    files: DataFiles, columns: Mapping[str, str | None], split: str, language: str
) -> Table:
    """Read every column but the audio from each file; check the mapped columns.

    ``columns`` maps ``audio`` and the :data:`CONTRACT_KEYS` to dataset columns (None:
    unmapped); unmapped ids are ``<split>-<index>``, an unmapped language is ``language``.
    """
    table = Table()
    seen: dict[str, int] = {}
    for rel in files.files:
        pf = open_parquet(files.root / rel)
        arrow = pf.schema_arrow
        _check_columns(files.root / rel, arrow, columns)
        names = _class_labels(arrow)
        if not table.file_rows:  # the first file decides the label columns
            _label_columns(arrow, columns, names, table)
        missing = [c for c in table.labels if c not in arrow.names]
        if missing:
            raise CorpusError(f"{files.root / rel}: no column {missing[0]!r} (the first file has)")
        wanted = [c for c in (*columns.values(), *table.labels) if c and c != columns["audio"]]
        data = pf.read(columns=list(dict.fromkeys(wanted))).to_pydict()
        offset = len(table.rows)
        table.file_rows[rel] = pf.metadata.num_rows
        for row in range(pf.metadata.num_rows):
            index = offset + row
            record = {c: _cell(data[c][row], names.get(c), f"{rel} row {row}", c) for c in data}
            values = _contract_values(record, columns, f"{split}-{index:06d}", language)
            values.update({out: record[col] for col, out in table.labels.items()})
            check_id(values["utterance_id"], f"{rel} row {row}", seen)
            seen[values["utterance_id"].casefold()] = index
            table.rows.append(Row(rel, row, index, values))
    if not table.rows:
        raise CorpusError(f"{files.root}: the split has no rows ({list(files.files)})")
    if table.dropped:
        log.info("columns left out (not scalar): %s", table.dropped)
    return table


def open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as err:
        raise CorpusError(f"{path}: not a readable parquet file ({err})") from err


def _check_columns(path: Path, arrow: pa.Schema, columns: Mapping[str, str | None]) -> None:
    for key, column in columns.items():
        if column is not None and column not in arrow.names:
            raise CorpusError(
                f"{path}: config key columns.{key} names column {column!r}, which the dataset "
                f"does not have; its columns: {arrow.names}"
            )
    kind = arrow.field(columns["audio"]).type
    if not (_is_binary(kind) or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0)):
        raise CorpusError(
            f"{path}: config key columns.audio: column {columns['audio']!r} is {kind}, not audio "
            "(a struct with `bytes`, as datasets' Audio writes, or binary)"
        )


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)


def _class_labels(arrow: pa.Schema) -> dict[str, list[str]]:
    """Column -> class names of the ``ClassLabel`` columns in the ``huggingface`` metadata."""
    raw = (arrow.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}
    return {
        name: [str(n) for n in feature["names"]]
        for name, feature in features.items()
        if isinstance(feature, Mapping) and feature.get("_type") == "ClassLabel"
        if isinstance(feature.get("names"), list)
    }


def _label_columns(arrow: pa.Schema, columns: Mapping, class_names: Mapping, table: Table) -> None:
    """Every unmapped scalar column is kept, renamed ``hf_<name>`` if it clashes."""
    mapped = {c for c in columns.values() if c}
    reserved = {*UTTERANCE_COLUMNS, *PROVENANCE_COLUMNS}
    for f in arrow:
        if f.name in mapped:
            continue
        kind = f.type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        scalar = not (_is_binary(kind) or pa.types.is_nested(kind))
        if not scalar:
            table.dropped[f.name] = str(f.type)
            continue
        out = clean(f.name)
        out = f"hf_{out}" if out in reserved else out
        if not out or out in table.labels.values():
            raise CorpusError(f"dataset column {f.name!r} cannot be kept as column {out!r}")
        table.labels[f.name] = out
    table.class_labels = {c: n for c, n in class_names.items() if c in table.labels or c in mapped}


def _cell(value, names: list[str] | None, where: str, column: str) -> str:
    """A cell as cleaned text; a ClassLabel integer as its class name (-1: empty)."""
    if value is None:
        return ""
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return ""
        if not 0 <= value < len(names):
            raise CorpusError(
                f"{where}: column {column!r} holds class {value}, outside its {len(names)} names"
            )
        return names[value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean(str(value))


def _contract_values(
    record: Mapping[str, str], col: Mapping[str, str | None], default_id: str, language: str
) -> dict[str, str]:
    def get(key: str) -> str:
        return record[col[key]] if col.get(key) else ""

    gender = get("gender")
    return {
        "utterance_id": get("utterance_id") if col.get("utterance_id") else default_id,
        "speaker": get("speaker") or "unknown",
        "language": get("language") or language,
        "gender": GENDERS.get(gender.lower(), gender) or "unknown",
        "text": get("text"),
    }


def audio_cells(
    rows: list[Row], files: DataFiles, column: str
) -> Iterator[list[tuple[Row, object]]]:
    """Yield, per parquet row group, the wanted ``rows`` with their audio cell (a
    ``{bytes, path}`` dict or bytes), in file order."""
    wanted: dict[str, dict[int, Row]] = {}
    for row in rows:
        wanted.setdefault(row.file, {})[row.row] = row
    for rel in files.files:
        if rel not in wanted:
            continue
        pf = open_parquet(files.root / rel)
        start = 0
        for group in range(pf.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            picked = [i for i in range(start, start + n) if i in wanted[rel]]
            if picked:
                cells = pf.read_row_group(group, columns=[column]).column(0)
                yield [(wanted[rel][i], cells[i - start].as_py()) for i in picked]
            start += n
