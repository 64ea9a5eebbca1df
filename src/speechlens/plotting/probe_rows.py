"""Rows of the probe tables that the probe figures draw: per-layer curves, embedding
points, baselines, fits at their iteration limit, the weighted-sum score.

Pure selections of the tidy tables of :mod:`speechlens.probing` (:data:`speechlens.probing.
TABLE`, ``layer`` and ``fold`` read as text): ``layer`` is a layer number, ``all``, or
``embedding:<name>`` (a model's own utterance embedding); ``fold`` an int, ``mean`` or
``std``. A curve's band is ``mean ± std`` (the table's ``std`` rows, ddof 1) or the ``range``
of the per-fold values.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from speechlens.probing.table import EMBEDDING_PREFIX, TABLE
from speechlens.tables import read_table

SPREADS = ("sd", "range")


def read_probe_tables(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate probe tables (``probes/{task}.tsv``, :data:`speechlens.probing.TABLE`);
    ``layer`` and ``fold`` stay strings.

    Raises ``ValueError`` naming the file when a column is missing or a value is not a
    number.
    """
    frames = [read_table(TABLE, path) for path in paths]
    if not frames:
        raise ValueError("no probe tables given")
    return pd.concat(frames, ignore_index=True)


def _is_layer(layer: pd.Series) -> pd.Series:
    """Which ``layer`` values are layer numbers (not ``all``, not ``embedding:<name>``)."""
    return layer.astype(str).str.fullmatch(r"\d+")


def _is_embedding(layer: pd.Series) -> pd.Series:
    return layer.astype(str).str.startswith(EMBEDDING_PREFIX)


def _select(table: pd.DataFrame, model: str, task: str, probe: str, metric: str) -> pd.DataFrame:
    return table[
        (table["model"] == model)
        & (table["task"] == task)
        & (table["probe"] == probe)
        & (table["metric"] == metric)
    ]


def layer_curve(
    table: pd.DataFrame, model: str, task: str, probe: str, metric: str, spread: str = "sd"
) -> pd.DataFrame:
    """One model's per-layer curve: DataFrame indexed by int ``layer`` (sorted) with columns
    ``mean`` (the table's fold mean), ``low`` and ``high`` (the band, see the module doc).
    Empty when the table has no such rows; ``layer = all`` and embedding rows are never
    included (see :func:`embedding_points`)."""
    rows = _select(table, model, task, probe, metric)
    rows = rows[_is_layer(rows["layer"])]
    return _summary(rows.assign(layer=rows["layer"].astype(int)), spread)


def embedding_points(
    table: pd.DataFrame, model: str, task: str, probe: str, metric: str, spread: str = "sd"
) -> pd.DataFrame:
    """One model's embedding scores (rows ``layer = embedding:<name>``): DataFrame indexed
    by the embedding name (str, sorted) with ``mean``, ``low``, ``high`` as
    :func:`layer_curve`; empty for a model without embeddings or a frame-level task."""
    rows = _select(table, model, task, probe, metric)
    rows = rows[_is_embedding(rows["layer"])]
    names = rows["layer"].astype(str).str.removeprefix(EMBEDDING_PREFIX)
    return _summary(rows.assign(layer=names), spread)


def _summary(rows: pd.DataFrame, spread: str) -> pd.DataFrame:
    """``mean``, ``low``, ``high`` per ``layer`` value of one (model, task, probe, metric)."""
    if spread not in SPREADS:
        raise ValueError(f"spread {spread!r}: use one of {SPREADS}")
    if rows.empty:
        return pd.DataFrame(columns=["mean", "low", "high"], index=pd.Index([], name="layer"))
    rows = rows.assign(fold=rows["fold"].astype(str))
    mean = rows[rows["fold"] == "mean"].set_index("layer")["value"].sort_index()
    if spread == "sd":
        std = rows[rows["fold"] == "std"].set_index("layer")["value"].reindex(mean.index)
        low, high = mean - std.fillna(0.0), mean + std.fillna(0.0)
    else:
        folds = rows[~rows["fold"].isin(["mean", "std"])].groupby("layer")["value"]
        low, high = folds.min().reindex(mean.index), folds.max().reindex(mean.index)
    return pd.DataFrame({"mean": mean, "low": low, "high": high})


def baseline(table: pd.DataFrame, task: str, name: str, metric: str) -> float | None:
    """The fold mean of baseline ``name`` (``chance`` or ``majority``) for a task, averaged
    over the models' tables (they differ only where a frame grid cannot sample a unit);
    None when the tables have no such rows."""
    rows = table[
        (table["task"] == task)
        & (table["probe"] == name)
        & (table["metric"] == metric)
        & (table["fold"].astype(str) == "mean")
    ]
    return None if rows.empty else float(rows["value"].mean())


def not_converged(
    table: pd.DataFrame, model: str, task: str, probe: str, embeddings: bool = False
) -> pd.Series:
    """Share of folds whose ``probe`` fit stopped at its iteration limit, per int layer
    (the ``not_converged`` metric's ``mean`` rows), only layers where it is above 0; with
    ``embeddings``, per embedding name instead."""
    rows = _select(table, model, task, probe, "not_converged")
    rows = rows[rows["fold"].astype(str) == "mean"]
    if embeddings:
        rows = rows[_is_embedding(rows["layer"])]
        index = rows["layer"].astype(str).str.removeprefix(EMBEDDING_PREFIX)
    else:
        rows = rows[_is_layer(rows["layer"])]
        index = rows["layer"].astype(int)
    share = rows.set_index(index)["value"].astype(float).sort_index()
    return share[share > 0]


def weighted_sum_score(table: pd.DataFrame, model: str, task: str, metric: str) -> float | None:
    """The weighted-sum probe's fold-mean score (``layer = all``); None when absent."""
    rows = table[
        (table["model"] == model)
        & (table["task"] == task)
        & (table["probe"] == "weighted_sum")
        & (table["layer"].astype(str) == "all")
        & (table["metric"] == metric)
        & (table["fold"].astype(str) == "mean")
    ]["value"]
    return float(rows.iloc[0]) if len(rows) else None
