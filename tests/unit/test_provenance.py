"""The provenance page records each model's checksums, the code commit and the config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens import store
from speechlens.provenance import COLUMNS, git_state, write_provenance
from tests.conftest import REPO


def _store(path, *, layers, attrs):
    group = store.create(
        path,
        num_layers=layers,
        hidden_size=3,
        utterance_ids=["u1", "u2"],
        frame_counts=[2, 3],
        frame_times=[np.array([0.01, 0.03]), np.array([0.01, 0.03, 0.05])],
        attrs=attrs,
        dtype="float32",
    )
    store.write_block(group, 0, [np.ones((layers, 2, 3)), np.zeros((layers, 3, 3))])
    store.finish(group)
    return path


def test_provenance_table_and_page(tmp_path):
    whisper = _store(
        tmp_path / "whisper.zarr",
        layers=5,
        attrs={
            "family": "whisper",
            "adapter": "WhisperAdapter",
            "source": "resources/models/x",
            "init": "pretrained",
            "weights": {"model.safetensors": "ab" * 32},
            "frame_rate_hz": 50.0,
            "config_hash": "0123456789abcdef",
            "speechlens_version": "0.1.0",
            "torch_version": "2.13.0",
        },
    )
    logmel = _store(
        tmp_path / "logmel.zarr",
        layers=1,
        attrs={"family": "logmel", "weights": "none (fixed transform)", "frame_rate_hz": 100.0},
    )
    config = {"corpora": {"tiny": {"kind": "synthetic", "seed": 3}}, "cka": {"pairs": []}}
    table = write_provenance(
        {"whisper": whisper, "logmel": logmel},
        config,
        tmp_path / "out" / "provenance.tsv",
        tmp_path / "out" / "provenance.html",
        repo=REPO,
    )
    back = pd.read_csv(tmp_path / "out" / "provenance.tsv", sep="\t", keep_default_na=False)
    assert list(back.columns) == COLUMNS and len(back) == len(table) == 2
    row = back.set_index("model").loc["whisper"]
    assert row["weights_sha256"] == "model.safetensors=" + "ab" * 32
    assert (row["layers"], row["features"], row["utterances"]) == (5, 3, 2)
    assert row["config_hash"] == "0123456789abcdef" and row["store_dtype"] == "float32"
    assert back.set_index("model").loc["logmel", "weights_sha256"] == "none (fixed transform)"
    page = (tmp_path / "out" / "provenance.html").read_text()
    assert "ab" * 32 in page
    assert "kind: synthetic" in page and "seed: 3" in page  # the config, as YAML
    assert "scikit-learn" in page and "matplotlib" in page
    state = git_state(REPO)
    if state["commit"] is not None:  # the source tree may be an export without .git
        assert len(state["commit"]) == 40 and state["commit"] in page


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    assert git_state(None) == {"commit": None, "dirty": None}


def test_provenance_refuses_an_incomplete_store(tmp_path):
    path = tmp_path / "half.zarr"
    store.create(
        path,
        num_layers=2,
        hidden_size=3,
        utterance_ids=["u1"],
        frame_counts=[2],
        frame_times=[np.array([0.01, 0.03])],
        attrs={},
    )
    with pytest.raises(store.StoreError, match="half.zarr: incomplete"):
        write_provenance({"m": path}, {}, tmp_path / "p.tsv", tmp_path / "p.html")
    assert not (tmp_path / "p.tsv").exists()
