"""Cross-attention vs saliency figure: heatmaps of mean r, summary bars, aligned example."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

from speechlens.plotting.saliency import (
    BARS,
    CORRELATION_CMAP,
    plot_cross_attention_saliency,
    read_saliency_example,
    read_saliency_summary,
    read_saliency_table,
)
from speechlens.plotting.style import MIN_FONT_PT
from speechlens.saliency.correlate import SUMMARY, TABLE, correlation_rows, summarise
from speechlens.saliency.pipeline import APPROXIMATION, save_example
from speechlens.tables import write_table

RNG = np.random.default_rng(11)
LAYERS, HEADS, FRAMES = 3, 4, 30
TOKENS = [" Thick", " fog", " covered", "."]
METHODS = ("gradient_x_input", "encoder_output")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _utterance():
    n_tokens = len(TOKENS)
    cross = RNG.dirichlet(np.ones(FRAMES), size=(LAYERS, HEADS, n_tokens))
    maps = {m: RNG.uniform(0, 1, (n_tokens, FRAMES)) for m in METHODS}
    maps["gradient_x_input"] = 0.7 * cross[1, 2] + 0.3 * maps["gradient_x_input"] / FRAMES
    return cross, maps


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Table, summary and example as speechlens.saliency writes them, read back from disk."""
    folder = tmp_path_factory.mktemp("sal")
    tables, raw = [], {}
    for utt in ("u1", "u2"):
        cross, maps = _utterance()
        raw[utt] = (cross, maps)
        tables.append(correlation_rows(utt, TOKENS, cross, maps, FRAMES))
    table = pd.concat(tables, ignore_index=True)
    write_table(TABLE, table, folder / "t.tsv")
    write_table(SUMMARY, summarise(table), folder / "s.tsv")
    cross, maps = raw["u1"]
    n_mel = 2 * FRAMES - 1
    extra = {
        "mel": RNG.normal(size=(80, n_mel)),
        "input_map": RNG.normal(size=(len(TOKENS), 80, n_mel)),
        "logprob": np.full(len(TOKENS), -1.0),
    }
    forced = SimpleNamespace(tokens=TOKENS)
    utterance = {"utterance_id": "u1", "text": "Thick fog covered."}
    save_example(folder / "ex.zarr", utterance, forced, maps, cross, FRAMES, extra, {})
    return (
        read_saliency_table(folder / "t.tsv"),
        read_saliency_summary(folder / "s.tsv"),
        read_saliency_example(folder / "ex.zarr"),
        raw,
    )


def _independent_head_means(raw, method):
    """Mean over every token of both utterances of np.corrcoef(attention, saliency)."""
    r = np.zeros((LAYERS, HEADS))
    for cross, maps in raw.values():
        for layer in range(LAYERS):
            for head in range(HEADS):
                for k in range(len(TOKENS)):
                    r[layer, head] += np.corrcoef(cross[layer, head, k], maps[method][k])[0, 1]
    return r / (len(raw) * len(TOKENS))


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_heatmaps_show_mean_r_per_head_on_a_diverging_scale(outputs):
    table, summary, _, raw = outputs
    fig = plot_cross_attention_saliency(table, summary, model="m")
    heatmaps = _panels(fig)[: len(METHODS)]
    assert [ax.get_title() for ax in heatmaps] == ["gradient × input", "encoder output"]
    for ax, method in zip(heatmaps, METHODS, strict=True):
        (image,) = ax.get_images()
        np.testing.assert_allclose(
            image.get_array(), _independent_head_means(raw, method), atol=1e-5
        )
        assert (image.norm.vmin, image.norm.vmax) == (-1.0, 1.0)
        assert image.get_cmap().name.startswith(CORRELATION_CMAP)
        # the summary's in-sample best head is outlined
        best = summary[
            (summary["method"] == method)
            & (summary["level"] == "head")
            & (summary["statistic"] == "best_in_sample")
        ].iloc[0]
        (box,) = ax.patches
        assert box.get_xy() == (int(best["head"]) - 0.5, int(best["layer"]) - 0.5)
    # gradient x input was built from layer 1 head 2's attention: the best head
    assert np.unravel_index(
        np.argmax(heatmaps[0].get_images()[0].get_array()), (LAYERS, HEADS)
    ) == (1, 2)
    (cbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert cbar.get_ylabel() == "mean Pearson r"
    assert cbar.get_ylim() == pytest.approx((-1.0, 1.0))


def test_bars_are_the_summary_values(outputs):
    table, summary, _, _ = outputs
    fig = plot_cross_attention_saliency(table, summary)
    bars_ax = _panels(fig)[len(METHODS)]
    containers = [c for c in bars_ax.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in containers] == list(BARS.values())
    for container, (level, statistic) in zip(containers, BARS, strict=True):
        want = [
            summary[
                (summary["method"] == m)
                & (summary["level"] == level)
                & (summary["statistic"] == statistic)
            ]["mean_r"].iloc[0]
            for m in METHODS
        ]
        assert [p.get_height() for p in container.patches] == pytest.approx(want)


def test_example_aligns_spectrogram_saliency_and_attention_in_seconds(outputs):
    table, summary, example, raw = outputs
    fig = plot_cross_attention_saliency(table, summary, example)
    mel_ax, sal_ax, att_ax = _panels(fig)[len(METHODS) + 1 :]
    cross, maps = raw["u1"]
    np.testing.assert_allclose(
        mel_ax.get_images()[0].get_array(), example["mel"].values.astype(float)
    )
    sal = maps["gradient_x_input"]  # the example's first method
    want = sal / sal.max(axis=1, keepdims=True)
    np.testing.assert_allclose(sal_ax.get_images()[0].get_array(), want, atol=2e-3)  # float16
    att = cross.mean(axis=(0, 1))
    np.testing.assert_allclose(
        att_ax.get_images()[0].get_array(), att / att.max(axis=1, keepdims=True), atol=2e-3
    )
    # one time axis in seconds: shared, and every image spans the utterance, each column
    # centred on its frame's time (encoder frame j at 20 j ms, mel frame i at 10 i ms)
    assert sal_ax.get_shared_x_axes().joined(mel_ax, att_ax)
    for ax, half in ((mel_ax, 0.005), (sal_ax, 0.01), (att_ax, 0.01)):
        left, right = ax.get_images()[0].get_extent()[:2]
        n = ax.get_images()[0].get_array().shape[1]
        assert (left, right) == pytest.approx((-half, (n - 1) * 2 * half + half), abs=1e-6)
    assert att_ax.get_xlabel() == "time (s)"
    tokens = [t.strip() for t in TOKENS]
    for ax in (sal_ax, att_ax):
        assert [t.get_text() for t in ax.get_yticklabels()] == tokens
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(lambda a: hasattr(a, "get_fontsize"))]
    assert min(sizes) >= MIN_FONT_PT
    assert np.asarray(fig.canvas.buffer_rgba()).std() > 10
    assert fig.get_figwidth() <= 7.0
    for ax in fig.axes:
        assert ax.has_data() or ax.get_label() == "<colorbar>"
    with pytest.raises(ValueError, match="method 'spes' not in the example"):
        plot_cross_attention_saliency(table, summary, example, method="spes")


def test_readers_name_the_file_and_line(tmp_path, outputs):
    table, summary, _, _ = outputs
    path = tmp_path / "cross_attention_saliency.tsv"
    table.drop(columns="pearson_r").to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match=r"saliency.tsv: .*table lacks columns \['pearson_r'\]"):
        read_saliency_table(path)
    bad = table.astype({"pearson_r": object})
    bad.loc[3, "pearson_r"] = "high"
    bad.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match="saliency.tsv: line 5: pearson_r 'high'"):
        read_saliency_table(path)
    nan = table.astype({"pearson_r": object})
    nan.loc[3, "pearson_r"] = np.nan  # a constant map: NaN is a valid value
    nan.to_csv(path, sep="\t", index=False)
    assert np.isnan(read_saliency_table(path)["pearson_r"].iloc[3])
    with pytest.raises(ValueError, match="no single-head rows"):
        plot_cross_attention_saliency(table[table["head"] == "mean"], summary)


def test_trim_is_labelled_an_approximation(outputs):
    table, summary, example, _ = outputs
    fig = plot_cross_attention_saliency(table, summary, example, model="m")
    assert "approximation" not in fig.get_suptitle()
    approx = example.copy()
    approx.attrs = {**example.attrs, "approximation": APPROXIMATION}
    fig = plot_cross_attention_saliency(table, summary, approx, model="m")
    assert "approximation" in fig.get_suptitle()
