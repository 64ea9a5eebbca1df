"""Self-attention figures: head types (grid, scatter, example maps) and head ablation.

Inputs are the tables of :mod:`speechlens.attention`, read with :func:`read_head_types`
and :func:`read_ablation` against the specs their writers use
(:data:`speechlens.attention.head_types.TABLE`, :data:`speechlens.attention.ablation.TABLE`),
which name the file of a bad one:

- head types: ``layer`` (block, 1-based), ``head``, ``type`` (``diagonal``, ``vertical``,
  ``global``), ``classification``, ``diagonality`` and ``verticality`` (unitless, 0 to 1);
- ablation: ``group, kind, type, n_heads, layer, fold, metric, value, baseline, delta``
  (``fold`` an int, ``mean`` or ``std``; ``delta`` = ablated - un-ablated score), summarised
  by :func:`speechlens.attention.summary.summarise`;
- example maps: :func:`speechlens.attention.head_types.load_examples`, ``attention(example,
  layer, head, query, key)`` with a ``frame_count`` coordinate and ``frame_rate_hz``.

Types keep one Okabe-Ito colour each in every figure (:data:`TYPE_COLOURS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from speechlens.attention import ablation as ablation_tables
from speechlens.attention import head_types as head_tables
from speechlens.attention.stats import TYPES
from speechlens.attention.summary import summarise
from speechlens.plotting.probes import METRIC_LABELS
from speechlens.plotting.style import (
    BASELINE_COLOUR,
    COLUMN_WIDTH,
    HEATMAP_CMAP,
    MIN_FONT_PT,
    TEXT_WIDTH,
    grid,
    layer_ticks,
    styled,
)
from speechlens.tables import read_table

#: Categorical, colour-blind-safe colours of the head types (Okabe-Ito blue, orange, green).
TYPE_COLOURS = {"diagonal": "#0072B2", "vertical": "#E69F00", "global": "#009E73"}
#: Colour of the random control groups in the ablation figure.
CONTROL_COLOUR = "#9A9A9A"
#: Grids with at most this many heads per layer and layers get the values in their cells.
LABEL_MAX_HEADS = 8
LABEL_MAX_LAYERS = 12


def read_head_types(path: str | Path) -> pd.DataFrame:
    """A head-type table (``head_types.tsv``), checked: its spec's columns, numbers where
    numbers belong, known types, each (layer, head) once. Errors name the file."""
    table = read_table(head_tables.TABLE, path)
    bad = sorted(set(table["type"]) - set(TYPES))
    if bad:
        raise ValueError(f"{path}: unknown head types {bad}; expected {list(TYPES)}")
    if table.duplicated(["layer", "head"]).any():
        raise ValueError(f"{path}: a (layer, head) appears twice")
    if table.empty:
        raise ValueError(f"{path}: no heads")
    return table.astype({"layer": int, "head": int})


def read_ablation(path: str | Path) -> pd.DataFrame:
    """A head-ablation table (``ablation.tsv``), checked like :func:`read_head_types`."""
    table = read_table(ablation_tables.TABLE, path)
    if table.empty:
        raise ValueError(f"{path}: no rows")
    return table.astype({"n_heads": int, "layer": int})


def type_grid(table: pd.DataFrame) -> np.ndarray:
    """``(layer, head)`` int codes of the types (index into :data:`TYPES`; -1 = missing),
    rows in ascending layer order, columns in ascending head order."""
    layers, heads = sorted(table["layer"].unique()), sorted(table["head"].unique())
    codes = np.full((len(layers), len(heads)), -1)
    row = {v: i for i, v in enumerate(layers)}
    col = {v: i for i, v in enumerate(heads)}
    for r in table.itertuples():
        codes[row[r.layer], col[r.head]] = TYPES.index(r.type)
    return codes


def _ink(colour: str) -> str:
    """Black or white, whichever reads better on ``colour``."""
    r, g, b = to_rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _draw_grid(ax, table: pd.DataFrame) -> None:
    layers, heads = sorted(table["layer"].unique()), sorted(table["head"].unique())
    codes = type_grid(table)
    cmap = ListedColormap([TYPE_COLOURS[t] for t in TYPES]).with_extremes(under="white")
    ax.imshow(
        codes,
        origin="lower",
        cmap=cmap,
        norm=BoundaryNorm(np.arange(-0.5, len(TYPES)), cmap.N),
        interpolation="nearest",
        aspect="auto",
    )
    for setter, values in ((ax.set_yticks, layers), (ax.set_xticks, heads)):
        ticks = layer_ticks(len(values), max_ticks=12)
        setter(ticks, [str(values[i]) for i in ticks])
    ax.tick_params(length=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("head")
    ax.set_ylabel("layer (block)")
    if len(heads) <= LABEL_MAX_HEADS and len(layers) <= LABEL_MAX_LAYERS:
        lookup = table.set_index(["layer", "head"])
        for (i, j), code in np.ndenumerate(codes):
            if code < 0:
                continue
            r = lookup.loc[(layers[i], heads[j])]
            ax.text(
                j,
                i,
                f"{r['diagonality']:.2f}\n{r['verticality']:.2f}",
                ha="center",
                va="center",
                fontsize=MIN_FONT_PT,
                linespacing=1.0,
                color=_ink(TYPE_COLOURS[TYPES[code]]),
            )
        ax.set_title("Head types (cells: diagonality / verticality)")
    else:
        ax.set_title("Head types")


def _draw_scatter(ax, table: pd.DataFrame, thresholds: Mapping[str, float]) -> None:
    for t in TYPES:
        rows = table[table["type"] == t]
        if rows.empty:
            continue
        ax.scatter(
            rows["diagonality"],
            rows["verticality"],
            s=14,
            color=TYPE_COLOURS[t],
            edgecolor="white",
            linewidth=0.4,
            label=t,
            zorder=3,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("diagonality (mass near the query)")
    ax.set_ylabel("verticality (mass on top keys)")
    if not _by_thresholds(table):
        ax.set_title("Diagonality vs verticality\n(types: Yang et al. 2020 ranks)")
        return
    ax.set_title("Diagonality vs verticality")
    d, v = float(thresholds["diagonal"]), float(thresholds["vertical"])
    ax.axvline(d, color=BASELINE_COLOUR, linestyle="--", linewidth=0.8, label="diagonal threshold")
    # the vertical threshold applies only to heads below the diagonal threshold
    ax.plot(
        [0, d],
        [v, v],
        color=BASELINE_COLOUR,
        linestyle=":",
        linewidth=0.8,
        label="vertical threshold",
    )


def _by_thresholds(table: pd.DataFrame) -> bool:
    """Whether the table's types come from the thresholds (not from Yang et al.'s ranks)."""
    return "classification" not in table or (table["classification"] == "threshold").all()


def example_heads(table: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """One ``(layer, head)`` per type present, the clearest of its type: highest
    diagonality (diagonal), highest verticality (vertical), lowest diagonality +
    verticality (global)."""
    out = {}
    for t in TYPES:
        rows = table[table["type"] == t]
        if rows.empty:
            continue
        score = {
            "diagonal": rows["diagonality"],
            "vertical": rows["verticality"],
            "global": -(rows["diagonality"] + rows["verticality"]),
        }[t]
        best = rows.loc[score.idxmax()]
        out[t] = (int(best["layer"]), int(best["head"]))
    return out


def read_examples(path: str | Path) -> xr.DataArray:
    """The example maps of ``examples.zarr``: ``attention(example, layer, head, query, key)``,
    loaded, with the store's attrs (``frame_rate_hz``, ``model``, ...)."""
    from speechlens.store import open_zarr

    ds = open_zarr(path)
    if "attention" not in ds:
        raise ValueError(f"{path}: no 'attention' array (not an attention examples store)")
    return ds["attention"].load().assign_attrs(ds.attrs)


def example_map(examples: xr.DataArray, layer: int, head: int, example: int = 0) -> np.ndarray:
    """``(query, key)`` map of one head in one example, cropped to its valid frames (float)."""
    n = int(examples["frame_count"].values[example])
    da = examples.isel(example=example).sel(layer=layer, head=head)
    return np.asarray(da.values, dtype=float)[:n, :n]


@styled
def plot_head_types(
    table: pd.DataFrame,
    thresholds: Mapping[str, float],
    examples: xr.DataArray | None = None,
    *,
    model: str | None = None,
) -> Figure:
    """Head types of one model.

    Top left: layer (block, y) x head (x) grid coloured by type, each cell labelled with the
    head's diagonality (upper) and verticality (lower) for grids up to
    :data:`LABEL_MAX_LAYERS` x :data:`LABEL_MAX_HEADS`. Top right: diagonality vs verticality
    of every head, coloured by type, with the thresholds of the classification (``thresholds``
    ``diagonal`` and ``vertical``, the config's ``attention.thresholds``). Bottom (when
    ``examples`` holds a map with valid frames): the first example utterance's map of one
    clear head per type (:func:`example_heads`), query (y) x key (x) in seconds, ``viridis``
    from 0 to the map's own maximum (given in the title).
    """
    if table.empty:
        raise ValueError("head-type table is empty: nothing to draw")
    heads = example_heads(table)
    has_examples = (
        examples is not None
        and examples.sizes.get("example", 0) > 0
        and int(examples["frame_count"].values[0]) > 1
    )
    fig = plt.figure(figsize=(TEXT_WIDTH, 5.4 if has_examples else 3.0), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.0, 2.4]) if has_examples else (fig, None)
    ax_grid, ax_scatter = top.subplots(1, 2, width_ratios=[1.25, 1.0])
    _draw_grid(ax_grid, table)
    _draw_scatter(ax_scatter, table, thresholds)
    present = [t for t in TYPES if (table["type"] == t).any()]
    handles = [Patch(color=TYPE_COLOURS[t], label=t) for t in present]
    if _by_thresholds(table):
        handles += [
            Line2D([], [], color=BASELINE_COLOUR, linestyle="--", label="diagonal threshold"),
            Line2D([], [], color=BASELINE_COLOUR, linestyle=":", label="vertical threshold"),
        ]
    top.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    if model:
        fig.suptitle(model)
    if has_examples:
        rate = float(examples.attrs.get("frame_rate_hz", 0.0))
        utt = str(examples["utterance_id"].values[0]) if "utterance_id" in examples.coords else ""
        axes = bottom.subplots(1, len(heads))
        axes = np.atleast_1d(axes)
        for ax, (t, (layer, head)) in zip(axes, heads.items(), strict=True):
            values = example_map(examples, layer, head)
            n = values.shape[0]
            extent = (0, n / rate, n / rate, 0) if rate > 0 else (0, n, n, 0)
            ax.imshow(
                values,
                cmap=HEATMAP_CMAP,
                vmin=0.0,
                vmax=float(np.nanmax(values)) if np.isfinite(values).any() else 1.0,
                interpolation="nearest",
                extent=extent,
            )
            unit = "s" if rate > 0 else "frames"
            ax.set_xlabel(f"key ({unit})")
            ax.set_ylabel(f"query ({unit})")
            ax.set_title(
                f"{t}: layer {layer}, head {head}\nmax {np.nanmax(values):.2g}",
                color=TYPE_COLOURS[t],
            )
            for spine in ax.spines.values():
                spine.set_visible(False)
        bottom.suptitle(f"Example attention maps ({utt})", fontsize=8)
    return fig


def ablation_summary(table: pd.DataFrame, layer: int, metric: str) -> pd.DataFrame:
    """Bars of one probed layer: a row per ablated group (not ``none``, not ``random``) in
    table order, from :func:`speechlens.attention.summary.summarise`: ``mean`` and ``sd``
    of ``delta`` over folds, ``n_heads``, ``type``, ``kind``, ``control_mean`` and
    ``control_sd`` (over the random draws of the same number of heads, of their fold-mean
    delta; sd NaN for a single draw), ``control_draws`` (0 without controls), ``rank`` and
    ``p_value`` (the group's drop among its controls)."""
    out = summarise(table)
    out = out[(out["layer"] == layer) & (out["metric"] == metric)]
    out = out.rename(columns={"delta_mean": "mean", "delta_sd": "sd"})
    columns = ["group", "kind", "type", "n_heads", "mean", "sd"]
    columns += ["control_mean", "control_sd", "control_draws", "rank", "p_value"]
    out = out[columns].reset_index(drop=True)
    return out.astype({"n_heads": int, "control_draws": int, "mean": float, "sd": float})


def _group_label(row) -> str:
    name = f"all but {row['type']}" if row["kind"] == "all_but_type" else row["group"]
    label = f"{name}\n({row['n_heads']} heads)"
    if np.isfinite(row["p_value"]):
        label += f"\np = {row['p_value']:.2f}"
    return label


@styled
def plot_ablation(
    table: pd.DataFrame, *, metric: str = "macro_f1", model: str | None = None, max_cols: int = 2
) -> Figure:
    """Score change when groups of heads are ablated: one panel per probed layer.

    Each typed group (all heads of a type; all heads but a type's) is a bar in its type's
    colour (hatched for ``all but``): the fold mean of ``delta`` (ablated - un-ablated
    ``metric``, same folds), error bar ±1 sd over folds. Beside it, grey: the random
    controls of the same number of heads, the mean over draws of their fold-mean delta,
    error bar ±1 sd over draws, each draw a black dot. The title gives the un-ablated
    score. Raises ``ValueError`` when the table has no ablated group for ``metric``.
    """
    rows = table[table["metric"] == metric]
    layers = sorted(rows.loc[~rows["kind"].isin(["none", "random"]), "layer"].unique())
    if not layers:
        raise ValueError(f"ablation table has no ablated group with metric {metric!r}")
    shape = grid(len(layers), max_cols)
    width = COLUMN_WIDTH if shape[1] == 1 else TEXT_WIDTH
    fig, axes = plt.subplots(
        *shape, figsize=(width, 2.6 * shape[0] + 0.5), layout="constrained", squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[len(layers) :]:
        fig.delaxes(ax)  # no empty panels
    name = METRIC_LABELS.get(metric, metric)
    controls = False
    for ax, layer in zip(flat, layers, strict=False):
        bars = ablation_summary(table, layer, metric)
        x = np.arange(len(bars))
        ax.bar(
            x - 0.2,
            bars["mean"],
            width=0.38,
            yerr=bars["sd"].fillna(0.0),
            capsize=2,
            color=[TYPE_COLOURS.get(t, CONTROL_COLOUR) for t in bars["type"]],
            hatch=["///" if k == "all_but_type" else "" for k in bars["kind"]],
            edgecolor="white",
            linewidth=0.0,
            error_kw={"elinewidth": 0.8},
            label="ablated group",
        )
        has = bars["control_draws"] > 0
        if has.any():
            controls = True
            ax.bar(
                x[has.to_numpy()] + 0.2,
                bars.loc[has, "control_mean"],
                width=0.38,
                yerr=bars.loc[has, "control_sd"].fillna(0.0),
                capsize=2,
                color=CONTROL_COLOUR,
                error_kw={"elinewidth": 0.8},
                label="random control",
            )
            draws = rows[
                (rows["layer"] == layer) & (rows["kind"] == "random") & (rows["fold"] == "mean")
            ]
            for xi, n in zip(x, bars["n_heads"], strict=True):
                d = draws.loc[draws["n_heads"] == n, "delta"].to_numpy(float)
                ax.plot(
                    np.full(len(d), xi + 0.2),
                    d,
                    "o",
                    color="black",
                    markersize=2.5,
                    label="random draw",
                )
        ax.axhline(0.0, color=BASELINE_COLOUR, linewidth=0.6)
        ax.set_xticks(x, [_group_label(r) for _, r in bars.iterrows()], fontsize=MIN_FONT_PT)
        ax.set_ylabel(f"Δ {name} (ablated − un-ablated)")
        base = rows[(rows["layer"] == layer) & (rows["kind"] == "none") & (rows["fold"] == "mean")]
        score = f", un-ablated {name} {base['value'].iloc[0]:.2f}" if len(base) else ""
        ax.set_title(f"layer {layer}{score}")
    handles = [
        Patch(color=TYPE_COLOURS[t], label=f"{t} heads") for t in TYPES if (rows["type"] == t).any()
    ]
    if (rows["kind"] == "all_but_type").any():
        handles.append(
            Patch(facecolor="white", edgecolor="0.3", hatch="///", label="all heads but a type's")
        )
    if controls:
        handles.append(Patch(color=CONTROL_COLOUR, label="random heads, same number (±1 sd)"))
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                color="black",
                linestyle="",
                markersize=2.5,
                label="one random draw",
            )
        )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 2 if width <= COLUMN_WIDTH else 3),
        frameon=False,
    )
    if model:
        fig.suptitle(f"{model}: head ablation")
    return fig
