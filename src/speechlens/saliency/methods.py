"""Saliency of each explained token's log-probability (or probability), per encoder frame.

Methods returning one map per token on the 20 ms encoder grid ``(token, frame)`` (1500
frames with padding pad30, the valid ones with trim; callers keep the valid frames). Mel
frames are pooled to encoder frames centred on each encoder frame
(:func:`~speechlens.saliency.pooling.pool_to_encoder_grid`).

- ``gradient_x_input``: ``d log p(token) / d mel * mel`` on the log-mel input; per element
  its magnitude (``sign="absolute"``, the default) or its signed value (``"signed"``),
  summed over mel bins, then pooled to the encoder grid.
- ``encoder_output``: saliency w.r.t. the encoder states ``h`` ``(frame, feature)``, the
  keys/values the cross-attention reads: ``grad x output`` summed over features
  (magnitudes or signed, as above) or the gradient's L2 norm (``encoder="grad_norm"``).
  It separates what the decoder reads at each frame from how the encoder mixed the input.
- ``rise_grid``: a RISE-style occlusion estimator on a fixed grid (Petsiuk et al. 2018,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models", adapted): it is
  *not* SPES (that is :mod:`speechlens.saliency.spes`). ``budget`` random masks occlude
  time-frequency patches (``patch_frames`` mel frames x ``patch_bins`` mel bins, each
  occluded with probability ``occlude_prob``, drawn from a seeded generator) of the valid
  spectrogram, replacing them by the spectrogram's floor (its minimum: silence). A patch's
  saliency for a token is the mean drop ``p(clean) - p(masked)`` of the token's probability
  over masks that occlude it minus the mean over masks that keep it; spread over the patch's
  mel frames and bins, summed over bins and pooled.

Cost: the gradient methods share one forward pass and one backward pass per token
(batched over ``grad_batch`` tokens with ``torch.autograd.grad(is_grads_batched=True)``);
``rise_grid`` costs ``budget + 1`` forward passes per utterance, whatever the number of tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from speechlens.saliency.pooling import pool_to_encoder_grid
from speechlens.saliency.whisper import WhisperForSaliency

SIGNS = ("absolute", "signed")
ENCODER_MODES = ("grad_x_output", "grad_norm")


@dataclass
class GradientResult:
    """Outputs of :func:`gradient_saliency` for one utterance with ``K`` tokens.

    Attributes:
        logprob: ``(token,)`` log-probabilities of the targets (natural log).
        cross: cross-attention ``(layer, head, token, frame)`` at the tokens' query positions.
        gradient_x_input: ``(token, frame)`` input saliency on the encoder grid.
        encoder_output: ``(token, frame)`` encoder-state saliency.
        input_map: ``(token, mel, 3000)`` the un-pooled gradient x input (signed).
    """

    logprob: np.ndarray
    cross: np.ndarray
    gradient_x_input: np.ndarray
    encoder_output: np.ndarray
    input_map: np.ndarray = field(repr=False)


def _magnitude(x: torch.Tensor, sign: str) -> torch.Tensor:
    return x.abs() if sign == "absolute" else x


def gradient_saliency(
    model: WhisperForSaliency,
    mel: torch.Tensor,
    input_ids: np.ndarray,
    positions: np.ndarray,
    targets: np.ndarray,
    *,
    sign: str = "absolute",
    encoder: str = "grad_x_output",
    grad_batch: int = 8,
) -> GradientResult:
    """Gradient x input, encoder-output saliency and cross-attention of every target token.

    ``mel`` ``(1, mel, 3000)``; ``input_ids``, ``positions``, ``targets`` from
    :func:`~speechlens.saliency.forced.teacher_forcing`. One forward pass with attention
    weights, then one backward pass per token, ``grad_batch`` tokens at a time.
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    if encoder not in ENCODER_MODES:
        raise ValueError(f"encoder must be one of {ENCODER_MODES}, got {encoder!r}")
    if grad_batch < 1:
        raise ValueError(f"grad_batch must be >= 1, got {grad_batch}")
    x = mel.detach().clone().requires_grad_(True)
    k_tokens = len(targets)
    gxi, enc_sal, maps = [], [], []
    with torch.enable_grad():
        states = model.encode(x)
        out = model.decode(states, input_ids, positions, targets, attentions=True)
        selected = out.logprob[0]
        for start in range(0, k_tokens, grad_batch):
            idx = torch.arange(start, min(start + grad_batch, k_tokens))
            seed = torch.zeros(len(idx), k_tokens, device=selected.device, dtype=selected.dtype)
            seed[torch.arange(len(idx)), idx] = 1.0
            if len(idx) == 1:
                grads = torch.autograd.grad(selected, (x, states), seed[0], retain_graph=True)
                g_mel, g_enc = (g[None] for g in grads)
            else:
                g_mel, g_enc = torch.autograd.grad(
                    selected, (x, states), seed, retain_graph=True, is_grads_batched=True
                )
            product = (g_mel * x.detach())[:, 0]  # (b, mel, 3000)
            maps.append(product.cpu())
            gxi.append(_magnitude(product, sign).sum(1).cpu())
            if encoder == "grad_norm":
                enc_sal.append(g_enc[:, 0].norm(dim=-1).cpu())
            else:
                enc_sal.append(_magnitude(g_enc[:, 0] * states.detach()[0], sign).sum(-1).cpu())
    n_frames = states.shape[1]
    empty = torch.zeros(0, n_frames)
    return GradientResult(
        logprob=out.logprob[0].detach().cpu().numpy(),
        cross=out.cross[:, 0].detach().cpu().numpy(),
        gradient_x_input=pool_to_encoder_grid(
            torch.cat(gxi) if gxi else torch.zeros(0, 2 * n_frames)
        ),
        encoder_output=(torch.cat(enc_sal) if enc_sal else empty).numpy(),
        input_map=(torch.cat(maps) if maps else torch.zeros(0, *x.shape[1:])).numpy(),
    )


@dataclass
class RiseGridResult:
    """Outputs of :func:`rise_grid_saliency` for one utterance with ``K`` tokens.

    Attributes:
        saliency: ``(token, frame)`` on the encoder grid (0 past the valid frames).
        patch_map: ``(token, mel, mel_frame)`` the patch saliencies spread over the valid
            mel frames and bins (probability units).
        masks: ``(budget, freq_patch, time_patch)`` bool, True where occluded.
        passes: forward passes run, including the clean one (``budget + 1``).
    """

    saliency: np.ndarray
    patch_map: np.ndarray = field(repr=False)
    masks: np.ndarray = field(repr=False)
    passes: int = 0


def random_masks(
    budget: int, n_bins: int, n_mel: int, patch_frames: int, patch_bins: int, prob: float, seed: int
) -> torch.Tensor:
    """``(budget, ceil(n_bins / patch_bins), ceil(n_mel / patch_frames))`` bool masks, seeded."""
    gen = torch.Generator().manual_seed(int(seed))
    shape = (budget, math.ceil(n_bins / patch_bins), math.ceil(n_mel / patch_frames))
    return torch.rand(shape, generator=gen) < prob


def _expand(patches: torch.Tensor, patch_bins: int, patch_frames: int, n_bins: int, n_mel: int):
    """Patch grid ``(..., freq_patch, time_patch)`` -> ``(..., n_bins, n_mel)``."""
    out = patches.repeat_interleave(patch_bins, dim=-2)[..., :n_bins, :]
    return out.repeat_interleave(patch_frames, dim=-1)[..., :n_mel]


def rise_grid_saliency(
    model: WhisperForSaliency,
    mel: torch.Tensor,
    input_ids: np.ndarray,
    positions: np.ndarray,
    targets: np.ndarray,
    n_mel: int,
    *,
    budget: int = 128,
    batch_size: int = 16,
    patch_frames: int = 10,
    patch_bins: int = 10,
    occlude_prob: float = 0.5,
    seed: int = 0,
) -> RiseGridResult:
    """RISE-style grid occlusion saliency of every target token's probability (module docstring).

    ``mel`` ``(1, mel, 3000)``; ``n_mel`` valid mel frames (only they are occluded);
    exactly ``budget`` perturbed forward passes plus one clean pass.
    """
    if budget < 1 or batch_size < 1 or patch_frames < 1 or patch_bins < 1:
        raise ValueError("budget, batch_size, patch_frames and patch_bins must be >= 1")
    if not 0 < occlude_prob < 1:
        raise ValueError(f"occlude_prob must be in (0, 1), got {occlude_prob}")
    n_bins, n_total = mel.shape[1], mel.shape[2]
    k_tokens = len(targets)
    n_mel = int(min(n_mel, n_total))
    masks = random_masks(budget, n_bins, n_mel, patch_frames, patch_bins, occlude_prob, seed)
    fill = mel.min()
    with torch.no_grad():
        clean = model.decode(model.encode(mel), input_ids, positions, targets).logprob.exp()[0]
        drops = []
        for start in range(0, budget, batch_size):
            chunk = masks[start : start + batch_size].to(mel.device)
            occluded = _expand(chunk, patch_bins, patch_frames, n_bins, n_mel)
            x = mel.expand(len(chunk), -1, -1).clone()
            x[:, :, :n_mel] = torch.where(occluded, fill, x[:, :, :n_mel])
            prob = model.decode(model.encode(x), input_ids, positions, targets).logprob.exp()
            drops.append((clean[None] - prob).cpu())
    drop = torch.cat(drops).double()  # (budget, token)
    occ = masks.reshape(budget, -1).double()  # (budget, patch)
    n_occ, n_keep = occ.sum(0), (1 - occ).sum(0)
    mean_occ = drop.T @ occ / n_occ.clamp(min=1)
    mean_keep = drop.T @ (1 - occ) / n_keep.clamp(min=1)
    score = torch.where((n_occ > 0) & (n_keep > 0), mean_occ - mean_keep, 0.0)
    score = score.reshape(k_tokens, *masks.shape[1:]).float()
    patch_map = _expand(score, patch_bins, patch_frames, n_bins, n_mel)  # (token, mel, n_mel)
    per_frame = torch.zeros(k_tokens, n_total)
    per_frame[:, :n_mel] = patch_map.sum(1)
    return RiseGridResult(
        saliency=pool_to_encoder_grid(per_frame),
        patch_map=patch_map.numpy(),
        masks=masks.numpy(),
        passes=budget + 1,
    )
