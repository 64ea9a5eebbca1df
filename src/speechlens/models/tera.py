"""Adapter for TERA models trained by the workflow (rule ``train_tera``; :mod:`speechlens.tera`).

``source`` is a folder written by :func:`speechlens.tera.train.train` (``config.json`` with
``model_type: tera`` and ``model.safetensors``).

Input: the ``logmel`` baseline's features (80 bins, 25 ms Hann window, 10 ms hop, natural
log; :class:`~speechlens.models.spectral.LogMelAdapter`), normalised per channel by the
training corpus' mean and std saved in the folder. No downsampling: frame ``i`` covers
samples ``[160 i, 160 i + 400)`` and is centred at ``(160 i + 200) / 16000`` s (12.5 ms,
22.5 ms, ...); ``n`` samples give ``1 + (n - 400) // 160`` frames (0 when ``n < 400``), as
for ``logmel``, so the two align frame by frame. Utterances of more than ``max_frames``
frames (30 s by default: the size of the position table) are rejected.

Hidden states: layer 0 is the embedding output (input projection + position embedding,
LayerNorm), layer ``l`` the output of block ``l`` (post-LN BERT: no final norm). Batches
are padded and masked (padded frames are never attended to), so they give the one-at-a-time
outputs. Attention weights come from eager attention, switched on only while asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechlens.models.base import Adapter, AdapterError, ModelSourceError
from speechlens.models.hf import (
    eager_attention,
    resolve_device,
    resolve_dtype,
    weight_checksums,
)


class TeraAdapter(Adapter):
    """A workflow-trained TERA model; see the module docstring. Options: ``threads``."""

    family = "tera"
    capabilities = frozenset({"self_attention", "trained_by_workflow"})

    def __init__(self, source: str | None = None, **kwargs: Any):
        super().__init__(source, **kwargs)
        if self.source is None:
            raise AdapterError("tera: a model `source` (the trained model folder) is required")
        self.model = None

    def load(self) -> None:
        if self._loaded:
            return
        from speechlens.tera import model as tera_model
        from speechlens.tera.data import log_mel_frontend

        folder = Path(self.source).expanduser()
        if not folder.is_dir():
            raise ModelSourceError(
                f"tera: the model folder {self.source!r} does not exist (train it with rule "
                "train_tera, or point `source:` at a folder it wrote)"
            )
        try:
            self.model = tera_model.load(folder, init=self.init, seed=self.seed)
            _, self.record = tera_model.read_config(folder)
        except (OSError, ValueError) as err:
            raise ModelSourceError(
                f"tera: cannot load the model in {self.source!r}: {err}"
            ) from err
        self.torch_device = resolve_device(self.device)
        self.torch_dtype = resolve_dtype(self.compute_dtype, self.torch_device)
        threads = self.options.get("threads")
        if threads and self.torch_device.type == "cpu":
            torch.set_num_threads(int(threads))
        cfg = self.model.config
        self.frontend = log_mel_frontend(cfg.sample_rate, cfg.n_mels)
        self.model.to(device=self.torch_device, dtype=self.torch_dtype)
        self.model.eval()
        self.model.requires_grad_(False)
        self.num_layers = cfg.num_layers + 1
        self.hidden_size = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.sample_rate = cfg.sample_rate
        self.frame_rate_hz = self.frontend.frame_rate_hz
        hop, win = self.frontend.hop_length, self.frontend.win_length
        self.max_samples = win + cfg.max_frames * hop - 1  # frame_count == max_frames
        self.supports_padding = True
        self._loaded = True

    # ------------------------------------------------------------------ geometry

    def frame_count(self, n_samples: int) -> int:
        """``1 + (n - 400) // 160`` frames at 16 kHz, 0 when ``n < 400``."""
        self._require_loaded()
        return self.frontend.frame_count(n_samples)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """``(160 i + 200) / 16000`` s at 16 kHz."""
        self._require_loaded()
        return self.frontend.frame_times(n_frames)

    # ------------------------------------------------------------------ forward

    def forward(
        self, batch: Sequence[np.ndarray], *, output_attentions: bool = False
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
        waves = self._check_batch(batch)
        for i, wave in enumerate(waves):
            if len(wave) > self.max_samples:
                raise AdapterError(
                    f"tera: utterance {i} is {len(wave) / self.sample_rate:.2f} s long; the "
                    f"model takes at most {self.max_samples / self.sample_rate:.2f} s "
                    f"({self.model.config.max_frames} frames)"
                )
        feats = [self.frontend.log_mel(w) for w in waves]
        hidden: list[Any] = [
            np.zeros((self.num_layers, 0, self.hidden_size), np.float32) for _ in waves
        ]
        attn: list[Any] = [
            np.zeros((self.num_layers - 1, self.num_heads, 0, 0), np.float32) for _ in waves
        ]
        run = [i for i, f in enumerate(feats) if len(f)]
        if not run:
            return (hidden, attn) if output_attentions else hidden
        longest = max(len(feats[i]) for i in run)
        values = np.zeros((len(run), longest, self.model.config.n_mels), np.float32)
        mask = np.zeros((len(run), longest), np.int64)
        for b, i in enumerate(run):
            values[b, : len(feats[i])] = feats[i]
            mask[b, : len(feats[i])] = 1
        x = torch.from_numpy(values).to(self.torch_device)
        with torch.inference_mode(), eager_attention(self.model.encoder, output_attentions):
            x = self.model.normalise(x).to(self.torch_dtype)
            out = self.model.encode(
                x,
                torch.from_numpy(mask).to(self.torch_device),
                output_hidden_states=True,
                output_attentions=output_attentions,
            )
        states = torch.stack(out.hidden_states)
        weights = torch.stack(out.attentions) if output_attentions else None
        for b, i in enumerate(run):
            n = len(feats[i])
            hidden[i] = self._to_numpy(states[:, b, :n])
            if weights is not None:
                attn[i] = self._to_numpy(weights[:, b, :, :n, :n])
        return (hidden, attn) if output_attentions else hidden

    def attention_projections(self) -> list[Any]:
        """``encoder.encoder.layer[l - 1].attention.output.dense`` for blocks ``l = 1..L``."""
        self._require_loaded()
        return self.model.attention_projections()

    def provenance(self) -> dict[str, Any]:
        self._require_loaded()
        record = self._base_provenance()
        if self.init == "random":
            record["weights"] = f"random-init seed {self.seed}"
        else:
            record["weights"] = weight_checksums(self.source, None)
        training = self.record.get("training", {})
        record["training"] = {
            k: training.get(k)
            for k in ("language", "corpus", "final_heldout_loss", "final_heldout_mean_loss")
        } | {"steps": training.get("settings", {}).get("steps")}
        record["compute_dtype"] = self.compute_dtype
        record["torch_version"] = torch.__version__
        return record

    def _to_numpy(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
