"""Figures of stores that keep a subset of layers (``features.layers``): probe curves, layer
weights and CKA heatmaps place and label each value at its model layer number."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from speechlens.plotting import (
    plot_cka_across,
    plot_cka_within,
    plot_layer_weights,
    plot_probe_curves,
)
from tests.unit.test_plotting_probes import _axis, _line, _rows

SUBSET = [0, 4, 8, 12]


@pytest.fixture(scope="module")
def table():
    """``every4``: layers 0, 4, 8, 12; ``all``: 0..12; ``one``: layer 6 only."""
    rng = np.random.default_rng(3)
    rows = []
    for model, layers in (("every4", SUBSET), ("all", list(range(13))), ("one", [6])):
        scores = rng.uniform(0.3, 0.9, size=(len(layers), 3))
        rows += _rows(model, "phone", "linear", "accuracy", layers, scores)
        if len(layers) > 1:
            weights = rng.dirichlet(np.ones(len(layers)), size=3).T
            rows += _rows(model, "phone", "weighted_sum", "layer_weight", layers, weights)
    cols = ["model", "task", "layer", "probe", "fold", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


def _means(table, model, probe, metric):
    rows = table[
        (table.model == model) & (table.probe == probe) & (table.metric == metric)
        & (table.fold == "mean")
    ]  # fmt: skip
    return rows.assign(layer=rows["layer"].astype(int)).sort_values("layer")["value"].to_numpy()


def test_probe_curves_put_each_score_at_its_layer_number(table):
    fig = plot_probe_curves(table, "linear", "accuracy", models=["every4", "all", "one"])
    ax = _axis(fig, "phone")
    every4 = _line(ax, "every4")
    assert every4.get_xdata().tolist() == SUBSET
    np.testing.assert_allclose(every4.get_ydata(), _means(table, "every4", "linear", "accuracy"))
    assert _line(ax, "all").get_xdata().tolist() == list(range(13))
    (point,) = ax.containers  # the one-layer store: a point at its layer number
    assert point.lines[0].get_xdata().tolist() == [6]
    low, high = ax.get_xlim()
    assert low < 0 and high > 12


def test_layer_weights_sit_at_the_layer_numbers_with_a_uniform_of_one_over_kept(table):
    fig = plot_layer_weights(table, models=["every4", "all", "one"])
    (ax,) = fig.axes
    every4 = _line(ax, "every4")
    assert every4.get_xdata().tolist() == SUBSET
    np.testing.assert_allclose(
        every4.get_ydata(), _means(table, "every4", "weighted_sum", "layer_weight")
    )
    assert _line(ax, "every4 uniform").get_ydata()[0] == pytest.approx(1 / len(SUBSET))
    assert _line(ax, "all uniform").get_ydata()[0] == pytest.approx(1 / 13)


def test_cka_heatmaps_label_cells_with_the_layer_numbers():
    values = np.eye(4) * 0.5 + 0.5
    within = xr.DataArray(
        values,
        dims=("layer_a", "layer_b"),
        coords={"layer_a": SUBSET, "layer_b": SUBSET},
        attrs={"estimator": "debiased"},
    )
    fig = plot_cka_within({"every4": within})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "4", "8", "12"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "4", "8", "12"]
    across = within.isel(layer_b=[1, 3])
    fig = plot_cka_across({("every4", "two"): across})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "12"]
