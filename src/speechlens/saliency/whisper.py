"""Whisper (encoder + decoder) for attention/saliency analysis.

The input is the checkpoint's own log-mel spectrogram of the waveform zero-padded to 30 s,
``(mel, 3000)`` in Whisper's normalised log10 units, exactly as in training. Of its 3000
mel frames (10 ms hop) the first ``M = n_samples // hop`` are valid; the encoder's
stride-2 convolution maps mel frames ``2 j, 2 j + 1`` to encoder frame ``j`` (20 ms), and
the first ``ceil(M / 2)`` of the 1500 encoder frames are valid. The decoder cross-attends
to all 1500 frames; analyses keep the valid ones.

Attention weights need eager attention (SDPA returns none): the decoder runs with it, so
that its cross-attention weights can be read. The encoder's self-attention weights are
never read here, so the encoder runs with PyTorch's fused scaled-dot-product attention
(the same function, up to float rounding: saliency maps agree to ~1e-5 of their maximum),
which never materialises the 1500 x 1500 weights. Whisper base, pad30, one CPU core, a
12-token utterance: gradient x input 22.7 s vs 26.4 s eager (``grad_batch`` 1) and 72.2 s
eager with ``grad_batch`` 16; SPES passes 1.4x faster
(``benchmarks/saliency_encoder_attention.py``).
The model's parameters never require gradients; saliency methods ask for gradients with
respect to the input or the encoder states only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from speechlens.models.base import conv_output_length
from speechlens.models.hf import load_config, load_model, resolve_device


def set_encoder_attention(model: Any, implementation: str = "sdpa") -> None:
    """Run the encoder's self-attention of a ``WhisperForConditionalGeneration`` with
    ``implementation`` (``"sdpa"`` or ``"eager"``), leaving the decoder's as it is.

    transformers picks each attention module's implementation from the config it holds,
    which all modules share; the encoder's modules get a copy naming ``implementation``.
    After this call, ``model.set_attn_implementation`` (and so
    :func:`speechlens.models.hf.eager_attention`) no longer reaches the encoder: call this
    function again to switch it.
    """
    config = copy.copy(model.config)
    config._attn_implementation = implementation
    for layer in model.model.encoder.layers:
        layer.self_attn.config = config


@dataclass
class TokenPass:
    """Outputs of one teacher-forced pass over a batch of (perturbed) spectrograms.

    Attributes:
        encoder: encoder output ``(batch, frame, feature)`` (after the final layer norm).
        logprob: log-probability of each target token ``(batch, token)`` (float32).
        cross: cross-attention ``(layer, batch, head, token, frame)`` at the tokens' query
            positions, or ``None`` when not requested.
    """

    encoder: torch.Tensor
    logprob: torch.Tensor
    cross: torch.Tensor | None


class WhisperForSaliency:
    """A ``WhisperForConditionalGeneration`` with its feature extractor and tokenizer.

    Args:
        source: a folder saved with ``save_pretrained`` (or a cached hub id).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        threads: CPU threads torch may use.
        padding: ``"pad30"`` (as trained: the encoder sees 30 s, 1500 frames) or ``"trim"``
            (only the valid mel frames, as :class:`~speechlens.models.whisper.WhisperAdapter`
            does: the positional embedding is sliced; far faster for short utterances).
        require_tokenizer: fail unless the folder holds a tokenizer (needed to explain a
            corpus' text; not for token ids given directly).
    """

    def __init__(
        self,
        source: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        padding: str = "pad30",
        require_tokenizer: bool = True,
    ):
        from transformers import (
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
            WhisperTokenizer,
        )

        if padding not in ("pad30", "trim"):
            raise ValueError(f"padding must be 'pad30' or 'trim', got {padding!r}")
        self.padding = padding
        self.device = resolve_device(device)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(int(threads))
        config = load_config(source, revision)
        if config.model_type != "whisper" or getattr(config, "decoder_layers", 0) < 1:
            raise ValueError(f"{source!r}: cross-attention needs a Whisper encoder-decoder model")
        config._attn_implementation = "eager"
        model = load_model(
            WhisperForConditionalGeneration, config, source, revision, "pretrained", 0
        )
        model.set_attn_implementation("eager")
        set_encoder_attention(model, "sdpa")
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.source = str(source)
        try:
            self.extractor = WhisperFeatureExtractor.from_pretrained(source, revision=revision)
        except (OSError, ValueError):
            self.extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        self.tokenizer: Any = None
        try:
            self.tokenizer = WhisperTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError, TypeError) as err:
            if require_tokenizer:
                raise ValueError(
                    f"{source!r}: no Whisper tokenizer in the checkpoint folder ({err}); "
                    "save one beside the model (WhisperProcessor.save_pretrained)"
                ) from err
        self.sample_rate = int(self.extractor.sampling_rate)
        self.hop_length = int(self.extractor.hop_length)
        self.max_samples = int(self.extractor.n_samples)
        enc = self.model.model.encoder
        self.convs = [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in (enc.conv1, enc.conv2)]
        self.num_layers = config.decoder_layers
        self.num_heads = config.decoder_attention_heads

    # ------------------------------------------------------------------ geometry

    def mel_frame_count(self, n_samples: int) -> int:
        """Valid log-mel frames: ``n_samples // hop_length``."""
        return int(n_samples) // self.hop_length

    def frame_count(self, n_samples: int) -> int:
        """Valid encoder frames (20 ms): conv arithmetic over the valid mel frames."""
        n = self.mel_frame_count(n_samples)
        for kernel, stride, padding in self.convs:
            n = conv_output_length(n, kernel, stride, padding)
        return n

    def log_mel(self, wave: np.ndarray) -> torch.Tensor:
        """Log-mel input ``(1, mel, 3000)`` float32 of a mono waveform (<= 30 s) on the device
        (``(1, mel, n_samples // hop)`` with ``padding="trim"``)."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or len(wave) > self.max_samples:
            raise ValueError(
                f"whisper takes mono audio of at most {self.max_samples / self.sample_rate:g} s; "
                f"got shape {wave.shape}"
            )
        feats = self.extractor(
            wave, sampling_rate=self.sample_rate, padding="max_length", return_tensors="np"
        )["input_features"]
        if self.padding == "trim":
            feats = feats[:, :, : self.mel_frame_count(len(wave))]
        return torch.from_numpy(np.ascontiguousarray(feats)).to(self.device)

    # ------------------------------------------------------------------ passes

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Encoder output ``(batch, frame, feature)`` of ``mel`` ``(batch, mel, mel_frame)``
        (1500 frames of 3000 mel frames with pad30; ``ceil(mel_frame / 2)`` with trim)."""
        enc = self.model.model.encoder
        if self.padding == "pad30":
            return enc(input_features=mel).last_hidden_state
        # transformers refuses anything but 3000 mel frames: run its submodules
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)

    def decode(
        self,
        encoder: torch.Tensor,
        input_ids: np.ndarray,
        positions: np.ndarray,
        targets: np.ndarray,
        *,
        attentions: bool = False,
    ) -> TokenPass:
        """Teacher-forced decoder pass; see :class:`TokenPass`.

        ``input_ids`` ``(P + K - 1,)``, ``positions`` and ``targets`` ``(K,)`` come from
        :func:`speechlens.saliency.forced.teacher_forcing`: the log-probability of target
        ``k`` is read from the logits at ``positions[k]``, and its cross-attention is the
        query row ``positions[k]``.
        """
        batch = encoder.shape[0]
        ids = torch.as_tensor(input_ids, device=self.device)[None].expand(batch, -1)
        pos = torch.as_tensor(positions, device=self.device)
        tgt = torch.as_tensor(targets, device=self.device)
        out = self.model.model.decoder(
            input_ids=ids,
            encoder_hidden_states=encoder,
            output_attentions=attentions,
            use_cache=False,
        )
        logits = self.model.proj_out(out.last_hidden_state[:, pos])
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        logprob = torch.log_softmax(logits, dim=-1).gather(
            -1, tgt[None, :, None].expand(batch, -1, 1)
        )
        cross = None
        if attentions:
            cross = torch.stack([a[:, :, pos] for a in out.cross_attentions])
        return TokenPass(encoder, logprob[..., 0], cross)

    def log_distribution(
        self, encoder: torch.Tensor, input_ids: np.ndarray, positions: np.ndarray
    ) -> torch.Tensor:
        """Teacher-forced log-probabilities over the whole vocabulary at ``positions``:
        ``(batch, token, vocab)`` (float32 or wider), for scorers that compare output
        distributions (SPES's KL divergence)."""
        batch = encoder.shape[0]
        ids = torch.as_tensor(input_ids, device=self.device)[None].expand(batch, -1)
        pos = torch.as_tensor(positions, device=self.device)
        out = self.model.model.decoder(
            input_ids=ids, encoder_hidden_states=encoder, use_cache=False
        )
        logits = self.model.proj_out(out.last_hidden_state[:, pos])
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return torch.log_softmax(logits, dim=-1)

    def greedy_ids(self, mel: torch.Tensor, prompt, max_new_tokens: int = 200) -> list[int]:
        """The model's own greedy continuation of ``prompt`` for ``mel`` ``(1, mel, frames)``.

        Token ids after the prompt, up to (not including) the end-of-text token. The
        checkpoint's ``suppress_tokens`` are never chosen, nor its ``begin_suppress_tokens``
        at the first step (as Whisper's ``generate``); runs the same encoder as the
        saliency methods, so it also works with ``padding="trim"``.
        """
        gen = self.model.generation_config
        suppress = list(getattr(gen, "suppress_tokens", None) or [])
        begin = list(getattr(gen, "begin_suppress_tokens", None) or [])
        eos = self.model.config.eos_token_id
        ids = [int(i) for i in prompt]
        with torch.no_grad():
            states = self.encode(mel)
            for step in range(max_new_tokens):
                out = self.model.model.decoder(
                    input_ids=torch.tensor([ids], device=self.device),
                    encoder_hidden_states=states,
                    use_cache=False,
                )
                logits = self.model.proj_out(out.last_hidden_state[0, -1]).float()
                logits[suppress] = -torch.inf
                if step == 0:
                    logits[begin] = -torch.inf
                token = int(logits.argmax())
                if token == eos:
                    break
                ids.append(token)
        return ids[len(prompt) :]
