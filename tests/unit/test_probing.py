"""Cross-validated probing: no leakage, honest scores, control task, determinism, the table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import PredefinedSplit

from speechlens import probing, store
from speechlens.corpora.contract import read_tables
from speechlens.probes.weighted_sum import WeightedSumClassifier

PHONES = ["a", "e", "i", "o", "u", "sil"]
HOP = 0.02
FAST = {"mlp_max_iter": 60, "weighted_sum_epochs": 30, "weighted_sum_batch_size": 256}


def _corpus(root, rng):
    """2 languages x 6 speakers (3 female, 3 male) x 5 utterances of 14 phones (40-100 ms);
    a word tier groups them 3, 4, 3, 4 (the word label spells its phones)."""
    utts, segs = [], []
    for lang in ("xx", "yy"):
        for s in range(6):
            speaker = f"{lang}_s{s}"
            for k in range(5):
                uid = f"{speaker}_{k}"
                t = 0.0
                phones = []
                for _ in range(14):
                    d = round(float(rng.uniform(0.04, 0.1)), 3)
                    phones.append((uid, "phone", t, round(t + d, 3), str(rng.choice(PHONES))))
                    t = round(t + d, 3)
                segs += phones
                first = 0
                for n in (3, 4, 3, 4):
                    word = phones[first : first + n]
                    label = "".join(p[4] for p in word)
                    segs.append((uid, "word", word[0][2], word[-1][3], label))
                    first += n
                gender = "female" if s < 3 else "male"
                utts.append((uid, f"audio/{uid}.wav", speaker, lang, gender, "", t, 16000))
    cols = ["utterance_id", "audio", "speaker", "language", "gender", "text", "duration_s"]
    utterances = pd.DataFrame(utts, columns=[*cols, "sample_rate"])
    segments = pd.DataFrame(segs, columns=["utterance_id", "tier", "start_s", "end_s", "label"])
    utterances.to_csv(root / "utterances.tsv", sep="\t", index=False)
    segments.to_csv(root / "segments.tsv", sep="\t", index=False)
    return utterances, segments


def _features(utterances, segments, rng, dim=12):
    """Per utterance (layer, frame, feature) on a 20 ms grid: layer 0 noise, layer 1 the
    phone (class means + noise), layer 2 the speaker (speaker vector + noise)."""
    means = {p: rng.normal(0, 3, dim) for p in PHONES}
    speakers = {s: rng.normal(0, 3, dim) for s in utterances["speaker"]}
    hidden, times = [], []
    for row in utterances.itertuples():
        t = (np.arange(int(np.ceil(row.duration_s / HOP))) + 0.5) * HOP
        seg = segments[(segments["utterance_id"] == row.utterance_id) & (segments.tier == "phone")]
        idx = np.searchsorted(seg["start_s"].to_numpy(), t, side="right") - 1
        phone = np.stack([means[p] for p in seg["label"].to_numpy()[idx]])
        h = rng.normal(0, 1, (3, len(t), dim))
        h[1] += phone
        h[2] += speakers[row.speaker]
        hidden.append(h.astype(np.float32))
        times.append(t)
    return hidden, times


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus folder and its feature store (3 layers x 12 features, float32)."""
    root = tmp_path_factory.mktemp("probe_corpus")
    rng = np.random.default_rng(0)
    utterances, segments = _corpus(root, rng)
    hidden, times = _features(utterances, segments, rng)
    group = store.create(
        root / "features.zarr",
        num_layers=3,
        hidden_size=12,
        utterance_ids=utterances["utterance_id"].tolist(),
        frame_counts=[h.shape[1] for h in hidden],
        frame_times=times,
        attrs={"corpus": "toy", "model": "toy_model", "config_hash": "abc"},
        dtype="float32",
        chunk_frames=256,
    )
    store.write_block(group, 0, hidden)
    store.finish(group)
    return root


def _load(corpus, **task):
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    task = probing.resolve_task(task)
    data, _ = probing.load_task(corpus / "features.zarr", utterances, segments, task)
    return data, task, utterances


def _run(corpus, tmp_path, name, task, threads=1):
    out, sidecar = tmp_path / f"{name}.tsv", tmp_path / f"{name}.provenance.json"
    probing.run_task(
        corpus / "features.zarr",
        corpus / "utterances.tsv",
        corpus / "segments.tsv",
        task,
        FAST,
        out,
        sidecar=sidecar,
        threads=threads,
    )
    table = pd.read_csv(out, sep="\t", dtype={"layer": str, "fold": str})
    return table, json.loads(sidecar.read_text()), out


def _mean(table, probe, metric, layer):
    sel = table[(table.probe == probe) & (table.metric == metric) & (table.fold == "mean")]
    return float(sel[sel.layer == str(layer)]["value"].iloc[0])


# ----------------------------------------------------------------------------- leakage


def _folds(picked):
    return list(PredefinedSplit(picked.test_fold).split())


@pytest.mark.parametrize("group_by", ["speaker", None])
def test_frame_folds_never_split_a_group_or_an_utterance(corpus, group_by):
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    task = probing.resolve_task({"level": "frame", "source": "phone", "group_by": group_by})
    ds = store.open_store(corpus / "features.zarr")
    picked = probing.frame_samples(ds, utterances, segments, task)
    # the utterance and speaker of every probed frame, from the store's own coords
    ids = np.asarray([str(u) for u in ds["utterance_id"].values])
    utt_of = ids[ds["utterance_index"].values[picked.index]]
    speaker_of = utterances.set_index("utterance_id").loc[utt_of, "speaker"].to_numpy()
    splits = _folds(picked)
    assert len(splits) == 5
    covered = np.zeros(len(utt_of), dtype=int)
    for train, test in splits:
        assert not set(utt_of[train]) & set(utt_of[test])
        if group_by == "speaker":
            assert not set(speaker_of[train]) & set(speaker_of[test])
        assert len(set(picked.label[test])) > 1
        covered[test] += 1
    assert (covered == 1).all()


def test_models_with_other_frame_grids_share_folds_and_segments(corpus, tmp_path):
    """A 10 ms store of the same corpus: same speaker folds, same capped segments."""
    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    times = [(np.arange(int(d / 0.01)) + 0.5) * 0.01 for d in utterances["duration_s"]]
    group = store.create(
        tmp_path / "fine.zarr",
        num_layers=1,
        hidden_size=2,
        utterance_ids=utterances["utterance_id"].tolist(),
        frame_counts=[len(t) for t in times],
        frame_times=times,
        attrs={},
        dtype="float32",
    )
    store.write_block(group, 0, [np.zeros((1, len(t), 2), np.float32) for t in times])
    store.finish(group)
    task = probing.resolve_task(
        {"level": "frame", "source": "phone", "group_by": "speaker", "max_per_class": 60}
    )
    picks = [
        probing.frame_samples(store.open_store(path), utterances, segments, task)
        for path in (corpus / "features.zarr", tmp_path / "fine.zarr")
    ]
    fold_of = [dict(zip(p.group, p.test_fold, strict=True)) for p in picks]
    assert fold_of[0] == fold_of[1]
    assert picks[0].unit_counts == picks[1].unit_counts
    assert len(picks[0].unit) == len(picks[1].unit) == 6 * 60  # one frame per segment
    assert set(picks[0].unit) == set(picks[1].unit)


def test_speaker_task_splits_utterances_not_speakers(corpus):
    data, task, utterances = _load(corpus, level="utterance", source="speaker", group_by=None)
    assert data.groups is None and len(data.y) == 60
    splits = list(PredefinedSplit(data.test_fold).split())
    for train, test in splits:
        assert not set(train) & set(test)  # no utterance on both sides
        assert set(data.y[test]) <= set(data.y[train])  # test speakers seen in training
        assert len(test) == 12 and len(set(data.y[test])) == 12  # one per speaker


def test_utterance_task_grouped_by_speaker(corpus):
    data, task, utterances = _load(corpus, level="utterance", source="language", group_by="speaker")
    splits = list(PredefinedSplit(data.test_fold).split())
    assert len(splits) == 5
    for train, test in splits:
        assert not set(data.groups[train]) & set(data.groups[test])


# ----------------------------------------------------------------------------- honesty


def _clusters(n, k, dim, rng, sep):
    y = np.repeat(np.arange(k), n // k)
    centres = rng.normal(0, sep, (k, dim))
    X = centres[y] + rng.normal(0, 1, (len(y), dim))
    return X.astype(np.float32), np.asarray([f"c{v}" for v in y])


def test_separable_features_score_about_one():
    rng = np.random.default_rng(1)
    X, y = _clusters(600, 4, 8, rng, sep=12)
    groups = np.asarray([f"g{i % 30}" for i in range(len(y))])
    data = probing.TaskData(np.stack([X, X]), y, groups)
    task = {"level": "frame", "source": "x", "probes": list(probing.PROBES)}
    table, _ = probing.probe_arrays(data, task, FAST)
    mean = table[table.fold == "mean"].set_index(["probe", "layer", "metric"])["value"]
    for probe in ("linear", "knn", "mlp"):
        assert mean[(probe, 0, "accuracy")] > 0.98, probe
    assert mean[("weighted_sum", "all", "accuracy")] > 0.98
    assert mean[("kmeans", 0, "ami")] > 0.9


def test_independent_features_score_at_chance():
    rng = np.random.default_rng(2)
    k, n = 4, 800
    y = np.asarray([f"c{v}" for v in np.repeat(np.arange(k), n // k)])
    groups = np.asarray([f"g{i}" for i in rng.permutation(n) % 40])
    X = rng.normal(0, 1, (1, n, 10)).astype(np.float32)
    task = {"level": "frame", "source": "x", "probes": ["linear", "knn", "mlp", "kmeans"]}
    table, info = probing.probe_arrays(probing.TaskData(X, y, groups), task, FAST)
    mean = table[table.fold == "mean"].set_index(["probe", "layer", "metric"])["value"]
    # every sample is tested once: under independence the pooled accuracy is a binomial
    # proportion around 1/k; allow 4 standard errors of it (derived from the fold sizes)
    n_test = sum(f["n_test"] for f in info["folds"])
    tol = 4 * np.sqrt((1 / k) * (1 - 1 / k) / n_test)
    for probe in ("linear", "knn", "mlp"):
        assert abs(mean[(probe, 0, "accuracy")] - 1 / k) < tol, probe
    assert abs(mean[("kmeans", 0, "ami")]) < 0.02
    assert abs(mean[("chance", "all", "accuracy")] - 1 / k) < tol


def test_weighted_sum_weights_sum_to_one_and_find_the_informative_layer():
    rng = np.random.default_rng(3)
    X, y = _clusters(900, 3, 16, rng, sep=3)
    layers = np.stack([rng.normal(0, 1, X.shape), X, rng.normal(0, 1, X.shape)], axis=1)
    est = WeightedSumClassifier(epochs=30, batch_size=128, lr=0.01).fit(layers, y)
    assert est.layer_weights_.sum() == pytest.approx(1.0)
    assert est.layer_weights_.argmax() == 1 and est.layer_weights_[1] > 0.5
    assert (est.predict(layers) == y).mean() > 0.9


def test_weighted_sum_scores_are_the_softmax_mix_of_normalised_layers():
    """Scores = (sum_l w_l LN((X_l - mean_l) / sd_l)) W^T + b on (n, layer, feature) input:
    a layer/sample mix-up of the layer-major layout would score other vectors."""
    rng = np.random.default_rng(4)
    layers = rng.normal(0, 1, (60, 3, 5)) * [[1.0], [10.0], [0.1]] + [[0.0], [5.0], [-2.0]]
    y = rng.integers(0, 3, 60)
    est = WeightedSumClassifier(epochs=5, batch_size=16, min_steps=10).fit(layers, y)
    z = (layers - layers.mean(0)) / (layers.std(0) + 1e-6)
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)
    mixed = np.einsum("nld,l->nd", z, est.layer_weights_)
    expected = mixed @ est.coef_.T + est.intercept_
    np.testing.assert_allclose(est.decision_function(layers), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(est.layer_weights_, 1 / 3)  # the weights were trained


# ----------------------------------------------------------------------------- the table


def test_phone_table_with_control_selectivity_and_provenance(corpus, tmp_path):
    task = {"level": "frame", "source": "phone", "group_by": "speaker", "control": True}
    task |= {"max_per_class": 120, "probes": list(probing.PROBES)}
    table, meta, _ = _run(corpus, tmp_path, "phone", task)
    assert list(table.columns) == probing.COLUMNS
    assert set(table["task"]) == {"phone"} and set(table["model"]) == {"toy_model"}
    assert set(table["fold"]) == {"0", "1", "2", "3", "4", "mean", "std"}
    # the phone lives in layer 1 only
    assert _mean(table, "linear", "accuracy", 1) > 0.9
    assert _mean(table, "linear", "accuracy", 0) < 0.35
    assert _mean(table, "chance", "accuracy", "all") < 0.3
    assert {"majority", "knn_control", "mlp_control", "weighted_sum_control"} <= set(table.probe)
    assert "kmeans_control" not in set(table.probe)
    # selectivity = real - control, fold by fold
    per_fold = table[~table.fold.isin(["mean", "std"])].set_index(
        ["probe", "layer", "fold", "metric"]
    )["value"]
    for (probe, layer, fold, metric), value in per_fold.items():
        if probe.endswith("_selectivity"):
            base = probe.removesuffix("_selectivity")
            expected = (
                per_fold[(base, layer, fold, metric)]
                - per_fold[(base + "_control", layer, fold, metric)]
            )
            assert value == pytest.approx(expected, abs=2e-6)
    weights = table[(table.metric == "layer_weight") & (table.probe == "weighted_sum")]
    folds = weights[~weights.fold.isin(["mean", "std"])].groupby("fold")["value"].sum()
    assert np.allclose(folds, 1.0, atol=1e-5)
    w_mean = weights[weights.fold == "mean"].set_index("layer")["value"]
    assert w_mean.idxmax() == "1"
    # provenance sidecar
    assert meta["task_settings"]["max_per_class"] == 120 and meta["max_per_class"] == 120
    assert max(meta["samples_per_class"].values()) <= 120
    assert meta["store_attrs"]["config_hash"] == "abc"
    assert {"scikit-learn", "torch", "speechlens"} <= set(meta["versions"])
    assert len(meta["folds"]) == 5
    assert meta["control"]["by"] == ["word"] and meta["task_settings"]["control"] == {
        "by": ["word"]
    }
    assert set(meta["control"]["class_distribution"]) == set(meta["samples_per_class"])
    assert meta["probe_settings"]["mlp_max_iter"] == 60
    # iterative probes count their fits that stopped at the iteration limit, per layer
    counts = table[table.metric == "not_converged"]
    assert set(counts.probe) == {"linear", "mlp", "linear_control", "mlp_control"}
    assert set(counts.layer) == {"0", "1", "2"} and counts["value"].between(0, 1).all()
    assert not {"linear_selectivity"} & set(counts.probe)


def test_control_labels_are_seeded_and_shared_across_loads(corpus):
    """(The definition is tested in test_probing_control.py.)"""
    data, _, _ = _load(corpus, level="frame", source="phone", group_by="speaker", control=True)
    again, _, _ = _load(corpus, level="frame", source="phone", group_by="speaker", control=True)
    assert (again.control == data.control).all()
    other, _, _ = _load(
        corpus, level="frame", source="phone", group_by="speaker", control=True, seed=1
    )
    assert set(data.control) <= set(data.y) and not np.array_equal(other.control, data.control)


def test_same_inputs_and_seed_give_the_same_table(corpus, tmp_path):
    task = {"level": "frame", "source": "language", "group_by": "speaker", "silence": "drop"}
    task |= {"max_per_class": 150, "probes": ["linear", "mlp", "weighted_sum"]}
    _, _, first = _run(corpus, tmp_path / "a", "language_frame", task, threads=1)
    _, _, second = _run(corpus, tmp_path / "b", "language_frame", task, threads=2)
    assert first.read_bytes() == second.read_bytes()
    _, meta, _ = _run(corpus, tmp_path / "c", "language_frame", task | {"seed": 1})
    assert first.read_bytes() != (tmp_path / "c" / "language_frame.tsv").read_bytes()
    assert meta["task_settings"]["seed"] == 1


def test_utterance_level_tasks(corpus, tmp_path):
    task = {"level": "utterance", "source": "gender", "group_by": "speaker"}
    table, meta, _ = _run(corpus, tmp_path, "gender", task | {"probes": ["linear", "knn"]})
    assert meta["samples"] == 60 and meta["samples_per_class"] == {"female": 30, "male": 30}
    assert set(table.level) == {"utterance"}
    speaker, meta, _ = _run(
        corpus,
        tmp_path,
        "speaker",
        {"level": "utterance", "source": "speaker", "probes": ["linear"]},
    )
    assert _mean(speaker, "linear", "accuracy", 2) > 0.9  # the speaker vector is in layer 2
    assert _mean(speaker, "chance", "accuracy", "all") == pytest.approx(1 / 12, abs=1e-6)
    assert meta["folds"][0]["test_groups"] is None


def test_bad_tasks_are_named():
    with pytest.raises(probing.ProbingError, match="level"):
        probing.resolve_task({"level": "word", "source": "phone"})
    with pytest.raises(probing.ProbingError, match="probes"):
        probing.resolve_task({"level": "frame", "source": "phone", "probes": ["svm"]})
    with pytest.raises(probing.ProbingError, match="unknown task keys"):
        probing.resolve_task({"level": "frame", "source": "phone", "foldz": 3})


def test_unknown_source_is_named(corpus):
    with pytest.raises(probing.ProbingError, match="accent"):
        _load(corpus, level="frame", source="accent")
    with pytest.raises(probing.ProbingError, match="accent"):
        _load(corpus, level="utterance", source="accent")


# ----------------------------------------------------------------------------- convergence


def test_linear_fits_at_the_iteration_limit_are_counted_per_layer():
    rng = np.random.default_rng(4)
    X, y = _clusters(400, 4, 8, rng, sep=1)
    groups = np.asarray([f"g{i % 20}" for i in range(len(y))])
    data = probing.TaskData(np.stack([X, X, X]), y, groups)
    task = {"level": "frame", "source": "x", "probes": ["linear"], "folds": 3}
    starved, info = probing.probe_arrays(data, task, {"linear_max_iter": 2})
    fed, _ = probing.probe_arrays(data, task, {})  # the default limit
    for table, expected in ((starved, 1.0), (fed, 0.0)):
        rows = table[(table.metric == "not_converged") & ~table.fold.isin(["mean", "std"])]
        assert len(rows) == 3 * 3 and (rows["value"] == expected).all()
    assert info["fits_at_iteration_limit"] == {"linear/0": 3, "linear/1": 3, "linear/2": 3}


def test_mlp_early_stopping_validates_on_held_out_groups():
    from speechlens.probes.grouped_mlp import GroupedEarlyStoppingMLP, validation_split

    rng = np.random.default_rng(5)
    X, y = _clusters(600, 3, 6, rng, sep=4)
    groups = np.asarray([f"spk{i % 30}" for i in range(len(y))])
    fit, val = validation_split(y, groups, 0.1, seed=0)
    assert not set(groups[fit]) & set(groups[val])
    assert len(set(groups[val])) == 3  # a tenth of the 30 groups
    assert sorted(np.concatenate([fit, val]).tolist()) == list(range(len(y)))
    mlp = GroupedEarlyStoppingMLP(hidden=16, max_iter=50, patience=3).fit(X, y, groups)
    held = set(groups[mlp.validation_index_])
    assert held and not held & set(np.delete(groups, mlp.validation_index_))
    assert mlp.converged_ and mlp.n_iter_ == len(mlp.validation_scores_) < 50
    assert (mlp.predict(X) == y).mean() > 0.95
    # the probe pipeline passes the training fold's groups to it
    task = probing.resolve_task({"level": "frame", "source": "x", "probes": ["mlp"]})
    est = probing.make_probe("mlp", task, probing.run.schema.defaults("probing.settings"))
    from speechlens.probing.estimators import fit_predict

    fit_predict("mlp", est, X, y, X[:5], groups)
    inner = est.steps[-1][1]
    assert not set(groups[inner.validation_index_]) & set(
        np.delete(groups, inner.validation_index_)
    )


def test_validation_split_when_classes_are_rare():
    """Speaker ID: 4 utterances per speaker in a training fold, no groups: still a split."""
    import numpy as np

    from speechlens.probes.grouped_mlp import validation_split

    y = np.repeat(np.arange(20), 4)
    fit, val = validation_split(y, None, 0.1, 0)
    assert len(val) > 0 and len(fit) + len(val) == len(y) and not set(fit) & set(val)
    fit, val = validation_split(np.arange(30), None, 0.1, 0)  # every class once
    assert len(val) == 3 and not set(fit) & set(val)


def test_too_few_groups_for_the_folds_names_task_and_fix(corpus):
    """A task whose classes each have fewer CV groups than folds: a clear error, not an
    empty fold split deep in scikit-learn."""
    with pytest.raises(probing.ProbingError, match=r"no class has samples in 50 CV groups"):
        _load(corpus, level="utterance", source="language", group_by="speaker", folds=50)
