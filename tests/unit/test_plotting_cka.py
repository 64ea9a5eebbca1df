"""CKA heatmaps show the matrices' values on one shared 0-1 scale with one colourbar."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from speechlens.plotting import plot_cka_across, plot_cka_within
from speechlens.plotting.cka import ANNOTATE_MAX
from speechlens.plotting.style import MIN_FONT_PT

RNG = np.random.default_rng(1)


def _matrix(n_a, n_b, *, symmetric=False, estimator="debiased", layers_b=None):
    values = RNG.uniform(-0.05, 1.0, size=(n_a, n_b))
    if symmetric:
        values = (values + values.T) / 2
        np.fill_diagonal(values, 1.0)
    return xr.DataArray(
        values,
        dims=("layer_a", "layer_b"),
        coords={"layer_a": np.arange(n_a), "layer_b": layers_b or np.arange(n_b)},
        name="cka",
        attrs={"estimator": estimator},
    )


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _colourbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _check_shared_scale(fig, label):
    for ax in _panels(fig):
        (image,) = ax.get_images()
        assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    (cbar,) = _colourbars(fig)
    assert cbar.get_ylabel() == label
    assert cbar.get_ylim() == pytest.approx((0.0, 1.0))


def test_within_draws_each_models_matrix_on_one_scale():
    matrices = {
        "big": _matrix(12, 12, symmetric=True),
        "spectral": _matrix(1, 1, symmetric=True),
        "small": _matrix(4, 4, symmetric=True),
    }
    fig = plot_cka_within(matrices)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["big", "small"]  # one-layer model left out
    for ax, name in zip(panels, ["big", "small"], strict=True):
        np.testing.assert_allclose(ax.get_images()[0].get_array(), matrices[name].values)
        assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "layer"
    _check_shared_scale(fig, "linear CKA (debiased)")
    # 12 layers: ticks every second layer; labels are the layer coords
    assert [t.get_text() for t in panels[0].get_xticklabels()] == [str(i) for i in range(0, 12, 2)]
    # small matrices carry their values (at the cell centre: column x, row y)
    small = panels[1]
    texts = {(t.get_position(), t.get_text()) for t in small.texts}
    assert len(texts) == 16
    assert ((2, 1), f"{matrices['small'].values[1, 2]:.2f}") in texts
    assert not panels[0].texts and ANNOTATE_MAX < 12


def test_across_names_models_and_layers_on_the_axes():
    matrices = {
        ("whisper", "logmel"): _matrix(5, 1),
        ("whisper", "random"): _matrix(5, 5, estimator="debiased"),
    }
    fig = plot_cka_across(matrices)
    panels = _panels(fig)
    assert [ax.get_title() for ax in panels] == ["whisper vs logmel", "whisper vs random"]
    first = panels[0]
    assert first.get_ylabel() == "whisper layer" and first.get_xlabel() == "logmel layer"
    np.testing.assert_allclose(first.get_images()[0].get_array(), matrices["whisper", "logmel"])
    assert [t.get_text() for t in first.get_yticklabels()] == ["0", "1", "2", "3", "4"]
    assert [t.get_text() for t in first.get_xticklabels()] == ["0"]
    _check_shared_scale(fig, "linear CKA (debiased)")


def test_mixed_estimators_get_a_plain_label():
    fig = plot_cka_across(
        {("a", "b"): _matrix(3, 3), ("a", "c"): _matrix(3, 2, estimator="biased")}
    )
    _check_shared_scale(fig, "linear CKA")


def test_cka_figures_are_readable_and_not_blank():
    for fig in (
        plot_cka_within({"m": _matrix(5, 5, symmetric=True)}),
        plot_cka_across({("a", "b"): _matrix(5, 13)}),
    ):
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))]
        assert min(sizes) >= MIN_FONT_PT
        assert np.asarray(fig.canvas.buffer_rgba()).std() > 10
        assert fig.get_figwidth() <= 7.0


def test_cka_figures_refuse_what_they_cannot_draw():
    with pytest.raises(ValueError, match="more than one layer"):
        plot_cka_within({"logmel": _matrix(1, 1)})
    with pytest.raises(ValueError, match="no model pairs"):
        plot_cka_across({})
    wrong = _matrix(3, 3).rename({"layer_a": "layer", "layer_b": "other"})
    with pytest.raises(ValueError, match="expected \\('layer_a', 'layer_b'\\)"):
        plot_cka_within({"m": wrong})
