"""Adapters for the wav2vec 2.0 family: wav2vec2, HuBERT, WavLM and data2vec-audio.

All four share one code path: raw waveform -> conv feature encoder -> transformer
encoder (``transformers`` classes ``Wav2Vec2Model``, ``HubertModel``, ``WavLMModel``,
``Data2VecAudioModel``).

Frames. The conv feature encoder (``config.conv_kernel``, ``config.conv_stride``, no
padding) gives ``n -> floor((n - k) / s) + 1`` per layer, so for the usual kernels
``(10, 3, 3, 3, 3, 2, 2)`` and strides ``(5, 2, 2, 2, 2, 2, 2)``: total stride
``S = 320`` samples (20 ms, 50 Hz) and receptive field ``R = 400`` samples (25 ms).
Frame ``i`` sees samples ``[i S, i S + R)`` and is centred at ``(i S + R / 2) / sr``
seconds (12.5 ms, 32.5 ms, ... at 16 kHz). Waveforms shorter than ``R`` give no frame.

Input normalisation follows the checkpoint's feature-extractor config (``do_normalize``:
zero mean, unit variance per utterance over its own samples, as
``Wav2Vec2FeatureExtractor`` does); the option ``normalize`` overrides it.

Padding. With ``config.feat_extract_norm == "layer"`` (the "large"/"lv60" checkpoints,
usually with ``do_stable_layer_norm`` and a feature extractor that returns attention
masks), padded batches with an attention mask reproduce the unpadded outputs exactly, so
``supports_padding`` is true. With ``"group"`` (base checkpoints) the first conv layer's
GroupNorm normalises over time, padding included, so utterances are only batched with
others of the same length. data2vec-audio never pads: its positional embedding is a
stack of convolutions with layer norms, which turns the zeroed padding frames non-zero
and leaks them into the valid frames near the end.

WavLM quirk: ``transformers``' WavLM attention returns the weights *averaged over heads*
(broadcast to every head). The adapter swaps in a method that asks torch for per-head
weights (``average_attn_weights=False``); the attention output is unchanged. The swapped
method also applies the output projection by calling the ``out_proj`` module (torch's
fused function would only read its weights), so that forward pre-hooks on it see the
heads' outputs (:meth:`Wav2Vec2Adapter.attention_projections`).

Hidden states: layer 0 is the input to the first block (for post-LN "base" models that
is after the encoder's layer norm), layer ``l`` the output of block ``l``; for the
stable-layer-norm models the encoder's final layer norm is not applied to the last
entry (``config.tie_last_hidden_states = False``).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from speechlens.models.base import AdapterError, conv_output_length, conv_stack_geometry
from speechlens.models.hf import HFAdapter, eager_attention, load_feature_extractor

DEFAULT_SAMPLE_RATE = 16000
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm


def zero_mean_unit_var(wave: np.ndarray) -> np.ndarray:
    """``(wave - mean) / sqrt(var + 1e-7)`` over the utterance's own samples, ``float32``."""
    wave64 = wave.astype(np.float64)
    return ((wave64 - wave64.mean()) / np.sqrt(wave64.var() + NORM_EPS)).astype(np.float32)


class Wav2Vec2Adapter(HFAdapter):
    """wav2vec 2.0 (``Wav2Vec2Model``); see the module docstring.

    Options: ``normalize`` (bool; default: the feature extractor's ``do_normalize``),
    ``threads``.
    """

    family = "wav2vec2"
    capabilities = frozenset({"self_attention"})
    model_class_name = "Wav2Vec2Model"
    option_names = ("threads", "normalize")

    def _build(self) -> None:
        from transformers import Wav2Vec2FeatureExtractor

        cfg = self.config
        extractor = load_feature_extractor(Wav2Vec2FeatureExtractor, self.source, self.revision)
        self.sample_rate = int(getattr(extractor, "sampling_rate", DEFAULT_SAMPLE_RATE))
        default_norm = bool(getattr(extractor, "do_normalize", True))
        self.normalize = bool(self.options.get("normalize", default_norm))
        self.kernels = [int(k) for k in cfg.conv_kernel]
        self.strides = [int(s) for s in cfg.conv_stride]
        self.total_stride, offset = conv_stack_geometry(self.kernels, self.strides)
        self.receptive_field = int(round(2 * offset + 1))
        self.num_layers = cfg.num_hidden_layers + 1
        self.hidden_size = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.frame_rate_hz = self.sample_rate / self.total_stride
        self.supports_padding = self._exact_padding()
        cfg.tie_last_hidden_states = False  # last entry = raw output of the last block

    def _exact_padding(self) -> bool:
        return getattr(self.config, "feat_extract_norm", None) == "layer"

    # ------------------------------------------------------------------ geometry

    def frame_count(self, n_samples: int) -> int:
        """Frames of the conv feature encoder: ``n -> floor((n - k) / s) + 1`` per layer."""
        n = int(n_samples)
        for k, s in zip(self.kernels, self.strides, strict=True):
            n = conv_output_length(n, k, s)
        return n

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``(i * S + R / 2) / sample_rate`` s: the centre of frame ``i``'s receptive field."""
        i = np.arange(int(n_frames), dtype=np.float64)
        return (i * self.total_stride + self.receptive_field / 2) / self.sample_rate

    # ------------------------------------------------------------------ forward

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        waves = self._check_batch(batch)
        counts = [self.frame_count(len(w)) for w in waves]
        hidden: list[Any] = [
            np.zeros((self.num_layers, 0, self.hidden_size), np.float32) for _ in waves
        ]
        attn: list[Any] = [
            np.zeros((self.num_layers - 1, self.num_heads, 0, 0), np.float32) for _ in waves
        ]
        for group in self._groups(waves, counts):
            states, weights = self._run([waves[i] for i in group], output_attentions)
            for b, i in enumerate(group):
                n = counts[i]
                hidden[i] = self._to_numpy(states[:, b, :n])
                if weights is not None:
                    attn[i] = self._to_numpy(weights[:, b, :, :n, :n])
        return (hidden, attn) if output_attentions else hidden

    def attention_projections(self) -> list[nn.Module]:
        """Each encoder block's ``attention.out_proj`` (input: heads concatenated, head-major)."""
        self._require_loaded()
        return [layer.attention.out_proj for layer in self.model.encoder.layers]

    def _groups(self, waves: list[np.ndarray], counts: list[int]) -> list[list[int]]:
        """Indices run together: all (exact padding) or those of equal length."""
        runnable = [i for i, c in enumerate(counts) if c > 0]
        if self.supports_padding:
            return [runnable] if runnable else []
        by_length: dict[int, list[int]] = {}
        for i in runnable:
            by_length.setdefault(len(waves[i]), []).append(i)
        return list(by_length.values())

    def _run(
        self, waves: list[np.ndarray], output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacked hidden states ``(layer, batch, frame, feature)`` and attentions
        ``(layer - 1, batch, head, frame, frame)`` (or ``None``) for one padded batch."""
        longest = max(len(w) for w in waves)
        values = np.zeros((len(waves), longest), np.float32)
        mask = np.zeros((len(waves), longest), np.int64)
        for b, wave in enumerate(waves):
            values[b, : len(wave)] = zero_mean_unit_var(wave) if self.normalize else wave
            mask[b, : len(wave)] = 1
        kwargs: dict[str, Any] = {}
        if self.supports_padding:
            kwargs["attention_mask"] = torch.from_numpy(mask).to(self.torch_device)
        inputs = torch.from_numpy(values).to(self.torch_device, self.torch_dtype)
        with torch.inference_mode(), eager_attention(self.model, output_attentions):
            out = self.model(
                inputs, output_hidden_states=True, output_attentions=output_attentions, **kwargs
            )
        states = torch.stack(out.hidden_states)
        if states.shape[0] != self.num_layers or states.shape[2] != self.frame_count(longest):
            raise AdapterError(
                f"{self.family}: model gave {tuple(states.shape)} hidden states for "
                f"{longest} samples; expected {self.num_layers} layers and "
                f"{self.frame_count(longest)} frames (config and model disagree)"
            )
        weights = torch.stack(out.attentions) if output_attentions else None
        return states, weights


class HubertAdapter(Wav2Vec2Adapter):
    """HuBERT (``HubertModel``); same code path as :class:`Wav2Vec2Adapter`."""

    family = "hubert"
    model_class_name = "HubertModel"


class Data2VecAudioAdapter(Wav2Vec2Adapter):
    """data2vec-audio (``Data2VecAudioModel``); never pads (see the module docstring)."""

    family = "data2vec-audio"
    model_class_name = "Data2VecAudioModel"

    def _exact_padding(self) -> bool:
        return False


class WavLMAdapter(Wav2Vec2Adapter):
    """WavLM (``WavLMModel``), with per-head attention weights (see the module docstring)."""

    family = "wavlm"
    model_class_name = "WavLMModel"

    def _build(self) -> None:
        super()._build()
        from transformers.models.wavlm.modeling_wavlm import WavLMAttention

        for module in self.model.modules():
            if isinstance(module, WavLMAttention):
                module.torch_multi_head_self_attention = types.MethodType(
                    _wavlm_per_head_attention, module
                )


def _wavlm_per_head_attention(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    gated_position_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``WavLMAttention.torch_multi_head_self_attention`` with per-head weights.

    Same call as ``transformers``' (q = k = v, gated relative position bias as the
    additive mask), but with ``average_attn_weights=False`` and the padding mask given
    as an additive float mask (the same result; a boolean one makes torch warn), and the
    output projection applied by calling ``self.out_proj`` on the concatenated heads
    (torch is given an identity projection without bias, which copies its input exactly).
    Returns the attention output ``(batch, frame, feature)`` and weights ``(batch, head,
    frame, frame)``.
    """
    query = hidden_states.transpose(0, 1)
    key_padding_mask = None
    if attention_mask is not None:  # additive, like attn_mask (a bool one makes torch warn)
        key_padding_mask = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
        key_padding_mask.masked_fill_(attention_mask.ne(1), float("-inf"))
    output, weights = nn.functional.multi_head_attention_forward(
        query,
        query,
        query,
        self.embed_dim,
        self.num_heads,
        torch.empty([0]),
        torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)),
        None,
        None,
        False,
        self.dropout,
        torch.eye(self.embed_dim, dtype=query.dtype, device=query.device),
        None,
        self.training,
        key_padding_mask,
        need_weights=True,
        attn_mask=gated_position_bias,
        use_separate_proj_weight=True,
        q_proj_weight=self.q_proj.weight,
        k_proj_weight=self.k_proj.weight,
        v_proj_weight=self.v_proj.weight,
        average_attn_weights=False,
    )
    return self.out_proj(output.transpose(0, 1)), weights
