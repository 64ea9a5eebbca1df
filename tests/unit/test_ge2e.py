"""GE2E speaker encoder from Resemblyzer 0.1.4 (speechlens.models.ge2e, models.convert.ge2e).

References: Resemblyzer's own ``VoiceEncoder`` (imported from the installed package; its
``audio`` module imports ``webrtcvad`` and ``librosa``, which are not installed, so stand-ins
are put in ``sys.modules`` first: nothing the compared code paths use), and for the mel
spectrogram a direct formula (explicit DFT, filters built one by one from the Slaney
formulas) plus transformers' own mel filterbank.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS, has_capability
from speechlens.models.base import AdapterError
from speechlens.models.convert import ge2e as convert_ge2e
from speechlens.models.convert import pypi
from speechlens.models.convert.ct2 import ConversionError
from speechlens.models.ge2e import (
    GE2EAdapter,
    frame_count,
    hz_to_mel,
    mel_filters,
    mel_spectrogram,
    normalize_volume,
    partial_slices,
)

SR = 16000


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_resemblyzer = pytest.mark.skipif(
    not _installed("resemblyzer"),
    reason="resemblyzer 0.1.4 is not installed (make install: pip install --no-deps)",
)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: harmonics of a gliding f0 plus noise, amplitude-modulated."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    wave *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.05 * wave + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    if not _installed("resemblyzer"):
        pytest.skip("resemblyzer is not installed")
    out = tmp_path_factory.mktemp("models") / "resemblyzer"
    return convert_ge2e.convert_packages(pypi.resolve("resemblyzer"), out)


@pytest.fixture(scope="module")
def adapter(checkpoint):
    a = GE2EAdapter(str(checkpoint), device="cpu")
    a.load()
    return a


@pytest.fixture(scope="module")
def voice_encoder():
    """Resemblyzer's VoiceEncoder with the package's own pretrained.pt."""
    if not _installed("resemblyzer"):
        pytest.skip("resemblyzer is not installed")
    stand_ins = {}
    for name in ("webrtcvad", "librosa"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                stand_ins[name] = sys.modules[name] = types.ModuleType(name)
    try:
        from resemblyzer import voice_encoder

        encoder = voice_encoder.VoiceEncoder(device="cpu", verbose=False)
    finally:
        for name in stand_ins:
            del sys.modules[name]
    return encoder.eval(), voice_encoder


# ------------------------------------------------------------------------------ mel


def direct_mel(wave: np.ndarray, n_mels: int = 40) -> np.ndarray:
    """librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40),
    written out: zero-padded centred frames, periodic Hann, explicit DFT, |X|^2, and each
    Slaney filter from its three edge frequencies."""
    n_fft, hop = 400, 160
    y = np.concatenate([np.zeros(200), wave.astype(np.float64), np.zeros(200)])
    n_frames = 1 + (len(y) - n_fft) // hop
    n = np.arange(n_fft)
    window = np.sin(np.pi * n / n_fft) ** 2  # = 0.5 - 0.5 cos(2 pi n / N)
    k = np.arange(n_fft // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, n) / n_fft)
    power = np.array(
        [np.abs(dft @ (y[i * hop : i * hop + n_fft] * window)) ** 2 for i in range(n_frames)]
    )

    def mel(f):  # Slaney: 3 mels per 200 Hz up to 1 kHz, then 27 mels per factor 6.4
        return f * 3 / 200 if f < 1000 else 15 + 27 * np.log(f / 1000) / np.log(6.4)

    def hz(m):
        return m * 200 / 3 if m < 15 else 1000 * 6.4 ** ((m - 15) / 27)

    edges = [hz(m) for m in np.linspace(mel(0.0), mel(8000.0), n_mels + 2)]
    freqs = k * SR / n_fft
    filters = np.zeros((n_mels, k.size))
    for j in range(n_mels):
        lo, mid, hi = edges[j : j + 3]
        for b, f in enumerate(freqs):
            if lo < f < hi:
                filters[j, b] = (f - lo) / (mid - lo) if f <= mid else (hi - f) / (hi - mid)
        filters[j] *= 2 / (hi - lo)
    return power @ filters.T


def test_mel_equals_the_direct_formula():
    wave = speech_like(0.73, seed=1)
    got = mel_spectrogram(wave)
    want = direct_mel(wave)
    assert got.shape == want.shape == (frame_count(len(wave)), 40) == (1 + len(wave) // 160, 40)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * want.max())


def test_mel_filters_equal_transformers_slaney_filterbank():
    from transformers.audio_utils import mel_filter_bank

    theirs = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=40,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_allclose(mel_filters(), theirs.T, rtol=1e-9, atol=1e-12)
    assert hz_to_mel(1000.0) == pytest.approx(15.0)


def test_frame_geometry():
    assert [frame_count(n) for n in (0, 1, 159, 160, 161, 16000)] == [0, 1, 1, 2, 2, 101]
    a = GE2EAdapter("/unused")
    assert a.frame_rate_hz == 100.0 and a.sample_rate == SR
    np.testing.assert_allclose(a.frame_times(3), [0.0, 0.01, 0.02])
    # frame i is the window over samples [160 i - 200, 160 i + 200): an impulse at sample
    # 800 is seen by frames 4..6 only (|800 - 160 i| < 200), most by frame 5 (its centre)
    impulse = np.zeros(1600, np.float32)
    impulse[800] = 1.0
    energy = mel_spectrogram(impulse).sum(axis=1)
    assert set(np.flatnonzero(energy > 1e-12)) == {4, 5, 6}
    assert np.argmax(energy) == 5


def test_normalize_volume_matches_resemblyzer_rule():
    quiet = speech_like(1.0) * 0.01
    louder = normalize_volume(quiet)
    rms = np.sqrt(np.mean((louder.astype(np.float64) * 32767) ** 2))
    assert 20 * np.log10(rms / 32767) == pytest.approx(-30.0, abs=1e-4)
    loud = speech_like(1.0) * 10
    assert normalize_volume(loud) is loud  # increase only
    silent = np.zeros(100, np.float32)
    assert normalize_volume(silent) is silent  # no 0 * inf


# ------------------------------------------------------------------------------ reference


@needs_resemblyzer
def test_partial_slices_equal_resemblyzer(voice_encoder):
    _, module = voice_encoder
    for n in (1, 800, 16000, 25600, 25601, 33000, 48000, 80000, 123457):
        _, theirs = module.VoiceEncoder.compute_partial_slices(n, rate=1.3, min_coverage=0.75)
        assert partial_slices(n) == [slice(int(s.start), int(s.stop)) for s in theirs], n


@needs_resemblyzer
def test_layers_equal_voice_encoder_on_the_same_mel(adapter, voice_encoder):
    """Each LSTM layer's output and the embedding equal VoiceEncoder's within 1e-5."""
    encoder, _ = voice_encoder
    wave = normalize_volume(speech_like(2.3, seed=2))
    mel = mel_spectrogram(wave)
    (hidden,) = adapter.forward([speech_like(2.3, seed=2)])
    assert hidden.shape == (4, len(mel), 256)
    np.testing.assert_array_equal(hidden[0, :, :40], mel)
    assert not hidden[0, :, 40:].any()
    x = torch.from_numpy(mel)[None]
    with torch.no_grad():
        for k in range(3):  # layer k of VoiceEncoder's stacked LSTM: the output of k+1 layers
            sub = torch.nn.LSTM(40, 256, k + 1, batch_first=True)
            sub.load_state_dict(
                {n: p for n, p in encoder.lstm.state_dict().items() if int(n[-1]) <= k}
            )
            want = sub(x)[0][0].numpy()
            np.testing.assert_allclose(hidden[k + 1], want, atol=1e-5, rtol=0)
        full = encoder.lstm(x)[0][0].numpy()
        np.testing.assert_allclose(hidden[3], full, atol=1e-5, rtol=0)
        partial = torch.from_numpy(mel[:160])[None]
        want_embed = encoder(partial)[0].numpy()
    np.testing.assert_allclose(adapter._embed(mel[:160][None])[0], want_embed, atol=1e-5, rtol=0)


@needs_resemblyzer
def test_d_vector_equals_embed_utterance(adapter, voice_encoder, monkeypatch):
    """VoiceEncoder.embed_utterance (partials, padding, mean, renorm) on the preprocessed
    waveform, its mel being ours (tested above against the formula)."""
    encoder, module = voice_encoder
    monkeypatch.setattr(module.audio, "wav_to_mel_spectrogram", mel_spectrogram, raising=False)
    for seconds in (0.4, 1.7, 3.9):
        raw = speech_like(seconds, seed=3)
        want = encoder.embed_utterance(normalize_volume(raw))
        (got,) = adapter.embeddings([raw])
        assert got.shape == (1, 256) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], want, atol=1e-5, rtol=0)
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------ adapter


@needs_resemblyzer
def test_registered_without_attention(adapter):
    assert ADAPTERS["ge2e"] is GE2EAdapter
    assert has_capability("ge2e", "utterance_level")
    for cap in ("self_attention", "cross_attention", "spectral"):
        assert not has_capability("ge2e", cap)
    assert adapter.layer_names == ("mel", "lstm.1", "lstm.2", "lstm.3")
    assert adapter.layer_widths == (40, 256, 256, 256)
    assert (adapter.num_layers, adapter.hidden_size, adapter.num_heads) == (4, 256, 0)
    assert adapter.embedding_names == ("d_vector",) and adapter.embedding_size == 256
    with pytest.raises(AdapterError, match="no attention"):
        adapter.forward([speech_like(0.5)], output_attentions=True)
    with pytest.raises(AdapterError, match="no self-attention"):
        adapter.attention_projections()


@pytest.mark.parametrize("key", ["attention", "saliency"])
def test_listing_it_for_attention_is_a_startup_error(key):
    from snakemake.utils import validate

    from speechlens.checks import check_references
    from speechlens.config import ConfigError
    from tests.conftest import REPO

    config = {
        "corpora": {"tiny": {"kind": "synthetic", "languages": ["en-us"]}},
        "models": {"ge2e": {"family": "ge2e", "source": "pypi:resemblyzer"}},
        key: {"models": ["ge2e"]},
    }
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    with pytest.raises(ConfigError, match=rf"{key}\.models\[0\].*ge2e"):
        check_references(config)


@needs_resemblyzer
def test_batched_equals_one_at_a_time(adapter):
    lengths = [0.3, 1.9, 0.01, 2.6]
    batch = [speech_like(s, seed=i) for i, s in enumerate(lengths)]
    hidden, vectors = adapter.forward_with_embeddings(batch)
    for i, wave in enumerate(batch):
        (h,), (v,) = adapter.forward_with_embeddings([wave])
        assert hidden[i].shape == (4, frame_count(len(wave)), 256)
        np.testing.assert_allclose(hidden[i], h, atol=1e-5, rtol=0)  # float32 GEMM order
        np.testing.assert_allclose(vectors[i], v, atol=1e-5, rtol=0)
    (empty,) = adapter.forward([np.zeros(0, np.float32)])
    assert empty.shape == (4, 0, 256)


@needs_resemblyzer
def test_random_init_control(checkpoint, adapter):
    def run(seed):
        a = GE2EAdapter(str(checkpoint), init="random", seed=seed, device="cpu")
        a.load()
        return a, a.forward_with_embeddings([speech_like(1.0)])

    state = torch.random.get_rng_state()
    a0, (h0, v0) = run(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # global generator untouched
    _, (h0b, v0b) = run(0)
    _, (h1, _) = run(1)
    np.testing.assert_array_equal(h0[0], h0b[0])
    np.testing.assert_array_equal(v0[0], v0b[0])
    assert not np.allclose(h0[0][1:], h1[0][1:])
    (hp,), (vp,) = adapter.forward_with_embeddings([speech_like(1.0)])
    np.testing.assert_array_equal(h0[0][0], hp[0])  # same input mel
    assert not np.allclose(h0[0][1:], hp[1:], atol=1e-3)
    assert a0.provenance()["weights"] == "random-init seed 0"


# ------------------------------------------------------------------------------ converter


@needs_resemblyzer
def test_converted_checkpoint_and_provenance(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config == {
        "model_type": "ge2e",
        "n_mels": 40,
        "hidden_size": 256,
        "num_layers": 3,
        "embedding_size": 256,
    }
    record = json.loads((checkpoint / convert_ge2e.SOURCE_RECORD).read_text())
    (package,) = record["packages"]
    assert (package["package"], package["version"]) == ("resemblyzer", "0.1.4")
    ((path, digest),) = package["files"].items()
    assert path == "resemblyzer/pretrained.pt"
    assert digest == record["weights_sha256"]
    assert set(record["dropped"]) == {"similarity_weight", "similarity_bias"}
    from safetensors.torch import load_file

    n_params = sum(t.numel() for t in load_file(checkpoint / "model.safetensors").values())
    assert n_params == 1_423_616  # 3 LSTM layers (40 -> 256, 256 -> 256 x 2) + 256 x 256 linear
    adapter = GE2EAdapter(str(checkpoint), device="cpu")
    adapter.load()
    assert adapter.provenance()["weights"] == {
        "model.safetensors": pypi.sha256_file(checkpoint / "model.safetensors")
    }


def test_unexpected_weights_are_an_error():
    lstm = torch.nn.LSTM(40, 8, 2, batch_first=True)
    state = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    state |= {"linear.weight": torch.zeros(8, 8), "linear.bias": torch.zeros(8)}
    assert convert_ge2e.network_config(state)["num_layers"] == 2
    with pytest.raises(ConversionError, match="extra.*lstm.extra"):
        convert_ge2e.network_config({**state, "lstm.extra": torch.zeros(1)})
    with pytest.raises(ConversionError, match="linear.bias"):
        convert_ge2e.network_config({**state, "linear.bias": torch.zeros(9)})
