"""Statistics behind the findings' verdicts: pure functions on numbers.

Layer curves come from the probe tables (``layer, probe, fold, metric, value``): per fold,
a score per layer. Claims about *where* information peaks compare per-fold peak depths;
their uncertainty is an exact one-sided rank test (Mann-Whitney U, all permutations), so no
large-sample approximation is used on 5 folds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

SUMMARY_FOLDS = ("mean", "std")
"""Fold labels of summary rows (not folds)."""


def fold_curves(table: pd.DataFrame, probe: str, metric: str) -> pd.DataFrame:
    """Per-fold layer curves of one probe and metric: a ``fold x layer`` frame of scores,
    layers as integers in increasing order. Summary rows (fold ``mean``/``std``) and
    non-layer rows (``layer`` ``all``, the weighted-sum probe) are left out."""
    rows = table[
        (table["probe"] == probe)
        & (table["metric"] == metric)
        & ~table["fold"].astype(str).isin(SUMMARY_FOLDS)
        & table["layer"].astype(str).str.fullmatch(r"\d+")
    ]
    if rows.empty:
        return pd.DataFrame()
    curves = rows.assign(layer=rows["layer"].astype(int), fold=rows["fold"].astype(str))
    return curves.pivot_table(index="fold", columns="layer", values="value").sort_index(axis=1)


def relative_depth(layers: np.ndarray, num_layers: int) -> np.ndarray:
    """Layer index ``l`` of ``num_layers`` store layers (0 = input) as depth ``l / (L - 1)``
    in [0, 1], so models of different depths compare."""
    if num_layers < 2:
        raise ValueError("relative depth needs at least two layers")
    return np.asarray(layers, dtype=float) / (num_layers - 1)


def peak_depths(curves: pd.DataFrame) -> np.ndarray:
    """Relative depth of each fold's best layer (first one on ties), shape ``(folds,)``."""
    if curves.empty:
        return np.array([])
    layers = np.asarray(curves.columns, dtype=int)
    best = layers[np.nanargmax(curves.to_numpy(dtype=float), axis=1)]
    return relative_depth(best, int(layers.max()) + 1)


def rank_test_less(a: np.ndarray, b: np.ndarray) -> float:
    """Exact one-sided p-value that values ``a`` tend to be smaller than ``b``
    (Mann-Whitney U, exact permutation distribution; ties get midranks)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    if np.all(np.concatenate([a, b]) == a[0]):
        return 1.0
    result = stats.mannwhitneyu(a, b, alternative="less", method="exact")
    if np.isnan(result.pvalue):  # scipy refuses exact with ties: permute by hand
        return _permutation_less(a, b)
    return float(result.pvalue)


def _permutation_less(a: np.ndarray, b: np.ndarray) -> float:
    from itertools import combinations

    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    n = len(a)
    count = total = 0
    for idx in combinations(range(len(pooled)), n):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        total += 1
        count += pooled[mask].mean() - pooled[~mask].mean() <= observed + 1e-12
    return count / total


def curvature(curves: pd.DataFrame) -> np.ndarray:
    """Per fold, the quadratic coefficient of score vs relative depth (least squares fit
    ``a d^2 + b d + c``): > 0 convex, < 0 concave. Shape ``(folds,)``."""
    if curves.empty or curves.shape[1] < 3:
        return np.array([])
    layers = np.asarray(curves.columns, dtype=int)
    depth = relative_depth(layers, int(layers.max()) + 1)
    return np.array([np.polyfit(depth, row, 2)[0] for row in curves.to_numpy(dtype=float)])


def sign_test(values: np.ndarray) -> tuple[float, float]:
    """Exact one-sided sign-test p-values ``(p_positive, p_negative)`` over non-zero values."""
    values = np.asarray(values, float)
    values = values[values != 0]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    k = int((values > 0).sum())
    return (
        float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue),
        float(stats.binomtest(k, n, 0.5, alternative="less").pvalue),
    )


def empirical_rank_p(typed: float, controls: np.ndarray) -> tuple[int, float]:
    """Rank of ``typed`` among random controls (1 = the largest drop, i.e. most negative
    delta) and the one-sided empirical p-value ``(1 + #controls <= typed) / (1 + n)``."""
    controls = np.asarray(controls, float)
    at_most = int((controls <= typed).sum())
    return 1 + at_most, (1 + at_most) / (1 + len(controls))
