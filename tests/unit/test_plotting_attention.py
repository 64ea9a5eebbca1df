"""Head-type and head-ablation figures plot the tables' values, in the types' colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer

from speechlens.attention.ablation import _table as ablation_table
from speechlens.attention.head_types import TABLE as HEAD_TABLE
from speechlens.attention.stats import classify
from speechlens.plotting.attention import (
    TYPE_COLOURS,
    TYPES,
    ablation_summary,
    plot_ablation,
    plot_head_types,
    read_ablation,
    read_examples,
    read_head_types,
)
from speechlens.plotting.style import MIN_FONT_PT

RNG = np.random.default_rng(7)
THRESHOLDS = {"diagonal": 0.5, "vertical": 0.4}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _head_table(n_layers=3, n_heads=4):
    """Blocks 1..n_layers x heads; diagonality/verticality spread so every type occurs."""
    layer, head = np.meshgrid(np.arange(1, n_layers + 1), np.arange(n_heads), indexing="ij")
    d = RNG.uniform(0.0, 1.0, layer.size)
    v = RNG.uniform(0.0, 0.8, layer.size)
    d[:3], v[:3] = [0.9, 0.1, 0.2], [0.1, 0.7, 0.1]  # one of each type, whatever the draw
    table = pd.DataFrame(
        {
            "corpus": "c",
            "model": "m",
            "layer": layer.ravel(),
            "head": head.ravel(),
            "type": classify(d, v, THRESHOLDS),
            "classification": "threshold",
            "diagonality": d,
            "verticality": v,
        }
    )
    for column in HEAD_TABLE.columns:  # the other metrics: any numbers
        if column not in table:
            table[column] = RNG.uniform(0.0, 1.0, len(table))
    return table[list(HEAD_TABLE.columns)]


def _examples(table, frames=12, crop=20, rate=50.0):
    layers = sorted(table["layer"].unique())
    heads = sorted(table["head"].unique())
    maps = np.full((1, len(layers), len(heads), crop, crop), np.nan, np.float16)
    maps[0, :, :, :frames, :frames] = RNG.dirichlet(
        np.ones(frames), size=(len(layers), len(heads), frames)
    )
    return xr.DataArray(
        maps,
        dims=("example", "layer", "head", "query", "key"),
        coords={
            "layer": layers,
            "head": heads,
            "frame_count": ("example", [frames]),
            "utterance_id": ("example", np.asarray(["utt1"], dtype=object)),
        },
        attrs={"frame_rate_hz": rate},
    )


def _readable(fig):
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))]
    assert min(sizes) >= MIN_FONT_PT
    assert np.asarray(fig.canvas.buffer_rgba()).std() > 10  # not blank
    assert fig.get_figwidth() <= 7.0
    for ax in fig.axes:  # no empty panel
        assert ax.has_data(), ax.get_title()


def test_head_type_grid_and_scatter_plot_the_table():
    table = _head_table()
    fig = plot_head_types(table, THRESHOLDS, model="m")
    grid, scatter = fig.axes
    codes = grid.get_images()[0].get_array()
    expected = table.pivot(index="layer", columns="head", values="type").to_numpy()
    assert codes.shape == (3, 4)
    assert [[TYPES[c] for c in row] for row in np.asarray(codes)] == expected.tolist()
    assert [t.get_text() for t in grid.get_yticklabels()] == ["1", "2", "3"]
    # each cell: diagonality over verticality, at (head, row)
    r = table[(table["layer"] == 2) & (table["head"] == 3)].iloc[0]
    texts = {(t.get_position(), t.get_text()) for t in grid.texts}
    assert ((3, 1), f"{r.diagonality:.2f}\n{r.verticality:.2f}") in texts and len(texts) == 12
    for t in TYPES:  # one scatter per type, in its colour, at the table's values
        (points,) = [c for c in scatter.collections if c.get_label() == t]
        rows = table[table["type"] == t]
        np.testing.assert_allclose(points.get_offsets(), rows[["diagonality", "verticality"]])
        assert to_hex(points.get_facecolor()[0]) == TYPE_COLOURS[t].lower()
    lines = {ln.get_label(): ln for ln in scatter.get_lines()}
    assert list(lines["diagonal threshold"].get_xdata()) == [0.5, 0.5]
    assert list(lines["vertical threshold"].get_ydata()) == [0.4, 0.4]
    assert list(lines["vertical threshold"].get_xdata()) == [0, 0.5]  # left of diagonal only
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert set(TYPES) <= legend
    _readable(fig)


def test_head_types_show_one_example_map_per_type(tmp_path):
    table = _head_table()
    examples = _examples(table)
    ds = examples.to_dataset(name="attention")
    ds.attrs = dict(examples.attrs)
    examples.attrs = {}
    ds.to_zarr(tmp_path / "ex.zarr", mode="w", zarr_format=3, consolidated=False)
    loaded = read_examples(tmp_path / "ex.zarr")
    assert loaded.attrs["frame_rate_hz"] == 50.0  # the store's attrs come along
    fig = plot_head_types(table, THRESHOLDS, loaded)
    maps = fig.axes[2:]
    assert len(maps) == 3
    diag = table[table["type"] == "diagonal"].sort_values("diagonality").iloc[-1]
    title = maps[0].get_title()
    assert title.startswith(f"diagonal: layer {diag['layer']}, head {diag['head']}")
    image = maps[0].get_images()[0]
    want = ds["attention"].sel(layer=diag["layer"], head=diag["head"]).values[0, :12, :12]
    np.testing.assert_allclose(image.get_array(), want.astype(float))
    assert (image.norm.vmin, image.norm.vmax) == pytest.approx((0.0, want.astype(float).max()))
    assert image.get_cmap().name == "viridis"
    assert image.get_extent() == pytest.approx([0, 12 / 50, 12 / 50, 0])  # seconds
    assert maps[0].get_xlabel() == "key (s)"
    assert [ax.get_title().split(":")[0] for ax in maps] == list(TYPES)
    _readable(fig)


def test_yang_types_are_drawn_without_threshold_lines():
    table = _head_table().assign(classification="yang2020")
    fig = plot_head_types(table, THRESHOLDS)
    scatter = fig.axes[1]
    assert not [ln for ln in scatter.get_lines() if "threshold" in ln.get_label()]
    assert "Yang" in scatter.get_title()
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "diagonal threshold" not in legend
    _readable(fig)


def test_big_grids_drop_the_cell_labels_but_keep_the_scatter():
    table = _head_table(12, 12)
    fig = plot_head_types(table, THRESHOLDS)
    assert len(fig.axes) == 2 and not fig.axes[0].texts
    assert sum(len(c.get_offsets()) for c in fig.axes[1].collections) == 144
    _readable(fig)


def test_read_head_types_names_the_file_and_line(tmp_path):
    path = tmp_path / "head_types.tsv"
    table = _head_table()
    table.to_csv(path, sep="\t", index=False)
    assert read_head_types(path)["layer"].tolist() == table["layer"].tolist()
    table.drop(columns="verticality").to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"head_types.tsv: .* lacks columns \['verticality'\]"):
        read_head_types(path)
    table.assign(type=["odd"] + table["type"].tolist()[1:]).to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"unknown head types \['odd'\]"):
        read_head_types(path)
    bad = table.astype({"diagonality": object})
    bad.loc[2, "diagonality"] = "x"
    bad.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match="head_types.tsv: line 4: diagonality 'x'"):
        read_head_types(path)


# --- ablation ------------------------------------------------------------------------------

FOLDS = 3
LAYERS = (2, 4)


def _scores(mean):
    rows = [
        (layer, fold, metric, float(np.clip(mean + RNG.normal(0, 0.03), 0, 1)))
        for layer in LAYERS
        for fold in range(FOLDS)
        for metric in ("accuracy", "macro_f1")
    ]
    return pd.DataFrame(rows, columns=["layer", "fold", "metric", "value"])


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """An ablation table as speechlens.attention.ablation writes it, read back from TSV."""
    group = lambda name, kind, t, n, draw="": {  # noqa: E731
        "group": name,
        "kind": kind,
        "type": t,
        "draw": draw,
        "heads": [(1, h) for h in range(n)],
    }
    baseline = _scores(0.7)
    results = [(group("none", "none", "", 0), baseline)]
    results += [
        (group("diagonal", "type", "diagonal", 2), _scores(0.3)),
        (group("all_but_diagonal", "all_but_type", "diagonal", 6), _scores(0.5)),
        (group("global", "type", "global", 6), _scores(0.5)),
    ]
    for n in (2, 6):
        for draw in range(3):
            results.append((group(f"random_{n}_{draw}", "random", "", n, str(draw)), _scores(0.6)))
    ab = {"probe": "linear", "mode": "zero"}
    table = ablation_table(results, baseline, "phone", ab, {"corpus": "c", "model": "m"})
    path = tmp_path_factory.mktemp("ab") / "ablation.tsv"
    table.to_csv(path, sep="\t", index=False, float_format="%.6f")
    return read_ablation(path)


def _cell(table, group, layer, fold, column="delta", metric="macro_f1"):
    rows = table[
        (table["group"] == group)
        & (table["layer"] == layer)
        & (table["fold"] == fold)
        & (table["metric"] == metric)
    ]
    return float(rows[column].iloc[0])


def _bars(ax, label):
    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == label]
    return bars


def test_ablation_bars_are_the_fold_means_with_controls_beside(ablation):
    fig = plot_ablation(ablation, model="m")
    assert [ax.get_title() for ax in fig.axes] == [
        f"layer {layer}, un-ablated macro-F1 {_cell(ablation, 'none', layer, 'mean', 'value'):.2f}"
        for layer in LAYERS
    ]
    groups = ["diagonal", "all_but_diagonal", "global"]
    for ax, layer in zip(fig.axes, LAYERS, strict=True):
        bars = _bars(ax, "ablated group")
        heights = [p.get_height() for p in bars.patches]
        assert heights == pytest.approx([_cell(ablation, g, layer, "mean") for g in groups])
        segments = bars.errorbar.lines[2][0].get_segments()
        spread = [seg[1][1] - seg[0][1] for seg in segments]
        assert spread == pytest.approx([2 * _cell(ablation, g, layer, "std") for g in groups])
        colours = [to_hex(p.get_facecolor()) for p in bars.patches]
        assert colours == [TYPE_COLOURS[t].lower() for t in ("diagonal", "diagonal", "global")]
        assert [str(p.get_hatch() or "") for p in bars.patches] == ["", "///", ""]
        # controls: the mean over draws of the same number of heads (2, 6, 6)
        control = [p.get_height() for p in _bars(ax, "random control").patches]
        draws = {
            n: [_cell(ablation, f"random_{n}_{d}", layer, "mean") for d in range(3)] for n in (2, 6)
        }
        assert control == pytest.approx([np.mean(draws[n]) for n in (2, 6, 6)])
        dots = [ln for ln in ax.get_lines() if ln.get_label() == "random draw"]
        assert sorted(dots[0].get_ydata()) == pytest.approx(sorted(draws[2]))
        labels = [t.get_text().split("\np = ") for t in ax.get_xticklabels()]
        names = ["diagonal\n(2 heads)", "all but diagonal\n(6 heads)", "global\n(6 heads)"]
        assert [label[0] for label in labels] == names
        # the summary's empirical p-value of each group among its 3 draws, under its name
        summary = ablation_summary(ablation, layer, "macro_f1")
        assert [float(label[1]) for label in labels] == pytest.approx(
            summary["p_value"].round(2).tolist()
        )
        assert ax.get_ylabel() == "Δ macro-F1 (ablated − un-ablated)"
    _readable(fig)


def test_ablation_draws_the_chosen_metric_and_refuses_a_missing_one(ablation):
    fig = plot_ablation(ablation, metric="accuracy")
    heights = [p.get_height() for p in _bars(fig.axes[0], "ablated group").patches]
    assert heights[0] == pytest.approx(_cell(ablation, "diagonal", 2, "mean", metric="accuracy"))
    with pytest.raises(ValueError, match="no ablated group with metric 'ami'"):
        plot_ablation(ablation, metric="ami")


def test_ablation_without_controls_has_no_control_bars(ablation):
    fig = plot_ablation(ablation[ablation["kind"] != "random"])
    assert all(c.get_label() != "random control" for c in fig.axes[0].containers)
    _readable(fig)


def test_read_ablation_names_the_file(tmp_path, ablation):
    path = tmp_path / "ablation.tsv"
    ablation.drop(columns="delta").to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"ablation.tsv: .* lacks columns \['delta'\]"):
        read_ablation(path)
