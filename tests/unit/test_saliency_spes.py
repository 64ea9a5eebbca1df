"""SPES (speechlens.saliency.spes): a toy with a known relevance map, the KL scorer, the
accumulation against a naive loop over masks, the per-token normalisation, segment counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from speechlens.saliency import spes
from speechlens.saliency.correlate import pearson_r
from speechlens.saliency.pooling import pool_to_encoder_grid
from speechlens.schema import defaults

N_BINS, N_MEL, VOCAB = 80, 100, 8
BLOCKS = [
    (slice(20, 50), slice(10, 30)),
    (slice(5, 25), slice(40, 56)),
    (slice(40, 70), slice(70, 90)),
]
DISTRACTOR = (slice(10, 60), slice(60, 66))  # loud, but no token depends on it


class RelevanceToy:
    """A decoder whose token ``k`` logit of its target rises with ``<R_k, x>``.

    ``R_k`` is the indicator of block ``k`` of :data:`BLOCKS` (mel bins x mel frames): the
    only cells that change token ``k``'s output distribution. ``encode`` is the identity.
    """

    def __init__(self, gain=0.02, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.base = torch.randn(len(BLOCKS), VOCAB, generator=g, dtype=torch.float64)
        self.relevance = torch.zeros(len(BLOCKS), N_BINS, N_MEL, dtype=torch.float64)
        for k, (bins, frames) in enumerate(BLOCKS):
            self.relevance[k, bins, frames] = 1.0
        self.gain = gain

    def encode(self, mel):
        return mel.double()

    def log_distribution(self, states, input_ids, positions):
        drive = torch.einsum("kft,bft->bk", self.relevance, states[:, :, :N_MEL])
        logits = self.base[None].repeat(states.shape[0], 1, 1)
        logits[:, torch.arange(len(BLOCKS)), torch.arange(len(BLOCKS))] += self.gain * drive
        return torch.log_softmax(logits, -1)


def toy_spectrogram(seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = 0.1 + 0.02 * rng.standard_normal((N_BINS, N_MEL))
    for bins, frames in [*BLOCKS, DISTRACTOR]:
        x[bins, frames] = 1.0 + 0.05 * rng.standard_normal(x[bins, frames].shape)
    return torch.from_numpy(x)[None]  # (1, mel, frames)


def settings(**over) -> spes.SpesSettings:
    return replace(spes.SpesSettings.from_mapping(defaults("saliency.spes")), **over)


ARGS = (np.zeros(3, dtype=np.int64), np.arange(3), np.arange(3))  # ids, positions, targets


def test_toy_with_a_known_relevance_map_is_recovered_at_the_default_budget():
    model, mel = RelevanceToy(), toy_spectrogram()
    res = spes.spes_saliency(model, mel, *ARGS, N_MEL, settings())
    assert res.passes == settings().masks_per_level * 3 + 1
    truth_frames = pool_to_encoder_grid(model.relevance.sum(1).numpy())
    r_frames = pearson_r(res.saliency[:, :50], truth_frames)
    assert np.all(r_frames >= 0.9), r_frames
    r_cells = pearson_r(res.cell_map.reshape(3, -1), model.relevance.reshape(3, -1).numpy())
    assert np.all(r_cells >= 0.6), r_cells
    # the loud distractor is not salient: energy alone does not make a cell relevant
    bins, frames = DISTRACTOR
    for k, (b, f) in enumerate(BLOCKS):
        assert res.cell_map[k, b, f].mean() > 2 * res.cell_map[k, bins, frames].mean()


def test_kl_scorer_equals_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    clean = torch.log_softmax(torch.randn(4, 50, generator=g, dtype=torch.float64), -1)
    perturbed = torch.log_softmax(torch.randn(6, 4, 50, generator=g, dtype=torch.float64), -1)
    got = spes.kl_scores(clean, perturbed)
    expected = [
        [entropy(clean[k].exp().numpy(), perturbed[m, k].exp().numpy()) for k in range(4)]
        for m in range(6)
    ]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    assert torch.all(spes.kl_scores(clean, clean[None]).abs() < 1e-12)


def test_accumulation_equals_a_naive_loop_over_masks():
    model, mel = RelevanceToy(gain=0.05), toy_spectrogram(1)
    s = settings(n_masks=12, batch_size=5, n_segments=(20, 40, 80))
    res = spes.spes_saliency(model, mel, *ARGS, N_MEL, s)
    levels = spes.segment(mel[0].T.numpy(), s)
    draws = spes.draw_masks(levels, s)
    clean = model.log_distribution(mel.double(), *ARGS[:2])[0]
    heat = np.zeros((3, N_BINS, N_MEL))
    count = np.zeros((N_BINS, N_MEL))
    for labels, keep in zip(levels, draws, strict=True):
        for m in range(keep.shape[0]):
            kept = np.zeros((N_MEL, N_BINS))
            for t in range(N_MEL):
                for f in range(N_BINS):
                    kept[t, f] = float(keep[m, labels[t, f]])
            x = mel.clone()
            x[0] = x[0] * torch.from_numpy(kept.T)
            q = model.log_distribution(x, *ARGS[:2])[0]
            for k in range(3):
                p = clean[k].exp()
                score = float((p * (clean[k] - q[k])).sum())
                heat[k] += score * (1.0 - kept.T)
            count += 1.0 - kept.T
    expected = np.where(count > 0, heat / np.maximum(count, 1), 0.0)
    np.testing.assert_allclose(res.raw_map, expected, rtol=1e-5, atol=1e-12)
    assert count.min() > 0  # every cell occluded at least once with 12 masks here
    # the same masks, whatever the batch size
    again = spes.spes_saliency(model, mel, *ARGS, N_MEL, replace(s, batch_size=12))
    np.testing.assert_allclose(again.raw_map, res.raw_map, rtol=1e-6)
    other = spes.spes_saliency(model, mel, *ARGS, N_MEL, replace(s, seed=1))
    assert not np.allclose(other.raw_map, res.raw_map)
    # snapshots: the maps after the first masks of every level; the full budget is the result
    snap = spes.spes_saliency(model, mel, *ARGS, N_MEL, replace(s, batch_size=2), snapshots=[6, 12])
    np.testing.assert_allclose(snap.snapshots[12][0], res.raw_map, rtol=1e-6)
    assert not np.allclose(snap.snapshots[6][0], res.raw_map)


def test_masks_keep_each_segment_with_probability_one_minus_p():
    labels = [np.arange(4000).reshape(40, 100)]
    keep = spes.draw_masks(labels, settings(n_masks=3, n_segments=(1,), p=0.5))[0]
    assert keep.shape == (3, 4000) and abs(keep.float().mean().item() - 0.5) < 0.02
    keep = spes.draw_masks(labels, settings(n_masks=3, n_segments=(1,), p=0.2))[0]
    assert abs(keep.float().mean().item() - 0.8) < 0.02


def test_normalisation_is_z_score_then_min_max_per_token():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    out = spes.normalise(maps)
    for k in range(3):
        z = (maps[k] - maps[k].mean()) / maps[k].std()  # sample sd, as the reference
        expected = (z - z.min()) / (z.max() - z.min())
        torch.testing.assert_close(out[k], expected)
    # per token: scaling one token's map does not change it; a constant map gives 0
    scaled = maps.clone()
    scaled[1] = 7 * scaled[1] + 3
    torch.testing.assert_close(spes.normalise(scaled), out)
    assert torch.all(spes.normalise(torch.full((1, 3, 3), 2.0)) == 0)


@pytest.mark.parametrize(
    ("frames", "expected"), [(500, 2000), (250, 1000), (100, 400), (750, 3000), (3000, 3000)]
)
def test_segments_scale_with_duration_up_to_the_threshold(frames, expected):
    assert spes.segments_for_duration(2000, frames, 500, 750) == expected
    assert spes.segments_for_duration(2000, 3000, 500, None) == 12000
    assert spes.segments_for_duration(2000, 1, 500, 750) == 4


def test_segmentation_follows_the_spectrogram():
    mel = toy_spectrogram()[0].T.numpy()  # (time, mel)
    level = spes.segment(mel, settings(n_segments=(500,)))[0]
    assert level.shape == mel.shape and level.min() == 0
    assert len(np.unique(level)) == level.max() + 1  # contiguous labels
    bins, frames = BLOCKS[0]
    inside = set(np.unique(level[frames, bins]))
    outside = set(np.unique(level[:5, :5]))
    assert not inside & outside  # no segment straddles the block and the background corner


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="n_masks"):
        settings(n_masks=2)
    with pytest.raises(ValueError, match="p must be"):
        settings(p=1.0)
