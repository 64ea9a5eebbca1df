"""Feature extraction into the Zarr store: schema, values, blocks, shards, atomicity."""

from __future__ import annotations

import platform

import numpy as np
import pandas as pd
import pytest

from speechlens import audio, store
from speechlens.extract import (
    bound_heap_growth,
    extract_corpus,
    gather,
    plan_batches,
    plan_blocks,
    shard_blocks,
)
from speechlens.models import make_adapter
from tests.tiny_models import save_tiny

SETTINGS = {
    "dtype": "float32",
    "chunk_frames": 64,
    "block_frames": 150,
    "batch_seconds": 2.0,
    "shards": 1,
    "device": "cpu",
    "compute_dtype": "float32",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 utterances of noise + tones, 0.3-1.7 s, in a minimal corpus table."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        n = int(rng.integers(4800, 27200))
        t = np.arange(n) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.05 * rng.standard_normal(n)
        audio.write_wav(root / "audio" / f"u{i:02d}.wav", wave.astype(np.float32), 16000)
        rows.append({"utterance_id": f"u{i:02d}", "audio": f"audio/u{i:02d}.wav"})
    (root / "audio").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "utterances.tsv", sep="\t", index=False)
    return root


@pytest.fixture(scope="module")
def w2v_dir(tmp_path_factory):
    return save_tiny("wav2vec2_large", tmp_path_factory.mktemp("m") / "w2v")


def _extract(corpus, out, spec, settings=SETTINGS, **kw):
    adapter = make_adapter(spec, settings, threads=1)
    extract_corpus(adapter, corpus / "utterances.tsv", out, settings=settings, attrs={"x": 1}, **kw)
    return adapter


def test_store_schema_values_and_provenance(corpus, w2v_dir, tmp_path):
    spec = {"family": "wav2vec2", "source": str(w2v_dir)}
    adapter = _extract(corpus, tmp_path / "f.zarr", spec)
    ds = store.open_store(tmp_path / "f.zarr")
    store.validate(ds)
    assert ds["hidden"].dims == ("layer", "frame", "feature")
    assert ds["pooled"].dims == ("layer", "utterance", "feature")
    assert ds.sizes["layer"] == adapter.num_layers == 3
    assert list(ds["utterance_id"].values) == [f"u{i:02d}" for i in range(12)]
    assert ds.attrs["family"] == "wav2vec2" and ds.attrs["x"] == 1
    assert ds.attrs["frame_rate_hz"] == pytest.approx(50.0)
    weights = ds.attrs["weights"]
    assert isinstance(weights, dict) and all(len(h) == 64 for h in weights.values()), weights
    for u in (0, 5, 11):
        wave, _ = audio.load(corpus / f"audio/u{u:02d}.wav", sample_rate=16000)
        (alone,) = adapter.forward([wave])
        start, count = int(ds["frame_start"][u]), int(ds["frame_count"][u])
        assert count == adapter.frame_count(len(wave)) == alone.shape[1]
        got = ds["hidden"][:, start : start + count].values
        np.testing.assert_allclose(got, alone, atol=1e-4)
        np.testing.assert_allclose(ds["pooled"][:, u].values, alone.mean(axis=1), atol=1e-4)
        np.testing.assert_allclose(ds["time_s"][start : start + count], adapter.frame_times(count))
        assert (ds["utterance_index"][start : start + count].values == u).all()


def test_float16_store_and_chunks(corpus, tmp_path):
    settings = {**SETTINGS, "dtype": "float16"}
    _extract(corpus, tmp_path / "f.zarr", {"family": "logmel"}, settings)
    ds = store.open_store(tmp_path / "f.zarr")
    assert ds["hidden"].dtype == np.float16
    assert ds["hidden"].encoding["chunks"] == (1, 64, 80)
    assert not np.isnan(ds["hidden"].values).any()


def test_blocks_batches_and_shards_plan():
    counts = [50, 60, 70, 10, 200, 5]
    blocks = plan_blocks(counts, 120)
    assert [list(b) for b in blocks] == [[0, 1], [2, 3], [4], [5]]
    assert sum(len(b) for b in blocks) == len(counts)
    assert (
        shard_blocks(blocks, 0, 3) + shard_blocks(blocks, 1, 3) + shard_blocks(blocks, 2, 3)
        == blocks
    )
    batches = plan_batches([5, 1, 4, 2, 3], max_samples=8)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]
    lengths = [5, 1, 4, 2, 3]
    assert all(max(lengths[i] for i in b) * len(b) <= 8 or len(b) == 1 for b in batches)


def test_gathered_shards_equal_the_unsharded_store(corpus, w2v_dir, tmp_path):
    spec = {"family": "wav2vec2", "source": str(w2v_dir)}
    _extract(corpus, tmp_path / "full.zarr", spec)
    settings = {**SETTINGS, "shards": 3}
    parts = [tmp_path / f"{i}.zarr" for i in range(3)]
    for i, part in enumerate(parts):
        _extract(corpus, part, spec, settings, shard=i)
    gather(parts, tmp_path / "gathered.zarr", chunk_frames=64)
    full, gathered = (store.open_store(tmp_path / n) for n in ("full.zarr", "gathered.zarr"))
    store.validate(gathered)
    for name in ("hidden", "pooled", "time_s", "utterance_index", "frame_start", "frame_count"):
        np.testing.assert_array_equal(full[name].values, gathered[name].values, err_msg=name)
    assert list(full["utterance_id"].values) == list(gathered["utterance_id"].values)
    assert dict(full.attrs) == dict(gathered.attrs)


def test_failure_mid_extraction_leaves_no_store(corpus, w2v_dir, tmp_path, monkeypatch):
    spec = {"family": "wav2vec2", "source": str(w2v_dir)}
    adapter = make_adapter(spec, SETTINGS, threads=1)
    calls = {"n": 0}
    real = type(adapter).forward

    def flaky(self, batch, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real(self, batch, **kw)

    monkeypatch.setattr(type(adapter), "forward", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        extract_corpus(
            adapter, corpus / "utterances.tsv", tmp_path / "f.zarr", settings=SETTINGS, attrs={}
        )
    assert not (tmp_path / "f.zarr").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_incomplete_store_is_rejected(corpus, tmp_path):
    group = store.create(
        tmp_path / "s.zarr",
        num_layers=1,
        hidden_size=2,
        utterance_ids=["a"],
        frame_counts=[3],
        frame_times=[np.arange(3) * 0.01],
        attrs={},
    )
    with pytest.raises(store.StoreError, match="incomplete"):
        store.validate(store.open_store(tmp_path / "s.zarr"))
    store.write_block(group, 0, [np.ones((1, 3, 2))])
    store.finish(group)
    store.validate(store.open_store(tmp_path / "s.zarr"))
    with pytest.raises(store.StoreError, match="expected"):
        store.write_block(group, 0, [np.ones((1, 4, 2))])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_heap_growth_is_bounded_on_glibc():
    assert bound_heap_growth() is True
