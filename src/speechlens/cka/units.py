"""CKA analysis units: which frames of each store make one sample, and with what weights.

A CKA matrix compares representations of the *same samples*. The samples ("units") are

- ``frame`` (within one model): single frames of the store;
- ``time`` (across models): the frames of the model with the coarser frame rate. Each frame
  ``i`` of a store stands for the span ``[t_i - P/2, t_i + P/2)`` of one frame period ``P``
  around its centre ``t_i`` (``time_s``); a coarse frame is paired with the average of the
  finer model's frames weighted by how long each overlaps its span. Weights are continuous
  in the times, so no frame is in or out because of a floating-point tie (overlaps below
  :data:`MIN_OVERLAP` of a fine frame are dropped), every interior coarse frame gets the
  same pattern of weights, and the pooled centre lies on the coarse frame's centre when the
  grids are aligned (a 10 ms grid on a 20 ms one: weights 1/4, 1/2, 1/4);
- ``segment``: the segments of one tier (e.g. ``phone``) of the corpus' ``segments.tsv``;
  each model contributes the mean of its frames whose centre lies in ``[start_s, end_s)``.

A unit pools, in each store, frames with weights that sum to 1 (:class:`Pooling`, a sparse
``(unit, frame)`` matrix in CSR form; global frame indices). Units without frames in either
store are dropped; then at most ``max_frames`` units are drawn with a seeded RNG, uniformly
across all utterances (:func:`sample_units`: adjacent frames are near-duplicates, so a sample
spread over the corpus is worth more than a contiguous block).

Reduced stores (:mod:`speechlens.reduce`): a store keeping every k-th frame has the period
``k P`` (:func:`frame_hop`); a ``segment:<tier>`` store is read as frames
(:func:`speechlens.store.unit_view`: each stored segment one "frame" at its midpoint), so
segment alignment on the store's own tier pairs each stored segment (the mean of the
model's frames centred inside it) with the same segment of the other store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from speechlens import store

MIN_OVERLAP = 1e-6
"""Overlaps shorter than this fraction of a fine frame's period count as none."""


class CkaError(ValueError):
    """The stores or options cannot be compared (different utterances, bad option, ...)."""


@dataclass(frozen=True)
class Pooling:
    """Unit ``u`` pools frames ``index[ptr[u]:ptr[u+1]]`` of a store with ``weight[...]``
    (summing to 1). ``ptr`` int64 ``(n + 1,)``; ``index`` int64 and ``weight`` float64
    ``(nnz,)``."""

    ptr: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def counts(self) -> np.ndarray:
        """Frames pooled by each unit, ``(n,)``."""
        return np.diff(self.ptr)

    @classmethod
    def ranges(cls, start: np.ndarray, stop: np.ndarray) -> Pooling:
        """Equal weights over frames ``[start[u], stop[u])`` (ranges must be non-empty)."""
        counts = np.asarray(stop, np.int64) - np.asarray(start, np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        index = np.repeat(np.asarray(start, np.int64) - ptr[:-1], counts) + np.arange(ptr[-1])
        return cls(ptr, index, np.repeat(1.0 / np.maximum(counts, 1), counts))

    def take(self, units: np.ndarray) -> Pooling:
        """The units at ``units`` (in that order)."""
        units = np.asarray(units, np.int64)
        counts = self.counts[units]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        pick = np.repeat(self.ptr[units] - ptr[:-1], counts) + np.arange(ptr[-1])
        return Pooling(ptr, self.index[pick], self.weight[pick])

    @staticmethod
    def concat(parts: list[Pooling]) -> Pooling:
        """The units of ``parts`` one after the other."""
        if not parts:
            return Pooling(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0))
        counts = np.concatenate([p.counts for p in parts])
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Pooling(
            ptr,
            np.concatenate([p.index for p in parts]).astype(np.int64),
            np.concatenate([p.weight for p in parts]).astype(np.float64),
        )


@dataclass(frozen=True)
class Units:
    """Analysis units: unit ``k`` pools ``a`` (store A) and ``b`` (store B)."""

    a: Pooling
    b: Pooling

    def __len__(self) -> int:
        return len(self.a)

    def take(self, index: np.ndarray) -> Units:
        """The units at ``index`` (in that order)."""
        return Units(self.a.take(index), self.b.take(index))

    def keep_nonempty(self) -> Units:
        """The units with frames in both stores."""
        return self.take(np.flatnonzero((self.a.counts > 0) & (self.b.counts > 0)))


def frame_units(frames: np.ndarray) -> Units:
    """Single frames ``frames`` (global indices) as units of one store with itself."""
    single = Pooling.ranges(frames, np.asarray(frames) + 1)
    return Units(single, single)


def match_utterances(ds_a: xr.Dataset, ds_b: xr.Dataset) -> np.ndarray:
    """Row in store B of each utterance of store A, shape (n_utterances,); both must hold the
    same utterance ids (in any order), else :class:`CkaError` names the difference."""
    ids_a = [str(u) for u in ds_a["utterance_id"].values]
    ids_b = [str(u) for u in ds_b["utterance_id"].values]
    if ids_a == ids_b:
        return np.arange(len(ids_a))
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b or len(ids_a) != len(ids_b):
        raise CkaError(
            f"the stores hold different utterances: {len(only_a)} only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}), "
            f"{len(ids_a)} vs {len(ids_b)} rows; extract both models from the same corpus"
        )
    row = {u: i for i, u in enumerate(ids_b)}
    return np.array([row[u] for u in ids_a], dtype=np.int64)


def frame_hop(ds: xr.Dataset) -> float:
    """Seconds between the store's frame centres: ``k / frame_rate_hz`` from the attrs for a
    store keeping every k-th frame (``frame_stride`` of its reduction, 1 for a full store),
    else the median spacing of ``time_s`` within the first utterance that has two frames."""
    rate = ds.attrs.get("frame_rate_hz")
    if rate:
        return float(store.reduction(ds)["frame_stride"]) / float(rate)
    starts, counts = ds["frame_start"].values, ds["frame_count"].values
    for start, count in zip(starts, counts, strict=True):
        if count >= 2:
            return float(np.median(np.diff(ds["time_s"].values[start : start + count])))
    raise CkaError(
        "cannot tell the frame rate: no frame_rate_hz attr and no utterance with 2 frames"
    )


def _utterance_frames(ds: xr.Dataset):
    """Per-utterance (frame_start, time_s slice) of a store, in store order."""
    times = ds["time_s"].values
    for start, count in zip(ds["frame_start"].values, ds["frame_count"].values, strict=True):
        yield int(start), times[start : start + count]


def overlap_pooling(
    coarse: np.ndarray, hop_coarse: float, fine: np.ndarray, hop_fine: float, offset: int = 0
) -> Pooling:
    """For each coarse frame (centres ``coarse``, s), the fine frames (sorted centres
    ``fine``) overlapping its span, weighted by overlap length (normalised to sum 1);
    indices ``offset + i``. Coarse frames without overlap get no frames."""
    c_lo, c_hi = coarse - hop_coarse / 2, coarse + hop_coarse / 2
    f_lo, f_hi = fine - hop_fine / 2, fine + hop_fine / 2
    tol = MIN_OVERLAP * hop_fine
    first = np.searchsorted(f_hi, c_lo + tol, side="right")  # first fine frame ending inside
    last = np.searchsorted(f_lo, c_hi - tol, side="left")  # fine frames starting before end
    counts = np.maximum(last - first, 0)
    unit = np.repeat(np.arange(len(coarse)), counts)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    frame = np.repeat(first - ptr[:-1], counts) + np.arange(ptr[-1])
    overlap = np.minimum(f_hi[frame], c_hi[unit]) - np.maximum(f_lo[frame], c_lo[unit])
    keep = overlap > tol
    unit, frame, overlap = unit[keep], frame[keep], overlap[keep]
    counts = np.bincount(unit, minlength=len(coarse))
    total = np.bincount(unit, weights=overlap, minlength=len(coarse))
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Pooling(ptr, offset + frame.astype(np.int64), overlap / total[unit])


def time_units(ds_a: xr.Dataset, ds_b: xr.Dataset) -> Units:
    """Units on the coarser store's frames (A's on a tie); the finer store's frames are pooled
    by overlap into each coarse frame's span (see the module docstring). Utterances are paired
    by id."""
    rows_b = match_utterances(ds_a, ds_b)
    hop_a, hop_b = frame_hop(ds_a), frame_hop(ds_b)
    frames_a, frames_b = list(_utterance_frames(ds_a)), list(_utterance_frames(ds_b))
    parts_a, parts_b = [], []
    for row_a, row_b in enumerate(rows_b):
        (off_a, t_a), (off_b, t_b) = frames_a[row_a], frames_b[row_b]
        if hop_b > hop_a:  # B is coarser: its frames are the units
            coarse = off_b + np.arange(len(t_b))
            parts_b.append(Pooling.ranges(coarse, coarse + 1))
            parts_a.append(overlap_pooling(t_b, hop_b, t_a, hop_a, off_a))
        else:
            coarse = off_a + np.arange(len(t_a))
            parts_a.append(Pooling.ranges(coarse, coarse + 1))
            parts_b.append(overlap_pooling(t_a, hop_a, t_b, hop_b, off_b))
    return Units(Pooling.concat(parts_a), Pooling.concat(parts_b)).keep_nonempty()


def segment_units(ds_a: xr.Dataset, ds_b: xr.Dataset, segments: pd.DataFrame, tier: str) -> Units:
    """One unit per segment of ``tier`` (columns utterance_id, tier, start_s, end_s): the frames
    of each store whose centre lies in ``[start_s, end_s)``, equally weighted. Utterances are
    paired by id."""
    rows_b = match_utterances(ds_a, ds_b)
    table = segments[segments["tier"] == tier]
    if table.empty:
        raise CkaError(
            f"align 'segment': no segments of tier {tier!r} (config key cka.tier); "
            f"the corpus has tiers {sorted(set(segments['tier']))}"
        )
    by_utt = {u: g.sort_values("start_s") for u, g in table.groupby("utterance_id", sort=False)}
    frames_a, frames_b = list(_utterance_frames(ds_a)), list(_utterance_frames(ds_b))
    parts_a, parts_b = [], []
    for row_a, uid in enumerate(ds_a["utterance_id"].values):
        seg = by_utt.get(str(uid))
        if seg is None:
            continue
        edges = (seg["start_s"].to_numpy(float), seg["end_s"].to_numpy(float))
        (off_a, t_a), (off_b, t_b) = frames_a[row_a], frames_b[rows_b[row_a]]
        lo_a, hi_a = (np.searchsorted(t_a, e, "left") for e in edges)
        lo_b, hi_b = (np.searchsorted(t_b, e, "left") for e in edges)
        ok = (hi_a > lo_a) & (hi_b > lo_b)
        parts_a.append(Pooling.ranges(off_a + lo_a[ok], off_a + hi_a[ok]))
        parts_b.append(Pooling.ranges(off_b + lo_b[ok], off_b + hi_b[ok]))
    return Units(Pooling.concat(parts_a), Pooling.concat(parts_b))


def sample_units(n_units: int, max_frames: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_frames`` of ``n_units`` units, drawn uniformly without
    replacement with ``numpy.random.default_rng(seed)`` (all units when None or enough)."""
    if max_frames is None or max_frames >= n_units:
        return np.arange(n_units)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_units, size=int(max_frames), replace=False))
