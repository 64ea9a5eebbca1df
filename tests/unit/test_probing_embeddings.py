"""Probing a speaker encoder's own utterance embeddings (``layer = embedding:<name>`` rows).

A store written as in ``test_store_embeddings`` (``store.create`` with ``embedding_names``,
``write_block`` with the embeddings), in shuffled utterance order (so an embedding read in
corpus order, or not at the samples' rows, is seen): 3 noise layers, and two embeddings,
``d_vector`` = the utterance's language as +-5 in every feature + noise 0.1 (it encodes
the label perfectly), and ``noise``. The d_vector rows score 1.0 with every probe while
the layers and the noise embedding stay near chance; the embedding rows are those of the
embedding probed as a layer on the same samples and folds; stores without embeddings and
frame tasks give no embedding rows.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from speechlens import probing, reduce, store
from speechlens.corpora.contract import read_tables
from speechlens.findings import stats
from speechlens.tables import read_table
from tests.unit.test_probing import FAST, HOP, _corpus

NAMES = ("d_vector", "noise")
EMBEDDING_SIZE, HIDDEN = 8, 12
LAYERS = ("0", "1", "2")
EMB = tuple(probing.embedding_layer(n) for n in NAMES)
TASK = {
    "level": "utterance",
    "source": "language",
    "group_by": "speaker",
    "folds": 3,
    "probes": ["linear", "knn", "mlp", "kmeans", "weighted_sum"],
    "control": {"by": ["speaker"]},
}


def _embeddings(utterances: pd.DataFrame, rng) -> np.ndarray:
    """(embedding_name, utterance, embedding_feature), corpus order."""
    lang = (utterances["language"] == "yy").to_numpy(int)
    sign = np.where(np.arange(EMBEDDING_SIZE) % 2, 1.0, -1.0)  # every feature is the label
    d_vector = np.where(lang[:, None] == 1, sign, -sign) * 5.0
    d_vector += rng.normal(0, 0.1, d_vector.shape)
    noise = rng.normal(0, 1, d_vector.shape)
    return np.stack([d_vector, noise]).astype(np.float32)


def _write(path, ids, hidden, times, embeddings, *, pooled_only: bool):
    """A complete store of the given utterances (store order); embeddings None: none."""
    names = NAMES if embeddings is not None else ()
    pool = "utterance" if pooled_only else "frame"
    reduction = {"layers": None, "pool": pool, "mode": pool, "tier": None, "frame_stride": 1}
    group = store.create(
        path,
        num_layers=3,
        hidden_size=HIDDEN,
        utterance_ids=ids,
        frame_counts=[h.shape[1] for h in hidden],
        frame_times=None if pooled_only else times,
        attrs={"corpus": "toy", "model": "spk_model", "reduction": reduction},
        dtype="float32",
        pooled_only=pooled_only,
        embedding_names=names,
        embedding_size=EMBEDDING_SIZE if names else 0,
    )
    pooled = np.stack([h.mean(axis=1) for h in hidden], axis=1)
    blocks = [None] * len(hidden) if pooled_only else hidden
    store.write_block(group, 0, blocks, pooled=pooled, embeddings=embeddings)
    store.finish(group)


@pytest.fixture(scope="module", params=["frame", "utterance"])
def corpus(request, tmp_path_factory):
    """Corpus tables, ``spk.zarr`` (with embeddings) and ``plain.zarr`` (same layers, none);
    a frame store or an utterance store (``pool: utterance``)."""
    root = tmp_path_factory.mktemp(f"emb_{request.param}")
    rng = np.random.default_rng(1)
    utterances, _ = _corpus(root, rng)
    order = rng.permutation(len(utterances))  # store order != corpus order
    emb = _embeddings(utterances, rng)[:, order]
    ids = utterances["utterance_id"].to_numpy()[order].tolist()
    durations = utterances["duration_s"].to_numpy()[order]
    times = [(np.arange(int(np.ceil(d / HOP))) + 0.5) * HOP for d in durations]
    hidden = [rng.normal(0, 1, (3, len(t), HIDDEN)).astype(np.float32) for t in times]
    pooled_only = request.param == "utterance"
    _write(root / "spk.zarr", ids, hidden, times, emb, pooled_only=pooled_only)
    _write(root / "plain.zarr", ids, hidden, times, None, pooled_only=pooled_only)
    return root


def _run(corpus, tmp_path, store_name="spk.zarr", task=TASK, name="language"):
    out, sidecar = tmp_path / f"{name}.tsv", tmp_path / f"{name}.json"
    probing.run_task(
        corpus / store_name,
        corpus / "utterances.tsv",
        corpus / "segments.tsv",
        task,
        FAST,
        out,
        sidecar=sidecar,
    )
    return read_table(probing.TABLE, out), json.loads(sidecar.read_text())


def _values(table, probe, metric, layer, fold="mean"):
    rows = table[(table.probe == probe) & (table.metric == metric) & (table.layer == layer)]
    if fold == "folds":
        return rows[~rows.fold.isin(["mean", "std"])].sort_values("fold")["value"].to_numpy()
    return float(rows[rows.fold == fold]["value"].iloc[0])


def test_an_embedding_that_encodes_the_label_scores_one_and_the_layers_do_not(corpus, tmp_path):
    table, meta = _run(corpus, tmp_path)
    assert set(table.layer) == {"all", *LAYERS, *EMB}
    assert meta["embeddings"] == list(EMB) == ["embedding:d_vector", "embedding:noise"]
    for probe in ("linear", "knn", "mlp"):
        assert list(_values(table, probe, "macro_f1", EMB[0], "folds")) == [1.0] * 3, probe
        assert _values(table, probe, "accuracy", EMB[0]) == 1.0
        for layer in (*LAYERS, EMB[1]):  # noise: near chance (0.5)
            assert _values(table, probe, "macro_f1", layer) < 0.8, (probe, layer)
    assert _values(table, "kmeans", "nmi", EMB[0]) == pytest.approx(1.0)
    assert max(_values(table, "kmeans", "nmi", layer) for layer in (*LAYERS, EMB[1])) < 0.3
    # control task (a random function of the speaker, unseen in test): selectivity per fold
    for probe in ("linear", "knn", "mlp"):
        real = _values(table, probe, "macro_f1", EMB[0], "folds")
        control = _values(table, f"{probe}_control", "macro_f1", EMB[0], "folds")
        selectivity = _values(table, f"{probe}_selectivity", "macro_f1", EMB[0], "folds")
        np.testing.assert_allclose(selectivity, real - control, atol=1e-6)
        assert selectivity.mean() > 0.2
    # iterative probes record their convergence for the embeddings too
    for probe in ("linear", "mlp", "linear_control"):
        assert len(_values(table, probe, "not_converged", EMB[0], "folds")) == 3
    assert "linear/embedding:d_vector" in meta["seconds"]
    # weighted_sum weighs layers only: its weights at the layers, its score at "all"
    ws = table[table.probe == "weighted_sum"]
    assert set(ws.layer) == {"all", *LAYERS}
    assert set(ws[ws.metric == "layer_weight"].layer) == set(LAYERS)
    # rows: per probe, all, layers by number, then embeddings by name
    linear = table[table.probe == "linear"].layer.drop_duplicates().tolist()
    assert linear == [*LAYERS, *EMB]
    # the findings' layer curves read the layers only
    assert list(stats.fold_curves(table, "linear", "macro_f1").columns) == [0, 1, 2]


def test_embedding_rows_are_the_embedding_probed_as_a_layer_on_the_same_folds(corpus):
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    task = probing.resolve_task(TASK | {"where": {"gender": "female"}})
    data, _ = probing.load_task(corpus / "spk.zarr", utterances, segments, task)
    assert list(data.embeddings) == list(NAMES) and len(data.y) == 30
    # the embedding rows are the samples' store rows (not the corpus order, not all rows)
    ds = store.open_store(corpus / "spk.zarr")
    sample = probing.draw_samples(ds, utterances, segments, task)
    stored = store.embeddings(ds).sel(embedding_name="d_vector").values
    np.testing.assert_array_equal(data.embeddings["d_vector"], stored[sample.index])
    yy = data.embeddings["d_vector"][:, 1] > 0
    np.testing.assert_array_equal(np.where(yy, "yy", "xx"), data.y)
    table, _ = probing.probe_arrays(data, task, FAST)
    # the layers' rows are those of the same data without embeddings
    bare = probing.TaskData(data.X, data.y, data.groups, data.control, test_fold=data.test_fold)
    alone, _ = probing.probe_arrays(bare, task, FAST)
    layered = table[~table.layer.astype(str).str.startswith("embedding:")]
    pd.testing.assert_frame_equal(layered.reset_index(drop=True), alone)
    # each embedding's rows are it probed as the only layer, same samples and folds
    for name in NAMES:
        X = data.embeddings[name][None]
        one = probing.TaskData(X, data.y, data.groups, data.control, test_fold=data.test_fold)
        ref, _ = probing.probe_arrays(one, task, FAST)
        ref = ref[(ref.layer == 0) & ~ref.probe.str.startswith("weighted_sum")]
        got = table[table.layer == probing.embedding_layer(name)]
        assert len(got) == len(ref) > 0
        merged = got.merge(ref, on=["probe", "fold", "metric"], suffixes=("", "_ref"))
        assert len(merged) == len(got)
        np.testing.assert_allclose(merged["value"], merged["value_ref"], atol=1e-12)


def test_a_store_without_embeddings_gives_no_embedding_rows(corpus, tmp_path):
    table, meta = _run(corpus, tmp_path, "plain.zarr")
    assert set(table.layer) == {"all", *LAYERS} and meta["embeddings"] == []
    with_emb, _ = _run(corpus, tmp_path / "e", "spk.zarr")
    same = with_emb[~with_emb.layer.str.startswith("embedding:")].reset_index(drop=True)
    pd.testing.assert_frame_equal(same, table)  # the layers' rows do not change


def test_frame_tasks_never_read_embeddings(corpus, tmp_path):
    task = {"level": "frame", "source": "phone", "probes": ["linear"], "folds": 3}
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    if store.mode(store.open_store(corpus / "spk.zarr")) == "utterance":
        with pytest.raises(reduce.ReductionError, match="spk_model"):  # no frames to probe
            probing.load_task(corpus / "spk.zarr", utterances, segments, task, "phone")
        return
    data, _ = probing.load_task(corpus / "spk.zarr", utterances, segments, task)
    assert data.embeddings == {}
    table, meta = _run(corpus, tmp_path, task=task, name="phone")
    assert set(table.layer) == {"all", *LAYERS} and meta["embeddings"] == []


def test_bad_embeddings_are_refused(corpus):
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    task = probing.resolve_task(TASK | {"probes": ["knn"], "control": False})
    data, _ = probing.load_task(corpus / "spk.zarr", utterances, segments, task)
    data.embeddings = {"d_vector": data.embeddings["d_vector"][:-1]}
    with pytest.raises(ValueError, match=r"embedding 'd_vector': shape \(59, 8\), expected \(60"):
        probing.probe_arrays(data, task, FAST)
    data.embeddings = {"d_vector": np.zeros((len(data.y), 8))}
    frame = probing.resolve_task({**TASK, "level": "frame", "probes": ["knn"], "control": False})
    with pytest.raises(ValueError, match="utterance-level tasks only"):
        probing.probe_arrays(data, frame, FAST)
