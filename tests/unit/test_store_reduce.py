"""Reduced stores (layers, frame stride, segment and utterance pooling) and float16 overflow.

A fake adapter whose hidden states are a known function of frame time makes every reduced
value computable by hand: ``h[l, f, d] = (l + 1) * t_f + d + u`` for utterance ``u`` (t_f the
frame centre, s) at 100 frames per second, hop 10 ms, window 25 ms.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from speechlens import audio, reduce, store
from speechlens.extract import extract_corpus, gather

RATE, HOP, WIN = 16000, 160, 400
LAYERS, DIM = 4, 3
SETTINGS = {
    "dtype": "float32",
    "chunk_frames": 64,
    "block_frames": 150,
    "batch_seconds": 2.0,
    "shards": 1,
}


class FakeAdapter:
    """Adapter interface of :mod:`speechlens.models.base`, with known outputs.

    ``scale``: multiplies layer ``big_layer`` of utterance index 1 (to overflow float16).
    """

    family = "fake"
    sample_rate = RATE
    frame_rate_hz = RATE / HOP
    num_layers, hidden_size, num_heads = LAYERS, DIM, 0
    max_samples = None
    loaded = True

    def __init__(self, scale: float = 1.0, big_layer: int = 2, nan: bool = False):
        self.scale, self.big_layer, self.nan = scale, big_layer, nan

    def load(self):
        pass

    def frame_count(self, n_samples: int) -> int:
        return max(0, 1 + (n_samples - WIN) // HOP)

    def frame_times(self, n_frames: int) -> np.ndarray:
        return (np.arange(n_frames) * HOP + WIN / 2) / RATE

    def provenance(self) -> dict:
        return {"family": self.family}

    def forward(self, batch):
        return [self.expected(w) for w in batch]

    def expected(self, wave: np.ndarray) -> np.ndarray:
        """(layer, frame, feature) float32; utterance u has the level 0.05 + u / 100."""
        u = int(round((float(wave[0]) - 0.05) * 100))
        t = self.frame_times(self.frame_count(len(wave)))
        layer = np.arange(LAYERS)[:, None, None] + 1.0
        h = layer * t[None, :, None] + np.arange(DIM)[None, None, :] + u
        if u == 1:
            h[self.big_layer] *= self.scale
            if self.nan:
                h[self.big_layer, 0, 0] = np.inf
        return h.astype(np.float32)


DURATIONS = [0.50, 0.83, 0.31, 1.2, 0.66, 0.95]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def write_corpus(root):
    """6 utterances (constant level 0.05 + u / 100), with phone and word tiers; utterance 2 has a
    1 ms phone that holds no frame centre. Returns ``root``."""
    (root / "audio").mkdir()
    rows, segs = [], []
    for u, dur in enumerate(DURATIONS):
        n = int(dur * RATE)
        wave = np.full(n, 0.05 + u / 100, np.float32)
        audio.write_wav(root / "audio" / f"u{u}.wav", wave, RATE)
        uid = f"u{u}"
        rows.append(
            {"utterance_id": uid, "audio": f"audio/u{u}.wav", "speaker": f"s{u % 2}"}
            | {"language": "en", "gender": "f", "text": "x", "duration_s": n / RATE}
            | {"sample_rate": RATE}
        )
        edges = np.round(np.linspace(0, n / RATE, 5), 6)
        if u == 2:
            edges = np.array([0.0, 0.1, 0.101, 0.2, n / RATE])
        for k in range(4):
            segs.append((uid, "phone", edges[k], edges[k + 1], f"p{(u + k) % 3}"))
        segs.append((uid, "word", 0.0, edges[2], "w0"))
        segs.append((uid, "word", edges[2], edges[4], "w1"))
    pd.DataFrame(rows).to_csv(root / "utterances.tsv", sep="\t", index=False)
    pd.DataFrame(segs, columns=["utterance_id", "tier", "start_s", "end_s", "label"]).to_csv(
        root / "segments.tsv", sep="\t", index=False, float_format="%.6f"
    )
    return root


def _extract(corpus, out, settings=None, adapter=None, shard=0):
    settings = {**SETTINGS, **(settings or {})}
    adapter = adapter or FakeAdapter()
    attrs = {"model": "fake_model", "corpus": "c"}
    extract_corpus(
        adapter, corpus / "utterances.tsv", out, settings=settings, attrs=attrs, shard=shard
    )
    ds = store.open_store(out)
    store.validate(ds, str(out))
    return ds


def _full(u: int) -> np.ndarray:
    n = int(DURATIONS[u] * RATE)
    wave = np.full(n, 0.05 + u / 100, np.float32)
    return FakeAdapter().expected(wave)


def test_full_store_records_its_reduction(corpus, tmp_path):
    ds = _extract(corpus, tmp_path / "f.zarr")
    assert store.mode(ds) == "frame"
    assert store.reduction(ds)["pool"] == "frame" and store.reduction(ds)["layers"] is None
    assert store.unit_view(ds) is ds
    np.testing.assert_array_equal(store.layer_numbers(ds), np.arange(LAYERS))


def test_segment_pool_is_the_mean_of_frames_centred_inside(corpus, tmp_path):
    ds = _extract(corpus, tmp_path / "s.zarr", {"pool": "segment:phone"})
    assert store.mode(ds) == "segment"
    assert ds["hidden"].dims == ("layer", "segment", "feature")
    red = store.reduction(ds)
    assert red["pool"] == "segment:phone" and red["tier"] == "phone"
    assert red["segments_without_frames"] == 1  # u2's 1 ms phone holds no frame centre
    table = store.segment_table(ds)
    segs = pd.read_csv(corpus / "segments.tsv", sep="\t")
    phones = segs[segs["tier"] == "phone"]
    assert len(table) == len(phones) - 1
    fake = FakeAdapter()
    k = 0
    for u in range(len(DURATIONS)):
        h = _full(u)
        t = fake.frame_times(h.shape[1])
        for _, seg in phones[phones["utterance_id"] == f"u{u}"].iterrows():
            inside = (t >= seg["start_s"]) & (t < seg["end_s"])
            if not inside.any():
                continue
            row = table.iloc[k]
            assert (row["utterance_id"], row["label"]) == (f"u{u}", seg["label"])
            assert row["start_s"] == pytest.approx(seg["start_s"])
            assert row["n_frames"] == inside.sum()
            np.testing.assert_allclose(
                ds["hidden"][:, k].values, h[:, inside].mean(axis=1), rtol=1e-6
            )
            k += 1
        np.testing.assert_allclose(ds["pooled"][:, u].values, h.mean(axis=1), rtol=1e-6)
        assert int(ds["segment_count"][u]) == (3 if u == 2 else 4)
    assert k == len(table)
    # the frame-centre rule on the frame view labels every segment by itself
    view = store.unit_view(ds)
    assert view.sizes["frame"] == len(table) and "frame_rate_hz" not in view.attrs
    mids = (table["start_s"] + table["end_s"]) / 2
    np.testing.assert_allclose(view["time_s"].values, mids)


def test_frame_stride_and_layer_subset(corpus, tmp_path):
    full = _extract(corpus, tmp_path / "f.zarr")
    ds = _extract(corpus, tmp_path / "r.zarr", {"frame_stride": 3, "layers": [3, 1]})
    np.testing.assert_array_equal(store.layer_numbers(ds), [1, 3])
    assert store.reduction(ds)["frame_stride"] == 3
    for u in range(len(DURATIONS)):
        h = _full(u)
        start, count = int(ds["frame_start"][u]), int(ds["frame_count"][u])
        assert count == len(range(0, h.shape[1], 3))
        np.testing.assert_allclose(
            ds["hidden"][:, start : start + count].values, h[[1, 3], ::3], rtol=1e-6
        )
        f0, n = int(full["frame_start"][u]), int(full["frame_count"][u])
        np.testing.assert_allclose(
            ds["time_s"][start : start + count].values, full["time_s"][f0 : f0 + n][::3]
        )
        # pooled stays the mean of all frames, not of the kept ones
        np.testing.assert_allclose(ds["pooled"][:, u].values, h[[1, 3]].mean(axis=1), rtol=1e-6)


def test_utterance_store_holds_means_only(corpus, tmp_path):
    ds = _extract(corpus, tmp_path / "u.zarr", {"pool": "utterance"})
    assert store.mode(ds) == "utterance" and "hidden" not in ds
    for u in range(len(DURATIONS)):
        np.testing.assert_allclose(ds["pooled"][:, u].values, _full(u).mean(axis=1), rtol=1e-6)
        assert int(ds["n_frames"][u]) == _full(u).shape[1]
    with pytest.raises(store.StoreError, match="no frames"):
        store.unit_view(ds)


@pytest.mark.parametrize("pool", ["segment:word", "utterance"])
def test_gathered_reduced_shards_equal_the_unsharded_store(corpus, tmp_path, pool):
    full = _extract(corpus, tmp_path / "full.zarr", {"pool": pool, "block_frames": 100})
    settings = {"pool": pool, "block_frames": 100, "shards": 3}
    parts = [tmp_path / f"{i}.zarr" for i in range(3)]
    for i, part in enumerate(parts):
        _extract(corpus, part, settings, shard=i)
    gather(parts, tmp_path / "g.zarr", chunk_frames=64)
    got = store.open_store(tmp_path / "g.zarr")
    store.validate(got)
    for name in full.variables:
        np.testing.assert_array_equal(full[name].values, got[name].values, err_msg=name)
    assert dict(full.attrs) == dict(got.attrs)


def test_float16_overflow_stores_the_model_in_float32(corpus, tmp_path, caplog):
    adapter = FakeAdapter(scale=1e5)  # layer 2 of utterance u1 reaches ~2.6e5 > 65504
    with caplog.at_level(logging.WARNING, logger="speechlens.extract"):
        ds = _extract(corpus, tmp_path / "o.zarr", {"dtype": "float16"}, adapter)
    assert ds["hidden"].dtype == np.float32 and ds.attrs["dtype"] == "float32"
    assert ds.attrs["dtype_requested"] == "float16"
    assert ds.attrs["float16_overflow"]["layer"] == 2
    assert ds.attrs["float16_overflow"]["utterance"] == "u1"
    assert "fake_model" in caplog.text and "layer 2" in caplog.text and "float32" in caplog.text
    assert np.isfinite(ds["hidden"].values).all()
    start, count = int(ds["frame_start"][1]), int(ds["frame_count"][1])
    expected = _full(1)
    expected[2] *= 1e5
    assert expected.max() > 65504
    np.testing.assert_allclose(ds["hidden"][:, start : start + count].values, expected, rtol=1e-6)


def test_float16_store_without_overflow_stays_float16(corpus, tmp_path):
    ds = _extract(corpus, tmp_path / "h.zarr", {"dtype": "float16"}, FakeAdapter(scale=100.0))
    assert ds["hidden"].dtype == np.float16 and "float16_overflow" not in ds.attrs


def test_overflow_is_judged_on_the_stored_means(corpus, tmp_path):
    # u1's layer 2 frames reach 7.6e4 but its means (<= 5.9e4) fit: an utterance store
    # stays float16
    scaled = _full(1)[2] * 14000
    assert scaled.max() > 65504 and scaled.mean(axis=0).max() < 65504
    settings = {"dtype": "float16", "pool": "utterance"}
    ds = _extract(corpus, tmp_path / "m.zarr", settings, FakeAdapter(14000))
    assert ds["pooled"].dtype == np.float16 and np.isfinite(ds["pooled"].values).all()


def test_gather_with_a_float32_shard_is_float32(corpus, tmp_path):
    settings = {"dtype": "float16", "block_frames": 100, "shards": 3}
    parts = [tmp_path / f"{i}.zarr" for i in range(3)]
    for i, part in enumerate(parts):
        _extract(corpus, part, settings, FakeAdapter(scale=1e5), shard=i)
    dtypes = [store.open_store(p).attrs["dtype"] for p in parts]
    assert "float16" in dtypes and "float32" in dtypes
    gather(parts, tmp_path / "g.zarr", chunk_frames=64)
    got = store.open_store(tmp_path / "g.zarr")
    assert got["hidden"].dtype == np.float32 and got.attrs["float16_overflow"]
    assert np.isfinite(got["hidden"].values).all()


def test_non_finite_model_output_is_an_error_naming_layer_and_utterance(corpus, tmp_path):
    with pytest.raises(store.StoreError, match=r"layer 2: non-finite.*'u1'"):
        _extract(corpus, tmp_path / "n.zarr", adapter=FakeAdapter(nan=True))
    assert not (tmp_path / "n.zarr").exists()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"pool": "segments:phone"}, r"models.fake_model.features.pool"),
        ({"pool": "segment:"}, r"pool 'segment:'"),
        ({"pool": "segment:phone", "frame_stride": 2}, r"frame_stride 2 applies to pool frame"),
        ({"layers": [0, 9]}, r"models.fake_model.features.layers .* layers 0..3"),
        ({"pool": "segment:syllable"}, r"no tier 'syllable' \(tiers: \['phone', 'word'\]\)"),
    ],
)
def test_bad_reduction_settings_name_the_key(corpus, tmp_path, settings, match):
    with pytest.raises(reduce.ReductionError, match=match):
        _extract(corpus, tmp_path / "x.zarr", settings)


def test_start_up_check_names_model_and_task():
    phone = {"level": "frame", "source": "phone"}
    reduce.check_task("m", {"pool": "segment:phone"}, "phone", phone)  # a segment task
    reduce.check_task("m", {"pool": "segment:phone"}, "lang", {"level": "frame", "source": "x"})
    reduce.check_task("m", {"pool": "utterance"}, "spk", {"level": "utterance", "source": "s"})
    reduce.check_task("m", {"pool": "frame", "frame_stride": 2}, "phone", phone)
    with pytest.raises(reduce.ReductionError, match=r"model 'm'.*task 'phone'.*needs frames"):
        reduce.check_task("m", {"pool": "utterance"}, "phone", phone)
    with pytest.raises(reduce.ReductionError, match=r"model 'm'.*task 'word'.*another tier"):
        reduce.check_task(
            "m",
            {"pool": "segment:phone"},
            "word",
            {"level": "frame", "source": "word"},
            tiers=["phone", "word"],
        )
    with pytest.raises(reduce.ReductionError, match=r"model 'm'.*task 'phone'.*boundary"):
        reduce.check_task("m", {"pool": "segment:phone"}, "phone", {**phone, "boundary_ms": 20})
