"""x-vector speaker heads on wav2vec2-style encoders (``transformers`` ``*ForXVector``).

Checkpoints: ``Wav2Vec2ForXVector``, ``WavLMForXVector`` (e.g. ``microsoft/wavlm-base-plus-sv``)
and ``UniSpeechSatForXVector`` (``microsoft/unispeech-sat-base-plus-sv``); the class follows
the checkpoint's ``model_type``. The head (Snyder et al. 2018, "X-vectors: robust DNN
embeddings for speaker recognition", as implemented in ``transformers``) is: the encoder's
output (``last_hidden_state``, or with ``use_weighted_layer_sum`` the softmax-weighted sum
of all hidden states) -> ``projector`` (linear) -> TDNN layers (1-D convolutions without
padding, ``tdnn_kernel`` / ``tdnn_dilation``, ReLU) -> statistics pooling (mean and unbiased
std over the utterance's TDNN frames) -> ``feature_extractor`` (linear): the x-vector.

Layers (``layer_names``): ``encoder.0 .. encoder.L`` (the encoder's hidden states, as in the
wav2vec2 family: layer 0 the input to the first block, raw block outputs, no final norm) and
``tdnn.1 .. tdnn.K`` (each TDNN layer's output after its ReLU); utterance level
(``embeddings``): ``xvector``. Widths differ (e.g. 768 and 512 .. 1500); every layer is
zero-padded to the widest (``layer_widths``, see :mod:`speechlens.models.layers`).

Frames. The TDNN stack shortens the encoder's ``T`` frames (20 ms) by ``span = sum(d (k - 1))``
(14 for the default kernels ``(5, 3, 3, 1, 1)`` and dilations ``(1, 2, 3, 1, 1)``). All layers
are given on the TDNN's grid: ``frame_count(n) = T(n) - span`` frames, frame ``j`` centred on
encoder frame ``j + span / 2``, i.e. at ``((j + span / 2) S + R / 2) / sr`` s (S = 320, R = 400:
0.1525 s, 0.1725 s, ...). The encoder layers are cropped to those frames (the first and last
``span / 2`` encoder frames are dropped), each TDNN layer to the frames that feed them.
Utterances need ``span + 2`` encoder frames (0.3 s) for an x-vector (the std of one frame is
undefined).

No self-attention capability here: attention analyses of the same checkpoint run with the
encoder family (``wavlm``, ``wav2vec2``, ``unispeech-sat`` loads ``*Model`` from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from speechlens.models.base import AdapterError
from speechlens.models.layers import load_hf_family, pad_width
from speechlens.models.wav2vec2 import Wav2Vec2Adapter, zero_mean_unit_var

HEADS = {
    "wav2vec2": "Wav2Vec2ForXVector",
    "wavlm": "WavLMForXVector",
    "unispeech-sat": "UniSpeechSatForXVector",
}


class XVectorAdapter(Wav2Vec2Adapter):
    """Encoder hidden states, TDNN layers and the x-vector; see the module docstring.

    Options: ``normalize`` (bool; default: the feature extractor's ``do_normalize``),
    ``threads``.
    """

    family = "xvector"
    capabilities = frozenset({"utterance_level"})
    embedding_names = ("xvector",)

    def load(self) -> None:
        if not self._loaded:
            load_hf_family(self, HEADS)

    def _build(self) -> None:
        head = self.model
        architectures = getattr(self.config, "architectures", None) or []
        if self.init == "pretrained" and HEADS[self.checkpoint_type] not in architectures:
            raise AdapterError(
                f"xvector: {self.source!r} is a {architectures or self.checkpoint_type} "
                f"checkpoint without an x-vector head ({HEADS[self.checkpoint_type]}); use the "
                f"family {self.checkpoint_type!r} for its encoder"
            )
        self.model = head.base_model  # the encoder, as in the wav2vec2 family
        tie = getattr(self.config, "tie_last_hidden_states", None)
        super()._build()
        # The head's weighted layer sum needs transformers' own hidden states (whose last
        # entry is, depending on the model type, the last block's output or after the final
        # norm); the raw last block output is taken by a hook instead (see _run_head).
        self.config.tie_last_hidden_states = tie
        self.head = head
        cfg = self.config
        spans = [
            int(d) * (int(k) - 1) for k, d in zip(cfg.tdnn_kernel, cfg.tdnn_dilation, strict=True)
        ]
        if any(s % 2 for s in spans):
            raise AdapterError(
                f"xvector: TDNN kernels {cfg.tdnn_kernel} / dilations {cfg.tdnn_dilation} "
                "centre a layer between encoder frames; the layers cannot share one grid"
            )
        self.tdnn_spans = spans
        self.span = sum(spans)
        encoder_layers = self.num_layers
        self.layer_names = tuple(
            [f"encoder.{i}" for i in range(encoder_layers)]
            + [f"tdnn.{i + 1}" for i in range(len(spans))]
        )
        self.layer_widths = tuple([cfg.hidden_size] * encoder_layers + list(cfg.tdnn_dim))
        self.num_layers = len(self.layer_names)
        self.hidden_size = max(self.layer_widths)
        self.embedding_size = int(cfg.xvector_output_dim)
        head.to(self.torch_device, self.torch_dtype).eval().requires_grad_(False)

    # ------------------------------------------------------------------ geometry

    def encoder_frame_count(self, n_samples: int) -> int:
        """Frames of the conv feature encoder (the wav2vec2 family's ``frame_count``)."""
        return super().frame_count(n_samples)

    def frame_count(self, n_samples: int) -> int:
        """TDNN frames: encoder frames minus ``span`` (0 when shorter)."""
        return max(self.encoder_frame_count(n_samples) - self.span, 0)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``((j + span / 2) S + R / 2) / sr`` s: centred on encoder frame ``j + span / 2``."""
        j = np.arange(int(n_frames), dtype=np.float64) + self.span // 2
        return (j * self.total_stride + self.receptive_field / 2) / self.sample_rate

    # ------------------------------------------------------------------ forward

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray]:
        if output_attentions:
            raise AdapterError(
                f"xvector: attention analyses run with the encoder's family "
                f"({sorted(HEADS)}) on the same checkpoint"
            )
        return self._forward(batch, pool=False)[0]

    def embeddings(self, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
        """x-vectors per utterance, ``(1, xvector_output_dim)`` ``float32``."""
        return self.forward_with_embeddings(batch)[1]

    def forward_with_embeddings(
        self, batch: Sequence[np.ndarray], *, embeddings: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Frame-level layers and x-vectors of ``batch`` in one pass (see the module docstring).

        Raises :class:`AdapterError` for an utterance with fewer than 2 TDNN frames (with
        ``embeddings=False`` the x-vectors are ``None`` and such utterances are fine)."""
        return self._forward(batch, pool=embeddings)

    def _forward(
        self, batch: Sequence[np.ndarray], pool: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        waves = self._check_batch(batch)
        counts = [self.frame_count(len(w)) for w in waves]
        short = [i for i, c in enumerate(counts) if c < 2]
        if pool and short:
            i = short[0]
            raise AdapterError(
                f"xvector: utterance {i} ({len(waves[i]) / self.sample_rate:.3f} s) gives "
                f"{counts[i]} TDNN frame(s); an x-vector needs 2 (its std is undefined)"
            )
        hidden: list[Any] = [
            np.zeros((self.num_layers, 0, self.hidden_size), np.float32) for _ in waves
        ]
        vectors: list[Any] = [None] * len(waves)
        for group in self._groups(waves, counts):
            layers, embedded = self._run_head([waves[i] for i in group], pool)
            for b, i in enumerate(group):
                n = counts[i]
                hidden[i] = pad_width([self._to_numpy(x[b, :n]) for x in layers], self.hidden_size)
                if embedded is not None:
                    vectors[i] = self._to_numpy(embedded[b : b + 1])
        return hidden, vectors

    def _run_head(
        self, waves: list[np.ndarray], pool: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Cropped layers ``[(batch, frame, width_l)]`` and x-vectors ``(batch, dim)``."""
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
        raw: list[torch.Tensor] = []
        last_block = self.model.encoder.layers[-1]
        hook = last_block.register_forward_hook(
            lambda _m, _a, out: raw.append(out[0] if isinstance(out, tuple) else out)
        )
        try:
            with torch.inference_mode():
                out = self.model(inputs, output_hidden_states=True, **kwargs)
        finally:
            hook.remove()
        states = torch.stack([*out.hidden_states[:-1], raw[-1]])
        if states.shape[2] != self.encoder_frame_count(longest):
            raise AdapterError(
                f"xvector: model gave {states.shape[2]} frames for {longest} samples; expected "
                f"{self.encoder_frame_count(longest)} (config and model disagree)"
            )
        cfg, head = self.config, self.head
        with torch.inference_mode():
            if cfg.use_weighted_layer_sum:  # over transformers' own hidden states
                weights = torch.softmax(head.layer_weights, dim=-1)
                x = (torch.stack(out.hidden_states) * weights.view(-1, 1, 1, 1)).sum(0)
            else:
                x = out.last_hidden_state
            x = head.projector(x)
            tdnn = []
            for layer in head.tdnn:
                x = layer(x)
                tdnn.append(x)
            lengths = [self.frame_count(len(w)) for w in waves]
            half = self.span // 2
            layers = [s[:, half:] for s in states]
            done = 0
            for span, x in zip(self.tdnn_spans, tdnn, strict=True):
                done += span
                layers.append(x[:, half - done // 2 :])
            embedded = None
            if pool:
                stats = [
                    torch.cat([x[b, :n].mean(0), x[b, :n].std(0)]) for b, n in enumerate(lengths)
                ]
                embedded = head.feature_extractor(torch.stack(stats))
        return layers, embedded
