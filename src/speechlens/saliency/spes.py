"""SPES: Spectrogram Perturbation for Explainable Speech-to-Text Generation.

Fucci, Gaido, Savoldi, Negri, Cettolo & Bentivogli (2024), arXiv 2411.01710; reference
implementation in github.com/hlt-mt/FBK-fairseq, ``examples/speech_to_text/
occlusion_explanation`` (perturbator ``slic_fbank_dynamic_segments``, scorer ``KL``,
``Accumulator``, normalisers ``single_mean_std`` + ``paired_min_max``; configuration of
``fbk_works/XAI_FEATURE_ATTRIBUTION.md``). Written anew here for Whisper, step by step:

1. **Segmentation.** The valid log-mel spectrogram ``(time, mel)`` is min-max normalised to
   [0, 1] and segmented by SLIC (scikit-image, ``compactness`` 0.1, Gaussian ``sigma`` 1,
   one channel) at several granularities. Each level asks for
   ``round(n * min(T, threshold_frames) / reference_frames)`` segments (at least 1), ``T``
   the valid 10 ms frames: the published ``n`` are 2000, 2500 and 3000 segments for a
   reference of 500 frames (5 s), scaling stopping at 750 frames.
2. **Masks.** ``n_masks`` is split evenly over the levels (rounded down to a multiple of
   their number). A mask keeps each segment with probability ``1 - p`` (``p = 0.5``); the
   occluded cells are multiplied by 0, as in the reference code (for Whisper's normalised
   log-mel, 0 is a log10 power of -4, a quiet but not silent level). Only the utterance's
   valid frames are segmented and occluded; with ``pad30`` the 30 s padding stays as is.
3. **Score.** For each mask and each forced token ``k``, the KL divergence
   ``KL(P_k || Q_k) = sum_v P_k(v) (log P_k(v) - log Q_k(v))`` between the unperturbed
   (``P``) and perturbed (``Q``) output distribution over the whole vocabulary, both from
   the teacher-forced decoder (nats).
4. **Accumulation.** Saliency of cell ``c`` for token ``k`` =
   ``sum_m score_mk (1 - mask_mc) / sum_m (1 - mask_mc)`` (0 for a cell never occluded).
5. **Normalisation** (per token, as the reference's evaluation applies it): z-score over
   the token's cells (sample standard deviation), then min-max to [0, 1] jointly with the
   decoder-side map. The published configuration does not occlude previous tokens
   (``decoder_occlusion.p = 0``), so that map is all 0 and the min-max runs over the
   spectrogram map and 0 (the same as the map's own min-max, since a z-score has mean 0).

Masks are drawn from one seeded ``torch.Generator`` on the CPU (the same masks on any
device and for any ``batch_size``), then applied in batches of ``batch_size`` spectrograms
per forward pass on the model's device (CUDA when present). Cost: ``n_masks + 1`` forward
passes per utterance, whatever the number of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from speechlens.saliency.pooling import pool_to_encoder_grid


@dataclass(frozen=True)
class SpesSettings:
    """SPES parameters (defaults live in the config schema, ``saliency.spes``).

    Attributes:
        n_masks: masks per utterance (the paper: 20000), split evenly over the levels.
        n_segments: SLIC segments per level for ``reference_frames`` valid frames.
        reference_frames: duration (10 ms frames) at which ``n_segments`` apply.
        threshold_frames: segments stop growing with duration beyond this many frames.
        p: probability that a segment is occluded.
        compactness, sigma: SLIC's parameters.
        batch_size: perturbed spectrograms per forward pass.
        seed: seed of the masks.
    """

    n_masks: int
    n_segments: tuple[int, ...]
    reference_frames: int
    threshold_frames: int | None
    p: float
    compactness: float
    sigma: float
    batch_size: int
    seed: int

    def __post_init__(self):
        if not self.n_segments or any(int(n) < 1 for n in self.n_segments):
            raise ValueError(f"n_segments must be positive integers, got {self.n_segments}")
        if self.n_masks < len(self.n_segments):
            raise ValueError(
                f"n_masks ({self.n_masks}) must be at least the number of levels "
                f"({len(self.n_segments)})"
            )
        if not 0 <= self.p < 1:
            raise ValueError(f"p must be in [0, 1), got {self.p}")
        if self.batch_size < 1 or self.reference_frames < 1:
            raise ValueError("batch_size and reference_frames must be >= 1")

    @classmethod
    def from_mapping(cls, s) -> SpesSettings:
        """From the ``saliency.spes`` config mapping."""
        threshold = s["threshold_frames"]
        return cls(
            n_masks=int(s["n_masks"]),
            n_segments=tuple(int(n) for n in s["n_segments"]),
            reference_frames=int(s["reference_frames"]),
            threshold_frames=None if threshold is None else int(threshold),
            p=float(s["p"]),
            compactness=float(s["compactness"]),
            sigma=float(s["sigma"]),
            batch_size=int(s["batch_size"]),
            seed=int(s["seed"]),
        )

    @property
    def masks_per_level(self) -> int:
        return self.n_masks // len(self.n_segments)


def segments_for_duration(n: int, n_frames: int, reference: int, threshold: int | None) -> int:
    """Segments asked of SLIC at one level: ``round(n * min(T, threshold) / reference)``, >= 1."""
    frames = n_frames if threshold is None else min(n_frames, threshold)
    return max(1, round(n * frames / reference))


def segment(spectrogram: np.ndarray, settings: SpesSettings) -> list[np.ndarray]:
    """SLIC segmentations of a ``(time, mel)`` spectrogram, one per level.

    Returns ``(time, mel)`` int64 label arrays, labels ``0 .. n - 1`` (contiguous).
    """
    from skimage.segmentation import slic

    x = np.asarray(spectrogram, dtype=np.float64)
    span = x.max() - x.min()
    normalised = (x - x.min()) / span if span > 0 else np.zeros_like(x)
    levels = []
    for n in settings.n_segments:
        k = segments_for_duration(
            n, x.shape[0], settings.reference_frames, settings.threshold_frames
        )
        labels = slic(
            normalised,
            n_segments=k,
            compactness=settings.compactness,
            sigma=settings.sigma,
            channel_axis=None,
            start_label=0,
        )
        _, contiguous = np.unique(labels, return_inverse=True)
        levels.append(contiguous.reshape(labels.shape).astype(np.int64))
    return levels


def draw_masks(levels: Sequence[np.ndarray], settings: SpesSettings) -> list[torch.Tensor]:
    """Per level, ``(masks_per_level, n_segments)`` bool: True where a segment is *kept*
    (probability ``1 - p``). One seeded generator, levels in order."""
    gen = torch.Generator().manual_seed(settings.seed)
    return [
        torch.rand((settings.masks_per_level, int(labels.max()) + 1), generator=gen) >= settings.p
        for labels in levels
    ]


def kl_scores(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """``KL(P || Q)`` per mask and token from log-probabilities over the vocabulary.

    ``clean`` ``(token, vocab)`` log P; ``perturbed`` ``(mask, token, vocab)`` log Q.
    Returns ``(mask, token)`` in nats (float64). Terms with ``P = 0`` count 0.
    """
    p = clean.double().exp()
    diff = clean.double()[None] - perturbed.double()
    return torch.where(p[None] > 0, p[None] * diff, 0.0).sum(-1)


@dataclass
class Accumulator:
    """Running ``sum_m score_mk (1 - mask_mc)`` and ``sum_m (1 - mask_mc)`` (float64).

    ``heat`` ``(token, cell)``, ``count`` ``(cell,)``; cells are the flattened ``(time, mel)``.
    """

    heat: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, n_tokens: int, n_cells: int, device=None) -> Accumulator:
        z = torch.zeros
        return cls(
            z(n_tokens, n_cells, dtype=torch.float64, device=device),
            z(n_cells, dtype=torch.float64, device=device),
        )

    def add(self, scores: torch.Tensor, kept: torch.Tensor) -> None:
        """``scores`` ``(mask, token)``; ``kept`` ``(mask, cell)`` bool (True = kept)."""
        occluded = (~kept).double()
        self.heat += scores.double().T @ occluded
        self.count += occluded.sum(0)

    def saliency(self) -> torch.Tensor:
        """``(token, cell)``: heat / count, 0 where a cell was never occluded."""
        return torch.where(self.count > 0, self.heat / self.count.clamp(min=1), 0.0)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per token (first axis): z-score over the remaining axes (sample sd), then min-max to
    [0, 1] jointly with an all-zero decoder-side map (module docstring, step 5). A constant
    map gives 0."""
    flat = maps.double().reshape(maps.shape[0], -1)
    n = flat.shape[1]
    mean = flat.mean(1, keepdim=True)
    sd = flat.std(1, keepdim=True, correction=1) if n > 1 else torch.zeros_like(mean)
    z = (flat - mean) / sd
    z = torch.where(torch.isfinite(z), z, 0.0)
    low = z.min(1, keepdim=True).values.clamp(max=0.0)
    high = z.max(1, keepdim=True).values.clamp(min=0.0)
    span = high - low
    out = torch.where(span > 0, (z - low) / torch.where(span > 0, span, 1.0), 0.0)
    return out.reshape(maps.shape)


@dataclass
class SpesResult:
    """SPES of one utterance with ``K`` forced tokens.

    Attributes:
        saliency: ``(token, frame)`` the normalised map summed over mel bins and pooled to the
            encoder grid (:func:`~speechlens.saliency.pooling.pool_to_encoder_grid`); 0 past
            the valid frames.
        cell_map: ``(token, mel, mel_frame)`` the normalised map of the valid frames ([0, 1]).
        raw_map: ``(token, mel, mel_frame)`` before normalisation (mean KL in nats).
        segments: SLIC segments obtained per level.
        passes: forward passes run (``n_masks`` actually used + 1).
        snapshots: budget -> ``(raw_map, cell_map, saliency)`` after that many masks.
    """

    saliency: np.ndarray
    cell_map: np.ndarray = field(repr=False)
    raw_map: np.ndarray = field(repr=False)
    segments: tuple[int, ...] = ()
    passes: int = 0
    snapshots: dict = field(default_factory=dict, repr=False)


def spes_saliency(
    model,
    mel: torch.Tensor,
    input_ids: np.ndarray,
    positions: np.ndarray,
    targets: np.ndarray,
    n_mel: int,
    settings: SpesSettings,
    snapshots: Sequence[int] = (),
) -> SpesResult:
    """SPES maps of every forced token (module docstring).

    ``model`` has ``encode(mel) -> states`` and ``log_distribution(states, input_ids,
    positions) -> (batch, token, vocab)`` log-probabilities (as
    :class:`~speechlens.saliency.whisper.WhisperForSaliency`); ``mel`` ``(1, mel, frames)``;
    ``n_mel`` valid mel frames; ``targets`` only fix the number of tokens (KL compares whole
    distributions). ``snapshots``: budgets (masks in all) at which the maps so far are also
    kept (``SpesResult.snapshots``; for the stability benchmark): the levels' masks are
    processed one batch of each level in turn, so the first ``b`` masks hold ``b / levels``
    of each level (a snapshot is taken after the first round reaching it).
    """
    k_tokens = len(targets)
    n_bins, n_total = mel.shape[1], mel.shape[2]
    n_mel = int(min(n_mel, n_total))
    valid = mel[0, :, :n_mel]  # (mel, time)
    levels = segment(valid.T.detach().cpu().numpy(), settings)
    draws = draw_masks(levels, settings)
    device = mel.device
    acc = Accumulator.zeros(k_tokens, n_mel * n_bins, device=device)
    labels_of = [torch.as_tensor(lab.reshape(-1), device=device) for lab in levels]
    wanted = {int(b): max(1, int(b) // len(levels)) for b in snapshots}  # budget -> per level
    taken = {}
    with torch.no_grad():
        clean = model.log_distribution(model.encode(mel), input_ids, positions)[0]
        # one batch of each level in turn: after each round every level has used as many masks
        for start in range(0, settings.masks_per_level, settings.batch_size):
            for flat_labels, keep in zip(labels_of, draws, strict=True):
                chunk = keep[start : start + settings.batch_size].to(device)
                kept = chunk[:, flat_labels]  # (b, time*mel) in (time, mel) order
                cell_mask = kept.reshape(len(chunk), n_mel, n_bins).transpose(1, 2)
                x = mel.expand(len(chunk), -1, -1).clone()
                x[:, :, :n_mel] = valid[None] * cell_mask.to(mel.dtype)
                logq = model.log_distribution(model.encode(x), input_ids, positions)
                acc.add(kl_scores(clean, logq), kept)
            done = min(start + settings.batch_size, settings.masks_per_level)
            for budget, per_level in wanted.items():
                if budget not in taken and done >= per_level:
                    taken[budget] = _maps(acc, k_tokens, n_mel, n_bins, n_total)
    raw, cell_map, pooled = _maps(acc, k_tokens, n_mel, n_bins, n_total)
    return SpesResult(
        saliency=pooled,
        cell_map=cell_map,
        raw_map=raw,
        segments=tuple(int(lab.max()) + 1 for lab in levels),
        passes=settings.masks_per_level * len(levels) + 1,
        snapshots=taken,
    )


def _maps(acc: Accumulator, k_tokens: int, n_mel: int, n_bins: int, n_total: int):
    """(raw, normalised, pooled) maps of the masks accumulated so far (numpy float32)."""
    raw = acc.saliency().reshape(k_tokens, n_mel, n_bins).transpose(1, 2)  # (token, mel, time)
    cell_map = normalise(raw)
    per_frame = torch.zeros(k_tokens, n_total, dtype=torch.float64)
    per_frame[:, :n_mel] = cell_map.sum(1).cpu()
    return (
        raw.float().cpu().numpy(),
        cell_map.float().cpu().numpy(),
        pool_to_encoder_grid(per_frame.numpy()),
    )
