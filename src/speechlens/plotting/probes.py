"""Probing figures: score vs layer per task, and the weighted-sum probe's layer weights.

Both take the tidy probe tables of :mod:`speechlens.probing` (concatenated over models and
tasks, see :func:`read_probe_tables`; columns :data:`speechlens.probing.TABLE`) with
``layer`` an int (the model's layer number: a store that keeps a subset of layers has
points only at those numbers), ``all`` or ``embedding:<name>`` (a speaker encoder's own
utterance embedding, utterance-level tasks) and ``fold`` an int, ``mean`` or ``std``. Curves
plot the table's ``mean`` rows; the band is ``mean ± std`` (the table's ``std`` rows, ddof 1)
or the ``range`` of the per-fold values. Layers where a fold's fit stopped at its iteration
limit (metric ``not_converged``) are ringed. Embeddings are not layers: they are never on a
curve but drawn as stars (with the same spread as error bar) in a slot per embedding name
right of the deepest layer of the panel, past a dotted separator, the x tick naming it
(:func:`embedding_points`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from speechlens.plotting.probe_rows import (  # noqa: F401  (read_probe_tables: re-exported)
    SPREADS,
    baseline,
    embedding_points,
    layer_curve,
    not_converged,
    read_probe_tables,
    weighted_sum_score,
)
from speechlens.plotting.style import (
    BASELINE_COLOUR,
    COLUMN_WIDTH,
    TEXT_WIDTH,
    grid,
    model_styles,
    styled,
)

#: Colour of the rings marking layers whose fits hit their iteration limit.
NOT_CONVERGED_COLOUR = "#d62728"
#: Axis labels of the table's metrics (all unitless scores).
METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "nmi": "NMI",
    "ami": "AMI",
    "layer_weight": "layer weight",
}
#: Metrics bounded by [0, 1] where the axis is fixed to that range (comparable panels).
BOUNDED = ("accuracy", "macro_f1")
SPREAD_LABELS = {"sd": "±1 sd over folds", "range": "min–max over folds"}
#: Marker of a model embedding's score (task), and of its control task's score.
EMBEDDING_MARKER, EMBEDDING_CONTROL_MARKER = "*", "x"
#: Horizontal spread (in layers) of the stars of models sharing an embedding slot.
EMBEDDING_DODGE = 0.15


def _ring(ax, curve: pd.DataFrame, layers: pd.Index, label: str) -> bool:
    """Ring the points of ``curve`` at ``layers`` (fits that hit their iteration limit)."""
    layers = [layer for layer in layers if layer in curve.index]
    if not layers:
        return False
    _ring_at(ax, layers, curve.loc[layers, "mean"].to_numpy(float), label)
    return True


def _ring_at(ax, x, y, label: str) -> None:
    ax.plot(
        x,
        y,
        linestyle="none",
        marker="o",
        markersize=6,
        markerfacecolor="none",
        markeredgecolor=NOT_CONVERGED_COLOUR,
        markeredgewidth=0.9,
        label=label,
    )


def _order(values: Sequence[str] | None, found: Iterable[str]) -> list[str]:
    found = list(dict.fromkeys(found))
    return list(values) if values is not None else sorted(found)


def _panels(nrows_cols: tuple[int, int], n: int, width: float, row_height: float):
    rows, cols = nrows_cols
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width, row_height * rows + 0.5),
        layout="constrained",
        squeeze=False,
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)  # no empty panels
    return fig, flat[:n]


def _draw_curve(ax, curve: pd.DataFrame, style: dict, label: str, band: bool = True) -> None:
    """A model's curve on ``ax`` at its layer numbers (``curve.index``): line + band, or
    for a one-layer model (spectral baselines, a one-layer subset) a point with its spread
    as error bar and a thin horizontal line across."""
    layers = curve.index.to_numpy()
    mean = curve["mean"].to_numpy(float)
    if len(curve) == 1:
        ax.axhline(mean[0], color=style["color"], linewidth=0.7, alpha=0.6, label=label)
        err = np.abs(
            np.array([[mean[0] - curve["low"].iloc[0]], [curve["high"].iloc[0] - mean[0]]])
        )
        ax.errorbar(
            layers,
            mean,
            yerr=err if band else None,
            fmt="o",
            color=style["color"],
            label=label,
            capsize=2,
        )
        return
    ax.plot(layers, mean, marker="o", markersize=2.5, label=label, **style)
    if band:
        ax.fill_between(
            layers,
            curve["low"].to_numpy(float),
            curve["high"].to_numpy(float),
            color=style["color"],
            alpha=0.2,
            linewidth=0,
            label=f"{label} band",
        )


def _draw_embeddings(ax, table, models, styles, task, probe, kind, metric, spread) -> tuple:
    """The models' embedding scores on ``ax`` (see the module doc): one slot per embedding
    name (sorted) at x = deepest layer of the panel's curves + 1, + 2, ...; in each slot a
    star per model with that embedding (dodged by :data:`EMBEDDING_DODGE`), error bar = the
    spread; on a ``score`` panel also the control task's score (``x``) and rings where a
    fold's fit hit its iteration limit. A dotted line separates the slots from the layers;
    the x ticks are the layer numbers, then the embedding names.

    Returns (models drawn, whether a control was drawn, whether a ring was drawn)."""
    name = probe if kind == "score" else f"{probe}_selectivity"
    points = {m: embedding_points(table, m, task, name, metric, spread) for m in models}
    points = {m: p for m, p in points.items() if not p.empty}
    if not points:
        return set(), False, False
    slots = sorted(set().union(*(p.index for p in points.values())))
    layers = [layer_curve(table, m, task, name, metric).index for m in models]
    layers = [int(v) for index in layers for v in index]
    first, last = (min(layers), max(layers)) if layers else (0, -1)
    controls = rings = False
    for j, emb in enumerate(slots):
        owners = [m for m in points if emb in points[m].index]
        for k, model in enumerate(owners):
            x = last + 1 + j + (k - (len(owners) - 1) / 2) * EMBEDDING_DODGE
            point, colour = points[model].loc[emb], styles[model]["color"]
            err = [[point["mean"] - point["low"]], [point["high"] - point["mean"]]]
            ax.errorbar(
                [x],
                [point["mean"]],
                yerr=np.abs(np.asarray(err, float)),
                fmt=EMBEDDING_MARKER,
                markersize=7,
                color=colour,
                capsize=2,
                label=f"{model} {emb}",
            )
            if kind != "score":
                continue
            if emb in not_converged(table, model, task, probe, embeddings=True).index:
                rings = True
                _ring_at(ax, [x], [point["mean"]], f"{model} {emb} not converged")
            control = embedding_points(table, model, task, f"{probe}_control", metric, spread)
            if emb in control.index:
                controls = True
                y = control.loc[emb, "mean"]
                ax.plot(
                    [x],
                    [y],
                    linestyle="none",
                    marker=EMBEDDING_CONTROL_MARKER,
                    color=colour,
                    label=f"{model} control {emb}",
                )
                capped = not_converged(table, model, task, f"{probe}_control", embeddings=True)
                if emb in capped.index:
                    rings = True
                    _ring_at(ax, [x], [y], f"{model} control {emb} not converged")
    ax.axvline(last + 0.5, color=BASELINE_COLOUR, linestyle=":", linewidth=0.6, label="embeddings")
    ticks = MaxNLocator(integer=True).tick_values(first, max(first, last))
    ticks = [int(t) for t in ticks if first <= t <= last]
    ax.set_xticks(
        [*ticks, *(last + 1 + j for j in range(len(slots)))],
        labels=[*map(str, ticks), *slots],
    )
    if len(slots) > 1:
        for label in ax.get_xticklabels()[len(ticks) :]:
            label.set(rotation=30, horizontalalignment="right")
    return set(points), controls, rings


def _model_handle(model: str, style: dict, single_layer: bool) -> Line2D:
    """Legend entry of a model; one-layer models show their point marker."""
    return Line2D([], [], label=model, marker="o" if single_layer else None, **style)


def _legend_cols(fig: Figure, handles: list) -> int:
    """Columns of a figure legend: 4 across a page-wide figure, 2 across a column."""
    return min(len(handles), 4 if fig.get_figwidth() > COLUMN_WIDTH else 2)


def _finish_axis(ax, metric: str, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.04)


@styled
def plot_probe_curves(
    table: pd.DataFrame,
    probe: str = "linear",
    metric: str = "macro_f1",
    *,
    spread: str = "sd",
    models: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    max_cols: int = 3,
) -> Figure:
    """Score vs layer of one probe: one panel per task, one line per model.

    Each line is the fold mean of ``metric`` at each layer, with a band for the fold spread
    (``spread``: ``sd`` = ±1 sd, ``range`` = min–max over folds); the task's control task
    (probe ``{probe}_control``) is a dashed line in the model's colour; ``chance`` and
    ``majority`` baselines are grey horizontal lines. A task with ``{probe}_selectivity``
    rows gets a second panel right after it: selectivity (task − control, same metric) vs
    layer. One-layer models (spectral baselines) are a point at layer 0 with a dotted
    horizontal marker across the panel. Points of layers where a fold's fit (real or
    control) stopped at its iteration limit (:func:`not_converged`) are ringed in red.
    A model's own utterance embeddings (rows ``layer = embedding:<name>``) are stars right
    of the layers, their control task an ``x`` (:func:`_draw_embeddings`).

    ``models`` fixes the order and colours (pass every model of the experiment so colours
    match across figures); ``tasks`` the panel order (default: sorted). Models or tasks
    without rows are left out; raises ``ValueError`` when nothing is left to draw.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread {spread!r}: use one of {SPREADS}")
    models = _order(models, table["model"])
    styles = model_styles(models)
    tasks = _order(tasks, table["task"])
    panels = []
    for task in tasks:
        for kind, name in (("score", probe), ("selectivity", f"{probe}_selectivity")):
            if any(
                not layer_curve(table, m, task, name, metric).empty
                or not embedding_points(table, m, task, name, metric).empty
                for m in models
            ):
                panels.append((kind, task))
    if not panels:
        raise ValueError(f"no per-layer {probe!r} rows with metric {metric!r} in the probe tables")
    shape = grid(len(panels), max_cols)
    width = COLUMN_WIDTH if shape[1] == 1 else TEXT_WIDTH
    fig, axes = _panels(shape, len(panels), width, 1.9)
    label = METRIC_LABELS.get(metric, metric)
    drawn, single, controls, baselines, rings = [], set(), False, set(), False
    embedded = False
    for ax, (kind, task) in zip(axes, panels, strict=True):
        name = probe if kind == "score" else f"{probe}_selectivity"
        for model in models:
            curve = layer_curve(table, model, task, name, metric, spread)
            if curve.empty:
                continue
            _draw_curve(ax, curve, styles[model], model)
            drawn.append(model)
            if len(curve) == 1:
                single.add(model)
            if kind == "score":
                capped = not_converged(table, model, task, probe).index
                rings |= _ring(ax, curve, capped, f"{model} not converged")
            control = layer_curve(table, model, task, f"{probe}_control", metric, spread)
            if kind == "score" and not control.empty:
                controls = True
                ax.plot(
                    control.index.to_numpy(),
                    control["mean"].to_numpy(float),
                    color=styles[model]["color"],
                    linestyle="--",
                    linewidth=0.9,
                    marker="x" if len(control) == 1 else None,
                    label=f"{model} control",
                )
                capped = not_converged(table, model, task, f"{probe}_control").index
                rings |= _ring(ax, control, capped, f"{model} control not converged")
        if kind == "score":
            for base, ls in (("chance", ":"), ("majority", "-.")):
                value = baseline(table, task, base, metric)
                if value is not None:
                    baselines.add(base)
                    ax.axhline(
                        value, color=BASELINE_COLOUR, linestyle=ls, linewidth=1.0, label=base
                    )
            if metric in BOUNDED:
                ax.set_ylim(-0.02, 1.02)  # markers at 0 or 1 stay whole
            _finish_axis(ax, metric, task, label)
        else:
            ax.axhline(0.0, color=BASELINE_COLOUR, linewidth=0.6, label="zero")
            _finish_axis(ax, metric, f"{task}: selectivity", f"Δ {label} (task − control)")
        found = _draw_embeddings(ax, table, models, styles, task, probe, kind, metric, spread)
        drawn += sorted(found[0])
        embedded |= bool(found[0])
        controls |= found[1]
        rings |= found[2]
    handles = [_model_handle(m, styles[m], m in single) for m in models if m in set(drawn)]
    handles.append(Patch(color="0.5", alpha=0.3, label=SPREAD_LABELS[spread]))
    if controls:
        handles.append(
            Line2D([], [], color="0.3", linestyle="--", linewidth=0.9, label="control task")
        )
    for base, ls in (("chance", ":"), ("majority", "-.")):
        if base in baselines:
            handles.append(Line2D([], [], color=BASELINE_COLOUR, linestyle=ls, label=base))
    if embedded:
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                linestyle="none",
                marker=EMBEDDING_MARKER,
                markersize=7,
                label="model's utterance embedding",
            )
        )
    if rings:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markerfacecolor="none",
                markeredgecolor=NOT_CONVERGED_COLOUR,
                label="fit hit its iteration limit",
            )
        )
    fig.legend(
        handles=handles, loc="outside upper center", ncols=_legend_cols(fig, handles), frameon=False
    )
    return fig


@styled
def plot_layer_weights(
    table: pd.DataFrame,
    *,
    metric: str = "macro_f1",
    models: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    max_cols: int = 3,
) -> Figure:
    """Softmax layer weights of the weighted-sum probe: one panel per task, one line per
    model (fold mean, band ±1 sd over folds), a dotted line at the model's uniform weight
    1 / layers. Each panel's legend gives the weighted-sum probe's score (fold mean of
    ``metric``) in the model's colour.

    Models with one layer (weight 1 by construction) are left out; raises ``ValueError``
    when no task has weights of a model with more than one layer.
    """
    models = _order(models, table["model"])
    styles = model_styles(models)
    tasks = _order(tasks, table["task"])
    curves = {}
    for task in tasks:
        for model in models:
            curve = layer_curve(table, model, task, "weighted_sum", "layer_weight")
            if len(curve) > 1:
                curves[task, model] = curve
    panels = [t for t in tasks if any((t, m) in curves for m in models)]
    if not panels:
        raise ValueError("no weighted_sum layer weights of a model with more than one layer")
    shape = grid(len(panels), max_cols)
    width = COLUMN_WIDTH if shape[1] == 1 else TEXT_WIDTH
    fig, axes = _panels(shape, len(panels), width, 1.9)
    name = METRIC_LABELS.get(metric, metric)
    for ax, task in zip(axes, panels, strict=True):
        scores = []
        for model in models:
            if (task, model) not in curves:
                continue
            curve = curves[task, model]
            _draw_curve(ax, curve, styles[model], model)
            ax.axhline(
                1.0 / len(curve),
                color=styles[model]["color"],
                linestyle=":",
                linewidth=0.8,
                label=f"{model} uniform",
            )
            score = weighted_sum_score(table, model, task, metric)
            if score is not None:
                scores.append(Line2D([], [], label=f"{score:.2f}", **styles[model]))
        ax.set_ylim(bottom=0.0)
        if scores:
            ax.legend(handles=scores, title=name, loc="best", frameon=False, handlelength=1.2)
        _finish_axis(ax, "layer_weight", task, "layer weight (softmax)")
    handles = [Line2D([], [], label=m, **styles[m]) for m in models if m in {k[1] for k in curves}]
    handles += [
        Patch(color="0.5", alpha=0.3, label=SPREAD_LABELS["sd"]),
        Line2D([], [], color="0.3", linestyle=":", label="uniform weight (1 / layers)"),
    ]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=_legend_cols(fig, handles), frameon=False
    )
    return fig
