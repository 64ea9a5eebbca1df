"""Adapter for the Whisper encoder (``transformers.WhisperModel``; the decoder is dropped).

Input features are the checkpoint's own ``WhisperFeatureExtractor`` log-mel spectrogram
(25 ms window, 10 ms hop, 80 or 128 bins), always computed on the waveform zero-padded
to 30 s, exactly as in training.

Frames. An STFT with ``center=True`` over ``n`` samples gives ``1 + n // hop`` frames;
Whisper drops the last, so an utterance has ``M = n // hop`` valid mel frames (mel frame
``m`` is centred at sample ``m * hop``). ``conv1`` (kernel 3, stride 1, padding 1) keeps
``M``; ``conv2`` (kernel 3, stride 2, padding 1) gives ``floor((M - 1) / 2) + 1``
(= ``ceil(M / 2)``, 0 for ``M = 0``) frames. Encoder frame ``j`` is centred on mel frame
``2 j``, i.e. at ``2 j * hop / sr = j * 0.02`` s; through both convs it sees mel frames
``2 j - 2 .. 2 j + 2``, so the last valid frame sees one or two mel frames past ``M``.

Option ``padding``:

- ``"pad30"`` (default, faithful to training): the encoder runs on all 3000 mel frames
  (1500 positions) and only the ``frame_count(n)`` valid frames are kept. Attention
  weights are returned over the valid keys only, so their rows sum to *at most* 1: the
  rest is attention paid to the padding.
- ``"trim"``: the encoder sees only the valid mel frames (the same values as pad30's
  first ``M``; past them the convs see zeros, so the last frame differs from pad30's);
  the positional embedding is sliced to the number of frames. transformers'
  ``WhisperEncoder.forward`` refuses anything but 3000 mel frames, so the adapter runs the
  encoder's own submodules (``conv1``, ``conv2``, ``embed_positions``, ``layers``) in a
  ten-line loop instead of calling it; nothing is copied or mutated. In a batch, the
  conv1 outputs past each utterance's ``M`` are zeroed (as conv2's zero padding would be)
  and padded frames are masked out as attention keys, so batches give exactly the
  one-at-a-time outputs. Attention rows sum to 1.

The same loop runs pad30 (there it equals ``WhisperEncoder.forward``). Hidden states:
layer 0 is conv features + positional embedding (the input to the first block), layer
``l`` the output of block ``l``; the encoder's final ``layer_norm`` is not applied (HF's
``hidden_states[-1]`` *is* after that norm, because transformers ties the last entry to
``last_hidden_state``). Utterances longer than 30 s raise an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from speechlens.models.base import AdapterError, conv_output_length, conv_stack_geometry
from speechlens.models.hf import HFAdapter, eager_attention, load_feature_extractor

PADDINGS = ("pad30", "trim")


class WhisperAdapter(HFAdapter):
    """Whisper encoder features; see the module docstring.

    Options: ``padding`` (``"pad30"`` or ``"trim"``), ``threads``.
    """

    family = "whisper"
    capabilities = frozenset({"self_attention", "cross_attention"})
    model_class_name = "WhisperModel"
    option_names = ("threads", "padding")

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        self.padding = self.options.get("padding", "pad30")
        if self.padding not in PADDINGS:
            raise AdapterError(f"whisper: option padding must be one of {PADDINGS}")

    def _build(self) -> None:
        from transformers import WhisperFeatureExtractor

        cfg = self.config
        extractor = load_feature_extractor(WhisperFeatureExtractor, self.source, self.revision)
        if extractor is None:
            extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
        if extractor.feature_size != cfg.num_mel_bins:
            raise AdapterError(
                f"whisper: feature extractor has {extractor.feature_size} mel bins, "
                f"the model expects {cfg.num_mel_bins}"
            )
        self.extractor = extractor
        self.model = self.model.get_submodule("encoder")  # the decoder is freed
        self.sample_rate = int(extractor.sampling_rate)
        self.hop_length = int(extractor.hop_length)
        self.max_samples = int(extractor.n_samples)
        convs = [self.model.conv1, self.model.conv2]
        self.convs = [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]
        self.mel_stride, self.mel_offset = conv_stack_geometry(*zip(*self.convs, strict=True))
        positions = self.model.embed_positions.num_embeddings
        if self.mel_frame_count(self.max_samples) != positions * self.mel_stride:
            raise AdapterError(
                f"whisper: the feature extractor pads to {self.max_samples} samples, but the "
                f"encoder has {positions} positions ({positions * self.mel_stride} mel frames)"
            )
        self.num_layers = cfg.encoder_layers + 1
        self.hidden_size = cfg.d_model
        self.num_heads = cfg.encoder_attention_heads
        self.frame_rate_hz = self.sample_rate / (self.hop_length * self.mel_stride)
        self.supports_padding = True

    # ------------------------------------------------------------------ geometry

    def mel_frame_count(self, n_samples: int) -> int:
        """Valid log-mel frames of ``n_samples`` samples: ``n // hop_length``."""
        return int(n_samples) // self.hop_length

    def frame_count(self, n_samples: int) -> int:
        """Encoder frames: conv arithmetic of conv1/conv2 over ``n // hop`` mel frames."""
        return self._frames_from_mel(self.mel_frame_count(n_samples))

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``(j * 2 + 0) * hop / sr`` s: frame ``j`` is centred on mel frame ``2 j``."""
        j = np.arange(int(n_frames), dtype=np.float64)
        return (j * self.mel_stride + self.mel_offset) * self.hop_length / self.sample_rate

    # ------------------------------------------------------------------ forward

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        waves = self._check_batch(batch)
        self.check_max_length(waves, "the Whisper encoder")
        counts = [self.frame_count(len(w)) for w in waves]
        hidden, attn = self.empty_outputs(len(waves))
        run = [i for i, c in enumerate(counts) if c > 0]
        if run:
            keep = max(counts)
            states, weights = self._run([waves[i] for i in run], output_attentions, keep)
            for b, i in enumerate(run):
                n = counts[i]
                hidden[i] = self._to_numpy(states[:, b, :n])
                if weights is not None:
                    attn[i] = self._to_numpy(weights[:, b, :, :n, :n])
        return (hidden, attn) if output_attentions else hidden

    def log_mel(self, waves: list[np.ndarray]) -> np.ndarray:
        """Log-mel features ``(batch, mel, 3000)`` of the waveforms zero-padded to 30 s."""
        device = "cpu" if self.torch_device.type == "cpu" else str(self.torch_device)
        feats = self.extractor(
            waves,
            sampling_rate=self.sample_rate,
            padding="max_length",
            return_tensors="np",
            device=device,
        )
        return feats["input_features"]

    def _run(
        self, waves: list[np.ndarray], output_attentions: bool, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``(layer, batch, frame, feature)`` and attentions
        ``(layer - 1, batch, head, frame, frame)`` (or ``None``) of the first ``keep``
        frames (pad30 computes 1500; keeping only the valid ones saves memory)."""
        mel = torch.from_numpy(self.log_mel(waves))
        mel_lengths = None
        if self.padding == "trim":
            mel_lengths = torch.tensor([self.mel_frame_count(len(w)) for w in waves])
            mel = mel[:, :, : int(mel_lengths.max())].clone()
            mel *= _length_mask(mel_lengths, mel.shape[-1])[:, None, :]
        mel = mel.to(self.torch_device, self.torch_dtype)
        captured: list[torch.Tensor] = []
        hooks = []
        if output_attentions:
            for layer in self.model.layers:
                hook = layer.self_attn.register_forward_hook(
                    lambda _m, _a, out: captured.append(out[1][..., :keep, :keep])
                )
                hooks.append(hook)
        try:
            with torch.inference_mode(), eager_attention(self.model, output_attentions):
                states = self._encode(mel, mel_lengths, keep)
        finally:
            for hook in hooks:
                hook.remove()
        weights = torch.stack(captured) if output_attentions else None
        return states, weights

    def _encode(
        self, mel: torch.Tensor, mel_lengths: torch.Tensor | None, keep: int
    ) -> torch.Tensor:
        """The encoder's blocks on ``mel`` ``(batch, mel, time)``; ``mel_lengths`` (trim
        mode) marks each utterance's valid mel frames. Returns ``(layer, batch, keep,
        feature)``: the block inputs and outputs (first ``keep`` frames), without the
        final layer norm."""
        enc = self.model
        x = nn.functional.gelu(enc.conv1(mel))
        if mel_lengths is not None:
            x = x * _length_mask(mel_lengths, x.shape[-1]).to(x)[:, None, :]
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        n_frames = x.shape[1]
        x = x + enc.embed_positions.weight[:n_frames]
        mask = None
        if mel_lengths is not None:
            valid = torch.tensor([self._frames_from_mel(int(m)) for m in mel_lengths])
            keys = _length_mask(valid, n_frames).to(x.device)
            mask = torch.zeros(keys.shape, dtype=x.dtype, device=x.device)
            mask.masked_fill_(~keys, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :].expand(-1, 1, n_frames, -1)
        states = [x[:, :keep]]
        for layer in enc.layers:
            x = layer(x, mask)
            states.append(x[:, :keep])
        return torch.stack(states)

    def attention_projections(self) -> list[nn.Module]:
        """Each encoder block's ``self_attn.out_proj`` (input: heads concatenated, head-major)."""
        self._require_loaded()
        return [layer.self_attn.out_proj for layer in self.model.layers]

    def _frames_from_mel(self, n_mel: int) -> int:
        """Encoder frames of ``n_mel`` mel frames (conv arithmetic of conv1 and conv2)."""
        for kernel, stride, padding in self.convs:
            n_mel = conv_output_length(n_mel, kernel, stride, padding)
        return n_mel


def _length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean ``(batch, size)``: True at positions below each length."""
    return torch.arange(size)[None, :] < lengths[:, None]
