"""Conformer speech encoders on stacked fbank frames: w2v-BERT 2.0 and SeamlessM4T's.

- ``w2v-bert``: ``Wav2Vec2BertModel`` (``facebook/w2v-bert-2.0``; Chung et al. 2021,
  "w2v-BERT", as released with Seamless, Barrault et al. 2023);
- ``seamless-m4t``: the speech encoder of ``SeamlessM4Tv2Model``
  (``facebook/seamless-m4t-v2-large``)
  or of v1's ``SeamlessM4TModel``; only its ``speech_encoder.*`` weights are read
  (``key_mapping``), the text/speech decoders and vocoder are never built.

Input: the checkpoint's ``SeamlessM4TFeatureExtractor``, called as in ``transformers``: Kaldi-
style log-mel fbank (80 bins, 25 ms Povey window, 10 ms hop, no centring: ``F = 1 + (n - 400)
// 160`` frames for ``n >= 400`` samples), normalised per mel bin over the utterance (mean, std
with ddof 1), then pairs of consecutive frames stacked into 160-dim vectors (stride 2). The
attention mask marks a stacked frame valid when its second fbank frame is real, so an
utterance has ``frame_count(n) = F // 2`` frames (an odd last fbank frame is dropped).

Frames: stacked frame ``k`` holds fbank frames ``2k`` and ``2k + 1``, samples
``[320 k, 320 k + 560)``, centred at ``(320 k + 280) / sr`` s (17.5 ms, 37.5 ms, ...; 50 Hz).

Layers: layer 0 is the input to the first conformer block (the feature projection's output),
layer ``l`` the output of block ``l`` -- for SeamlessM4T before the encoder's final layer norm;
the intermediate FFN, the length adaptor (stride 8) and the inner layer norm that follow the
conformer are not included (another grid). Padded batches with the attention mask give the
unpadded outputs (the depthwise convolutions are causal and zero the padding; positions are
relative), so ``supports_padding`` is true. One exception: SeamlessM4T's eager attention in
``transformers`` 5.23 *adds* its boolean chunk/padding mask to the scores (+1 for a kept key,
0 for a masked one) instead of masking, so attention weights (which need the eager path) are
computed one utterance at a time, where every key is kept and the +1 shifts each row's
scores equally (softmax unchanged). Utterances over ``speech_encoder_chunk_size`` frames
(400 s) would meet a real chunk mask there and are refused with attention weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from speechlens.models.base import AdapterError
from speechlens.models.hf import HFAdapter, eager_attention, load_feature_extractor
from speechlens.models.layers import load_hf_family

WINDOW, HOP, STACK = 400, 160, 2


class W2vBertAdapter(HFAdapter):
    """w2v-BERT 2.0 (``Wav2Vec2BertModel``) conformer layers; see the module docstring."""

    family = "w2v-bert"
    capabilities = frozenset({"self_attention"})
    classes = {"wav2vec2-bert": "Wav2Vec2BertModel"}
    key_mapping: dict[str, dict[str, str]] | None = None
    model_module: Any = None
    pad_attentions = True
    """Whether eager attention (used for attention weights) masks padding correctly."""

    def load(self) -> None:
        if not self._loaded:
            load_hf_family(
                self,
                self.classes,
                key_mapping=self.key_mapping,
                model_module=self.model_module,
            )

    def _build(self) -> None:
        from transformers import SeamlessM4TFeatureExtractor

        extractor = load_feature_extractor(SeamlessM4TFeatureExtractor, self.source, self.revision)
        self.extractor = extractor or SeamlessM4TFeatureExtractor()
        if getattr(self.extractor, "stride", STACK) != STACK:
            raise AdapterError(f"{self.family}: feature extractor stride must be {STACK}")
        self.sample_rate = int(self.extractor.sampling_rate)
        cfg = self.config
        self.num_layers = len(self._blocks()) + 1
        self.hidden_size = cfg.hidden_size
        self.num_heads = self._blocks()[0].self_attn.num_heads
        self.frame_rate_hz = self.sample_rate / (HOP * STACK)
        self.supports_padding = True
        cfg.tie_last_hidden_states = False  # last entry = raw output of the last block

    def _blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    # ------------------------------------------------------------------ geometry

    def fbank_frame_count(self, n_samples: int) -> int:
        """Kaldi fbank frames without centring: ``1 + (n - 400) // 160`` (0 below 400)."""
        n = int(n_samples)
        return 0 if n < WINDOW else 1 + (n - WINDOW) // HOP

    def frame_count(self, n_samples: int) -> int:
        """Stacked frames with a valid mask: ``fbank_frame_count(n) // 2``."""
        return self.fbank_frame_count(n_samples) // STACK

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``(320 k + 280) / sr`` s: the centre of fbank frames ``2k`` and ``2k + 1``."""
        k = np.arange(int(n_frames), dtype=np.float64)
        span = (STACK - 1) * HOP + WINDOW
        return (k * STACK * HOP + span / 2) / self.sample_rate

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
        # the per-bin std needs 2 fbank frames: utterances with no stacked frame are skipped
        run = [i for i, c in enumerate(counts) if c > 0]
        groups = [run] if run else []
        if output_attentions and not self.pad_attentions:
            groups = [[i] for i in run]
            chunk = getattr(self.config, "speech_encoder_chunk_size", None)
            if chunk and any(counts[i] > chunk for i in run):
                raise AdapterError(
                    f"{self.family}: attention weights of utterances over {chunk} frames "
                    f"({chunk / self.frame_rate_hz:g} s) are wrong in transformers' eager path"
                )
        for group in groups:
            states, weights = self._run([waves[i] for i in group], output_attentions)
            for b, i in enumerate(group):
                n = counts[i]
                hidden[i] = self._to_numpy(states[:, b, :n])
                if weights is not None:
                    attn[i] = self._to_numpy(weights[:, b, :, :n, :n])
        return (hidden, attn) if output_attentions else hidden

    def features(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The feature extractor's ``input_features`` (batch, frame, 160) and ``attention_mask``."""
        feats = self.extractor(
            waves, sampling_rate=self.sample_rate, padding=True, return_tensors="pt"
        )
        return {
            "input_features": feats["input_features"],
            "attention_mask": feats["attention_mask"],
        }

    def _run(
        self, waves: list[np.ndarray], output_attentions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``(layer, batch, frame, feature)`` and attentions (or ``None``)."""
        feats = self.features(waves)
        longest = max(self.frame_count(len(w)) for w in waves)
        # Stacked frames past the longest valid count (a half-real last pair) are dropped: they
        # are masked anyway, and causal convolutions never look ahead.
        inputs = feats["input_features"][:, :longest].to(self.torch_device, self.torch_dtype)
        mask = feats["attention_mask"][:, :longest].to(self.torch_device)
        with torch.inference_mode(), eager_attention(self.model, output_attentions):
            out = self.model(
                inputs,
                attention_mask=mask,
                output_hidden_states=True,
                output_attentions=output_attentions,
            )
        states = torch.stack(out.hidden_states)
        if states.shape[0] != self.num_layers or states.shape[2] != longest:
            raise AdapterError(
                f"{self.family}: model gave {tuple(states.shape)} hidden states; expected "
                f"{self.num_layers} layers and {longest} frames"
            )
        weights = torch.stack(out.attentions) if output_attentions else None
        return states, weights

    def attention_projections(self) -> list[nn.Module]:
        """Each conformer block's ``self_attn.linear_out`` (heads concatenated, head-major)."""
        self._require_loaded()
        return [block.self_attn.linear_out for block in self._blocks()]


class SeamlessM4TAdapter(W2vBertAdapter):
    """SeamlessM4T (v2 or v1) speech encoder conformer layers; see the module docstring."""

    family = "seamless-m4t"
    classes = {
        "seamless_m4t_v2": "SeamlessM4Tv2SpeechEncoder",
        "seamless_m4t": "SeamlessM4TSpeechEncoder",
    }
    key_mapping = {name: {r"^speech_encoder\.": ""} for name in classes}
    pad_attentions = False  # transformers 5.23's eager path adds the boolean mask (+1 / 0)

    def load(self) -> None:
        if not self._loaded:
            from transformers.models.seamless_m4t import modeling_seamless_m4t as v1
            from transformers.models.seamless_m4t_v2 import modeling_seamless_m4t_v2 as v2

            class Both:  # the speech encoder classes are not exported at the top level
                SeamlessM4Tv2SpeechEncoder = v2.SeamlessM4Tv2SpeechEncoder
                SeamlessM4TSpeechEncoder = v1.SeamlessM4TSpeechEncoder

            load_hf_family(self, self.classes, key_mapping=self.key_mapping, model_module=Both)
