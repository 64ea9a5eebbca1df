"""w2v-BERT 2.0 and the SeamlessM4T v2 speech encoder on tiny random checkpoints.

Reference: ``transformers``' own ``SeamlessM4TFeatureExtractor`` + model (for Seamless, the
speech encoder inside a saved ``SeamlessM4Tv2Model``), called as documented.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS, has_capability
from speechlens.models.base import AdapterError, ModelSourceError
from tests.tiny_families import family, save_tiny_family
from tests.unit.test_adapters import test_lengths, waves

NAMES = ["w2v_bert", "seamless_m4t_v2"]
SR = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_w2vbert")
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


def reference_encoder(tiny_dir, name):
    import transformers

    if name == "w2v_bert":
        return transformers.Wav2Vec2BertModel.from_pretrained(tiny_dir / name).eval()
    return transformers.SeamlessM4Tv2Model.from_pretrained(tiny_dir / name).speech_encoder.eval()


def test_registered_with_capabilities():
    for fam in ("w2v-bert", "seamless-m4t"):
        assert ADAPTERS[fam].family == fam
        assert has_capability(fam, "self_attention")
        assert not has_capability(fam, "utterance_level")


@pytest.mark.parametrize("name", NAMES)
def test_geometry(tiny_dir, name):
    adapter = make(tiny_dir, name)
    assert (adapter.num_layers, adapter.hidden_size, adapter.num_heads) == (3, 32, 2)
    assert adapter.frame_rate_hz == 50.0 and adapter.supports_padding
    np.testing.assert_allclose(adapter.frame_times(3), [0.0175, 0.0375, 0.0575])


@pytest.mark.parametrize("name", NAMES)
def test_frame_count_matches_extractor_and_model(tiny_dir, name):
    adapter = make(tiny_dir, name)
    fe = adapter.extractor
    lengths = [*test_lengths(160, 400)[::2], *test_lengths(320, 560, seed=1)[::4]]
    rng = np.random.default_rng(0)
    for n in lengths:
        wave = rng.standard_normal(n).astype(np.float32)
        feats = fe(wave, sampling_rate=SR, return_tensors="np")
        assert adapter.fbank_frame_count(n) == fe._extract_fbank_features(wave).shape[0]
        assert adapter.frame_count(n) == int(feats["attention_mask"].sum())
    assert [adapter.frame_count(n) for n in (0, 399, 400, 559, 560, 719, 720, 880)] == [
        *(0, 0, 0, 0),
        *(1, 1, 1, 2),
    ]
    (out,) = adapter.forward(waves([16000]))
    assert out.shape[1] == adapter.frame_count(16000) == 49


@pytest.mark.parametrize("name", NAMES)
def test_equals_transformers(tiny_dir, name):
    adapter = make(tiny_dir, name)
    model = reference_encoder(tiny_dir, name)
    (wave,) = waves([13333], seed=4)  # 82 fbank frames -> 41 stacked
    inputs = adapter.extractor(wave, sampling_rate=SR, return_tensors="pt")
    raw = []  # the last block's own output (Seamless' hidden_states[-1] is the adaptor's)
    hook = model.encoder.layers[-1].register_forward_hook(
        lambda _m, _a, out: raw.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    hook.remove()
    (ours,) = adapter.forward([wave])
    n = adapter.frame_count(len(wave))
    assert ours.shape == (3, n, 32)
    ref = torch.stack(out.hidden_states[:-1])[:, 0, :n].numpy()
    np.testing.assert_allclose(ours[:-1], ref, atol=1e-5)
    np.testing.assert_allclose(ours[-1], raw[0][0, :n].numpy(), atol=1e-5)
    if name == "w2v_bert":  # no final norm: transformers' last entry is the same
        np.testing.assert_allclose(ours[-1], out.hidden_states[-1][0, :n].numpy(), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_alone_and_attentions(tiny_dir, name):
    adapter = make(tiny_dir, name)
    batch = waves([16000, 5000, 12345, 300, 16000, 7777, 561])
    outputs = adapter.forward(batch)
    for wave, out in zip(batch, outputs, strict=True):
        assert out.shape == (3, adapter.frame_count(len(wave)), 32) and out.dtype == np.float32
        (alone,) = adapter.forward([wave])
        np.testing.assert_allclose(out, alone, atol=1e-4, rtol=0)
    assert outputs[3].shape[1] == 0
    _, attn = adapter.forward(batch[:3], output_attentions=True)
    for wave, a in zip(batch[:3], attn, strict=True):
        n = adapter.frame_count(len(wave))
        assert a.shape == (2, 2, n, n)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
        (_, (alone,)) = adapter.forward([wave], output_attentions=True)
        np.testing.assert_allclose(a, alone, atol=1e-5)
    assert len(adapter.attention_projections()) == 2


def test_seamless_eager_padding_is_why_attentions_run_alone(tiny_dir):
    """transformers' eager Seamless attention adds its boolean mask: padded keys keep weight."""
    adapter = make(tiny_dir, "seamless_m4t_v2")
    assert not adapter.pad_attentions and make(tiny_dir, "w2v_bert").pad_attentions
    batch = waves([16000, 5000])
    _, weights = adapter._run(batch, output_attentions=True)  # one padded batch
    n = adapter.frame_count(5000)
    assert weights[:, 1, :, :n, :n].sum(-1).max() < 0.9  # weight leaked to the padding


@pytest.mark.parametrize("name", NAMES)
def test_random_init_is_seeded(tiny_dir, name):
    (wave,) = waves([8000])

    def run(seed):
        adapter = ADAPTERS[family(name)](str(tiny_dir / name), init="random", seed=seed)
        adapter.load()
        return adapter.forward([wave])[0], adapter.provenance()

    first, prov = run(0)
    again, _ = run(0)
    other, _ = run(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[1:] - other[1:]).max() > 1e-3
    assert np.abs(first[1:] - make(tiny_dir, name).forward([wave])[0][1:]).max() > 1e-3
    assert prov["weights"] == "random-init seed 0"


def test_seamless_reads_only_the_speech_encoder(tiny_dir):
    adapter = make(tiny_dir, "seamless_m4t_v2")
    assert type(adapter.model).__name__ == "SeamlessM4Tv2SpeechEncoder"
    reference = reference_encoder(tiny_dir, "seamless_m4t_v2").state_dict()
    ours = adapter.model.state_dict()
    assert set(ours) == set(reference)
    assert all(torch.equal(ours[k], reference[k]) for k in ours)


def test_wrong_checkpoint_and_offline(tiny_dir, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(AdapterError, match="holds a 'wav2vec2-bert' model"):
        ADAPTERS["seamless-m4t"](str(tiny_dir / "w2v_bert")).load()
    with pytest.raises(AdapterError, match="holds a 'seamless_m4t_v2' model"):
        ADAPTERS["w2v-bert"](str(tiny_dir / "seamless_m4t_v2")).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for fam in ("w2v-bert", "seamless-m4t"):
        with pytest.raises(ModelSourceError) as err:
            ADAPTERS[fam]("facebook/not-cached-model", revision="abc").load()
        assert "'facebook/not-cached-model'" in str(err.value)
        assert "revision abc" in str(err.value) and "hf download" in str(err.value)
