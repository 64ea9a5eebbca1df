"""Probe figures plot the table's values: curves, bands, baselines, control, selectivity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from speechlens.plotting import plot_layer_weights, plot_probe_curves, read_probe_tables
from speechlens.plotting.style import MIN_FONT_PT, model_styles

RNG = np.random.default_rng(0)
FOLDS = 3


def _rows(model, task, probe, metric, layers, values):
    """Per-fold rows plus the mean/std rows the probing module writes (std ddof=1)."""
    rows = []
    for layer, folds in zip(layers, values, strict=True):
        for fold, v in enumerate(folds):
            rows.append((model, task, str(layer), probe, str(fold), metric, float(v)))
        rows.append((model, task, str(layer), probe, "mean", metric, float(np.mean(folds))))
        rows.append((model, task, str(layer), probe, "std", metric, float(np.std(folds, ddof=1))))
    return rows


def _folds(n_layers, lo=0.2, hi=0.9):
    return RNG.uniform(lo, hi, size=(n_layers, FOLDS))


@pytest.fixture(scope="module")
def table():
    """deep: 4 layers, spec: 1 layer; task phone with control (+ selectivity), task lang
    without; chance/majority baselines differ slightly between the models' tables."""
    rows = []
    for model, n in (("deep", 4), ("spec", 1)):
        layers = range(n)
        real, control = _folds(n), _folds(n, 0.1, 0.4)
        rows += _rows(model, "phone", "linear", "macro_f1", layers, real)
        rows += _rows(model, "phone", "linear_control", "macro_f1", layers, control)
        rows += _rows(model, "phone", "linear_selectivity", "macro_f1", layers, real - control)
        if model == "deep":  # layer 2: one fold's fit hit its limit; the control's layer 0: all
            capped = np.zeros((n, FOLDS))
            capped[2, 1] = 1.0
            rows += _rows(model, "phone", "linear", "not_converged", layers, capped)
            capped = np.zeros((n, FOLDS))
            capped[0] = 1.0
            rows += _rows(model, "phone", "linear_control", "not_converged", layers, capped)
        rows += _rows(model, "lang", "linear", "macro_f1", layers, _folds(n))
        rows += _rows(model, "lang", "linear", "accuracy", layers, _folds(n))
        offset = 0.01 if model == "spec" else 0.0
        for task in ("phone", "lang"):
            rows += _rows(model, task, "chance", "macro_f1", ["all"], [[0.1 + offset] * FOLDS])
            rows += _rows(model, task, "majority", "macro_f1", ["all"], [[0.05] * FOLDS])
        if n > 1:
            weights = RNG.dirichlet(np.ones(n), size=FOLDS).T  # (layer, fold)
            rows += _rows(model, "phone", "weighted_sum", "layer_weight", layers, weights)
        else:
            rows += _rows(model, "phone", "weighted_sum", "layer_weight", [0], [[1.0] * FOLDS])
        rows += _rows(model, "phone", "weighted_sum", "macro_f1", ["all"], [[0.8, 0.82, 0.84]])
    cols = ["model", "task", "layer", "probe", "fold", "metric", "value"]
    return pd.DataFrame(rows, columns=cols)


def _value(table, **where):
    rows = table
    for key, v in where.items():
        rows = rows[rows[key] == v]
    return rows


def _mean(table, model, task, probe, metric="macro_f1", fold="mean"):
    """Per-layer values of the ``mean`` (or ``std``) rows, sorted by layer."""
    rows = _value(table, model=model, task=task, probe=probe, metric=metric, fold=fold)
    return rows.assign(layer=rows["layer"].astype(int)).sort_values("layer")["value"].to_numpy()


def _axis(fig, title):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def _line(ax, label):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def _band_y(ax, colour):
    """(low, high) y of the band of one colour, per x (from the polygon's vertices)."""
    bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_label()]
    (band,) = [b for b in bands if np.allclose(b.get_facecolor()[0][:3], _rgb(colour))]
    verts = band.get_paths()[0].vertices
    out = {}
    for x, y in verts:
        lo, hi = out.get(round(x, 6), (np.inf, -np.inf))
        out[round(x, 6)] = (min(lo, y), max(hi, y))
    return out


def _rgb(hex_colour):
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))


def test_probe_curves_plot_the_table_means_bands_and_baselines(table):
    fig = plot_probe_curves(table, "linear", "macro_f1", models=["deep", "spec"])
    assert [ax.get_title() for ax in fig.axes] == ["lang", "phone", "phone: selectivity"]
    phone = _axis(fig, "phone")
    deep = _line(phone, "deep")
    assert deep.get_xdata().tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(deep.get_ydata(), _mean(table, "deep", "phone", "linear"))
    # the band is mean ± the table's std rows
    std = _mean(table, "deep", "phone", "linear", fold="std")
    band = _band_y(phone, model_styles(["deep", "spec"])["deep"]["color"])
    mean = _mean(table, "deep", "phone", "linear")
    for layer in range(4):
        lo, hi = band[float(layer)]
        assert lo == pytest.approx(mean[layer] - std[layer])
        assert hi == pytest.approx(mean[layer] + std[layer])
    control = _line(phone, "deep control")
    np.testing.assert_allclose(control.get_ydata(), _mean(table, "deep", "phone", "linear_control"))
    # baselines: averaged over the models' tables
    assert _line(phone, "chance").get_ydata()[0] == pytest.approx(0.105)
    assert _line(phone, "majority").get_ydata()[0] == pytest.approx(0.05)
    # the one-layer model: a point with its fold spread, and a horizontal marker
    spec_value = _mean(table, "spec", "phone", "linear")[0]
    assert list(_line(phone, "spec").get_ydata()) == [spec_value, spec_value]
    (point,) = [c for c in phone.containers if isinstance(c, ErrorbarContainer)]
    assert point.get_label() == "spec"
    np.testing.assert_allclose(point.lines[0].get_ydata(), [spec_value])
    # selectivity panel: task - control per layer, with a zero line
    sel = _axis(fig, "phone: selectivity")
    np.testing.assert_allclose(
        _line(sel, "deep").get_ydata(), _mean(table, "deep", "phone", "linear_selectivity")
    )
    assert list(_line(sel, "zero").get_ydata()) == [0.0, 0.0]
    # no control line where the task has no control
    assert "deep control" not in [ln.get_label() for ln in _axis(fig, "lang").get_lines()]
    assert phone.get_ylabel() == "macro-F1" and phone.get_xlabel() == "layer"


def test_probe_curves_range_band_and_other_metric(table):
    fig = plot_probe_curves(table, "linear", "accuracy", spread="range", models=["deep", "spec"])
    assert [ax.get_title() for ax in fig.axes] == ["lang"]  # only lang has accuracy rows
    ax = fig.axes[0]
    folds = _value(table, model="deep", task="lang", probe="linear", metric="accuracy")
    folds = folds[~folds["fold"].isin(["mean", "std"])]
    band = _band_y(ax, model_styles(["deep", "spec"])["deep"]["color"])
    for layer, group in folds.groupby(folds["layer"].astype(int)):
        assert band[float(layer)] == pytest.approx((group["value"].min(), group["value"].max()))
    assert ax.get_ylabel() == "accuracy"
    # no baseline rows for accuracy: no baseline lines
    assert not {"chance", "majority"} & {ln.get_label() for ln in ax.get_lines()}


def test_probe_figures_are_readable_and_have_no_empty_panels(table):
    for fig in (plot_probe_curves(table), plot_layer_weights(table)):
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))]
        assert min(sizes) >= MIN_FONT_PT
        for ax in fig.axes:
            assert ax.get_lines() or ax.collections, ax.get_title()
        assert fig.legends, "a figure-level legend names the models"
        assert np.asarray(fig.canvas.buffer_rgba()).std() > 10  # not blank
        assert fig.get_figwidth() in (3.3, 7.0)


def test_probe_curves_refuse_what_they_cannot_draw(table):
    with pytest.raises(ValueError, match="'mlp'"):
        plot_probe_curves(table, "mlp")
    with pytest.raises(ValueError, match="spread"):
        plot_probe_curves(table, spread="iqr")


def test_layer_weights_plot_the_weights_and_scores(table):
    fig = plot_layer_weights(table, models=["deep", "spec"])
    (ax,) = fig.axes
    assert ax.get_title() == "phone"
    deep = _line(ax, "deep")
    np.testing.assert_allclose(
        deep.get_ydata(), _mean(table, "deep", "phone", "weighted_sum", "layer_weight")
    )
    assert _line(ax, "deep uniform").get_ydata()[0] == pytest.approx(1 / 4)
    # one-layer models have weight 1 by construction: not drawn
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("spec")]
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "macro-F1"
    assert [t.get_text() for t in legend.get_texts()] == ["0.82"]
    assert ax.get_ylabel() == "layer weight (softmax)"


def test_layer_weights_need_a_model_with_layers(table):
    with pytest.raises(ValueError, match="more than one layer"):
        plot_layer_weights(table[table["model"] == "spec"])


def test_fits_at_the_iteration_limit_are_ringed(table):
    fig = plot_probe_curves(table, "linear", "macro_f1", models=["deep", "spec"])
    phone = _axis(fig, "phone")
    ring = _line(phone, "deep not converged")
    assert ring.get_xdata().tolist() == [2]
    assert ring.get_ydata()[0] == pytest.approx(_mean(table, "deep", "phone", "linear")[2])
    ring = _line(phone, "deep control not converged")
    assert ring.get_xdata().tolist() == [0]
    assert ring.get_ydata()[0] == pytest.approx(_mean(table, "deep", "phone", "linear_control")[0])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "fit hit its iteration limit" in labels
    assert not [ln for ln in _axis(fig, "lang").get_lines() if "converged" in ln.get_label()]
    clean = table[table["metric"] != "not_converged"]
    fig = plot_probe_curves(clean, "linear", "macro_f1", models=["deep", "spec"])
    assert "fit hit its iteration limit" not in [t.get_text() for t in fig.legends[0].get_texts()]


def test_read_probe_tables_round_trip_and_errors(table, tmp_path):
    table = table.assign(corpus="toy", level="frame")
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    table[table["model"] == "deep"].to_csv(a, sep="\t", index=False)
    table[table["model"] == "spec"].to_csv(b, sep="\t", index=False)
    back = read_probe_tables([a, b])
    assert len(back) == len(table)
    assert set(back["layer"]) == set(table["layer"])  # strings: "all" and layer numbers
    np.testing.assert_allclose(back["value"].to_numpy(), table["value"].to_numpy(), atol=1e-12)
    bad = tmp_path / "bad.tsv"
    table.drop(columns=["fold"]).to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"bad\.tsv: probe table lacks columns \['fold'\]"):
        read_probe_tables([bad])
    text = table.head(3).assign(value=["0.5", "oops", "0.1"])
    text.to_csv(bad, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"bad\.tsv: line 3: value 'oops'"):
        read_probe_tables([bad])


@pytest.fixture(scope="module")
def embedded(table):
    """``table`` plus a speaker model ``spk`` (layers 0-2, embeddings ``d_vector`` and
    ``xvector``) and ``deep``'s own ``d_vector`` (with control, selectivity and a fit at its
    iteration limit), on task phone."""
    rows = []
    deep = "embedding:d_vector"
    real, control = _folds(1, 0.85, 0.95), _folds(1, 0.1, 0.2)
    rows += _rows("deep", "phone", "linear", "macro_f1", [deep], real)
    rows += _rows("deep", "phone", "linear_control", "macro_f1", [deep], control)
    rows += _rows("deep", "phone", "linear_selectivity", "macro_f1", [deep], real - control)
    rows += _rows("deep", "phone", "linear", "not_converged", [deep], [[0.0, 1.0, 0.0]])
    layers = [0, 1, 2, "embedding:d_vector", "embedding:xvector"]
    rows += _rows("spk", "phone", "linear", "macro_f1", layers, _folds(5))
    cols = ["model", "task", "layer", "probe", "fold", "metric", "value"]
    return pd.concat([table, pd.DataFrame(rows, columns=cols)], ignore_index=True)


def _star(ax, label):
    found = [
        c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.get_label() == label
    ]
    assert len(found) == 1, [c.get_label() for c in ax.containers]
    line = found[0].lines[0]
    return float(line.get_xdata()[0]), float(line.get_ydata()[0])


def test_embeddings_are_stars_right_of_the_layers_not_on_the_curves(embedded, table):
    models = ["deep", "spec", "spk"]
    fig = plot_probe_curves(embedded, "linear", "macro_f1", models=models)
    phone = _axis(fig, "phone")
    # the curves hold the layers only, unchanged
    assert _line(phone, "deep").get_xdata().tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(
        _line(phone, "deep").get_ydata(), _mean(table, "deep", "phone", "linear")
    )
    assert _line(phone, "spk").get_xdata().tolist() == [0, 1, 2]
    # one slot per name right of the deepest layer (3); models sharing a slot are dodged
    mean = _value(embedded, model="deep", probe="linear", metric="macro_f1", fold="mean")
    deep_value = float(mean[mean.layer == "embedding:d_vector"]["value"].iloc[0])
    assert _star(phone, "deep d_vector") == pytest.approx((4 - 0.075, deep_value))
    assert _star(phone, "spk d_vector")[0] == pytest.approx(4 + 0.075)
    spk = _value(embedded, model="spk", layer="embedding:xvector", fold="mean")["value"]
    assert _star(phone, "spk xvector") == pytest.approx((5, float(spk.iloc[0])))
    labels = [t.get_text() for t in phone.get_xticklabels()]
    assert phone.get_xticks().tolist() == [0, 1, 2, 3, 4, 5]
    assert labels == ["0", "1", "2", "3", "d_vector", "xvector"]
    assert _line(phone, "embeddings").get_xdata()[0] == pytest.approx(3.5)  # the separator
    # control (x), ring at the embedding whose fit hit its limit, selectivity star
    control = _value(embedded, model="deep", probe="linear_control", layer="embedding:d_vector")
    control = float(control[control.fold == "mean"]["value"].iloc[0])
    assert _line(phone, "deep control d_vector").get_ydata()[0] == pytest.approx(control)
    assert _line(phone, "deep d_vector not converged").get_xdata()[0] == pytest.approx(3.925)
    sel = _axis(fig, "phone: selectivity")
    assert _star(sel, "deep d_vector")[1] == pytest.approx(deep_value - control)
    assert "model's utterance embedding" in [t.get_text() for t in fig.legends[0].get_texts()]
    # a panel without embeddings keeps plain layer ticks and no separator
    lang = _axis(fig, "lang")
    assert "embeddings" not in [ln.get_label() for ln in lang.get_lines()]
    assert not [c for c in lang.containers if "vector" in c.get_label()]
    fig.canvas.draw()  # renders


def test_layer_weights_and_table_reading_ignore_embedding_rows(embedded, table, tmp_path):
    fig = plot_layer_weights(embedded, models=["deep", "spec", "spk"])
    np.testing.assert_allclose(
        _line(fig.axes[0], "deep").get_ydata(),
        _mean(table, "deep", "phone", "weighted_sum", "layer_weight"),
    )
    path = tmp_path / "e.tsv"
    embedded.assign(corpus="toy", level="utterance").to_csv(path, sep="\t", index=False)
    back = read_probe_tables([path])
    assert {"embedding:d_vector", "embedding:xvector"} < set(back["layer"])
    fig = plot_probe_curves(back, "linear", models=["deep", "spec", "spk"])
    assert _star(_axis(fig, "phone"), "spk xvector")[0] == pytest.approx(5)
