"""The attention rules in the tiny workflow: head types, example maps, head ablation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from speechlens.attention.head_types import load_examples
from tests.conftest import run_snakemake
from tests.workflow.conftest import TINY


def test_tiny_workflow_classifies_heads_of_models_with_attention(tiny_run):
    workdir, _ = tiny_run
    root = workdir / "results/tiny"
    table = pd.read_csv(root / "whisper_tiny_en/attention/head_types.tsv", sep="\t")
    assert len(table) == 4 * 6  # Whisper tiny.en: 4 blocks x 6 heads
    assert set(table["type"]) <= {"diagonal", "vertical", "global"}
    assert table["diagonality"].between(0, 1).all() and table["entropy"].gt(0).all()
    assert (table["padding_mass"].abs() < 1e-6).all()  # trim padding: rows sum to 1
    assert not (root / "logmel/attention").exists()  # no attention: no target
    maps = load_examples(root / "whisper_tiny_en/attention/examples.zarr")
    assert maps.shape == (1, 4, 6, 40, 40) and maps.dtype == np.float16
    assert (workdir / "logs/tiny/whisper_tiny_en/attention/head_types.benchmark.tsv").exists()


def test_tiny_workflow_ablates_head_groups_and_reprobes(tiny_run):
    workdir, _ = tiny_run
    folder = workdir / "results/tiny/whisper_tiny_en/attention"
    table = pd.read_csv(folder / "ablation.tsv", sep="\t", dtype={"fold": str, "draw": str})
    assert set(table["layer"]) == {2, 4} and set(table["mode"]) == {"zero"}
    assert set(table["fold"]) == {"0", "1", "mean", "std"}
    none = table[table["group"] == "none"]
    assert not none.empty and (none["delta"] == 0).all()
    sidecar = json.loads((folder / "ablation.json").read_text())
    kinds = {g["kind"] for g in sidecar["groups"]}
    assert "random" in kinds and "type" in kinds
    assert sidecar["utterances"] == 8 and sidecar["probed_layers"] == [2, 4]


def test_attention_models_must_have_attention(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_with_models(["logmel"]))
    proc = run_snakemake(tmp_path, "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "config key attention.models[0]: model 'logmel' (family logmel)" in proc.stdout


def _with_models(models: list[str]) -> str:
    text = TINY.read_text()
    return text.replace("attention:\n", f"attention:\n  models: {models}\n", 1)
