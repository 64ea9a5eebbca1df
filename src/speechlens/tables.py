"""Tidy TSV tables: each output table's columns and format, declared once.

A :class:`TableSpec` names a table's columns in order, which of them are numbers, and how
floats are written. Writers call :func:`write_table` and readers (figures, the findings page)
call :func:`read_table` with the same spec, so a column renamed in one place cannot drift
from the other. The specs of the workflow's tables live beside the code that computes them
(e.g. ``speechlens.attention.head_types.TABLE``) and are collected in :data:`TABLES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from speechlens.atomic import atomic_path


@dataclass(frozen=True)
class TableSpec:
    """One table's contract.

    ``columns``: every column, in file order; ``numeric``: those that must parse as numbers
    (empty cells allowed only in ``nullable``); ``text``: columns read as strings even when
    they look like numbers (e.g. ``fold``: ``0``..``4`` or ``mean``); ``float_format``: how
    floats are written.
    """

    name: str
    columns: tuple[str, ...]
    numeric: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    nullable: tuple[str, ...] = field(default=())
    float_format: str = "%.6g"

    def __post_init__(self):
        unknown = set(self.numeric) | set(self.text) | set(self.nullable)
        unknown -= set(self.columns)
        if unknown:
            raise ValueError(f"table {self.name}: {sorted(unknown)} are not columns")

    def frame(self, rows=None) -> pd.DataFrame:
        """A DataFrame of ``rows`` (dicts or tuples) with exactly this table's columns."""
        if rows is None:
            return pd.DataFrame(columns=list(self.columns))
        table = pd.DataFrame(rows)
        if table.empty:
            return pd.DataFrame(columns=list(self.columns))
        return self.check(table, source=f"table {self.name}")

    def check(self, table: pd.DataFrame, source: str) -> pd.DataFrame:
        """``table`` with this spec's columns in order; an error names ``source`` and the
        missing columns."""
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise ValueError(
                f"{source}: {self.name} table lacks columns {missing} (has {list(table.columns)})"
            )
        return table[list(self.columns)]


def write_table(spec: TableSpec, table: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Write ``table`` (its spec's columns, in order) as TSV at ``path`` atomically; return it."""
    table = spec.check(table, source=str(path))
    with atomic_path(path) as tmp:
        table.to_csv(
            tmp, sep="\t", index=False, lineterminator="\n", float_format=spec.float_format
        )
    return table


def read_table(spec: TableSpec, path: str | os.PathLike) -> pd.DataFrame:
    """Read a TSV written by :func:`write_table` and check it against ``spec``: every column
    present, numbers where numbers belong. Errors name the file, line and column."""
    dtype = {c: str for c in spec.text}
    try:
        table = pd.read_csv(path, sep="\t", dtype=dtype, keep_default_na=False)
    except pd.errors.EmptyDataError as e:
        raise ValueError(f"{path}: empty file, expected a {spec.name} table") from e
    table = spec.check(table, source=str(path)).copy()
    for column in spec.numeric:
        raw = table[column].astype(str)
        values = pd.to_numeric(raw.where(raw != "", np.nan), errors="coerce")
        empty = raw.isin(["", "nan", "NaN"])
        bad = values.isna() & ~(empty & (column in spec.nullable))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: line {row + 2}: {column} {raw.iloc[row]!r} is not a number")
        table[column] = values
    return table
