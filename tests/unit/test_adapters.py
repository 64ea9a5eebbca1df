"""Model adapters on tiny random checkpoints of every family (no hub access needed).

Checks the interface contract: exact frame counts against what the models really output
(many lengths, edge cases around the strides), shapes, batched == one-at-a-time outputs,
attention weights, seeded random init, provenance and the offline error message.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS
from speechlens.models.base import AdapterError, ModelSourceError
from tests.tiny_models import TINY, family, save_tiny

W2V = ["wav2vec2", "wav2vec2_large", "hubert", "wavlm", "data2vec_audio"]
VARIANTS = [*W2V, "whisper:pad30", "whisper:trim"]
SPECTRAL = ["logmel", "mfcc"]
BATCH_LENGTHS = [16000, 5000, 12345, 300, 16000, 7777]
SR = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    for name in TINY:
        save_tiny(name, root / name)
    return root


_CACHE: dict = {}


def make(tiny_dir, variant: str, **kwargs):
    """A loaded adapter for ``variant`` (``name`` or ``whisper:<padding>``), cached."""
    name, _, padding = variant.partition(":")
    options = {"padding": padding} if padding else {}
    key = (str(tiny_dir), variant, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        adapter = ADAPTERS[family(name)](str(tiny_dir / name), **options, **kwargs)
        adapter.load()
        _CACHE[key] = adapter
    return _CACHE[key]


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_lengths(stride: int, edge_of: int, seed: int = 0) -> list[int]:
    """30 random lengths in 0.1-3 s plus lengths around multiples of ``stride``."""
    rng = np.random.default_rng(seed)
    lengths = set(rng.integers(SR // 10, 3 * SR, size=30).tolist())
    for k in (1, 2, 3, 7, 50, 149):
        for d in (-1, 0, 1):
            lengths.add(edge_of + k * stride + d)
    return sorted(n for n in lengths if n > 0)


test_lengths.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------------- registry, geometry


def test_registry_names_every_family():
    assert set(ADAPTERS) == {
        "whisper",
        "wav2vec2",
        "hubert",
        "wavlm",
        "data2vec-audio",
        "logmel",
        "mfcc",
        "tera",  # tests/unit/test_tera.py
        "ge2e",  # tests/unit/test_ge2e.py
        "xvector",  # tests/unit/test_adapters_xvector.py
        "w2v-bert",  # tests/unit/test_adapters_w2vbert.py
        "seamless-m4t",
        "ecapa",  # tests/unit/test_adapters_ecapa.py
        "qwen2-audio",  # tests/unit/test_adapters_qwen2_audio.py
    }
    for name, cls in ADAPTERS.items():
        assert cls.family == name


def test_init_stores_arguments_only():
    adapter = ADAPTERS["wav2vec2"]("/no/such/folder", revision="r1", init="random", seed=3)
    assert (adapter.source, adapter.revision, adapter.seed, adapter.loaded) == (
        "/no/such/folder",
        "r1",
        3,
        False,
    )
    with pytest.raises(AdapterError, match="load"):
        adapter.forward([np.zeros(1000, np.float32)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_geometry(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    assert adapter.num_layers == 3  # 2 blocks + the input to the first
    assert (adapter.hidden_size, adapter.num_heads, adapter.sample_rate) == (32, 2, SR)
    assert adapter.frame_rate_hz == pytest.approx(50.0)
    expected_padding = variant not in ("wav2vec2", "hubert", "data2vec_audio")
    assert adapter.supports_padding is expected_padding
    times = adapter.frame_times(3)
    if variant.startswith("whisper"):
        np.testing.assert_allclose(times, [0.0, 0.02, 0.04])
    else:  # (i * 320 + 400 / 2) / 16000
        np.testing.assert_allclose(times, [0.0125, 0.0325, 0.0525])


@pytest.mark.parametrize("name", W2V)
def test_wav2vec2_frame_count_matches_model(tiny_dir, name):
    adapter = make(tiny_dir, name)
    model = adapter.model
    lengths = test_lengths(320, 400)
    for n in lengths:
        x = torch.zeros(1, n)
        with torch.inference_mode():
            frames = model(x).last_hidden_state.shape[1]
        assert adapter.frame_count(n) == frames == int(model._get_feat_extract_output_lengths(n))
    assert [adapter.frame_count(n) for n in (0, 1, 399, 400, 719, 720)] == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize("variant", ["whisper:pad30", "whisper:trim"])
def test_whisper_frame_count_matches_model(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    enc = adapter.model
    # (the unpadded STFT's reflect padding needs n > 200; shorter ones are checked below)
    lengths = [*test_lengths(320, 0), *test_lengths(160, 0, seed=1), 201, 319, 320, 321]
    for n in [n for n in lengths if n > 200]:
        wave = np.zeros(n, np.float32)
        # Unpadded, the feature extractor gives 1 + n // 160 STFT frames and drops the last.
        mel = adapter.extractor(wave, sampling_rate=SR, padding="longest", return_tensors="pt")
        n_mel = mel["input_features"].shape[-1]
        assert adapter.mel_frame_count(n) == n_mel == n // 160
        with torch.inference_mode():
            conv = enc.conv2(enc.conv1(torch.zeros(1, enc.num_mel_bins, n_mel)))
        hf_frames = int(enc._get_feat_extract_output_lengths(n_mel))
        assert adapter.frame_count(n) == conv.shape[-1] == hf_frames
    short = (0, 159, 160, 319, 320, 479, 480, 640)
    assert [adapter.frame_count(n) for n in short] == [0, 0, 1, 1, 1, 1, 2, 2]
    assert adapter.frame_count(30 * SR) == 1500


# ---------------------------------------------------------------------- forward


@pytest.mark.parametrize("variant", [*VARIANTS, *SPECTRAL])
def test_batched_equals_one_at_a_time(tiny_dir, variant):
    if variant in SPECTRAL:
        adapter = ADAPTERS[variant]()
        adapter.load()
    else:
        adapter = make(tiny_dir, variant)
    batch = waves(BATCH_LENGTHS)
    outputs = adapter.forward(batch)
    assert len(outputs) == len(batch)
    for wave, out in zip(batch, outputs, strict=True):
        n_frames = adapter.frame_count(len(wave))
        assert out.shape == (adapter.num_layers, n_frames, adapter.hidden_size)
        assert out.dtype == np.float32
        (alone,) = adapter.forward([wave])
        np.testing.assert_allclose(out, alone, atol=1e-4, rtol=0)
    assert outputs[3].shape[1] == 0 or variant.startswith("whisper")  # 300 samples < 400


@pytest.mark.parametrize("variant", VARIANTS)
def test_attentions(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    batch = waves([16000, 6000, 9999])
    before = adapter.model.config._attn_implementation
    hidden, attn = adapter.forward(batch, output_attentions=True)
    assert adapter.model.config._attn_implementation == before  # eager only while needed
    np.testing.assert_allclose(hidden[0], adapter.forward(batch[:1])[0], atol=1e-4, rtol=0)
    for wave, weights in zip(batch, attn, strict=True):
        n = adapter.frame_count(len(wave))
        assert weights.shape == (adapter.num_layers - 1, adapter.num_heads, n, n)
        assert (weights >= 0).all()
        rows = weights.sum(-1)
        if variant == "whisper:pad30":  # the rest of each row went to the padding
            assert (rows <= 1 + 1e-5).all() and (rows > 0).all()
        else:
            np.testing.assert_allclose(rows, 1.0, atol=1e-5)
        (_, (alone,)) = adapter.forward([wave], output_attentions=True)
        np.testing.assert_allclose(weights, alone, atol=1e-5, rtol=0)


def test_wavlm_attentions_are_per_head(tiny_dir):
    """transformers' WavLM returns head-averaged weights; the adapter returns each head."""
    from transformers import WavLMModel

    adapter = make(tiny_dir, "wavlm")
    (wave,) = waves([8000])
    (_, (ours,)) = adapter.forward([wave], output_attentions=True)
    reference = WavLMModel.from_pretrained(tiny_dir / "wavlm").eval()
    values = torch.from_numpy(_norm(wave) if adapter.normalize else wave)[None]
    with torch.inference_mode():
        averaged = reference(values, output_attentions=True).attentions
    for layer, ref in enumerate(averaged):
        np.testing.assert_allclose(ours[layer].mean(0), ref[0, 0].numpy(), atol=1e-5)
    assert np.abs(ours[:, 0] - ours[:, 1]).max() > 1e-4


def _norm(wave):
    from speechlens.models.wav2vec2 import zero_mean_unit_var

    return zero_mean_unit_var(wave)


def test_data2vec_padding_would_leak(tiny_dir):
    """Why data2vec-audio never pads: its conv positional stack spreads the padding."""
    adapter = make(tiny_dir, "data2vec_audio")
    batch = waves([16000, 9000])
    states, _ = adapter._run(batch, output_attentions=False)  # equal-length path: no mask
    (alone,) = adapter.forward(batch[1:])
    n = adapter.frame_count(9000)
    assert np.abs(states[:, 1, :n].numpy() - alone).max() > 1e-3


def test_hidden_states_are_raw_block_outputs(tiny_dir):
    """Layer -1 is the last block's output, before the stable-layer-norm final norm."""
    adapter = make(tiny_dir, "wav2vec2_large")
    (wave,) = waves([12000])
    (ours,) = adapter.forward([wave])
    with torch.inference_mode():
        out = adapter.model(torch.from_numpy(_norm(wave))[None])
        normed = adapter.model.encoder.layer_norm(torch.from_numpy(ours[-1]))
    np.testing.assert_allclose(normed.numpy(), out.last_hidden_state[0].numpy(), atol=1e-5)
    assert np.abs(ours[-1] - out.last_hidden_state[0].numpy()).max() > 1e-2


def test_whisper_pad30_equals_hf_encoder(tiny_dir):
    adapter = make(tiny_dir, "whisper:pad30")
    enc = adapter.model
    (wave,) = waves([20000])
    (ours,) = adapter.forward([wave])
    n = adapter.frame_count(len(wave))
    with torch.inference_mode():
        out = enc(torch.from_numpy(adapter.log_mel([wave])), output_hidden_states=True)
        hf_states = torch.stack(out.hidden_states)[:, 0, :n].numpy()
        normed = enc.layer_norm(torch.from_numpy(ours[-1])).numpy()
    # transformers ties hidden_states[-1] to last_hidden_state (after the final layer_norm)
    np.testing.assert_allclose(ours[:-1], hf_states[:-1], atol=1e-5)
    np.testing.assert_allclose(normed, hf_states[-1], atol=1e-5)
    trimmed = make(tiny_dir, "whisper:trim").forward([wave])[0]
    assert trimmed.shape == ours.shape and np.abs(trimmed[1:] - ours[1:]).max() > 1e-4
    # Layer 0 agrees but for the last frame, whose conv window reaches past the valid mel
    # frames: pad30 sees the mel of the zero-padded tail there, trim the convs' zero padding.
    np.testing.assert_allclose(trimmed[0, :-1], ours[0, :-1], atol=1e-5)


@pytest.mark.parametrize("variant", ["whisper:pad30", "whisper:trim"])
def test_whisper_rejects_more_than_30_s(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    with pytest.raises(AdapterError, match=r"30\.00 s long.*at most 30 s"):
        adapter.forward([np.zeros(30 * SR + 1, np.float32)])
    assert adapter.forward([np.zeros(30 * SR, np.float32)])[0].shape[1] == 1500


# ---------------------------------------------------------------------- init, provenance


@pytest.mark.parametrize("name", [*W2V, "whisper"])
def test_random_init_is_seeded(tiny_dir, name):
    batch = waves([8000])

    def run(**kwargs):
        adapter = ADAPTERS[family(name)](str(tiny_dir / name), **kwargs)
        adapter.load()
        return adapter.forward(batch)[0], adapter.provenance()

    first, prov = run(init="random", seed=0)
    again, _ = run(init="random", seed=0)
    other, _ = run(init="random", seed=1)
    pretrained = make(tiny_dir, name).forward(batch)[0]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[1:] - other[1:]).max() > 1e-3
    assert np.abs(first[1:] - pretrained[1:]).max() > 1e-3
    assert prov["weights"] == "random-init seed 0" and prov["init"] == "random"


@pytest.mark.parametrize("name", ["wav2vec2", "whisper"])
def test_provenance_hashes_weights(tiny_dir, name):
    prov = make(tiny_dir, name).provenance()
    digest = hashlib.sha256((tiny_dir / name / "model.safetensors").read_bytes()).hexdigest()
    assert prov["weights"] == {"model.safetensors": digest}
    assert prov["family"] == family(name) and prov["source"] == str(tiny_dir / name)
    assert prov["init"] == "pretrained"


def test_offline_unknown_model_names_it_and_the_fix(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for init in ("pretrained", "random"):
        adapter = ADAPTERS["wav2vec2"]("made-up-org/no-such-model", revision="abc", init=init)
        with pytest.raises(ModelSourceError) as err:
            adapter.load()
        message = str(err.value)
        assert "'made-up-org/no-such-model'" in message and "revision abc" in message
        assert "source:" in message and "Hugging Face cache" in message
    with pytest.raises(ModelSourceError, match="local model folder '/no/such/dir' does not"):
        ADAPTERS["whisper"]("/no/such/dir").load()


# ---------------------------------------------------------------------- options, inputs


def test_bad_options_and_inputs(tiny_dir):
    with pytest.raises(AdapterError, match="unknown option"):
        ADAPTERS["hubert"]("x", chunk=3)
    with pytest.raises(AdapterError, match="padding"):
        ADAPTERS["whisper"]("x", padding="zeros")
    with pytest.raises(AdapterError, match="init"):
        ADAPTERS["hubert"]("x", init="trained")
    if not torch.cuda.is_available():
        with pytest.raises(AdapterError, match="CUDA"):
            ADAPTERS["hubert"](str(tiny_dir / "hubert"), compute_dtype="bfloat16").load()
    adapter = make(tiny_dir, "hubert")
    with pytest.raises(AdapterError, match="mono"):
        adapter.forward([np.zeros((2, 8000), np.float32)])
    with pytest.raises(AdapterError, match="non-finite"):
        adapter.forward([np.full(8000, np.nan, np.float32)])
    with pytest.raises(AdapterError, match="full scale"):
        adapter.forward([np.zeros(8000, np.int16)])
    with pytest.raises(AdapterError, match="holds a 'wav2vec2' model"):
        ADAPTERS["hubert"](str(tiny_dir / "wav2vec2")).load()


# ---------------------------------------------------------------------- spectral baselines


@pytest.mark.parametrize("name", SPECTRAL)
def test_spectral_frames_and_shapes(name):
    adapter = ADAPTERS[name]()
    adapter.load()
    assert (adapter.num_layers, adapter.num_heads, adapter.frame_rate_hz) == (1, 0, 100.0)
    assert adapter.hidden_size == {"logmel": 80, "mfcc": 13}[name]
    np.testing.assert_allclose(adapter.frame_times(2), [0.0125, 0.0225])
    lengths = [*test_lengths(160, 400), 0, 1, 399, 400, 559, 560]
    outputs = adapter.forward(waves(lengths))
    for n, out in zip(lengths, outputs, strict=True):
        expected = 0 if n < 400 else 1 + (n - 400) // 160
        assert adapter.frame_count(n) == expected == out.shape[1]
        assert out.shape == (1, expected, adapter.hidden_size) and out.dtype == np.float32
    assert adapter.provenance()["weights"].startswith("none")
    with pytest.raises(AdapterError, match="attention"):
        adapter.forward(waves([1000]), output_attentions=True)
    with pytest.raises(AdapterError, match="source"):
        ADAPTERS[name]("some/model")


def test_logmel_matches_direct_computation():
    """One frame by hand: Hann window, 512-point power spectrum, mel filters, natural log."""
    logmel, mfcc = ADAPTERS["logmel"](), ADAPTERS["mfcc"]()
    logmel.load()
    mfcc.load()
    (wave,) = waves([4000])
    frame = wave[160 * 5 : 160 * 5 + 400].astype(np.float64) * logmel.window
    power = np.abs(np.fft.rfft(frame, n=512)) ** 2
    expected = np.log(np.maximum(power @ logmel.mel_filters, 1e-10))
    got = logmel.forward([wave])[0][0]
    np.testing.assert_allclose(got[5], expected, rtol=1e-4, atol=1e-4)
    from scipy.fft import dct

    np.testing.assert_allclose(
        mfcc.forward([wave])[0][0], dct(got, norm="ortho", axis=-1)[:, :13], atol=1e-3
    )
