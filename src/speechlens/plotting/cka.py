"""CKA heatmaps: each model's layer x layer matrix, and layer x layer matrices across models.

Inputs are the DataArrays of :func:`speechlens.cka.load_cka` (dims ``layer_a, layer_b``,
the models' layer numbers as coords, which label the cells: a subset of layers shows its
numbers, ``estimator`` and ``model_a``/``model_b`` in the attrs). Every panel
of a figure shares one colour scale, 0 to 1 (``viridis``; values outside are drawn at the
end colours, missing values grey), with one colourbar; small matrices are annotated with
their values.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from speechlens.plotting.style import (
    COLUMN_WIDTH,
    HEATMAP_CMAP,
    MIN_FONT_PT,
    TEXT_WIDTH,
    grid,
    layer_ticks,
    styled,
)

#: Matrices with at most this many rows and columns get their values written in the cells.
ANNOTATE_MAX = 8


def cka_norm() -> Normalize:
    """The colour scale of every CKA panel: 0 to 1."""
    return Normalize(vmin=0.0, vmax=1.0)


def _cmap():
    return plt.get_cmap(HEATMAP_CMAP).with_extremes(bad="#BDBDBD")


def _heatmap(ax, da: xr.DataArray, aspect: str) -> None:
    """Draw ``da`` (layer_a rows on y, layer_b columns on x, origin lower left) on ``ax``."""
    if da.dims != ("layer_a", "layer_b"):
        raise ValueError(f"CKA matrix dims {da.dims}: expected ('layer_a', 'layer_b')")
    values = np.asarray(da.values, dtype=float)
    ax.imshow(
        values,
        origin="lower",
        cmap=_cmap(),
        norm=cka_norm(),
        interpolation="nearest",
        aspect=aspect,
    )
    for axis, dim, setter in ((0, "layer_a", ax.set_yticks), (1, "layer_b", ax.set_xticks)):
        ticks = layer_ticks(values.shape[axis])
        setter(ticks, [str(v) for v in np.asarray(da[dim].values)[ticks]])
    ax.tick_params(length=2)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if max(values.shape) <= ANNOTATE_MAX:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                colour = "white" if v < 0.6 else "black"
                ax.text(
                    j, i, f"{v:.2f}", ha="center", va="center", color=colour, fontsize=MIN_FONT_PT
                )


def _estimator(matrices) -> str:
    found = {str(da.attrs.get("estimator", "")) for da in matrices}
    return f"linear CKA ({found.pop()})" if len(found) == 1 and "" not in found else "linear CKA"


def _figure(n: int, max_cols: int, panel: float):
    rows, cols = grid(n, max_cols)
    width = min(TEXT_WIDTH, max(COLUMN_WIDTH, cols * panel + 0.9))
    fig, axes = plt.subplots(
        rows, cols, figsize=(width, rows * panel + 0.3), layout="constrained", squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        fig.delaxes(ax)  # no empty panels
    return fig, flat[:n]


def _colourbar(fig, axes, label: str) -> None:
    fig.colorbar(ScalarMappable(norm=cka_norm(), cmap=_cmap()), ax=axes, label=label, shrink=0.9)


@styled
def plot_cka_within(matrices: Mapping[str, xr.DataArray], *, max_cols: int = 3) -> Figure:
    """One panel per model: its layer x layer CKA matrix (both axes: layer number).

    ``matrices`` maps model name -> matrix, drawn in that order. One-layer models (their
    matrix is the single value 1) are left out; raises ``ValueError`` if none is left.
    """
    kept = {m: da for m, da in matrices.items() if da.shape[0] > 1}
    if not kept:
        raise ValueError("no model with more than one layer: nothing to draw")
    fig, axes = _figure(len(kept), max_cols, 2.2)
    for ax, (model, da) in zip(axes, kept.items(), strict=True):
        _heatmap(ax, da, aspect="equal")
        ax.set_title(model)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
    _colourbar(fig, axes, _estimator(kept.values()))
    return fig


@styled
def plot_cka_across(
    matrices: Mapping[tuple[str, str], xr.DataArray], *, max_cols: int = 3
) -> Figure:
    """One panel per model pair ``(a, b)``: CKA of every layer of ``a`` (y axis) with every
    layer of ``b`` (x axis), on the same moments of audio; axes name the model and layer."""
    if not matrices:
        raise ValueError("no model pairs: nothing to draw")
    fig, axes = _figure(len(matrices), max_cols, 2.2)
    for ax, ((a, b), da) in zip(axes, matrices.items(), strict=True):
        _heatmap(ax, da, aspect="auto")
        ax.set_title(f"{a} vs {b}")
        ax.set_xlabel(f"{b} layer")
        ax.set_ylabel(f"{a} layer")
    _colourbar(fig, axes, _estimator(matrices.values()))
    return fig
