"""Qwen2-Audio's audio encoder on a tiny random ``Qwen2AudioForConditionalGeneration``.

References: ``transformers``' own ``WhisperFeatureExtractor`` and ``Qwen2AudioModel.forward``
(which builds the encoder's padding mask and selects the audio tokens the language model
sees), read through hooks on the encoder's blocks and on the projector; and
``Qwen2AudioEncoder(..., output_hidden_states=True)``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS, has_capability, make_adapter
from speechlens.models.base import AdapterError, ModelSourceError
from tests.tiny_families import save_tiny_family
from tests.unit.test_adapters import test_lengths, waves

SR = 16000
GRIDS = ("encoder", "pooled")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """``full``: the whole model; ``tower``: its audio encoder saved alone."""
    import transformers

    root = tmp_path_factory.mktemp("tiny_qwen2_audio")
    save_tiny_family("qwen2_audio", root / "full")
    full = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(root / "full")
    full.model.audio_tower.save_pretrained(root / "tower")
    shutil.copy(root / "full" / "preprocessor_config.json", root / "tower")
    return root


_CACHE: dict = {}


def make(tiny_dir, grid="encoder", folder="full", **kwargs):
    key = (str(tiny_dir), grid, folder, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        adapter = ADAPTERS["qwen2-audio"](str(tiny_dir / folder), grid=grid, **kwargs)
        adapter.load()
        _CACHE[key] = adapter
    return _CACHE[key]


def test_registered_with_capabilities_and_options():
    assert ADAPTERS["qwen2-audio"].family == "qwen2-audio"
    assert has_capability("qwen2-audio", "self_attention")
    assert not has_capability("qwen2-audio", "utterance_level")
    assert not has_capability("qwen2-audio", "cross_attention")
    assert ADAPTERS["qwen2-audio"]("some/model").grid == "encoder"  # the schema default
    with pytest.raises(AdapterError, match="grid must be one of"):
        ADAPTERS["qwen2-audio"]("some/model", grid="25hz")
    spec = {"family": "qwen2-audio", "source": "some/model", "grid": "pooled"}
    assert make_adapter(spec, {}).grid == "pooled"
    assert make_adapter({**spec, "grid": None}, {}).grid == "encoder"


@pytest.mark.parametrize("grid", GRIDS)
def test_geometry(tiny_dir, grid):
    adapter = make(tiny_dir, grid)
    layers, rate, times = {
        "encoder": (3, 50.0, [0.0, 0.02, 0.04]),
        "pooled": (4, 25.0, [0.01, 0.05, 0.09]),
    }[grid]
    assert (adapter.num_layers, adapter.hidden_size, adapter.num_heads) == (layers, 32, 2)
    assert adapter.frame_rate_hz == rate and adapter.supports_padding
    assert adapter.max_samples == 30 * SR and len(adapter.layer_names) == layers
    np.testing.assert_allclose(adapter.frame_times(3), times, atol=1e-12)
    assert type(adapter.model).__name__ == "Qwen2AudioEncoder"


def test_frame_count_matches_extractor_and_model(tiny_dir):
    enc, pooled = make(tiny_dir, "encoder"), make(tiny_dir, "pooled")
    lengths = [*test_lengths(160, 0), *test_lengths(320, 160, seed=1)[::3], 30 * SR - 1, 30 * SR]
    lengths = sorted(set(lengths))
    feats = enc.features(waves(lengths))
    mel = feats["attention_mask"].sum(-1)
    frames, tokens = enc.model._get_feat_extract_output_lengths(mel)  # Qwen2AudioModel's
    for i, n in enumerate(lengths):
        assert enc.mel_frame_count(n) == int(mel[i])
        assert enc.frame_count(n) == int(frames[i])
        assert pooled.frame_count(n) == int(tokens[i])
    # by hand: M = ceil(n / 160), E = (M - 1) // 2 + 1, P = E // 2
    hand = [0, 1, 160, 161, 320, 321, 480, 481, 640, 641, 800]
    assert [enc.mel_frame_count(n) for n in hand] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [enc.frame_count(n) for n in hand] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert [pooled.frame_count(n) for n in hand] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert (enc.frame_count(30 * SR), pooled.frame_count(30 * SR)) == (1500, 750)
    (out,) = enc.forward(waves([SR]))
    assert out.shape == (3, 50, 32)
    (out,) = pooled.forward(waves([SR]))
    assert out.shape == (4, 25, 32)


@pytest.mark.parametrize("grid", GRIDS)
def test_frame_times_are_the_centres(tiny_dir, grid):
    """A one-sample change at ``frame_times(k)`` alters layer 0 symmetrically around frame ``k``
    (layer 0 sees a few mel frames); a frame grid off by half a frame would not be."""
    adapter = make(tiny_dir, grid)
    (wave,) = waves([SR], seed=3)
    (base,) = adapter.forward([wave])
    n = adapter.frame_count(SR)
    for k in (5, 11, 17):
        t = round(adapter.frame_times(k + 1)[k] * SR)
        assert abs(adapter.frame_times(k + 1)[k] * SR - t) < 1e-6
        bumped = wave.copy()
        bumped[t] += 0.05
        (out,) = adapter.forward([bumped])
        changed = np.flatnonzero(np.abs(out[0] - base[0]).max(-1)[: n - 3] > 1e-6)
        assert len(changed) >= 2 and changed.mean() == k, (k, changed)


def test_equals_qwen2_audio_model(tiny_dir):
    """The encoder as Qwen2AudioModel.forward runs it (its mask, a padded batch of two)."""
    import transformers

    full = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(tiny_dir / "full")
    model = full.model.eval()
    tower = model.audio_tower
    enc, pooled = make(tiny_dir, "encoder"), make(tiny_dir, "pooled")
    batch = waves([13333, 4321], seed=4)
    feats = enc.extractor(
        batch,
        sampling_rate=SR,
        padding="max_length",
        return_attention_mask=True,
        return_tensors="pt",
    )
    counts = [enc.frame_count(len(w)) for w in batch]
    tokens = [pooled.frame_count(len(w)) for w in batch]
    audio_id, text_id, width = model.config.audio_token_id, 3, max(tokens) + 1
    ids = torch.full((2, width), text_id)
    for b, p in enumerate(tokens):
        ids[b, :p] = audio_id
    seen: dict = {"blocks": []}
    hooks = [
        tower.layers[0].register_forward_pre_hook(lambda _m, a: seen.update(input=a[0])),
        model.multi_modal_projector.register_forward_pre_hook(lambda _m, a: seen.update(out=a[0])),
    ]
    for block in tower.layers:
        hooks.append(
            block.register_forward_hook(
                lambda _m, _a, o: seen["blocks"].append(o[0] if isinstance(o, tuple) else o)
            )
        )
    with torch.inference_mode():
        model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            input_features=feats["input_features"],
            feature_attention_mask=feats["attention_mask"],
        )
    for hook in hooks:
        hook.remove()
    reference = torch.stack([seen["input"], *seen["blocks"]])
    ours = enc.forward(batch)
    ours_pooled = pooled.forward(batch)
    for b in range(2):
        ref = reference[:, b, : counts[b]].numpy()
        assert ours[b].shape == ref.shape
        np.testing.assert_allclose(ours[b], ref, atol=1e-5)
        # what the language model sees: the pooled, normed output, P frames
        np.testing.assert_allclose(ours_pooled[b][-1], seen["out"][b, : tokens[b]], atol=1e-5)
        mean = (ref[:, 0 : 2 * tokens[b] : 2] + ref[:, 1 : 2 * tokens[b] : 2]) / 2
        np.testing.assert_allclose(ours_pooled[b][:-1], mean, atol=1e-5)


def test_equals_encoder_hidden_states(tiny_dir):
    """``Qwen2AudioEncoder(..., output_hidden_states=True)`` on a 30 s utterance (no mask)."""
    import transformers

    tower = transformers.Qwen2AudioEncoder.from_pretrained(tiny_dir / "tower").eval()
    enc = make(tiny_dir, "encoder", folder="tower")
    (wave,) = waves([30 * SR], seed=5)
    feats = enc.extractor(wave, sampling_rate=SR, padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        out = tower(feats["input_features"], output_hidden_states=True)
    (ours,) = enc.forward([wave])
    assert ours.shape == (3, 1500, 32)
    # transformers ties its last entry to the pooled, normed output (750 frames)
    np.testing.assert_allclose(ours[:-1], torch.stack(out.hidden_states[:-1])[:, 0], atol=1e-5)
    assert out.hidden_states[-1].shape[1] == 750
    (last,) = make(tiny_dir, "pooled", folder="tower").forward([wave])
    np.testing.assert_allclose(last[-1], out.last_hidden_state[0], atol=1e-5)


def test_encoder_alone_equals_full_checkpoint(tiny_dir):
    """Only ``audio_tower.*`` is read from the full checkpoint: the same weights as alone."""
    full, alone = make(tiny_dir), make(tiny_dir, folder="tower")
    ours, theirs = full.model.state_dict(), alone.model.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert full.checkpoint_type == "qwen2_audio" and alone.checkpoint_type == "qwen2_audio_encoder"
    batch = waves([9000, 2000])
    for a, b in zip(full.forward(batch), alone.forward(batch), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("grid", GRIDS)
def test_batched_equals_alone(tiny_dir, grid):
    adapter = make(tiny_dir, grid)
    batch = waves([16000, 5000, 12345, 300, 100, 16000, 7777, 481])
    outputs = adapter.forward(batch)
    for wave, out in zip(batch, outputs, strict=True):
        n = adapter.frame_count(len(wave))
        assert out.shape == (adapter.num_layers, n, 32) and out.dtype == np.float32
        (alone,) = adapter.forward([wave])
        np.testing.assert_allclose(out, alone, atol=1e-4, rtol=0)
    assert outputs[4].shape[1] == (1 if grid == "encoder" else 0)


def test_attentions_and_projections(tiny_dir):
    adapter = make(tiny_dir)
    batch = waves([16000, 5000, 12345])
    states, attn = adapter.forward(batch, output_attentions=True)
    for wave, s, a in zip(batch, states, attn, strict=True):
        n = adapter.frame_count(len(wave))
        assert a.shape == (2, 2, n, n)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)  # padded keys are masked
        (alone_s,), (alone_a,) = adapter.forward([wave], output_attentions=True)
        np.testing.assert_allclose(a, alone_a, atol=1e-5)
        np.testing.assert_allclose(s, alone_s, atol=1e-4)
    assert adapter.model.config._attn_implementation != "eager"  # switched back
    projections = adapter.attention_projections()
    assert len(projections) == 2 and projections[0].in_features == 32
    pooled = make(tiny_dir, "pooled")
    with pytest.raises(AdapterError, match="grid: encoder"):
        pooled.forward(batch, output_attentions=True)
    with pytest.raises(AdapterError, match="grid: encoder"):
        pooled.attention_projections()


def test_longer_than_30_s_is_refused(tiny_dir):
    with pytest.raises(AdapterError, match="at most 30 s"):
        make(tiny_dir).forward(waves([30 * SR + 1]))


@pytest.mark.parametrize("grid", GRIDS)
def test_random_init_is_seeded(tiny_dir, grid):
    (wave,) = waves([8000])

    def run(seed):
        adapter = ADAPTERS["qwen2-audio"](
            str(tiny_dir / "full"), init="random", seed=seed, grid=grid
        )
        adapter.load()
        return adapter.forward([wave])[0], adapter.provenance()

    first, prov = run(0)
    again, _ = run(0)
    other, _ = run(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    assert np.abs(first - make(tiny_dir, grid).forward([wave])[0]).max() > 1e-3
    assert prov["weights"] == "random-init seed 0" and prov["options"] == {"grid": grid}


def test_provenance_pretrained(tiny_dir):
    prov = make(tiny_dir).provenance()
    assert prov["family"] == "qwen2-audio" and prov["init"] == "pretrained"
    assert set(prov["weights"]) == {"model.safetensors"}


def test_wrong_checkpoint_and_offline(tiny_dir, monkeypatch, tmp_path):
    import huggingface_hub.constants

    save_tiny_family("w2v_bert", tmp_path / "w2v_bert")
    with pytest.raises(AdapterError, match="holds a 'wav2vec2-bert' model"):
        ADAPTERS["qwen2-audio"](str(tmp_path / "w2v_bert")).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as err:
        ADAPTERS["qwen2-audio"]("Qwen/not-cached-model", revision="abc").load()
    message = str(err.value)
    assert "'Qwen/not-cached-model'" in message
    assert "revision abc" in message and "hf download" in message


def test_head_ablation_hooks_reach_the_heads(tiny_dir):
    """speechlens.attention.hooks: zeroing head 0 of block 2 changes only layer 2; an
    identity hook changes nothing."""
    from speechlens.attention.hooks import ablate

    adapter = make(tiny_dir)
    batch = waves([12000, 7000])
    base = adapter.forward(batch)
    with ablate(adapter, {1: [], 2: []}):
        same = adapter.forward(batch)
    with ablate(adapter, {2: [0]}):
        ablated = adapter.forward(batch)
    for b in range(2):
        np.testing.assert_array_equal(same[b], base[b])
        np.testing.assert_array_equal(ablated[b][:2], base[b][:2])
        assert np.abs(ablated[b][2] - base[b][2]).max() > 1e-4
