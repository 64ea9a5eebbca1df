"""Shared look of every figure: palettes, sizes and fonts for a paper's column width.

Lines use the Okabe-Ito palette (colour-blind safe), heatmaps a perceptually uniform map
(``viridis``); text is at least 7 pt, figures are 3.3 in (one column) or 7 in (two columns)
wide. Plot functions build their figure inside :func:`style` so rcParams never leak.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterable, Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

#: Okabe & Ito (2008), in their published order.
OKABE_ITO = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
]
#: Line colours for models: Okabe-Ito reordered for contrast on white (yellow last).
LINE_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000"]
#: Line styles cycled after the colours run out (more models than colours).
LINE_STYLES = ["-", (0, (5, 1.5)), (0, (1, 1)), (0, (3, 1, 1, 1))]
#: Baselines (chance, majority) are grey so they never look like a model.
BASELINE_COLOUR = "#6E6E6E"
#: Heatmaps of values in [0, 1] (CKA, correlation magnitudes).
HEATMAP_CMAP = "viridis"
#: Widths (in) of a one-column and a two-column figure.
COLUMN_WIDTH = 3.3
TEXT_WIDTH = 7.0
#: Smallest font size (pt) used anywhere.
MIN_FONT_PT = 7

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text for journals
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The rcParams of every figure (fonts >= 7 pt, thin spines), restored afterwards."""
    with plt.rc_context(RC):
        yield


def styled(func):
    """Decorator: build the figure of ``func`` inside :func:`style`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with style():
            return func(*args, **kwargs)

    return wrapper


def model_styles(models: Iterable[str]) -> dict[str, dict]:
    """``{model: {"color", "linestyle"}}`` in the given order: colours first, then styles.

    Pass every model of the experiment (not only those in one figure) so that a model keeps
    its colour across figures.
    """
    combos = itertools.product(LINE_STYLES, LINE_COLOURS)
    return {m: {"color": c, "linestyle": ls} for m, (ls, c) in zip(models, combos, strict=False)}


def grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) of a grid holding ``n`` panels, at most ``max_cols`` per row."""
    if n < 1:
        raise ValueError("a figure needs at least one panel")
    cols = min(n, max_cols)
    return -(-n // cols), cols


def layer_ticks(n_layers: int, max_ticks: int = 8) -> list[int]:
    """Integer layer ticks ``0, k, 2k, ...`` with at most ``max_ticks`` of them."""
    step = max(1, -(-n_layers // max_ticks))
    return list(range(0, n_layers, step))
