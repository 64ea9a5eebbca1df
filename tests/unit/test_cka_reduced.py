"""CKA of reduced stores (speechlens.reduce): segment stores by their segments, utterance
stores by their utterance means, strided stores on their own frame period, layer subsets
with their layer numbers, and the start-up check of ``cka.pairs``.

Ten utterances of a 4-layer model at 100 Hz (smooth, differently mixed layers) with a phone
tier of 30-120 ms segments. Known answers: a segment store's CKA is the CKA of the means of
the frames centred in each segment (computed here by hand), which is also what the full
store gives with ``align: segment``; across a full and a segment store of the same model,
every unit pairs identical vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens import cka, store
from speechlens.checks import check_references
from speechlens.cka.statistic import cka_matrix
from speechlens.config import ConfigError
from tests.unit.test_checks import validated
from tests.unit.test_cka import FIRST, HOP, smooth_layers, write_corpus_tables
from tests.unit.test_probing_reduced import write_store

N_UTTS, LAYERS = 10, 4


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Stores ``full``, ``phone`` (segment:phone), ``phone13`` (segment:phone, layers 1, 3),
    ``utt`` (utterance means), ``stride`` (every 2nd frame); the corpus tables; the frames."""
    root = tmp_path_factory.mktemp("cka_reduced")
    rng = np.random.default_rng(5)
    ids = [f"u{i:02d}" for i in range(N_UTTS)]
    hidden = [smooth_layers(rng, int(n), layers=LAYERS) for n in rng.integers(60, 140, N_UTTS)]
    times = [FIRST + HOP * np.arange(h.shape[1]) for h in hidden]
    durations = [round(FIRST + HOP * h.shape[1], 6) for h in hidden]
    segs = []
    for uid, dur in zip(ids, durations, strict=True):
        edges = [0.0]
        while edges[-1] < dur - 0.03:
            edges.append(round(min(dur, edges[-1] + float(rng.uniform(0.03, 0.12))), 6))
        edges[-1] = dur
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            segs.append((uid, "phone", lo, hi, f"p{k % 5}"))
        segs.append((uid, "word", 0.0, dur, "w"))
    segments = pd.DataFrame(segs, columns=["utterance_id", "tier", "start_s", "end_s", "label"])
    segments_tsv = write_corpus_tables(root, ids, durations, segments)
    utterances = pd.read_csv(root / "utterances.tsv", sep="\t")
    settings = {
        "full": {},
        "phone": {"pool": "segment:phone"},
        "phone13": {"pool": "segment:phone", "layers": [1, 3]},
        "utt": {"pool": "utterance"},
        "stride": {"frame_stride": 2},
    }
    paths = {
        name: write_store(
            root / name / "features.zarr", utterances, segments, hidden, times, s, name, HOP
        )
        for name, s in settings.items()
    }
    return paths, segments_tsv, segments, hidden, times


def segment_means(segments, hidden, times) -> np.ndarray:
    """(layer, segment, feature): per phone, in utterance then time order, the mean of the
    frames whose centre lies in [start_s, end_s) (phones without one are left out)."""
    out = []
    phones = segments[segments["tier"] == "phone"]
    for i, (h, t) in enumerate(zip(hidden, times, strict=True)):
        rows = phones[phones["utterance_id"] == f"u{i:02d}"].sort_values("start_s")
        for lo, hi in zip(rows["start_s"], rows["end_s"], strict=True):
            inside = (t >= lo) & (t < hi)
            if inside.any():
                out.append(h[:, inside].mean(axis=1))
    return np.stack(out, axis=1)


OPTS = {"device": "cpu", "max_frames": None}


def test_a_segment_store_compares_layers_over_its_segments(toy):
    paths, segments_tsv, segments, hidden, times = toy
    means = segment_means(segments, hidden, times)
    expected = cka_matrix(list(means), debiased=True)
    da = cka.compute(paths["phone"], **OPTS)
    assert da.attrs["units"] == "segment" and da.attrs["pool_a"] == "segment:phone"
    assert da.attrs["n_frames"] == means.shape[1]
    np.testing.assert_allclose(da.values, expected, atol=1e-5)
    # the full store aligned by the same segments gives the same matrix
    by_segment = cka.compute(paths["full"], align="segment", segments_tsv=segments_tsv, **OPTS)
    np.testing.assert_allclose(by_segment.values, expected, atol=1e-5)
    # and so does the segment store aligned by its own tier (each segment pools itself)
    own = cka.compute(paths["phone"], align="segment", segments_tsv=segments_tsv, **OPTS)
    np.testing.assert_allclose(own.values, expected, atol=1e-5)


def test_across_a_full_and_a_segment_store_units_pair_identical_vectors(toy):
    paths, segments_tsv, segments, hidden, times = toy
    means = segment_means(segments, hidden, times)
    expected = cka_matrix(list(means), debiased=True)
    da = cka.compute(
        paths["full"], paths["phone"], align="segment", segments_tsv=segments_tsv, **OPTS
    )
    np.testing.assert_allclose(da.values, expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(da.values), 1.0, atol=1e-6)
    subset = cka.compute(
        paths["full"], paths["phone13"], align="segment", segments_tsv=segments_tsv, **OPTS
    )
    assert list(subset["layer_a"].values) == [0, 1, 2, 3]
    assert list(subset["layer_b"].values) == [1, 3]  # the model's layer numbers
    np.testing.assert_allclose(subset.values, expected[:, [1, 3]], atol=1e-5)
    within = cka.compute(paths["phone13"], **OPTS)
    assert list(within["layer_a"].values) == [1, 3]
    np.testing.assert_allclose(within.values, expected[np.ix_([1, 3], [1, 3])], atol=1e-5)


def test_a_segment_store_pairs_only_by_segments_of_its_tier(toy):
    paths, segments_tsv, *_ = toy
    with pytest.raises(cka.CkaError, match=r"cka\.align 'time': model 'phone' stores segment"):
        cka.compute(paths["full"], paths["phone"], align="time", **OPTS)
    with pytest.raises(cka.CkaError, match=r"cka\.tier 'word': model 'phone'.*cka\.tier phone"):
        cka.compute(
            paths["phone"],
            paths["full"],
            align="segment",
            segments_tsv=segments_tsv,
            tier="word",
            **OPTS,
        )


def test_an_utterance_store_compares_layers_over_its_utterance_means(toy):
    paths, segments_tsv, _, hidden, _ = toy
    pooled = np.stack([h.mean(axis=1) for h in hidden], axis=1)  # (layer, utterance, feature)
    for estimator in ("debiased", "biased"):
        da = cka.compute(paths["utt"], estimator=estimator, **OPTS)
        expected = cka_matrix(list(pooled), debiased=estimator == "debiased")
        np.testing.assert_allclose(da.values, expected, atol=1e-5)
        assert da.attrs["units"] == "utterance" and da.attrs["n_frames"] == N_UTTS
    with pytest.raises(cka.CkaError, match=r"model 'utt' stores utterance means only.*across"):
        cka.compute(paths["full"], paths["utt"], align="time", **OPTS)
    with pytest.raises(cka.CkaError, match=r"model 'utt'.*with align 'segment'"):
        cka.compute(paths["utt"], align="segment", segments_tsv=segments_tsv, **OPTS)


def test_a_strided_store_spans_k_frame_periods(toy):
    paths, *_ = toy
    full, strided = store.open_store(paths["full"]), store.open_store(paths["stride"])
    assert cka.frame_hop(full) == pytest.approx(HOP)
    assert cka.frame_hop(strided) == pytest.approx(2 * HOP)
    units = cka.time_units(full, strided)  # the strided store is the coarser: its frames
    assert len(units) == strided.sizes["frame"]
    counts = units.a.counts
    interior = np.flatnonzero(counts == 3)
    assert len(interior) >= strided.sizes["frame"] - 2 * N_UTTS  # all but utterance ends
    for u in interior:
        span = slice(units.a.ptr[u], units.a.ptr[u + 1])
        np.testing.assert_allclose(units.a.weight[span], [0.25, 0.5, 0.25])
        # centred on the kept frame: frame 2k of its utterance
        t_full = full["time_s"].values[units.a.index[span]]
        t_kept = strided["time_s"].values[units.b.index[units.b.ptr[u]]]
        assert t_full[1] == pytest.approx(t_kept)
    da = cka.compute(paths["full"], paths["stride"], align="time", **OPTS)
    assert da.attrs["frame_stride_b"] == 2 and da.attrs["frame_stride_a"] == 1
    assert np.all(np.diag(da.values) > 0.8)


def test_start_up_check_of_pairs_names_the_pair_model_and_key():
    features = {"a": {}, "b": {"pool": "segment:phone"}, "u": {"pool": "utterance"}}
    features |= {"w": {"pool": "segment:word"}, "k": {"frame_stride": 2, "layers": [0]}}
    cka.check_pairs([["a", "b"]], features, "segment", "phone")
    cka.check_pairs([["a", "k"]], features, "time", "word")  # two frame stores
    with pytest.raises(cka.CkaError, match=r"cka\.pairs\[0\] \['a', 'b'\]: cka\.align 'time'"):
        cka.check_pairs([["a", "b"]], features, "time", "phone")
    with pytest.raises(cka.CkaError, match=r"cka\.pairs\[1\].*cka\.tier 'phone': model 'w'"):
        cka.check_pairs([["a", "b"], ["w", "b"]], features, "segment", "phone")
    with pytest.raises(cka.CkaError, match=r"cka\.pairs\[0\].*model 'u' stores utterance"):
        cka.check_pairs([["a", "u"]], features, "segment", "phone")

    def phone_pool(config):
        config["models"]["logmel"]["features"] = {"pool": "segment:phone"}

    with pytest.raises(ConfigError, match=r"cka\.pairs\[0\].*cka\.align 'time': model 'logmel'"):
        check_references(validated(phone_pool))
