"""Head types and head ablation over a small synthetic corpus with a tiny random Whisper."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from speechlens import audio, probing
from speechlens.attention import settings as st
from speechlens.attention import summary
from speechlens.attention.ablation import ablation_groups, read_head_types, run_ablation
from speechlens.attention.head_types import (
    TABLE,
    corpus_items,
    load_examples,
    run_head_types,
)
from speechlens.attention.stats import TYPES, HeadStats
from speechlens.corpora import synthetic
from speechlens.extract import extract_corpus
from speechlens.models import ADAPTERS
from speechlens.tables import read_table
from tests.tiny_models import save_tiny

CORPUS = {
    "kind": "synthetic",
    "languages": ["en-us"],
    "speakers_per_language": 4,
    "sentences_per_speaker": 2,
    "seed": 1,
}
FEATURES = {
    "dtype": "float16",
    "chunk_frames": 256,
    "block_frames": 300,
    "batch_seconds": 8.0,
    "shards": 1,
}
TASK = {"level": "frame", "source": "phone", "group_by": "speaker", "folds": 2, "max_per_class": 20}
ATTRS = {"corpus": "c", "model": "m"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("attn_corpus") / "c"
    synthetic.build(CORPUS, root, threads=1)
    return root


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return save_tiny("whisper", tmp_path_factory.mktemp("attn_models") / "whisper")


def whisper(path, padding="pad30"):
    adapter = ADAPTERS["whisper"](str(path), padding=padding)
    adapter.load()
    return adapter


@pytest.fixture(scope="module")
def head_types(corpus, whisper_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("attn_out")
    settings = {"examples": 2, "example_frames": 400, "batch_seconds": 6.0}
    adapter = whisper(whisper_dir)
    table = run_head_types(
        adapter,
        corpus / "utterances.tsv",
        out / "head_types.tsv",
        out / "examples.zarr",
        out_json=out / "head_types.json",
        settings=settings,
        attrs=ATTRS,
    )
    return out, table, adapter, settings


def test_head_table_is_tidy_and_complete(head_types):
    out, table, adapter, _ = head_types
    written = read_table(TABLE, out / "head_types.tsv")
    assert list(written.columns) == list(TABLE.columns)
    assert {"diagonality", "entropy_norm", "yang_global", "yang_diagonal"} <= set(TABLE.columns)
    assert set(written["classification"]) == {"threshold"}
    assert written["entropy_norm"].between(0, 1).all()
    assert len(written) == (adapter.num_layers - 1) * adapter.num_heads == 4
    assert sorted(set(written["layer"])) == [1, 2] and set(written["type"]) <= set(TYPES)
    assert written[["diagonality", "verticality"]].apply(lambda c: c.between(0, 1)).all().all()
    # pad30: the valid keys get part of each row; the rest went to padding
    assert written["padding_mass"].between(0.01, 1).all()
    sidecar = json.loads((out / "head_types.json").read_text())
    assert sidecar["utterances"] == 8 and sidecar["settings"]["diagonal_ms"] == 60
    assert sidecar["provenance"]["family"] == "whisper"


def test_corpus_table_equals_stats_of_every_utterance_one_by_one(head_types, corpus):
    """Batched, streamed statistics over the corpus == each utterance's maps fed alone."""
    _, table, adapter, settings = head_types
    s = st.resolve(settings)
    acc = HeadStats(
        adapter.num_layers - 1,
        adapter.num_heads,
        diagonal_ms=s["diagonal_ms"],
        vertical_fraction=s["vertical_fraction"],
        frame_rate_hz=adapter.frame_rate_hz,
    )
    for item in corpus_items(adapter, corpus / "utterances.tsv", None, 0):
        wave = audio.load(item.path, sample_rate=16000)[0]
        _, (attn,) = adapter.forward([wave], output_attentions=True)
        acc.update(attn)
    ref = acc.table(s["thresholds"])
    for key in (
        "diagonality",
        "verticality",
        "entropy",
        "distance_ms",
        "padding_mass",
        "yang_global",
    ):
        np.testing.assert_allclose(table[key], ref[key], rtol=1e-5, atol=1e-7)
    assert table["type"].tolist() == ref["type"].tolist()
    assert table["queries"].tolist() == ref["queries"].tolist()


def test_example_maps_are_renormalised_fp16_crops(head_types):
    out, _, adapter, _ = head_types
    maps = load_examples(out / "examples.zarr")
    assert maps.dims == ("example", "layer", "head", "query", "key")
    assert maps.dtype == np.float16 and maps.shape == (2, 2, 2, 400, 400)
    for e in range(2):
        n = int(maps["frame_count"][e])
        assert 50 < n < 400
        block = maps.values[e, :, :, :n, :n].astype(np.float64)
        np.testing.assert_allclose(block.sum(axis=-1), 1.0, atol=5e-3)  # padding excluded
        assert np.isnan(maps.values[e, :, :, n:, :]).all()


def test_model_without_attention_is_an_error(corpus, tmp_path):
    logmel = ADAPTERS["logmel"]()
    with pytest.raises(st.AttentionError, match="'logmel' has no self-attention heads"):
        run_head_types(
            logmel,
            corpus / "utterances.tsv",
            tmp_path / "t.tsv",
            tmp_path / "e.zarr",
            out_json=tmp_path / "t.json",
            settings={},
            attrs=ATTRS,
        )
    assert not (tmp_path / "t.tsv").exists()


def test_groups_cover_types_complements_and_seeded_random_controls():
    types = pd.DataFrame(
        {
            "layer": [1, 1, 2, 2],
            "head": [0, 1, 0, 1],
            "type": ["diagonal", "global", "global", "global"],
        }
    )
    groups = ablation_groups(types, draws=2, seed=0)
    names = [g["group"] for g in groups]
    assert names[:4] == ["diagonal", "all_but_diagonal", "global", "all_but_global"]
    by_name = {g["group"]: g for g in groups}
    assert by_name["diagonal"]["heads"] == [(1, 0)]
    assert by_name["all_but_diagonal"]["heads"] == [(1, 1), (2, 0), (2, 1)]
    randoms = [g for g in groups if g["kind"] == "random"]
    assert sorted({len(g["heads"]) for g in randoms}) == [1, 3]
    assert len(randoms) == 2 * 2
    assert groups == ablation_groups(types, draws=2, seed=0)
    every = {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert all(
        set(g["heads"]) <= every and len(set(g["heads"])) == len(g["heads"]) for g in randoms
    )
    # a size's draws do not depend on which other sizes exist
    more = ablation_groups(types.assign(type=["diagonal", "vertical", "global", "global"]), 2, 0)
    more_random = {g["group"]: g["heads"] for g in more if g["kind"] == "random"}
    assert sorted(more_random) == sorted([f"random_{n}_{d}" for n in (1, 2, 3) for d in (0, 1)])
    assert all(more_random[g["group"]] == g["heads"] for g in randoms)
    assert ablation_groups(types, draws=2, seed=1) != groups


def test_head_table_of_another_model_is_named(tmp_path):
    path = tmp_path / "head_types.tsv"
    pd.DataFrame({"layer": [1], "head": [0], "type": ["global"]}).to_csv(
        path, sep="\t", index=False
    )
    with pytest.raises(st.AttentionError, match="head_types.tsv: rows do not cover"):
        read_head_types(path, 2, 2)


@pytest.fixture(scope="module")
def ablation(head_types, corpus, whisper_dir):
    out, _, _, _ = head_types
    adapter = whisper(whisper_dir, padding="trim")
    settings = {"ablation": {"layers": [1, -1], "random_draws": 2, "max_utterances": None}}
    table = run_ablation(
        adapter,
        corpus / "utterances.tsv",
        corpus / "segments.tsv",
        out / "head_types.tsv",
        out / "ablation.tsv",
        out_json=out / "ablation.json",
        out_summary=out / "ablation_summary.tsv",
        settings=settings,
        task=TASK,
        task_name="phone",
        probe_settings={},
        features=FEATURES,
        attrs=ATTRS,
    )
    return out, table, adapter


def test_ablation_table_has_deltas_per_fold_and_their_spread(ablation):
    out, table, _ = ablation
    written = pd.read_csv(out / "ablation.tsv", sep="\t", dtype={"fold": str, "draw": str})
    assert list(written.columns[:6]) == ["corpus", "model", "task", "probe", "mode", "group"]
    assert set(written["layer"]) == {1, 2}
    assert set(written["fold"]) == {"0", "1", "mean", "std"}
    assert set(written["metric"]) == {"accuracy", "macro_f1"}
    none = written[written["group"] == "none"]
    assert (none["delta"] == 0).all() and (none["value"] == none["baseline"]).all()
    sidecar = json.loads((out / "ablation.json").read_text())
    groups = {g["group"]: g for g in sidecar["groups"]}
    assert set(written["group"]) == {"none", *groups}
    assert any(g["kind"] == "random" for g in groups.values())
    # every group is scored against the same baseline (same samples and folds)
    folds = written[~written["fold"].isin(["mean", "std"])]
    per_key = folds.groupby(["layer", "fold", "metric"])["baseline"].nunique()
    assert (per_key == 1).all()
    # groups with the same heads (all_but_x == y with two types) share one extraction
    for g in sidecar["groups"]:
        twin = next(h for h in sidecar["groups"] if h["heads"] == g["heads"])
        assert g.get("same_heads_as", g["group"]) == twin["group"]
        a = folds[folds["group"] == g["group"]]["value"].to_numpy()
        b = folds[folds["group"] == twin["group"]]["value"].to_numpy()
        np.testing.assert_array_equal(a, b)
    # ablating heads changes the features and the scores of some group
    assert folds[folds["group"] != "none"]["delta"].abs().max() > 0
    row = written[(written["fold"] == "mean") & (written["metric"] == "accuracy")].iloc[-1]
    group_rows = folds[(folds["group"] == row["group"]) & (folds["layer"] == row["layer"])]
    acc = group_rows[group_rows["metric"] == "accuracy"]
    assert row["delta"] == pytest.approx(acc["delta"].mean(), abs=2e-6)


def test_ablation_baseline_equals_the_workflow_probe_on_the_same_folds(ablation, corpus, tmp_path):
    """With all utterances, the un-ablated scores are those of the probe rule's table."""
    out, table, adapter = ablation
    features = {**FEATURES, "shards": 1}
    store_path = tmp_path / "features.zarr"
    extract_corpus(adapter, corpus / "utterances.tsv", store_path, settings=features, attrs=ATTRS)
    probe_tsv = tmp_path / "phone.tsv"
    probing.run_task(
        store_path,
        corpus / "utterances.tsv",
        corpus / "segments.tsv",
        {**TASK, "probes": ["linear"]},
        {},
        probe_tsv,
    )
    ref = pd.read_csv(probe_tsv, sep="\t", dtype={"fold": str, "layer": str})
    ref = ref[(ref["probe"] == "linear") & ~ref["fold"].isin(["mean", "std"])]
    base = table[(table["group"] == "none") & ~table["fold"].isin(["mean", "std"])]
    for row in base.itertuples():
        match = ref[
            (ref["layer"] == str(row.layer))
            & (ref["fold"] == row.fold)
            & (ref["metric"] == row.metric)
        ]
        assert match["value"].iloc[0] == pytest.approx(row.value, abs=1e-6)


def test_mean_mode_is_recorded_and_differs_from_zeroing(ablation, corpus, tmp_path):
    out, zero, adapter = ablation
    settings = {
        "ablation": {"layers": [1, -1], "random_draws": 0, "max_utterances": None, "mode": "mean"}
    }
    table = run_ablation(
        adapter,
        corpus / "utterances.tsv",
        corpus / "segments.tsv",
        out / "head_types.tsv",
        tmp_path / "ablation.tsv",
        out_json=tmp_path / "ablation.json",
        out_summary=tmp_path / "ablation_summary.tsv",
        settings=settings,
        task=TASK,
        task_name="phone",
        probe_settings={},
        features=FEATURES,
        attrs=ATTRS,
    )
    assert set(table["mode"]) == {"mean"} and set(zero["mode"]) == {"zero"}
    assert (
        json.loads((tmp_path / "ablation.json").read_text())["settings"]["ablation"]["mode"]
        == "mean"
    )
    keys = ["group", "layer", "fold", "metric"]
    both = table.merge(zero, on=keys, suffixes=("_mean", "_zero"))
    assert len(both) == len(table)  # same groups (types) and folds
    np.testing.assert_array_equal(both["baseline_mean"], both["baseline_zero"])
    ablated = both[both["group"] != "none"]
    assert (ablated["value_mean"] != ablated["value_zero"]).any()


def test_ablation_summary_ranks_each_typed_group_among_its_random_controls(ablation):
    """Issue 19: the summary gives each typed group's drop a rank and an empirical p-value
    among the random draws of its size, computed from the table's fold means."""
    out, table, _ = ablation
    written = read_table(summary.TABLE, out / "ablation_summary.tsv")
    assert list(written.columns) == list(summary.TABLE.columns)
    mean = table[table["fold"] == "mean"]
    typed = mean[mean["kind"].isin(["type", "all_but_type"])]
    assert len(written) == len(typed)
    for row in written.itertuples():
        group = typed[
            (typed["group"] == row.group)
            & (typed["layer"] == row.layer)
            & (typed["metric"] == row.metric)
        ]
        assert row.delta_mean == pytest.approx(group["delta"].iloc[0], abs=1e-5)
        controls = mean[
            (mean["kind"] == "random")
            & (mean["n_heads"] == row.n_heads)
            & (mean["layer"] == row.layer)
            & (mean["metric"] == row.metric)
        ]["delta"].to_numpy()
        assert row.control_draws == len(controls) == 2
        below = int((controls <= group["delta"].iloc[0]).sum())
        assert row.rank == 1 + below
        assert row.p_value == pytest.approx((1 + below) / 3)
