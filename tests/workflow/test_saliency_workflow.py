"""Rule cross_attention_saliency in the tiny workflow run, and its config checks."""

from __future__ import annotations

import json

import pandas as pd
import xarray as xr
import yaml

from tests.conftest import REPO, run_snakemake

TINY = REPO / "tests" / "workflow" / "tiny.yaml"


def test_tiny_workflow_correlates_cross_attention_with_saliency(tiny_run):
    workdir, _ = tiny_run
    out = workdir / "results/tiny/whisper_tiny_en/attention"
    table = pd.read_csv(
        out / "cross_attention_saliency.tsv", sep="\t", dtype={"layer": str, "head": str}
    )
    utts = pd.read_csv(workdir / "resources/corpora/tiny/utterances.tsv", sep="\t")
    english = utts[utts["language"] == "en-us"]["utterance_id"].tolist()[:2]
    assert sorted(table["utterance_id"].unique()) == sorted(english)  # tr filtered out
    assert set(table["method"]) == {"gradient_x_input", "spes", "encoder_output"}
    # tiny.en: 4 decoder layers x 6 heads + 4 layer means + 1 global row per token and method
    per_token = table.groupby(["utterance_id", "token_index", "method"]).size()
    assert set(per_token) == {4 * 6 + 4 + 1}
    assert table["pearson_r"].between(-1, 1).mean() > 0.95
    summary = pd.read_csv(out / "cross_attention_saliency_summary.tsv", sep="\t")
    assert len(summary) == 3 * 7  # head and layer x (crossfit, in sample, mean), global
    assert set(summary["statistic"]) == {"best_crossfit", "best_in_sample", "mean", "global"}
    sidecar = json.loads((out / "cross_attention_saliency.json").read_text())
    # saliency.padding null: the model's own, here `trim` (tiny.yaml), recorded as approximate
    assert sidecar["padding"] == "trim" and "approximation" in sidecar["approximation"]
    example = xr.open_zarr(out / "cross_attention_saliency_example.zarr", consolidated=False)
    assert example.attrs["utterance_id"] == english[0]
    assert example["cross_attention"].dims == ("layer", "head", "token", "frame")
    assert (workdir / "logs/tiny/whisper_tiny_en/attention/cross_attention_saliency.log").exists()


def test_saliency_on_a_model_without_cross_attention_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    config = yaml.safe_load(TINY.read_text())
    config["saliency"]["models"] = ["logmel"]
    bad.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "config key saliency.models[0]" in proc.stdout and "not a whisper" in proc.stdout
