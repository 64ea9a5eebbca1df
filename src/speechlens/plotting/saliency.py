"""Decoder cross-attention vs input saliency (Whisper): heatmaps, bars and one example.

Inputs are the outputs of :mod:`speechlens.saliency` (read with the ``read_*`` functions
here, which check them against the writer's :class:`~speechlens.tables.TableSpec` and name
the file of a bad one):

- the tidy table (:data:`speechlens.saliency.correlate.TABLE`);
- the summary (:data:`speechlens.saliency.correlate.SUMMARY`): best head and layer
  cross-fitted over utterances (``best_crossfit``) and in sample (``best_in_sample``);
- the example store: ``mel(mel_bin, mel_frame)``, ``saliency(method, token, frame)``,
  ``cross_attention(layer, head, token, frame)``, coordinates ``token_text``,
  ``frame_time_s`` and ``mel_time_s`` (seconds).

Correlations are drawn on a diverging map (``RdBu_r``) fixed to -1 .. 1, centred at 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from speechlens.plotting.style import (
    BASELINE_COLOUR,
    HEATMAP_CMAP,
    LINE_COLOURS,
    MIN_FONT_PT,
    TEXT_WIDTH,
    layer_ticks,
    styled,
)
from speechlens.saliency.correlate import SUMMARY, TABLE
from speechlens.tables import read_table

#: Diverging map of every correlation panel (colour-blind safe, centred at r = 0).
CORRELATION_CMAP = "RdBu_r"
#: Bars of the summary: (level, statistic) -> label.
BARS = {
    ("head", "best_crossfit"): "single head (best, cross-fitted)",
    ("layer", "best_crossfit"): "layer average (best layer, cross-fitted)",
    ("all", "global"): "global average",
}
METHOD_LABELS = {
    "gradient_x_input": "gradient × input",
    "spes": "SPES",
    "rise_grid": "RISE-style grid occlusion",
    "encoder_output": "encoder output",
}
SHORT_LABELS = {
    "gradient_x_input": "gradient\n× input",
    "spes": "SPES",
    "rise_grid": "RISE\ngrid",
    "encoder_output": "encoder\noutput",
}
#: Token axes with more tokens than this label every k-th token only.
MAX_TOKEN_LABELS = 40


def correlation_norm() -> Normalize:
    """The colour scale of every correlation panel: Pearson r from -1 to 1."""
    return Normalize(vmin=-1.0, vmax=1.0)


def read_saliency_table(path: str | Path) -> pd.DataFrame:
    """The tidy table (``cross_attention_saliency.tsv``); ``layer`` and ``head`` stay strings,
    ``pearson_r`` a float (NaN for a constant map). Errors name the file and line."""
    return read_table(TABLE, path)


def read_saliency_summary(path: str | Path) -> pd.DataFrame:
    """The summary (``cross_attention_saliency_summary.tsv``), checked like the table."""
    return read_table(SUMMARY, path)


def read_saliency_example(path: str | Path) -> xr.Dataset:
    """The example utterance's store, loaded; raises ``ValueError`` naming the path when an
    array the figure needs is missing."""
    from speechlens.store import open_zarr

    ds = open_zarr(path)
    missing = [v for v in ("mel", "saliency", "cross_attention") if v not in ds]
    if missing:
        raise ValueError(f"{path}: example store lacks {missing}")
    return ds.load()


def head_means(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Mean Pearson r over tokens (NaN left out) of each single head: DataFrame indexed by
    decoder layer (rows, ascending) with one column per head (ascending), for ``method``."""
    rows = table[
        (table["method"] == method) & (table["layer"] != "all") & (table["head"] != "mean")
    ]
    rows = rows.assign(layer=rows["layer"].astype(int), head=rows["head"].astype(int))
    return rows.groupby(["layer", "head"])["pearson_r"].mean().unstack("head").sort_index()


def row_normalised(values) -> np.ndarray:
    """Each row (token) divided by its largest absolute value (all-zero rows stay 0)."""
    values = np.asarray(values, dtype=float)
    scale = np.nanmax(np.abs(values), axis=-1, keepdims=True)
    return np.divide(values, scale, out=np.zeros_like(values), where=scale > 0)


def _methods(table: pd.DataFrame) -> list[str]:
    found = list(dict.fromkeys(table["method"]))
    return [m for m in METHOD_LABELS if m in found] + [m for m in found if m not in METHOD_LABELS]


def _heatmap(ax, means: pd.DataFrame, summary: pd.DataFrame, method: str) -> None:
    ax.imshow(
        means.to_numpy(float),
        origin="lower",
        cmap=plt.get_cmap(CORRELATION_CMAP).with_extremes(bad="#BDBDBD"),
        norm=correlation_norm(),
        interpolation="nearest",
        aspect="auto",
    )
    for setter, values in ((ax.set_yticks, means.index), (ax.set_xticks, means.columns)):
        ticks = layer_ticks(len(values))
        setter(ticks, [str(values[i]) for i in ticks])
    ax.tick_params(length=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    best = summary[
        (summary["method"] == method)
        & (summary["level"] == "head")
        & (summary["statistic"] == "best_in_sample")
    ]
    if len(best):
        i = list(means.index).index(int(best["layer"].iloc[0]))
        j = list(means.columns).index(int(best["head"].iloc[0]))
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2)
        )
    ax.set_title(METHOD_LABELS.get(method, method))
    ax.set_xlabel("head")


def _bars(ax, summary: pd.DataFrame, methods: list[str]) -> None:
    width = 0.8 / len(BARS)
    for k, ((level, statistic), label) in enumerate(BARS.items()):
        heights, errors = [], []
        for method in methods:
            row = summary[
                (summary["method"] == method)
                & (summary["level"] == level)
                & (summary["statistic"] == statistic)
            ]
            heights.append(float(row["mean_r"].iloc[0]) if len(row) else np.nan)
            errors.append(float(row["std_r"].iloc[0]) if len(row) else np.nan)
        x = np.arange(len(methods)) + (k - (len(BARS) - 1) / 2) * width
        ax.bar(
            x,
            heights,
            width=width,
            yerr=np.nan_to_num(errors),
            capsize=1.5,
            color=LINE_COLOURS[k],
            error_kw={"elinewidth": 0.7},
            label=label,
        )
    ax.axhline(0.0, color=BASELINE_COLOUR, linewidth=0.6)
    ax.set_xticks(
        range(len(methods)),
        [SHORT_LABELS.get(m, m) for m in methods],
        fontsize=MIN_FONT_PT,
    )
    low = float(np.nanmin([p.get_height() for p in ax.patches] + [0.0]))
    bottom = max(-1.05, min(-0.1, low - 0.1))
    ax.set_ylim(bottom, 1.45)  # room for the legend above r = 1
    ax.set_yticks([t for t in (-1.0, -0.5, 0.0, 0.5, 1.0) if t >= bottom])
    ax.set_ylabel("Pearson r (mean ± sd over tokens)")
    ax.set_title("Head vs layer vs global")
    ax.legend(loc="upper left", frameon=False, fontsize=MIN_FONT_PT)


def _extent(times: np.ndarray, n_rows: int) -> tuple[float, float, float, float]:
    """Image extent with column ``i`` centred on ``t_i`` (covering ``t_i -+ dt / 2`` seconds:
    frame times are frame centres), rows 0..n-1 top down."""
    times = np.asarray(times, dtype=float)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.02
    return (float(times[0]) - dt / 2, float(times[-1]) + dt / 2, n_rows - 0.5, -0.5)


def _token_axis(ax, tokens: list[str]) -> None:
    step = max(1, -(-len(tokens) // MAX_TOKEN_LABELS))
    ticks = list(range(0, len(tokens), step))
    ax.set_yticks(ticks, [tokens[i].strip() or repr(tokens[i]) for i in ticks])
    ax.tick_params(axis="y", labelsize=MIN_FONT_PT, length=2)


def _example(subfig, example: xr.Dataset, method: str) -> list:
    tokens = [str(t) for t in example["token_text"].values]
    token_rows = max(1.0, 0.11 * len(tokens))
    ax_mel, ax_sal, ax_att = subfig.subplots(
        3, 1, sharex=True, height_ratios=[1.0, token_rows, token_rows]
    )
    mel = np.asarray(example["mel"].values, dtype=float)
    mel_t = np.asarray(example["mel_time_s"].values, dtype=float)
    dt = float(np.median(np.diff(mel_t))) if len(mel_t) > 1 else 0.01
    image = ax_mel.imshow(
        mel,
        origin="lower",
        aspect="auto",
        cmap=HEATMAP_CMAP,
        interpolation="nearest",
        extent=(float(mel_t[0]) - dt / 2, float(mel_t[-1]) + dt / 2, -0.5, mel.shape[0] - 0.5),
    )
    subfig.colorbar(image, ax=ax_mel, label="log-mel", pad=0.01)
    ax_mel.set_ylabel("mel bin")
    note = " (padding trim: an approximation)" if example.attrs.get("approximation") else ""
    ax_mel.set_title(
        f"Example {example.attrs.get('utterance_id', '')}: “{example.attrs.get('text', '')}”" + note
    )
    frame_t = np.asarray(example["frame_time_s"].values, dtype=float)
    methods = [str(v) for v in example["method"].values]  # StringDType: select by position
    saliency = row_normalised(example["saliency"].values[methods.index(method)])
    signed = bool((saliency < 0).any())
    sal_image = ax_sal.imshow(
        saliency,
        aspect="auto",
        cmap=CORRELATION_CMAP if signed else HEATMAP_CMAP,
        vmin=-1.0 if signed else 0.0,
        vmax=1.0,
        interpolation="nearest",
        extent=_extent(frame_t, len(tokens)),
    )
    subfig.colorbar(sal_image, ax=ax_sal, label="saliency / row max", pad=0.01)
    ax_sal.set_ylabel(f"token\n({METHOD_LABELS.get(method, method)})")
    cross = row_normalised(np.asarray(example["cross_attention"].values, float).mean(axis=(0, 1)))
    att_image = ax_att.imshow(
        cross,
        aspect="auto",
        cmap=HEATMAP_CMAP,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        extent=_extent(frame_t, len(tokens)),
    )
    subfig.colorbar(att_image, ax=ax_att, label="attention / row max", pad=0.01)
    ax_att.set_ylabel("token\n(cross-attention,\nall layers & heads)")
    ax_att.set_xlabel("time (s)")
    for ax in (ax_sal, ax_att):
        _token_axis(ax, tokens)
    for ax in (ax_mel, ax_sal, ax_att):
        for spine in ax.spines.values():
            spine.set_visible(False)
    return [ax_mel, ax_sal, ax_att]


@styled
def plot_cross_attention_saliency(
    table: pd.DataFrame,
    summary: pd.DataFrame,
    example: xr.Dataset | None = None,
    *,
    method: str | None = None,
    model: str | None = None,
) -> Figure:
    """How well decoder cross-attention matches input saliency (Papi et al. 2025).

    Top: one panel per saliency method, decoder layer (y) x head (x) heatmap of the mean
    Pearson r over tokens (:func:`head_means`) on :func:`correlation_norm` (``RdBu_r``,
    -1 .. 1) with one colourbar; the best head *in sample* (chosen and measured on the same
    tokens) is outlined. Right: per method, bars of the cross-fitted best single head and
    best layer average (chosen on one half of the utterances, measured on the other) and
    the global average (mean r ± sd over tokens). Bottom (when ``example`` is given): the
    example utterance's log-mel spectrogram, the saliency of ``method`` (default: the first
    of the example's methods) and the cross-attention averaged over all layers and heads,
    each token a row scaled by its own maximum (:func:`row_normalised`), on one time axis
    in seconds (columns centred on frame times) with the tokens labelled. Raises
    ``ValueError`` when the table has no single-head rows.
    """
    methods = _methods(table)
    means = {m: head_means(table, m) for m in methods}
    means = {m: v for m, v in means.items() if v.size}
    if not means:
        raise ValueError("cross-attention saliency table has no single-head rows: nothing to draw")
    methods = list(means)
    n_tokens = len(example["token_text"]) if example is not None else 0
    bottom_h = 1.0 + 2 * max(1.0, 0.11 * n_tokens) + 0.6 if example is not None else 0.0
    fig = plt.figure(figsize=(TEXT_WIDTH, 2.6 + bottom_h), layout="constrained")
    if example is not None:
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.6, bottom_h])
    else:
        top, bottom = fig, None
    axes = top.subplots(1, len(methods) + 1, width_ratios=[1.0] * len(methods) + [1.5])
    for ax, m in zip(axes, methods, strict=False):
        _heatmap(ax, means[m], summary, m)
    axes[0].set_ylabel("decoder layer")
    top.colorbar(
        ScalarMappable(norm=correlation_norm(), cmap=CORRELATION_CMAP),
        ax=list(axes[:-1]),
        label="mean Pearson r",
        location="left",
        pad=0.02,
        shrink=0.9,
    )
    _bars(axes[-1], summary, methods)
    approximate = example is not None and bool(example.attrs.get("approximation"))
    if model:
        note = " (padding trim: an approximation of the model's input)" if approximate else ""
        fig.suptitle(f"{model}: cross-attention vs saliency{note}")
    if example is not None:
        available = [str(v) for v in example["method"].values]
        chosen = method or available[0]
        if chosen not in available:
            raise ValueError(f"saliency method {chosen!r} not in the example ({available})")
        _example(bottom, example, chosen)
    return fig
