"""Rule train_tera in the tiny workflow: a TERA model trained on the tiny corpus' Turkish
utterances (4 steps), then extracted and probed like any model."""

from __future__ import annotations

import pandas as pd

from speechlens import store
from tests.conftest import run_snakemake
from tests.workflow.test_workflow import TINY

# `tiny_run` (one run of the tiny config): tests/workflow/conftest.py


def test_train_tera_writes_model_log_and_curve(tiny_run):
    workdir, _ = tiny_run
    folder = workdir / "resources" / "models" / "tera_tr"
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    log = pd.read_csv(folder / "training_log.tsv", sep="\t")
    assert log["step"].tolist() == [0, 2, 4]
    assert (log["heldout_mean_loss"] > 0).all() and log["heldout_loss"].notna().all()
    assert (folder / "loss_curve.png").stat().st_size > 5000
    assert (workdir / "logs" / "models" / "tera_tr.benchmark.tsv").exists()
    assert not (workdir / "resources" / "training" / "tera_tr" / "state.pt").exists()


def test_trained_tera_is_extracted_on_the_logmel_grid(tiny_run):
    workdir, _ = tiny_run
    tera = store.open_store(workdir / "results/tiny/tera_tr/features.zarr")
    store.validate(tera)
    logmel = store.open_store(workdir / "results/tiny/logmel/features.zarr")
    assert tera.sizes["layer"] == 3 and tera.sizes["feature"] == 32
    assert tera["frame_count"].values.tolist() == logmel["frame_count"].values.tolist()
    assert tera.attrs["family"] == "tera" and tera.attrs["training"]["language"] == "tr"
    assert (workdir / "results/tiny/tera_tr/probes/phone.tsv").exists()


def test_train_source_needs_family_tera(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("family: tera", "family: wav2vec2"))
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfile=bad, check=False)
    assert proc.returncode != 0
    assert "config key models.tera_tr.source" in proc.stdout and "family tera" in proc.stdout
