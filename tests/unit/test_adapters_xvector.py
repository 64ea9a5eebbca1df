"""x-vector heads (Wav2Vec2/WavLM/UniSpeechSat ``ForXVector``) on tiny random checkpoints.

Reference: the ``transformers`` model itself, called as its documentation says (normalised
input, attention mask where the feature extractor returns one): its hidden states, its TDNN
layers' outputs (forward hooks) and its ``embeddings`` must equal the adapter's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS, has_capability
from speechlens.models.base import AdapterError, ModelSourceError
from speechlens.models.wav2vec2 import zero_mean_unit_var
from tests.tiny_families import family, save_tiny_family
from tests.unit.test_adapters import test_lengths, waves

NAMES = ["xvector_wav2vec2", "xvector_wavlm", "xvector_unispeech_sat"]
SR = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_xvector")
    for name in NAMES:
        save_tiny_family(name, root / name)
    return root


_CACHE: dict = {}


def make(tiny_dir, name, **kwargs):
    key = (str(tiny_dir), name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        adapter = ADAPTERS[family(name)](str(tiny_dir / name), **kwargs)
        adapter.load()
        _CACHE[key] = adapter
    return _CACHE[key]


def reference(tiny_dir, name, wave):
    """transformers' own outputs: hidden states, TDNN outputs, x-vector (one utterance)."""
    import transformers

    cls = {"xvector_wav2vec2": "Wav2Vec2ForXVector", "xvector_wavlm": "WavLMForXVector"}.get(
        name, "UniSpeechSatForXVector"
    )
    model = getattr(transformers, cls).from_pretrained(tiny_dir / name).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(tiny_dir / name)
    inputs = extractor(wave, sampling_rate=SR, return_tensors="pt")
    tdnn = []
    hooks = [t.register_forward_hook(lambda _m, _a, out: tdnn.append(out)) for t in model.tdnn]
    last = model.base_model.encoder.layers[-1]  # its raw output (hidden_states[-1] may be normed)
    hooks.append(
        last.register_forward_hook(
            lambda _m, _a, out: tdnn.insert(0, out[0] if isinstance(out, tuple) else out)
        )
    )
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    raw_last = tdnn.pop(0)
    hidden = torch.stack([*out.hidden_states[:-1], raw_last])[:, 0].numpy()
    return model, hidden, [t[0].numpy() for t in tdnn], out.embeddings[0].numpy()


def test_registered_with_capabilities():
    assert ADAPTERS["xvector"].family == "xvector"
    assert has_capability("xvector", "utterance_level")
    assert not has_capability("xvector", "self_attention")


@pytest.mark.parametrize("name", NAMES)
def test_layers_and_widths(tiny_dir, name):
    adapter = make(tiny_dir, name)
    assert adapter.layer_names == (
        "encoder.0",
        "encoder.1",
        "encoder.2",
        *(f"tdnn.{i}" for i in range(1, 6)),
    )
    assert adapter.layer_widths == (32, 32, 32, 16, 16, 16, 16, 24)
    assert (adapter.num_layers, adapter.hidden_size, adapter.embedding_size) == (8, 24 + 8, 12)
    assert adapter.span == 14
    # frame j is centred on encoder frame j + 7: (7 * 320 + 200) / 16000 s
    np.testing.assert_allclose(adapter.frame_times(3), [0.1525, 0.1725, 0.1925])


@pytest.mark.parametrize("name", NAMES)
def test_frame_count_matches_model(tiny_dir, name):
    adapter = make(tiny_dir, name)
    head = adapter.head
    for n in test_lengths(320, 400 + 14 * 320)[::3]:
        frames = int(head._get_feat_extract_output_lengths(n))
        if frames < 15:  # conv1d refuses inputs shorter than the TDNN stack
            assert adapter.frame_count(n) == 0
            continue
        x = torch.zeros(1, n)
        with torch.inference_mode():
            h = head.projector(head.base_model(x).last_hidden_state)
            for layer in head.tdnn:
                h = layer(h)
        assert adapter.frame_count(n) == h.shape[1] == frames - 14
        # transformers' own length helper ignores the dilations (frames - 8): with padded
        # batches its pooling would include frames computed from padding; ours does not.
        assert int(head._get_tdnn_output_lengths(frames)) == frames - 8
    # 15 encoder frames (400 + 14 * 320 samples) are the first to give a TDNN frame
    assert [adapter.frame_count(n) for n in (0, 4879, 4880, 5199, 5200)] == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("name", NAMES)
def test_equals_transformers(tiny_dir, name):
    adapter = make(tiny_dir, name)
    (wave,) = waves([13333], seed=3)
    hidden, vectors = adapter.forward_with_embeddings([wave])
    model, ref_hidden, ref_tdnn, ref_vector = reference(tiny_dir, name, wave)
    n = adapter.frame_count(len(wave))
    ours = hidden[0]
    assert ours.shape == (8, n, 32)
    np.testing.assert_allclose(ours[:3, :, :32], ref_hidden[:, 7 : 7 + n], atol=1e-5)
    offsets = [7 - 2, 7 - 4, 0, 0, 0]  # TDNN layer l's frame j + offset feeds our frame j
    for k, (ref, off) in enumerate(zip(ref_tdnn, offsets, strict=True)):
        np.testing.assert_allclose(ours[3 + k, :, : ref.shape[1]], ref[off : off + n], atol=1e-5)
        assert (ours[3 + k, :, ref.shape[1] :] == 0).all()  # zero-padded to the widest
    np.testing.assert_allclose(vectors[0], ref_vector[None], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_alone(tiny_dir, name):
    adapter = make(tiny_dir, name)
    batch = waves([16000, 5600, 12345, 5200, 16000, 7777])
    hidden, vectors = adapter.forward_with_embeddings(batch)
    assert adapter.forward(batch)[2].shape == hidden[2].shape
    for wave, h, v in zip(batch, hidden, vectors, strict=True):
        assert h.shape == (8, adapter.frame_count(len(wave)), 32) and h.dtype == np.float32
        assert v.shape == (1, 12) and v.dtype == np.float32
        (h1,), (v1,) = adapter.forward_with_embeddings([wave])
        np.testing.assert_allclose(h, h1, atol=1e-4, rtol=0)
        np.testing.assert_allclose(v, v1, atol=1e-4, rtol=0)
    np.testing.assert_allclose(adapter.embeddings(batch[:2])[1], vectors[1], atol=1e-6)


def test_short_utterances(tiny_dir):
    adapter = make(tiny_dir, "xvector_wavlm")
    out = adapter.forward(waves([300, 4880]))
    assert out[0].shape == (8, 0, 32) and out[1].shape == (8, 1, 32)
    with pytest.raises(AdapterError, match=r"utterance 0 \(0\.305 s\) gives 1 TDNN frame"):
        adapter.embeddings(waves([4880]))
    with pytest.raises(AdapterError, match="encoder's family"):
        adapter.forward(waves([8000]), output_attentions=True)


def test_weighted_layer_sum_uses_the_normed_last_state(tiny_dir):
    """The WavLM tiny head sums layers with learnt weights, as transformers does."""
    adapter = make(tiny_dir, "xvector_wavlm")
    assert adapter.config.use_weighted_layer_sum
    with torch.no_grad():
        adapter.head.layer_weights.copy_(torch.tensor([0.0, 0.0, 5.0]))
    try:
        (wave,) = waves([9000])
        (v,) = adapter.embeddings([wave])
        _, _, _, ref = reference(tiny_dir, "xvector_wavlm", wave)
        assert np.abs(v - ref).max() > 1e-3  # the reference still has uniform weights
    finally:
        with torch.no_grad():
            adapter.head.layer_weights.fill_(1 / 3)
    np.testing.assert_allclose(adapter.embeddings([wave])[0], ref[None], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_random_init_is_seeded(tiny_dir, name):
    (wave,) = waves([8000])

    def run(seed):
        adapter = ADAPTERS["xvector"](str(tiny_dir / name), init="random", seed=seed)
        adapter.load()
        return adapter.forward_with_embeddings([wave]), adapter.provenance()

    (h0, v0), prov = run(0)
    (h0b, v0b), _ = run(0)
    (h1, v1), _ = run(1)
    trained_h, trained_v = make(tiny_dir, name).forward_with_embeddings([wave])
    np.testing.assert_array_equal(h0[0], h0b[0])
    np.testing.assert_array_equal(v0[0], v0b[0])

    def differ(a, b):  # relative: transformers' init gives x-vectors of ~1e-8
        return np.abs(a - b).max() > 1e-2 * np.abs(a).max() > 0

    assert differ(v0[0], v1[0]) and differ(v0[0], trained_v[0])
    assert differ(h0[0][3:], trained_h[0][3:]) and differ(h0[0][:3], h1[0][:3])
    assert prov["weights"] == "random-init seed 0"


def test_checkpoint_without_head_and_offline_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import transformers

    config = transformers.WavLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    transformers.WavLMModel(config).save_pretrained(tmp_path / "wavlm")
    with pytest.raises(AdapterError, match="without an x-vector head.*family 'wavlm'"):
        ADAPTERS["xvector"](str(tmp_path / "wavlm")).load()
    transformers.HubertConfig(hidden_size=32).save_pretrained(tmp_path / "hubert")
    with pytest.raises(AdapterError, match="holds a 'hubert' model"):
        ADAPTERS["xvector"](str(tmp_path / "hubert")).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as err:
        ADAPTERS["xvector"]("made-up-org/wavlm-sv", revision="abc").load()
    assert "'made-up-org/wavlm-sv'" in str(err.value) and "Hugging Face cache" in str(err.value)


def test_normalisation_follows_the_extractor(tiny_dir):
    assert make(tiny_dir, "xvector_wavlm").normalize is True
    assert make(tiny_dir, "xvector_unispeech_sat").normalize is False
    assert zero_mean_unit_var(np.ones(4, np.float32)).tolist() == [0.0] * 4
