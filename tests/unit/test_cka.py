"""CKA from feature stores: sampling, time and segment alignment, passes, written DataArrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens import audio, cka, store
from speechlens.cka.statistic import cka_matrix, linear_cka
from speechlens.extract import extract_corpus
from speechlens.models import make_adapter

HOP = 0.010  # the fine grid (logmel-like: centres at 12.5 ms, 22.5 ms, ...)
FIRST = 0.0125


def make_store(path, hidden, times, ids=None, rate=None, chunk_frames=64, **attrs):
    """A float32 store from per-utterance hidden states (layer, frame, feature) and centres."""
    ids = ids or [f"u{i:02d}" for i in range(len(hidden))]
    if rate is not None:
        attrs["frame_rate_hz"] = rate
    group = store.create(
        path,
        num_layers=hidden[0].shape[0],
        hidden_size=hidden[0].shape[2],
        utterance_ids=ids,
        frame_counts=[h.shape[1] for h in hidden],
        frame_times=times,
        attrs=attrs,
        dtype="float32",
        chunk_frames=chunk_frames,
    )
    store.write_block(group, 0, hidden)
    store.finish(group)
    return path


def smooth_layers(rng, frames, layers=3, dim=12):
    """Layers of smooth, differently mixed features of one latent trajectory: (L, frames, dim)."""
    latent = np.cumsum(rng.standard_normal((frames, 6)), axis=0) / 4
    out = []
    for layer in range(layers):
        mixed = latent @ rng.standard_normal((6, dim))
        out.append(
            np.tanh(mixed / (1 + layer)) ** (layer + 1) + 0.3 * rng.standard_normal((frames, dim))
        )
    return np.stack(out).astype(np.float32)


def pool_pairs(hidden, times):
    """Average frame pairs (2k, 2k+1) onto a grid of half the rate; drops an odd last frame."""
    n = hidden.shape[1] // 2 * 2
    return (hidden[:, :n:2] + hidden[:, 1:n:2]) / 2, (times[:n:2] + times[1:n:2]) / 2


@pytest.fixture(scope="module")
def fine_and_coarse(tmp_path_factory):
    """A 3-layer store at 100 Hz and the same features pooled pairwise to 50 Hz."""
    root = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(1)
    hidden = [smooth_layers(rng, n) for n in (81, 120, 57, 200, 33, 150)]
    times = [FIRST + HOP * np.arange(h.shape[1]) for h in hidden]
    pooled = [pool_pairs(h, t) for h, t in zip(hidden, times, strict=True)]
    fine = make_store(root / "fine" / "features.zarr", hidden, times, rate=100.0, model="fine")
    coarse = make_store(
        root / "coarse" / "features.zarr",
        [p[0] for p in pooled],
        [p[1] for p in pooled],
        rate=50.0,
        model="coarse",
        config_hash="abc",
    )
    return fine, coarse, hidden, pooled


def test_within_model_writes_the_matrix_of_the_sampled_frames(fine_and_coarse, tmp_path):
    fine, _, hidden, _ = fine_and_coarse
    out = tmp_path / "results" / "fine" / "cka.zarr"
    da = cka.within_model(fine, out, estimator="debiased", max_frames=None, seed=3, device="cpu")
    assert out.is_dir() and not list(out.parent.glob(".tmp-*"))
    back = cka.load_cka(out)
    assert back.name == "cka" and back.dims == ("layer_a", "layer_b")
    assert list(back["layer_a"].values) == list(back["layer_b"].values) == [0, 1, 2]
    frames = np.concatenate(hidden, axis=1)
    expected = cka_matrix(list(frames), debiased=True)
    np.testing.assert_allclose(back.values, expected, atol=1e-5)
    np.testing.assert_allclose(back.values, da.values)
    attrs = back.attrs
    assert attrs["estimator"] == "debiased" and attrs["align"] == "frame"
    assert attrs["n_frames"] == attrs["n_frames_available"] == frames.shape[1]
    assert attrs["seed"] == 3 and attrs["model_a"] == attrs["model_b"] == "fine"
    assert attrs["kernel"] == "linear" and attrs["device"] == "cpu"


def test_frames_are_subsampled_across_utterances_with_a_seed(fine_and_coarse, tmp_path):
    fine, *_ = fine_and_coarse
    ds = store.open_store(fine)
    chosen = cka.sample_units(ds.sizes["frame"], 200, seed=7)
    assert len(chosen) == 200 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(chosen, cka.sample_units(ds.sizes["frame"], 200, seed=7))
    assert not np.array_equal(chosen, cka.sample_units(ds.sizes["frame"], 200, seed=8))
    utterances = ds["utterance_index"].values[chosen]
    assert len(np.unique(utterances)) == ds.sizes["utterance"]  # spread over every utterance
    da = cka.compute(
        fine, max_frames=200, seed=7, device="cpu", estimator="biased", batch_frames=50
    )
    assert da.attrs["n_frames"] == 200 and da.attrs["max_frames"] == 200
    sample = ds["hidden"].values[:, chosen]
    np.testing.assert_allclose(da.values, cka_matrix(list(sample)), atol=1e-5)


def test_passes_split_by_memory_budget_give_the_same_matrix(fine_and_coarse):
    fine, coarse, *_ = fine_and_coarse
    assert cka.plan_passes([12] * 3, None, 8 * 12 * 36) == [[0], [1, 2]]
    assert cka.plan_passes([12] * 3, None, 1) == [[0], [1], [2]]
    assert cka.plan_passes([12] * 3, [5] * 2, 1e9) == [[0, 1, 2]]
    for store_b, align in ((None, "frame"), (coarse, "time")):
        one = cka.compute(fine, store_b, align=align, device="cpu", max_frames=None)
        many = cka.compute(
            fine, store_b, align=align, device="cpu", max_frames=None, max_accumulator_gb=1e-9
        )
        np.testing.assert_allclose(many.values, one.values, atol=1e-10)


@pytest.mark.parametrize("estimator", ["debiased", "biased"])
def test_time_alignment_of_two_frame_rates_gives_one_on_the_diagonal(
    fine_and_coarse, tmp_path, estimator
):
    fine, coarse, _, pooled = fine_and_coarse
    out = tmp_path / "cka" / "fine--coarse.zarr"
    da = cka.across_models(fine, coarse, out, align="time", estimator=estimator, device="cpu")
    assert da.dims == ("layer_a", "layer_b") and da.shape == (3, 3)
    np.testing.assert_allclose(np.diag(da.values), 1.0, atol=1e-6)
    off = da.values[~np.eye(3, dtype=bool)]
    assert off.max() < 0.99  # the layers really differ
    n_coarse = sum(p[0].shape[1] for p in pooled)
    assert da.attrs["n_frames"] == n_coarse and da.attrs["align"] == "time"
    assert (da.attrs["model_a"], da.attrs["model_b"]) == ("fine", "coarse")
    assert da.attrs["config_hash_b"] == "abc" and da.attrs["frame_rate_hz_a"] == 100.0
    back = cka.load_cka(out)
    np.testing.assert_allclose(back.values, da.values)
    swapped = cka.compute(coarse, fine, align="time", estimator=estimator, device="cpu")
    np.testing.assert_allclose(swapped.values, da.values.T, atol=1e-6)


def test_time_units_pool_the_finer_frames_into_each_coarse_span(fine_and_coarse):
    fine, coarse, hidden, _ = fine_and_coarse
    units = cka.time_units(store.open_store(fine), store.open_store(coarse))
    np.testing.assert_array_equal(units.a.counts, 2)  # two 10 ms frames each, half and half
    np.testing.assert_allclose(units.a.weight, 0.5)
    np.testing.assert_array_equal(units.b.counts, 1)
    assert len(units) == sum(h.shape[1] // 2 for h in hidden)


def pooled_centres(pooling: cka.Pooling, times: np.ndarray) -> np.ndarray:
    """Weighted mean time of each unit's frames (s)."""
    return np.add.reduceat(pooling.weight * times[pooling.index], pooling.ptr[:-1])


def test_a_10_ms_grid_pools_onto_a_20_ms_grid_centred_with_uniform_counts():
    """Issue 14.5: a 20 ms grid (Whisper: 0, 20, 40 ms ...) and a 10 ms grid of the same
    signal (its mel frames: 0, 10, 20 ms ...): each 20 ms frame pools three 10 ms frames
    weighted 1/4, 1/2, 1/4 by overlap, centred on it; no count depends on float ties."""
    coarse = 0.02 * np.arange(200)
    fine = np.arange(400) / 100.0  # 0.07 etc. are not exact in binary: ties everywhere
    pooling = cka.overlap_pooling(coarse, 0.02, fine, 0.01)
    inner = slice(1, 199)
    np.testing.assert_array_equal(pooling.counts[inner], 3)
    centres = pooled_centres(pooling, fine)
    assert np.abs(centres[inner] - coarse[inner]).max() < 1e-3
    np.testing.assert_allclose(
        pooling.take(np.arange(1, 199)).weight.reshape(-1, 3), [[0.25, 0.5, 0.25]] * 198
    )
    # the first frame's span starts before the fine grid: its two frames, 1/3 and 2/3
    np.testing.assert_allclose(pooling.weight[: pooling.ptr[1]], [2 / 3, 1 / 3])
    # jitter of the order of float rounding changes no count and no weight beyond it
    rng = np.random.default_rng(0)
    jittered = cka.overlap_pooling(
        coarse + rng.normal(0, 1e-12, 200), 0.02, fine + rng.normal(0, 1e-12, 400), 0.01
    )
    np.testing.assert_array_equal(jittered.counts, pooling.counts)
    np.testing.assert_allclose(jittered.weight, pooling.weight, atol=1e-9)


def test_a_shifted_10_ms_grid_pools_by_overlap_not_by_centre():
    """The logmel grid (centres at 12.5 ms + 10 ms k) on a 20 ms grid: every interior coarse
    frame pools three fine frames weighted by overlap (7.5, 10 and 2.5 ms of its span), the
    same for all, and the pooled centre is the coarse centre."""
    coarse = 0.02 * np.arange(100)
    fine = 0.0125 + 0.01 * np.arange(200)
    pooling = cka.overlap_pooling(coarse, 0.02, fine, 0.01)
    inner = slice(1, 99)
    np.testing.assert_array_equal(pooling.counts[inner], 3)
    w = pooling.take(np.arange(1, 99)).weight.reshape(-1, 3)
    np.testing.assert_allclose(w, [[0.375, 0.5, 0.125]] * 98)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.abs(pooled_centres(pooling, fine)[inner] - coarse[inner]).max() < 1e-3


def test_pooled_reading_equals_the_weighted_mean_of_the_frames(fine_and_coarse):
    fine, _, hidden, _ = fine_and_coarse
    ds = store.open_store(fine)
    flat = np.concatenate(hidden, axis=1)  # (layer, frame, feature)
    pooling = cka.Pooling(
        np.array([0, 3, 4, 6]),
        np.array([5, 6, 7, 2, 6, 300]),
        np.array([0.25, 0.5, 0.25, 1, 0.9, 0.1]),
    )
    (got,) = cka.read_units(ds, [1], pooling)
    ref = np.stack(
        [
            0.25 * flat[1, 5] + 0.5 * flat[1, 6] + 0.25 * flat[1, 7],
            flat[1, 2],
            0.9 * flat[1, 6] + 0.1 * flat[1, 300],
        ]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_logmel_at_10_ms_against_itself_pooled_to_20_ms(tmp_path):
    """The real logmel adapter, and its own features averaged pairwise to a 20 ms grid."""
    rng = np.random.default_rng(0)
    rows = []
    (tmp_path / "audio").mkdir()
    for i in range(4):
        n = int(rng.integers(6000, 16000))
        t = np.arange(n) / 16000
        chirp = np.sin(2 * np.pi * (150 + 900 * t) * t) * (0.2 + 0.3 * np.sin(3 * t))
        wave = chirp + 0.05 * rng.standard_normal(n)
        audio.write_wav(tmp_path / f"audio/u{i}.wav", wave.astype(np.float32), 16000)
        rows.append({"utterance_id": f"u{i}", "audio": f"audio/u{i}.wav"})
    pd.DataFrame(rows).to_csv(tmp_path / "utterances.tsv", sep="\t", index=False)
    settings = {"dtype": "float32", "chunk_frames": 64, "block_frames": 500, "batch_seconds": 2.0}
    settings.update(shards=1, device="cpu", compute_dtype="float32")
    adapter = make_adapter({"family": "logmel"}, settings, threads=1)
    extract_corpus(
        adapter, tmp_path / "utterances.tsv", tmp_path / "a.zarr", settings=settings, attrs={}
    )
    ds = store.open_store(tmp_path / "a.zarr")
    hidden, times = [], []
    for start, count in zip(ds["frame_start"].values, ds["frame_count"].values, strict=True):
        h, t = pool_pairs(
            ds["hidden"].values[:, start : start + count],
            ds["time_s"].values[start : start + count],
        )
        hidden.append(h)
        times.append(t)
    make_store(tmp_path / "b.zarr", hidden, times, ids=[r["utterance_id"] for r in rows], rate=50.0)
    for estimator in ("debiased", "biased"):
        da = cka.compute(
            tmp_path / "a.zarr",
            tmp_path / "b.zarr",
            align="time",
            estimator=estimator,
            device="cpu",
        )
        assert da.shape == (1, 1)
        assert da.values[0, 0] == pytest.approx(1.0, abs=1e-6)


def write_corpus_tables(root, ids, durations, segments):
    """Minimal contract-valid utterances.tsv and segments.tsv in ``root``."""
    utts = pd.DataFrame(
        {
            "utterance_id": ids,
            "audio": [f"audio/{u}.wav" for u in ids],
            "speaker": "s",
            "language": "en",
            "gender": "f",
            "text": "x",
            "duration_s": durations,
            "sample_rate": 16000,
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    utts.to_csv(root / "utterances.tsv", sep="\t", index=False)
    pd.DataFrame(segments).to_csv(root / "segments.tsv", sep="\t", index=False)
    return root / "segments.tsv"


def test_segment_alignment_means_frames_per_segment(fine_and_coarse, tmp_path):
    fine, coarse, hidden, pooled = fine_and_coarse
    ids = [f"u{i:02d}" for i in range(len(hidden))]
    segs, expect_a, expect_b = [], [], []
    for uid, h, (ph, pt) in zip(ids, hidden, pooled, strict=True):
        t_fine = FIRST + HOP * np.arange(h.shape[1])
        edges = np.linspace(0, t_fine[-1] + HOP / 2, 6)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            segs.append(
                {"utterance_id": uid, "tier": "phone", "start_s": lo, "end_s": hi, "label": "a"}
            )
            in_a, in_b = (t_fine >= lo) & (t_fine < hi), (pt >= lo) & (pt < hi)
            if in_a.any() and in_b.any():
                expect_a.append(h[:, in_a].mean(axis=1))
                expect_b.append(ph[:, in_b].mean(axis=1))
        segs.append(
            {"utterance_id": uid, "tier": "word", "start_s": 0.0, "end_s": edges[-1], "label": "w"}
        )
    durations = [FIRST + HOP * h.shape[1] for h in hidden]
    segments_tsv = write_corpus_tables(tmp_path / "corpus", ids, durations, segs)
    da = cka.compute(
        fine,
        coarse,
        align="segment",
        segments_tsv=segments_tsv,
        tier="phone",
        device="cpu",
        estimator="biased",
    )
    a, b = np.stack(expect_a, axis=1), np.stack(expect_b, axis=1)
    assert da.attrs["n_frames"] == a.shape[1] and da.attrs["tier"] == "phone"
    for i in range(3):
        for j in range(3):
            assert da.values[i, j] == pytest.approx(linear_cka(a[i], b[j]), abs=1e-5)
    within = cka.compute(fine, align="segment", segments_tsv=segments_tsv, device="cpu")
    np.testing.assert_allclose(np.diag(within.values), 1.0, atol=1e-6)
    with pytest.raises(cka.CkaError, match="no segments of tier 'syllable'"):
        cka.compute(fine, coarse, align="segment", segments_tsv=segments_tsv, tier="syllable")
    with pytest.raises(cka.CkaError, match="needs segments_tsv"):
        cka.compute(fine, coarse, align="segment")


def test_utterances_are_paired_by_id(fine_and_coarse, tmp_path):
    fine, coarse, hidden, pooled = fine_and_coarse
    order = [3, 0, 5, 1, 4, 2]
    ids = [f"u{i:02d}" for i in order]
    shuffled = make_store(
        tmp_path / "shuffled.zarr",
        [pooled[i][0] for i in order],
        [pooled[i][1] for i in order],
        ids=ids,
        rate=50.0,
    )
    reference = cka.compute(fine, coarse, align="time", device="cpu")
    got = cka.compute(fine, shuffled, align="time", device="cpu")
    np.testing.assert_allclose(got.values, reference.values, atol=1e-6)
    other = make_store(
        tmp_path / "other.zarr",
        [p[0] for p in pooled],
        [p[1] for p in pooled],
        ids=[*ids[:5], "zz"],
        rate=50.0,
    )
    with pytest.raises(cka.CkaError, match="different utterances: 1 only in A"):
        cka.compute(fine, other, align="time")


def test_bad_options_and_incomplete_stores(fine_and_coarse, tmp_path):
    fine, coarse, *_ = fine_and_coarse
    with pytest.raises(cka.CkaError, match="estimator 'rbf'"):
        cka.compute(fine, estimator="rbf")
    with pytest.raises(cka.CkaError, match="align 'time' unknown"):
        cka.compute(fine, align="time")
    with pytest.raises(cka.CkaError, match="align 'frame' unknown"):
        cka.compute(fine, coarse, align="frame")
    with pytest.raises(cka.CkaError, match="needs >= 4"):
        cka.compute(fine, max_frames=3)
    group = store.create(
        tmp_path / "partial.zarr",
        num_layers=1,
        hidden_size=2,
        utterance_ids=["a"],
        frame_counts=[3],
        frame_times=[np.arange(3.0)],
        attrs={},
    )
    del group
    with pytest.raises(store.StoreError, match="incomplete"):
        cka.within_model(tmp_path / "partial.zarr", tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
