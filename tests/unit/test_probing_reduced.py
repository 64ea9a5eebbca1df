"""Probing reduced stores (speechlens.reduce): a layer subset, a frame stride, segment and
utterance pooling, and the torch backend of the linear probe.

The toy corpus is test_probing's (2 languages x 6 speakers x 5 utterances of 14 phones on a
20 ms grid). Its model has 8 layers, of which stores keep 2, 5 and 7: layer 2 is noise,
layer 5 the phone's own vector, constant over each phone (a segment mean is that vector
exactly, so phone probing of a segment store is perfect), layer 7 a weak phone vector in
noise. Reduced stores are written the way extraction writes them (:func:`speechlens.reduce.
plan` and :meth:`~speechlens.reduce.Layout.reduce` on the full hidden states).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from speechlens import probing, reduce, store
from speechlens.checks import check_references
from speechlens.config import ConfigError
from speechlens.corpora.contract import read_tables
from tests.unit.test_checks import validated
from tests.unit.test_probing import FAST, HOP, PHONES, _corpus

LAYERS = 8
KEPT = [2, 5, 7]
DIM = 12


def _hidden(utterances, segments, rng):
    """Per utterance (layer, frame, feature) float32 on the 20 ms grid (module docstring)."""
    means = {p: rng.normal(0, 3, DIM) for p in PHONES}
    hidden, times = [], []
    for row in utterances.itertuples():
        t = (np.arange(int(np.ceil(row.duration_s / HOP))) + 0.5) * HOP
        seg = segments[(segments["utterance_id"] == row.utterance_id) & (segments.tier == "phone")]
        idx = np.searchsorted(seg["start_s"].to_numpy(), t, side="right") - 1
        phone = np.stack([means[p] for p in seg["label"].to_numpy()[idx]])
        h = rng.normal(0, 1, (LAYERS, len(t), DIM))
        h[5] = phone
        h[7] += 0.25 * phone
        hidden.append(h.astype(np.float32))
        times.append(t)
    return hidden, times


def write_store(path, utterances, segments, hidden, times, features, model, hop=HOP):
    """A complete float32 store of ``hidden`` (per utterance (layer, frame, feature), frame
    centres ``times``, s, every ``hop`` s) reduced by ``features``, as extraction does."""
    red = reduce.Reduction.from_settings(features)
    ids = utterances["utterance_id"].tolist()
    layout = reduce.plan(red, ids, times, segments)
    index = red.layer_index(hidden[0].shape[0])
    kept = [h[index] for h in hidden]
    group = store.create(
        path,
        num_layers=len(index),
        hidden_size=hidden[0].shape[2],
        utterance_ids=ids,
        frame_counts=[len(t) for t in times] if red.mode == "utterance" else layout.unit_counts,
        frame_times=layout.unit_times,
        attrs={"model": model, "corpus": "toy", "frame_rate_hz": 1 / hop, "reduction": red.attrs()},
        dtype="float32",
        layers=index,
        segments=layout.segments,
        pooled_only=red.mode == "utterance",
    )
    pooled = np.stack([h.mean(axis=1) for h in kept], axis=1)
    store.write_block(group, 0, [layout.reduce(i, h) for i, h in enumerate(kept)], pooled)
    store.finish(group)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The corpus folder with stores ``frame`` (layers 2, 5, 7), ``stride`` (every 2nd
    frame), ``phone`` (segment:phone), ``utt`` (utterance means), ``full`` (all 8 layers)."""
    root = tmp_path_factory.mktemp("reduced")
    rng = np.random.default_rng(0)
    utterances, segments = _corpus(root, rng)
    hidden, times = _hidden(utterances, segments, rng)
    settings = {
        "full": {},
        "frame": {"layers": KEPT},
        "stride": {"layers": KEPT, "frame_stride": 2},
        "phone": {"layers": KEPT, "pool": "segment:phone"},
        "utt": {"layers": KEPT, "pool": "utterance"},
    }
    for name, features in settings.items():
        write_store(
            root / f"{name}.zarr", utterances, segments, hidden, times, features, f"toy_{name}"
        )
    return root


def _run(toy, tmp_path, which, name, task, settings=None):
    out = tmp_path / f"{which}_{name}.tsv"
    sidecar = out.with_suffix(".json")
    probing.run_task(
        toy / f"{which}.zarr",
        toy / "utterances.tsv",
        toy / "segments.tsv",
        task,
        {**FAST, **(settings or {})},
        out,
        sidecar=sidecar,
        name=name,
    )
    table = pd.read_csv(out, sep="\t", dtype={"layer": str, "fold": str})
    return table, json.loads(sidecar.read_text())


def _means(table, probe, metric="accuracy"):
    rows = table[(table.probe == probe) & (table.metric == metric) & (table.fold == "mean")]
    return dict(zip(rows["layer"], rows["value"], strict=True))


def _tables(toy):
    return read_tables(toy / "utterances.tsv", toy / "segments.tsv")


PHONE = {"level": "frame", "source": "phone", "group_by": "speaker", "probes": ["linear", "knn"]}


def test_segment_store_probes_each_phone_segment_once_and_perfectly(toy, tmp_path):
    utterances, segments = _tables(toy)
    ds = store.open_store(toy / "phone.zarr")
    stored = store.segment_table(ds)
    sample = probing.draw_samples(store.unit_view(ds), utterances, segments, PHONE)
    # every sample is one stored segment, labelled by its own label; here all 840 phones
    # (no class reaches the cap of 200 segments, where a frame store adds more frames)
    np.testing.assert_array_equal(stored["label"].to_numpy(str)[sample.index], sample.label)
    assert len(np.unique(sample.index)) == len(sample.index) == len(stored) == 60 * 14
    data, _ = probing.load_task(toy / "phone.zarr", utterances, segments, PHONE, "phone")
    np.testing.assert_allclose(data.X, ds["hidden"].values[:, sample.index])
    # under the cap: the same phone segments (one sample each), labels and folds as frames
    capped = {**PHONE, "max_per_class": 100}
    frames = probing.draw_samples(
        store.open_store(toy / "frame.zarr"), utterances, segments, capped
    )
    segs = probing.draw_samples(store.unit_view(ds), utterances, segments, capped)
    assert len(segs.unit) == 100 * len(PHONES)
    order_f, order_s = np.argsort(frames.unit), np.argsort(segs.unit)
    np.testing.assert_array_equal(frames.unit[order_f], segs.unit[order_s])
    np.testing.assert_array_equal(frames.label[order_f], segs.label[order_s])
    np.testing.assert_array_equal(frames.test_fold[order_f], segs.test_fold[order_s])

    table, sidecar = _run(toy, tmp_path, "phone", "phone", PHONE)
    assert set(table["layer"]) == {"2", "5", "7", "all"}  # the store's layer numbers
    linear, knn = _means(table, "linear"), _means(table, "knn")
    assert linear["5"] == knn["5"] == 1.0  # a constant vector per phone
    assert linear["2"] < 0.35  # noise: near chance (1/6)
    frame_table, _ = _run(toy, tmp_path, "frame", "phone", PHONE)
    frame_linear = _means(frame_table, "linear")
    assert frame_linear["5"] == 1.0
    assert linear["7"] > frame_linear["7"] + 0.05  # means of 2-5 frames: less noise
    assert sidecar["store_mode"] == "segment" and sidecar["layers"] == KEPT
    assert sidecar["reduction"]["pool"] == "segment:phone"
    assert sidecar["reduction"]["layers"] == KEPT and sidecar["store_size"] == len(stored)
    assert sidecar["linear_backend"] == "sklearn"


def test_a_column_task_on_a_segment_store_labels_segments_by_their_utterance(toy):
    utterances, segments = _tables(toy)
    task = {"level": "frame", "source": "language", "group_by": "speaker", "silence": "drop"}
    data, _ = probing.load_task(toy / "phone.zarr", utterances, segments, task, "lang")
    ds = store.open_store(toy / "phone.zarr")
    stored = store.segment_table(ds)
    sample = probing.draw_samples(store.unit_view(ds), utterances, segments, task)
    language = utterances.set_index("utterance_id")["language"]
    expected = language.loc[stored["utterance_id"].to_numpy()[sample.index]].to_numpy(str)
    np.testing.assert_array_equal(data.y, expected)
    assert "sil" not in set(stored["label"].to_numpy(str)[sample.index])  # silence dropped
    assert set(data.y) == {"xx", "yy"}


def test_layer_subset_and_frame_stride_keep_the_layer_numbers(toy, tmp_path):
    task = {**PHONE, "probes": ["linear", "weighted_sum"]}
    full, _ = _run(toy, tmp_path, "full", "phone", task)
    assert set(full["layer"]) == {*map(str, range(LAYERS)), "all"}
    subset, sidecar = _run(toy, tmp_path, "frame", "phone", task)
    assert set(subset["layer"]) == {"2", "5", "7", "all"}
    weights = subset[(subset.metric == "layer_weight") & (subset.fold == "mean")]
    assert sorted(weights["layer"]) == ["2", "5", "7"]
    assert weights["value"].sum() == pytest.approx(1.0)
    assert weights.set_index("layer")["value"].idxmax() == "5"  # the phone layer
    # same samples as the full store: the kept layers score as there
    full_linear, subset_linear = _means(full, "linear"), _means(subset, "linear")
    for layer in ("2", "5", "7"):
        assert subset_linear[layer] == pytest.approx(full_linear[layer], abs=1e-9)
    assert set(sidecar["seconds"]) >= {"linear/2", "linear/5", "linear/7"}
    strided, sidecar = _run(toy, tmp_path, "stride", "phone", PHONE)
    assert set(strided["layer"]) == {"2", "5", "7", "all"}
    assert _means(strided, "linear")["5"] == 1.0
    assert sidecar["reduction"]["frame_stride"] == 2
    frames = store.open_store(toy / "frame.zarr").sizes["frame"]
    assert sidecar["store_size"] == store.open_store(toy / "stride.zarr").sizes["frame"]
    assert sidecar["store_size"] < frames * 0.55


def test_utterance_store_serves_utterance_tasks_from_the_pooled_means(toy, tmp_path):
    task = {"level": "utterance", "source": "language", "group_by": "speaker"}
    task["probes"] = ["linear", "knn"]
    on_utt, sidecar = _run(toy, tmp_path, "utt", "language", task)
    on_frames, _ = _run(toy, tmp_path, "frame", "language", task)
    assert set(on_utt["layer"]) == {"2", "5", "7", "all"}
    cols = ["layer", "probe", "fold", "metric", "value"]
    pd.testing.assert_frame_equal(on_utt[cols], on_frames[cols])  # same pooled means
    assert sidecar["store_mode"] == "utterance"


def test_a_frame_task_on_an_utterance_store_is_an_error_naming_model_and_task(toy, tmp_path):
    with pytest.raises(reduce.ReductionError, match=r"model 'toy_utt'.*task 'phone'.*frames"):
        _run(toy, tmp_path, "utt", "phone", PHONE)
    assert not (tmp_path / "utt_phone.tsv").exists()
    word = {"level": "frame", "source": "word", "probes": ["linear"]}
    with pytest.raises(reduce.ReductionError, match=r"model 'toy_phone'.*task 'word'.*tier"):
        _run(toy, tmp_path, "phone", "word", word)
    bounded = {**PHONE, "boundary_ms": 10}
    with pytest.raises(reduce.ReductionError, match=r"model 'toy_phone'.*task 'ph'.*boundary"):
        _run(toy, tmp_path, "phone", "ph", bounded)


def test_start_up_check_names_the_model_and_the_task():
    tasks = probing.default_tasks()
    probing.check_task_stores(tasks, {"a": {}, "b": {"pool": "segment:phone"}})
    with pytest.raises(
        reduce.ReductionError,
        match=r"models\.b\.features\.pool and probing\.tasks\.phone: model 'b'",
    ):
        probing.check_task_stores(tasks, {"a": {}, "b": {"pool": "utterance"}})

    def utterance_pool(config):
        config["models"]["logmel"]["features"] = {"pool": "utterance"}

    with pytest.raises(ConfigError, match=r"models\.logmel\.features\.pool.*task 'phone'"):
        check_references(validated(utterance_pool))

    def phone_pool(config):  # frame tasks become segment tasks; CKA pairs by phone
        config["models"]["logmel"]["features"] = {"pool": "segment:phone"}
        config["cka"].update(align="segment", tier="phone")

    check_references(validated(phone_pool))


def test_torch_backend_scores_within_001_of_sklearn(toy, tmp_path):
    task = {**PHONE, "probes": ["linear"]}
    sk, _ = _run(toy, tmp_path, "frame", "phone", task)
    th, sidecar = _run(toy, tmp_path, "frame", "phone_t", task, {"linear_backend": "torch"})
    assert sidecar["linear_backend"] == "torch"
    assert sidecar["probe_settings"]["linear_device"] == "auto"
    key = ["layer", "fold", "metric"]
    rows = sk[(sk.probe == "linear") & sk.metric.isin(["accuracy", "macro_f1"])]
    other = th[(th.probe == "linear") & th.metric.isin(["accuracy", "macro_f1"])]
    both = rows.merge(other, on=key, suffixes=("_sk", "_th"))
    per_fold = both[~both.fold.isin(["mean", "std"])]
    assert len(per_fold) == 3 * 5 * 2
    assert (per_fold["value_sk"] - per_fold["value_th"]).abs().max() <= 0.01
    converged = th[(th.probe == "linear") & (th.metric == "not_converged")]
    assert len(converged[converged.fold == "mean"]) == 3 and (converged["value"] == 0).all()


def test_torch_fits_stopped_early_are_counted_as_not_converged(toy, tmp_path):
    task = {**PHONE, "probes": ["linear"]}
    capped, sidecar = _run(
        toy, tmp_path, "frame", "phone_c", task, {"linear_backend": "torch", "linear_max_iter": 2}
    )
    rows = capped[(capped.metric == "not_converged") & (capped.fold == "mean")]
    assert set(rows["layer"]) == {"2", "5", "7"} and (rows["value"] == 1.0).all()
    assert sidecar["fits_at_iteration_limit"] == {"linear/2": 5, "linear/5": 5, "linear/7": 5}
