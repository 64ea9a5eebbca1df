"""Utterance-level embeddings in the feature store (adapters with ``utterance_level``).

A fake adapter with known embeddings (a function of the utterance index and length, so a
row written to the wrong utterance, or a batch put back in the wrong order, is seen) checks
every store mode, float16 and float32, shards + gather, the float16 guard and bad outputs.
The real GE2E adapter on a tiny random checkpoint checks that the stored d-vectors are the
adapter's own ``embeddings()`` on the same audio.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from speechlens import audio, store
from speechlens.extract import extract_corpus, gather
from speechlens.models.ge2e import GE2EAdapter
from tests.unit.test_store_reduce import DURATIONS, RATE, SETTINGS, FakeAdapter, write_corpus

NAMES, SIZE = ("alpha", "beta"), 5


class EmbeddingAdapter(FakeAdapter):
    """:class:`FakeAdapter` plus two embeddings: ``e[k, d] = (k + 1) (d + 1) / 8 + u + n / 16000``
    for utterance ``u`` of ``n`` samples; ``e_scale`` multiplies utterance 1's ``beta``.
    Only the one-pass ``forward_with_embeddings`` may be called; it records every length."""

    capabilities = frozenset({"utterance_level"})
    embedding_names = NAMES
    embedding_size = SIZE

    def __init__(self, e_scale: float = 1.0, e_shape: tuple | None = None, **kw):
        super().__init__(**kw)
        self.e_scale, self.e_shape, self.seen = e_scale, e_shape, []

    def forward(self, batch, **kw):
        raise AssertionError("forward() called: extraction must take one pass")

    def forward_with_embeddings(self, batch, *, embeddings: bool = True):
        self.seen += [len(w) for w in batch]
        return [self.expected(w) for w in batch], [self.embedding(w) for w in batch]

    def embedding(self, wave: np.ndarray) -> np.ndarray:
        u = int(round((float(wave[0]) - 0.05) * 100))
        k, d = np.arange(len(NAMES))[:, None], np.arange(SIZE)[None, :]
        e = (k + 1) * (d + 1) / 8 + u + len(wave) / RATE
        if u == 1:
            e[1] *= self.e_scale
        if self.e_shape is not None:
            e = np.zeros(self.e_shape)
        return e.astype(np.float32)


def expected_embeddings(adapter=None) -> np.ndarray:
    """(embedding_name, utterance, embedding_feature) of the corpus, float32."""
    adapter = adapter or EmbeddingAdapter()
    waves = [np.full(int(d * RATE), 0.05 + u / 100) for u, d in enumerate(DURATIONS)]
    return np.stack([adapter.embedding(w) for w in waves], axis=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _extract(corpus, out, settings=None, adapter=None, shard=0):
    settings = {**SETTINGS, **(settings or {})}
    adapter = adapter or EmbeddingAdapter()
    attrs = {"model": "fake_model", "corpus": "c"}
    extract_corpus(
        adapter, corpus / "utterances.tsv", out, settings=settings, attrs=attrs, shard=shard
    )
    ds = store.open_store(out)
    store.validate(ds, str(out))
    return ds


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "reduction",
    [{}, {"pool": "segment:phone"}, {"pool": "utterance"}, {"layers": [1], "frame_stride": 2}],
)
def test_store_holds_the_adapters_embeddings_in_every_mode(corpus, tmp_path, dtype, reduction):
    adapter = EmbeddingAdapter()
    ds = _extract(corpus, tmp_path / "e.zarr", {"dtype": dtype, **reduction}, adapter)
    got = store.embeddings(ds)
    assert got.dims == ("embedding_name", "utterance", "embedding_feature")
    assert got.shape == (2, len(DURATIONS), SIZE) and got.dtype == np.dtype(dtype)
    assert store.embedding_names(ds) == list(NAMES) == ds.attrs["embedding_names"]
    assert ds.attrs["embedding_size"] == SIZE
    assert list(got["utterance_id"].values) == [f"u{u}" for u in range(len(DURATIONS))]
    want = expected_embeddings().astype(dtype)  # exact: the float32 values cast once
    np.testing.assert_array_equal(got.values, want)
    np.testing.assert_array_equal(got.sel(embedding_name="beta").values, want[1])
    # one pass per utterance: each length seen once, forward() never called (it raises)
    assert sorted(adapter.seen) == sorted(int(d * RATE) for d in DURATIONS)


@pytest.mark.parametrize("pool", ["frame", "segment:word", "utterance"])
def test_gathered_shards_hold_the_same_embeddings(corpus, tmp_path, pool):
    settings = {"pool": pool, "block_frames": 100, "dtype": "float16"}
    full = _extract(corpus, tmp_path / "full.zarr", settings)
    parts = [tmp_path / f"{i}.zarr" for i in range(3)]
    for i, part in enumerate(parts):
        _extract(corpus, part, {**settings, "shards": 3}, shard=i)
    assert sum(store.open_store(p).sizes["utterance"] for p in parts) == len(DURATIONS)
    gather(parts, tmp_path / "g.zarr", chunk_frames=64)
    got = store.open_store(tmp_path / "g.zarr")
    store.validate(got)
    assert "embedding" in full.variables
    for name in full.variables:
        np.testing.assert_array_equal(full[name].values, got[name].values, err_msg=name)
    assert dict(full.attrs) == dict(got.attrs)
    np.testing.assert_array_equal(
        store.embeddings(got).values, expected_embeddings().astype(np.float16)
    )


def test_adapter_without_the_capability_stores_no_embeddings(corpus, tmp_path):
    ds = _extract(corpus, tmp_path / "n.zarr", {"pool": "utterance"}, FakeAdapter())
    assert store.embeddings(ds) is None and "embedding_name" not in ds.coords
    assert store.embedding_names(ds) == [] == ds.attrs["embedding_names"]
    assert ds.attrs["embedding_size"] == 0


def test_float16_overflow_of_an_embedding_stores_float32(corpus, tmp_path):
    adapter = EmbeddingAdapter(e_scale=1e5)  # u1's beta reaches ~1.5e5 > 65504
    ds = _extract(corpus, tmp_path / "o.zarr", {"dtype": "float16"}, adapter)
    assert ds.attrs["dtype"] == "float32" and ds.attrs["dtype_requested"] == "float16"
    overflow = ds.attrs["float16_overflow"]
    assert (overflow["layer"], overflow["utterance"]) == ("embedding:beta", "u1")
    assert ds["embedding"].dtype == ds["hidden"].dtype == np.float32
    want = expected_embeddings(adapter)
    assert want.max() > 65504
    np.testing.assert_array_equal(store.embeddings(ds).values, want)


def test_non_finite_embedding_is_an_error_naming_it(corpus, tmp_path):
    adapter = EmbeddingAdapter(e_scale=np.inf)
    with pytest.raises(store.StoreError, match=r"embedding:beta: non-finite.*'u1'"):
        _extract(corpus, tmp_path / "x.zarr", adapter=adapter)
    assert not (tmp_path / "x.zarr").exists()


def test_misshapen_embedding_is_an_error_naming_the_utterance(corpus, tmp_path):
    adapter = EmbeddingAdapter(e_shape=(1, SIZE))
    with pytest.raises(store.StoreError, match=r"'u0'.*\(1, 5\), expected \(2, 5\)"):
        _extract(corpus, tmp_path / "x.zarr", adapter=adapter)


def test_gather_refuses_shards_that_differ_in_embeddings(corpus, tmp_path):
    settings = {"pool": "utterance", "block_frames": 100, "shards": 2}
    a, b = tmp_path / "0.zarr", tmp_path / "1.zarr"
    _extract(corpus, a, settings, EmbeddingAdapter(), shard=0)
    _extract(corpus, b, settings, FakeAdapter(), shard=1)
    with pytest.raises(store.StoreError, match=r"1.zarr: embeddings \[\], .* \['alpha', 'beta'\]"):
        gather([a, b], tmp_path / "g.zarr")


def test_write_block_needs_embeddings_exactly_when_the_store_has_them(tmp_path):
    kw = dict(num_layers=1, hidden_size=2, utterance_ids=["a"], frame_counts=[3], attrs={})
    kw["frame_times"] = [np.arange(3) * 0.01]
    group = store.create(tmp_path / "e.zarr", embedding_names=["d"], embedding_size=4, **kw)
    with pytest.raises(store.StoreError, match="has embeddings"):
        store.write_block(group, 0, [np.ones((1, 3, 2))])
    with pytest.raises(store.StoreError, match=r"embeddings \(1, 1, 3\), expected \(1, 1, 4\)"):
        store.write_block(group, 0, [np.ones((1, 3, 2))], embeddings=np.ones((1, 1, 3)))
    plain = store.create(tmp_path / "p.zarr", **kw)
    with pytest.raises(store.StoreError, match="has no embeddings"):
        store.write_block(plain, 0, [np.ones((1, 3, 2))], embeddings=np.ones((1, 1, 4)))
    with pytest.raises(store.StoreError, match="distinct"):
        store.create(tmp_path / "d.zarr", embedding_names=["d", "d"], embedding_size=4, **kw)


# ------------------------------------------------------------------------------ real GE2E


@pytest.fixture(scope="module")
def tiny_ge2e(tmp_path_factory):
    """A GE2E checkpoint folder with random weights: LSTM 40 -> 16 x 2 layers (input weights
    scaled up: the mel values are ~0.01), linear 16 -> 12 (positive biases, so that no
    partial's ReLU output is all zero)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("models") / "ge2e"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    lstm = torch.nn.LSTM(40, 16, 2, batch_first=True)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state["lstm.weight_ih_l0"] = torch.randn(64, 40, generator=gen) * 20
    state |= {"linear.weight": torch.randn(12, 16, generator=gen) / 4}
    state |= {"linear.bias": torch.rand(12, generator=gen) + 0.1}
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    config = {"model_type": "ge2e", "n_mels": 40, "hidden_size": 16, "num_layers": 2}
    (folder / "config.json").write_text(json.dumps({**config, "embedding_size": 12}))
    return folder


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    """5 voice-like utterances of 0.5-3.1 s, each with its own pitch and spectral tilt. Mostly
    longer than one 1.6 s partial: a short utterance's partial ends in zero padding, which
    drives a random LSTM to the same state whatever came before."""
    root = tmp_path_factory.mktemp("speech")
    (root / "audio").mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for u, seconds in enumerate([2.3, 0.5, 3.1, 2.0, 2.7]):
        t = np.arange(int(seconds * RATE)) / RATE
        phase = 2 * np.pi * np.cumsum(90 + 45 * u + 20 * np.sin(2 * np.pi * 0.8 * t)) / RATE
        wave = sum(np.sin(k * phase) / k ** (0.5 + u / 3) for k in range(1, 15))
        wave = 0.05 * wave * (0.5 + 0.5 * np.sin(2 * np.pi * (2 + u) * t) ** 2)
        wave = (wave + 0.002 * rng.standard_normal(t.size)).astype(np.float32)
        audio.write_wav(root / "audio" / f"s{u}.wav", wave, RATE)
        rows.append({"utterance_id": f"s{u}", "audio": f"audio/s{u}.wav"})
    pd.DataFrame(rows).to_csv(root / "utterances.tsv", sep="\t", index=False)
    return root


@pytest.mark.parametrize("pool", ["frame", "utterance"])
def test_ge2e_store_holds_its_d_vectors(speech_corpus, tiny_ge2e, tmp_path, monkeypatch, pool):
    adapter = GE2EAdapter(str(tiny_ge2e), device="cpu", threads=1)
    adapter.load()
    monkeypatch.setattr(GE2EAdapter, "forward", lambda *a, **k: pytest.fail("two passes"))
    settings = {**SETTINGS, "dtype": "float16", "block_frames": 600, "batch_seconds": 8.0}
    extract_corpus(
        adapter,
        speech_corpus / "utterances.tsv",
        tmp_path / "g.zarr",
        settings={**settings, "pool": pool},
        attrs={"model": "ge2e_tiny"},
    )
    ds = store.open_store(tmp_path / "g.zarr")
    store.validate(ds)
    got = store.embeddings(ds)
    assert store.embedding_names(ds) == ["d_vector"] and got.shape == (1, 5, 12)
    assert got.dtype == np.float16 and ds.attrs["embedding_size"] == 12
    for u, uid in enumerate(ds["utterance_id"].values):
        wave, _ = audio.load(speech_corpus / "audio" / f"{uid}.wav", sample_rate=RATE)
        (alone,) = adapter.embeddings([wave])  # (1, 12), one utterance alone
        assert np.linalg.norm(alone) == pytest.approx(1.0, abs=1e-5)
        # float16 keeps 11 significant bits: relative error <= 2**-11
        np.testing.assert_allclose(got[:, u].values, alone, rtol=2**-11, atol=1e-5)
        others = np.delete(got.values[0], u, axis=0)
        assert np.abs(others - got.values[0, u]).max(axis=1).min() > 1e-2  # rows distinguishable
        if pool == "frame":
            (hidden,), _ = adapter.forward_with_embeddings([wave])
            start, count = int(ds["frame_start"][u]), int(ds["frame_count"][u])
            stored = ds["hidden"][:, start : start + count].values
            np.testing.assert_allclose(stored, hidden, rtol=2**-11, atol=1e-5)
