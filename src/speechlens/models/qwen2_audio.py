"""The audio encoder of Qwen2-Audio (Chu et al. 2024, "Qwen2-Audio Technical Report").

Checkpoints: a full ``Qwen2AudioForConditionalGeneration`` (``Qwen/Qwen2-Audio-7B``,
``Qwen/Qwen2-Audio-7B-Instruct``), of which only the ``audio_tower.*`` weights are read
(``key_mapping``; the language model and the projector are never built), or a
``Qwen2AudioEncoder`` saved alone. The model is ``transformers``' ``Qwen2AudioEncoder``, a
Whisper-large-v3-style encoder (its code is Whisper's encoder plus a final pooling).

Input, as ``Qwen2AudioProcessor`` prepares it: the checkpoint's ``WhisperFeatureExtractor``
(128 mel bins, 25 ms window, 10 ms hop, ``center=True``) on the waveform zero-padded to 30 s,
always all 3000 mel frames (``Qwen2AudioEncoder.forward`` refuses anything else). Mel frame
``m`` is centred on sample ``160 m``. The extractor's attention mask is the sample mask
taken every 160 samples, so an utterance of ``n`` samples has ``M = ceil(n / 160)`` valid
mel frames (Whisper's own adapter counts ``n // 160``; here Qwen2-Audio's count is used).

Encoder grid (50 Hz). ``conv1`` (kernel 3, stride 1, padding 1) keeps ``M``; ``conv2``
(kernel 3, stride 2, padding 1) gives ``E = (M - 1) // 2 + 1`` valid frames (0 for ``M = 0``;
``Qwen2AudioEncoder._get_feat_extract_output_lengths``). Encoder frame ``j`` is centred on
mel frame ``2 j``, at ``0.02 j`` s. The encoder always runs on all 1500 positions; as in
``Qwen2AudioModel.forward``, the frames past ``E`` are masked out as attention *keys*
(``create_bidirectional_mask`` of the valid-frame mask), so a padded batch gives each
utterance's own outputs. The last valid frame's convolutions see one or two mel frames past
``M`` (the log-mel of the zero padding, as in training).

Final pooling. After the last block, ``Qwen2AudioEncoder`` applies ``AvgPool1d(2, stride=2)``
over frames, then its ``layer_norm``: ``P = (E - 2) // 2 + 1 = E // 2`` frames at 25 Hz (the
number of audio tokens the language model sees). Pooled frame ``p`` is the mean of encoder
frames ``2 p`` and ``2 p + 1``, centred at ``0.04 p + 0.01`` s; an odd last encoder frame is
dropped.

Option ``grid``:

- ``"encoder"`` (default): the ``L + 1`` layers on the 50 Hz encoder grid: layer 0 is
  ``gelu(conv2(gelu(conv1(mel))))`` plus the positional embedding (the input to the first
  block), layer ``l`` the raw output of block ``l``; neither pooling nor the final norm.
  ``frame_count(n) = E``, frame ``j`` at ``0.02 j`` s. Self-attention weights are available.
- ``"pooled"``: the same ``L + 1`` layers each pooled as above (``AvgPool1d(2, 2)``, no norm),
  plus layer ``L + 1``: the layer-normed pooled output (``last_hidden_state``, the input of
  the projector to the language model). ``frame_count(n) = E // 2``, frame ``p`` at
  ``0.04 p + 0.01`` s. Self-attention weights and head ablation are refused (the blocks run
  on the 50 Hz grid: use ``grid: encoder``).

``transformers`` 5.23's ``output_hidden_states`` replaces the last block's output by the
pooled, normed ``last_hidden_state`` (750 frames); the adapter sets
``config.tie_last_hidden_states = False`` to get the raw output of block ``L`` instead.
Utterances longer than 30 s raise an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from speechlens.models.base import AdapterError, conv_output_length, conv_stack_geometry
from speechlens.models.hf import HFAdapter, eager_attention, load_feature_extractor
from speechlens.models.layers import load_hf_family

GRIDS = ("encoder", "pooled")
CLASSES = {"qwen2_audio": "Qwen2AudioEncoder", "qwen2_audio_encoder": "Qwen2AudioEncoder"}
KEY_MAPPING = {"qwen2_audio": {r"^audio_tower\.": ""}}


def _audio_config(config: Any) -> Any:
    """The encoder's config: ``audio_config`` of a full checkpoint, else ``config`` itself."""
    if config.model_type != "qwen2_audio":
        return config
    sub = config.audio_config
    sub._commit_hash = getattr(config, "_commit_hash", None)  # provenance of the sub-config
    return sub


class Qwen2AudioAdapter(HFAdapter):
    """Qwen2-Audio's audio encoder on its 50 Hz or pooled 25 Hz grid; see the module docstring.

    Options: ``grid`` (``"encoder"`` or ``"pooled"``; default from the schema's
    ``$defs.model.grid``), ``threads``.
    """

    family = "qwen2-audio"
    capabilities = frozenset({"self_attention"})
    option_names = ("threads", "grid")

    def __init__(self, source: str | None = None, **kwargs: Any):
        from speechlens.schema import defaults

        super().__init__(source, **kwargs)
        self.grid = self.options.get("grid") or defaults("$defs.model")["grid"]
        if self.grid not in GRIDS:
            raise AdapterError(
                f"qwen2-audio: option grid must be one of {GRIDS}, got {self.grid!r}"
            )
        self.options["grid"] = self.grid  # recorded in the provenance

    def load(self) -> None:
        if not self._loaded:
            load_hf_family(self, CLASSES, config_of=_audio_config, key_mapping=KEY_MAPPING)

    def _build(self) -> None:
        from transformers import WhisperFeatureExtractor

        cfg = self.config
        extractor = load_feature_extractor(WhisperFeatureExtractor, self.source, self.revision)
        if extractor is None:
            extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
        if extractor.feature_size != cfg.num_mel_bins:
            raise AdapterError(
                f"qwen2-audio: feature extractor has {extractor.feature_size} mel bins, "
                f"the model expects {cfg.num_mel_bins}"
            )
        self.extractor = extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.hop_length = int(extractor.hop_length)
        self.max_samples = int(extractor.n_samples)
        enc = self.model
        convs = [enc.conv1, enc.conv2]
        self.convs = [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]
        self.mel_stride, self.mel_offset = conv_stack_geometry(*zip(*self.convs, strict=True))
        self.positions = int(cfg.max_source_positions)
        if int(extractor.nb_max_frames) != self.positions * self.mel_stride:
            raise AdapterError(
                f"qwen2-audio: the feature extractor gives {extractor.nb_max_frames} mel frames, "
                f"the encoder takes {self.positions * self.mel_stride}"
            )
        pool = enc.avg_pooler
        self.pool = _int(pool.kernel_size)
        if _int(pool.stride) != self.pool or _int(pool.padding) != 0:
            raise AdapterError("qwen2-audio: the final pooling is not AvgPool1d(k, stride=k)")
        blocks = len(enc.layers)
        self.num_heads = cfg.encoder_attention_heads
        self.hidden_size = cfg.d_model
        self.supports_padding = True
        cfg.tie_last_hidden_states = False  # last hidden state = raw output of the last block
        encoder_rate = self.sample_rate / (self.hop_length * self.mel_stride)
        if self.grid == "encoder":
            self.layer_names = tuple(f"encoder.{i}" for i in range(blocks + 1))
            self.frame_rate_hz = encoder_rate
        else:
            self.layer_names = (*(f"pooled.{i}" for i in range(blocks + 1)), "output")
            self.frame_rate_hz = encoder_rate / self.pool
        self.num_layers = len(self.layer_names)

    # ------------------------------------------------------------------ geometry

    def mel_frame_count(self, n_samples: int) -> int:
        """Valid log-mel frames (the extractor's mask): ``ceil(n / hop_length)``."""
        return -(-int(n_samples) // self.hop_length)

    def encoder_frame_count(self, n_samples: int) -> int:
        """Valid encoder frames: conv arithmetic of conv1/conv2, ``(M - 1) // 2 + 1``."""
        n = self.mel_frame_count(n_samples)
        for kernel, stride, padding in self.convs:
            n = conv_output_length(n, kernel, stride, padding)
        return n

    def frame_count(self, n_samples: int) -> int:
        """``E`` frames on the encoder grid; ``E // 2`` on the pooled grid."""
        n = self.encoder_frame_count(n_samples)
        return n if self.grid == "encoder" else n // self.pool

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Encoder grid: ``0.02 j`` s (mel frame ``2 j``); pooled: ``0.04 p + 0.01`` s (the
        mean time of encoder frames ``2 p`` and ``2 p + 1``)."""
        j = np.arange(int(n_frames), dtype=np.float64)
        if self.grid == "pooled":
            j = j * self.pool + (self.pool - 1) / 2
        return (j * self.mel_stride + self.mel_offset) * self.hop_length / self.sample_rate

    # ------------------------------------------------------------------ forward

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        waves = self._check_batch(batch)
        if output_attentions and self.grid != "encoder":
            raise AdapterError(
                "qwen2-audio: attention weights are on the encoder's 50 Hz grid; use the "
                "model option `grid: encoder` for attention analyses"
            )
        self.check_max_length(waves, "the encoder")
        counts = [self.frame_count(len(w)) for w in waves]
        hidden, attn = self.empty_outputs(len(waves))
        run = [i for i, c in enumerate(counts) if c > 0]
        if run:
            keep = max(counts[i] for i in run)
            states, weights = self._run([waves[i] for i in run], output_attentions, keep)
            for b, i in enumerate(run):
                n = counts[i]
                hidden[i] = self._to_numpy(states[:, b, :n])
                if weights is not None:
                    attn[i] = self._to_numpy(weights[:, b, :, :n, :n])
        return (hidden, attn) if output_attentions else hidden

    def features(self, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """As ``Qwen2AudioProcessor``: ``input_features`` ``(batch, mel, 3000)`` and the mel
        frames' ``attention_mask`` ``(batch, 3000)``."""
        device = "cpu" if self.torch_device.type == "cpu" else str(self.torch_device)
        feats = self.extractor(
            waves,
            sampling_rate=self.sample_rate,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
            device=device,
        )
        return {
            "input_features": feats["input_features"],
            "attention_mask": feats["attention_mask"],
        }

    def _run(
        self, waves: list[np.ndarray], output_attentions: bool, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states ``(layer, batch, keep, feature)`` on the grid, and attentions
        ``(layer - 1, batch, head, keep, keep)`` (or ``None``; encoder grid only)."""
        from transformers.masking_utils import create_bidirectional_mask

        feats = self.features(waves)
        enc = self.model
        mel = feats["input_features"].to(self.torch_device, self.torch_dtype)
        # the encoder-frame mask exactly as Qwen2AudioModel.forward builds it
        valid, _ = enc._get_feat_extract_output_lengths(feats["attention_mask"].sum(-1))
        expected = [self.encoder_frame_count(len(w)) for w in waves]
        if valid.tolist() != expected:
            raise AdapterError(
                f"qwen2-audio: the feature extractor's mask gives {valid.tolist()} encoder "
                f"frames, the frame arithmetic {expected}"
            )
        frames = torch.arange(self.positions)[None, :] < valid[:, None]
        captured: list[torch.Tensor] = []
        hooks = []
        if output_attentions:  # cropped per block: 1500 x 1500 per head is never kept
            for block in enc.layers:
                hook = block.self_attn.register_forward_hook(
                    lambda _m, _a, out: captured.append(out[1][..., :keep, :keep])
                )
                hooks.append(hook)
        try:
            with torch.inference_mode(), eager_attention(enc, output_attentions):
                dummy = torch.zeros(
                    (len(waves), self.positions, 1), dtype=self.torch_dtype, device=mel.device
                )
                mask = create_bidirectional_mask(
                    config=enc.config,
                    inputs_embeds=dummy,
                    attention_mask=frames.long().to(mel.device),
                )
                out = enc(mel, attention_mask=mask, output_hidden_states=True)
        finally:
            for hook in hooks:
                hook.remove()
        states = torch.stack(out.hidden_states)  # (layer, batch, 1500, feature)
        if states.shape[0] != len(enc.layers) + 1 or states.shape[2] != self.positions:
            raise AdapterError(
                f"qwen2-audio: model gave {tuple(states.shape)} hidden states; expected "
                f"{len(enc.layers) + 1} layers of {self.positions} frames"
            )
        if self.grid == "pooled":
            states = torch.cat([self._pool(states), out.last_hidden_state[None]])
        weights = torch.stack(captured) if output_attentions else None
        return states[:, :, :keep], weights

    def _pool(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder's ``avg_pooler`` over frames of ``(layer, batch, frame, feature)``."""
        layers, batch, frames, width = states.shape
        x = states.reshape(layers * batch, frames, width).transpose(1, 2)
        x = self.model.avg_pooler(x).transpose(1, 2)
        return x.reshape(layers, batch, x.shape[1], width)

    def attention_projections(self) -> list[nn.Module]:
        """Each encoder block's ``self_attn.out_proj`` (input: heads concatenated, head-major)."""
        self._require_loaded()
        if self.grid != "encoder":
            raise AdapterError(
                "qwen2-audio: head ablation needs the encoder's own layers; use the model "
                "option `grid: encoder`"
            )
        return [block.self_attn.out_proj for block in self.model.layers]


def _int(value: Any) -> int:
    """A pooling size given as an int or a 1-tuple."""
    return int(value[0] if isinstance(value, tuple | list) else value)
