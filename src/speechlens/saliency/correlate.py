"""Pearson correlation between cross-attention and saliency, per token, on valid frames.

For each explained token and each saliency method, three kinds of rows (the comparisons of
Papi et al. 2025): every decoder ``layer`` x ``head``; each layer's attention averaged over
its heads (``head = "mean"``); the attention averaged over all layers and heads
(``layer = "all", head = "all"``). Only the first ``n_frames`` encoder frames (the
utterance's valid frames) enter the correlation; a constant map gives ``NaN``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

COLUMNS = ["utterance_id", "token_index", "token", "layer", "head", "method", "pearson_r"]
SUMMARY_COLUMNS = [
    "method",
    "level",
    "statistic",
    "layer",
    "head",
    "mean_r",
    "std_r",
    "n_tokens",
]


def pearson_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (float64, broadcasting); ``NaN`` where a side is constant."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] < 2 or b.shape[-1] < 2:
        return np.full(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]), np.nan)
    scale_a = np.abs(a).max(-1) ** 2 * a.shape[-1]
    scale_b = np.abs(b).max(-1) ** 2 * b.shape[-1]
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    var_a, var_b = (a * a).sum(-1), (b * b).sum(-1)
    constant = (var_a <= 1e-24 * scale_a) | (var_b <= 1e-24 * scale_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / np.sqrt(var_a * var_b)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def correlation_rows(
    utterance_id: str,
    tokens: Sequence[str],
    cross: np.ndarray,
    saliency: Mapping[str, np.ndarray],
    n_frames: int,
) -> pd.DataFrame:
    """Tidy rows (:data:`COLUMNS`) for one utterance.

    Args:
        tokens: the ``K`` explained tokens' text.
        cross: cross-attention ``(layer, head, token, frame)`` over any number of frames.
        saliency: method -> ``(token, frame)`` maps on the same frame grid.
        n_frames: valid frames; frames past it are ignored.
    """
    cross = np.asarray(cross, dtype=np.float64)[..., :n_frames]
    n_layers, n_heads, k_tokens, _ = cross.shape
    if len(tokens) != k_tokens:
        raise ValueError(f"{utterance_id}: {len(tokens)} tokens but {k_tokens} attention rows")
    layer_mean = cross.mean(1)  # (layer, token, frame)
    global_mean = cross.mean((0, 1))  # (token, frame)
    labels = (
        [(str(i), str(h)) for i in range(n_layers) for h in range(n_heads)]
        + [(str(i), "mean") for i in range(n_layers)]
        + [("all", "all")]
    )
    frames = []
    for method, sal in saliency.items():
        sal = np.asarray(sal, dtype=np.float64)[..., :n_frames]
        if sal.shape[0] != k_tokens:
            raise ValueError(f"{utterance_id}: {method} has {sal.shape[0]} tokens, not {k_tokens}")
        r = np.concatenate(
            [
                pearson_r(cross, sal[None, None]).reshape(-1, k_tokens),
                pearson_r(layer_mean, sal[None]),
                pearson_r(global_mean, sal)[None],
            ]
        )  # (label, token)
        frames.append(
            pd.DataFrame(
                {
                    "utterance_id": utterance_id,
                    "token_index": np.tile(np.arange(k_tokens), len(labels)),
                    "token": np.tile(np.asarray(tokens, dtype=object), len(labels)),
                    "layer": np.repeat([lab[0] for lab in labels], k_tokens),
                    "head": np.repeat([lab[1] for lab in labels], k_tokens),
                    "method": method,
                    "pearson_r": r.reshape(-1),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Single heads vs layer averages vs the global average, per saliency method.

    Per method: ``level`` ``head`` (each layer x head), ``layer`` (mean over heads) and
    ``all``; ``statistic`` ``best`` (the head or layer with the highest mean r over tokens),
    ``mean`` (the mean of the per-head or per-layer mean r; ``layer`` and ``head`` left
    empty) or ``global``. ``mean_r`` and ``n_tokens`` are over tokens (NaN correlations
    left out); ``std_r`` is over tokens, except for ``mean`` rows, where it is the spread
    of the per-head (per-layer) means.
    """
    rows = []
    for method, sub in table.groupby("method", sort=False):
        sub = sub.dropna(subset=["pearson_r"])
        stats = sub.groupby(["layer", "head"])["pearson_r"].agg(["mean", "std", "count"])
        heads = stats[
            (stats.index.get_level_values("head") != "mean")
            & (stats.index.get_level_values("layer") != "all")
        ]
        layers = stats[stats.index.get_level_values("head") == "mean"]
        every = stats[stats.index.get_level_values("layer") == "all"]
        for level, group in (("head", heads), ("layer", layers)):
            if group.empty:
                continue
            layer, head = group["mean"].idxmax()
            best = group.loc[(layer, head)]
            rows.append(
                [method, level, "best", layer, head, best["mean"], best["std"], best["count"]]
            )
            rows.append(
                [
                    method,
                    level,
                    "mean",
                    "",
                    "",
                    group["mean"].mean(),
                    group["mean"].std(),
                    group["count"].max(),
                ]
            )
        if not every.empty:
            g = every.iloc[0]
            rows.append([method, "all", "global", "all", "all", g["mean"], g["std"], g["count"]])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
