"""Head ablation hooks on tiny random checkpoints of every family with self-attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlens.attention.hooks import ablate, head_output_means
from speechlens.attention.settings import AttentionError
from speechlens.models import ADAPTERS
from speechlens.models.base import AdapterError
from tests.tiny_models import family, save_tiny

VARIANTS = ["wav2vec2", "wav2vec2_large", "hubert", "wavlm", "data2vec_audio", "whisper:pad30"]
LENGTHS = [16000, 9000, 12345]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_attn")
    for variant in {*VARIANTS, "whisper"}:
        name = variant.partition(":")[0]
        if not (root / name).exists():
            save_tiny(name, root / name)
    return root


_CACHE: dict = {}


def make(tiny_dir, variant: str):
    name, _, padding = variant.partition(":")
    key = (str(tiny_dir), variant)
    if key not in _CACHE:
        options = {"padding": padding} if padding else {}
        adapter = ADAPTERS[family(name)](str(tiny_dir / name), **options)
        adapter.load()
        _CACHE[key] = adapter
    return _CACHE[key]


def waves(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def attention_module(adapter, block: int):
    """The self-attention module whose ``out_proj`` is block ``block``'s projection."""
    proj = adapter.attention_projections()[block - 1]
    for module in adapter.model.modules():
        if getattr(module, "out_proj", None) is proj:
            return module
    raise AssertionError("no attention module owns the projection")


@pytest.mark.parametrize("variant", VARIANTS)
def test_projections_are_the_blocks_linear_layers(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    projections = adapter.attention_projections()
    assert len(projections) == adapter.num_layers - 1
    assert all(isinstance(p, torch.nn.Linear) for p in projections)
    assert projections[0].in_features % adapter.num_heads == 0


@pytest.mark.parametrize("name", ["logmel", "mfcc"])
def test_families_without_attention_say_so(name):
    with pytest.raises(AdapterError, match=f"{name}: this model family has no self-attention"):
        ADAPTERS[name]().attention_projections()


@pytest.mark.parametrize("variant", VARIANTS)
def test_ablating_nothing_reproduces_the_features_exactly(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    batch = waves()
    plain, plain_attn = adapter.forward(batch, output_attentions=True)
    every_block = {b: [] for b in range(1, adapter.num_layers)}  # identity hooks everywhere
    with ablate(adapter, every_block):
        hooked, hooked_attn = adapter.forward(batch, output_attentions=True)
    for a, b in zip(plain, hooked, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(plain_attn, hooked_attn, strict=True):
        np.testing.assert_array_equal(a, b)
    # and the hooks are gone afterwards
    assert all(not p._forward_pre_hooks for p in adapter.attention_projections())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("block", [1, 2])
def test_ablating_all_heads_removes_the_attention_contribution(tiny_dir, variant, block):
    """All heads of block l zeroed == block l's self-attention output replaced by the
    projection bias (computed independently with a forward hook on the attention module)."""
    adapter = make(tiny_dir, variant)
    batch = waves()
    plain = adapter.forward(batch)
    with ablate(adapter, {block: range(adapter.num_heads)}):
        ablated = adapter.forward(batch)
    bias = adapter.attention_projections()[block - 1].bias

    def only_bias(_module, _args, out):
        return (bias.expand_as(out[0]).clone(), *out[1:])

    handle = attention_module(adapter, block).register_forward_hook(only_bias)
    try:
        reference = adapter.forward(batch)
    finally:
        handle.remove()
    for p, a, r in zip(plain, ablated, reference, strict=True):
        np.testing.assert_allclose(a, r, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(a[:block], p[:block])  # layers before the block
        assert np.abs(a[block] - p[block]).max() > 1e-3  # the block's output changed


@pytest.mark.parametrize("variant", ["whisper:pad30", "wav2vec2_large", "wavlm"])
def test_mean_mode_replaces_heads_by_their_mean_output(tiny_dir, variant):
    adapter = make(tiny_dir, variant)
    batch = waves()
    projections = adapter.attention_projections()
    width = projections[0].in_features
    head_dim = width // adapter.num_heads

    captured: list = []

    def capture(_m, args):
        captured.append(args[0][0].detach().clone().numpy())

    # reference means: the projection inputs of each utterance, its valid frames only
    refs = []
    for wave in batch:
        captured.clear()
        handles = [p.register_forward_pre_hook(capture) for p in projections]
        adapter.forward([wave])
        for h in handles:
            h.remove()
        n = adapter.frame_count(len(wave))
        refs.append(np.stack([c[:n] for c in captured]))  # (block, frame, width)
    expected = np.concatenate(refs, axis=1).astype(np.float64).mean(axis=1)
    means = head_output_means(adapter, batch)
    np.testing.assert_allclose(means, expected, rtol=1e-6, atol=1e-7)

    wave = batch[0]
    n = adapter.frame_count(len(wave))
    with ablate(adapter, {1: [1]}, mode="mean", means=means):
        captured.clear()
        handle = projections[0].register_forward_pre_hook(capture)  # runs after the ablation
        adapter.forward([wave])
        handle.remove()
    seen = captured[0][:n]
    cols = slice(head_dim, 2 * head_dim)
    np.testing.assert_allclose(
        seen[:, cols], np.broadcast_to(means[0, cols], seen[:, cols].shape), rtol=1e-6
    )
    np.testing.assert_array_equal(seen[:, :head_dim], refs[0][0][:, :head_dim])


BAD_REQUESTS = [
    ({0: [0]}, {}, r"block 0 outside 1 \.\. 2"),
    ({1: [2]}, {}, r"heads \[2\] outside 0 \.\. 1"),
    ({1: [0]}, {"mode": "shuffle"}, "ablation mode 'shuffle'"),
    ({1: [0]}, {"mode": "mean"}, "needs per-head means"),
]


@pytest.mark.parametrize(("heads", "kwargs", "message"), BAD_REQUESTS)
def test_bad_ablation_requests_are_errors(tiny_dir, heads, kwargs, message):
    adapter = make(tiny_dir, "whisper:pad30")
    with pytest.raises(AttentionError, match=message), ablate(adapter, heads, **kwargs):
        pass
    assert all(not p._forward_pre_hooks for p in adapter.attention_projections())


def test_wavlm_output_is_unchanged_by_the_projection_rerouting(tiny_dir):
    """The WavLM adapter calls out_proj as a module; outputs equal transformers' own path."""
    from transformers import WavLMModel

    from speechlens.models.wav2vec2 import zero_mean_unit_var

    adapter = make(tiny_dir, "wavlm")
    (wave,) = waves([14000])
    (ours,) = adapter.forward([wave])
    reference = WavLMModel.from_pretrained(tiny_dir / "wavlm").eval()
    with torch.inference_mode():
        out = reference(torch.from_numpy(zero_mean_unit_var(wave))[None], output_hidden_states=True)
    hf = torch.stack(out.hidden_states)[:, 0].numpy()
    np.testing.assert_allclose(ours[:-1], hf[:-1], rtol=0, atol=1e-5)
