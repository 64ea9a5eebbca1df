"""Pearson correlation between cross-attention and saliency, per token, on valid frames.

For each explained token and each saliency method, three kinds of rows (the comparisons of
Papi et al. 2025): every decoder ``layer`` x ``head``; each layer's attention averaged over
its heads (``head = "mean"``); the attention averaged over all layers and heads
(``layer = "all", head = "all"``). Only the first ``n_frames`` encoder frames (the
utterance's valid frames) enter the correlation; a constant map gives ``NaN``.

The best head and the best layer are chosen among many, so their r measured on the tokens
that chose them is biased upwards (a winner's curse). :func:`summarise` reports them
*cross-fitted*: chosen on one half of the utterances and measured on the other, and the
reverse, the two held-out means averaged (``statistic = best_crossfit``); the in-sample
figure is kept, labelled ``best_in_sample``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from speechlens.tables import TableSpec

TABLE = TableSpec(
    name="cross_attention_saliency",
    columns=("utterance_id", "token_index", "token", "layer", "head", "method", "pearson_r"),
    numeric=("token_index", "pearson_r"),
    text=("utterance_id", "token", "layer", "head", "method"),
    nullable=("pearson_r",),
)
"""The tidy table: one row per (utterance, token, layer, head, method); ``layer`` a decoder
layer from 0 or ``all``, ``head`` an index, ``mean`` (the layer's average over heads) or
``all``; ``pearson_r`` empty for a constant map."""
SUMMARY = TableSpec(
    name="cross_attention_saliency_summary",
    columns=(
        "method",
        "level",
        "statistic",
        "layer",
        "head",
        "mean_r",
        "std_r",
        "n_tokens",
        "n_utterances",
    ),
    numeric=("mean_r", "std_r", "n_tokens", "n_utterances"),
    text=("method", "level", "statistic", "layer", "head"),
    nullable=("mean_r", "std_r"),
)
"""The summary (:func:`summarise`)."""
COLUMNS = list(TABLE.columns)
SUMMARY_COLUMNS = list(SUMMARY.columns)


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


def halves(utterance_ids) -> tuple[list[str], list[str]]:
    """The two halves of the cross-fit: the sorted distinct utterance ids, alternately."""
    ids = sorted(set(map(str, utterance_ids)))
    return ids[0::2], ids[1::2]


def _means(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby(["layer", "head"])["pearson_r"].mean().dropna()


def crossfit_best(rows: pd.DataFrame) -> tuple[float, float, int, list[tuple[str, str]]]:
    """Cross-fitted r of the best (layer, head) among ``rows``' candidates.

    ``rows``: tidy rows (NaN r dropped) of one method and one level. For each half of the
    utterances (:func:`halves`), the candidate with the highest mean r over that half's
    tokens is chosen and its r is taken on the other half's tokens. Returns (mean of the two
    held-out means, sd over the held-out tokens, held-out tokens, the two choices); NaN
    with fewer than two utterances.
    """
    first, second = halves(rows["utterance_id"])
    if not first or not second:
        return np.nan, np.nan, 0, []
    held_means, held_r, chosen = [], [], []
    for train, test in ((first, second), (second, first)):
        fit = _means(rows[rows["utterance_id"].isin(train)])
        if fit.empty:
            return np.nan, np.nan, 0, []
        best = fit.idxmax()
        chosen.append(best)
        test_rows = rows[rows["utterance_id"].isin(test)]
        r = test_rows[(test_rows["layer"] == best[0]) & (test_rows["head"] == best[1])]
        held_means.append(r["pearson_r"].mean())
        held_r.append(r["pearson_r"].to_numpy())
    every = np.concatenate(held_r)
    sd = float(np.std(every, ddof=1)) if len(every) > 1 else np.nan
    return float(np.nanmean(held_means)), sd, len(every), chosen


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Single heads vs layer averages vs the global average, per saliency method.

    Per method: ``level`` ``head`` (each layer x head), ``layer`` (mean over heads) and
    ``all``; ``statistic``:

    - ``best_crossfit``: the best head (layer) chosen on one half of the utterances and
      measured on the other, and the reverse, averaged (:func:`crossfit_best`); ``layer`` and
      ``head`` give the two choices joined by ``|`` (one value when they agree);
    - ``best_in_sample``: the head (layer) with the highest mean r over all tokens, measured
      on those same tokens (optimistic);
    - ``mean``: the mean of the per-head (per-layer) mean r (``layer``, ``head`` empty);
    - ``global``: the average over all layers and heads.

    ``mean_r`` and ``n_tokens`` are over tokens (NaN correlations left out); ``std_r`` is over
    tokens, except for ``mean`` rows, where it is the spread of the per-head (per-layer) means.
    """
    rows = []
    for method, sub in table.groupby("method", sort=False):
        sub = sub.dropna(subset=["pearson_r"])
        n_utt = sub["utterance_id"].nunique()
        is_all = sub["layer"] == "all"
        is_mean = sub["head"] == "mean"
        for level, part in (("head", sub[~is_all & ~is_mean]), ("layer", sub[is_mean])):
            stats = part.groupby(["layer", "head"])["pearson_r"].agg(["mean", "std", "count"])
            if stats.empty:
                continue
            mean_r, std_r, n, chosen = crossfit_best(part)
            layers = list(dict.fromkeys(c[0] for c in chosen))
            heads = list(dict.fromkeys(c[1] for c in chosen))
            rows.append(
                [method, level, "best_crossfit", "|".join(layers), "|".join(heads)]
                + [mean_r, std_r, n, n_utt]
            )
            layer, head = stats["mean"].idxmax()
            best = stats.loc[(layer, head)]
            rows.append(
                [method, level, "best_in_sample", layer, head]
                + [best["mean"], best["std"], best["count"], n_utt]
            )
            rows.append(
                [method, level, "mean", "", ""]
                + [stats["mean"].mean(), stats["mean"].std(), stats["count"].max(), n_utt]
            )
        every = sub[is_all]
        if not every.empty:
            r = every["pearson_r"]
            rows.append(
                [method, "all", "global", "all", "all", r.mean(), r.std(), r.count(), n_utt]
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
