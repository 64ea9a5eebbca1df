"""Segments -> labels on a model's frame grid, and per-class caps.

Frame labels follow the **frame-centre rule**: a frame whose centre time ``t`` (the store's
``time_s``) satisfies ``start_s <= t < end_s`` for a segment of the tier gets that segment's
label. Frames whose centre lies in no segment (past the last segment's end, in a gap of a
tier that does not tile, or in an utterance the tier does not cover) get no label.

Policies applied on top:

- ``boundary_ms``: drop frames whose centre is closer than ``boundary_ms`` to a boundary
  between two adjacent segments (the utterance start and end are not boundaries); 0 keeps all.
- ``silence``: ``keep`` the silence label (``sil``) as a class, or ``drop`` its frames.

Caps (:func:`cap_units`) are drawn per class from a seeded, model-independent order of the
corpus' *segments* (or utterances), one frame per segment per round: the frame nearest the
segment centre first. When the cap is at most the number of segments of a class, every model
of a corpus probes the same segments (those that hold a frame centre on its grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from speechlens.corpora.contract import SILENCE

SILENCE_POLICIES = ("keep", "drop")
_TOL = 1e-6  # seconds: adjacent segments share an edge up to the TSV's 6 decimals


def tier_segments(segments: pd.DataFrame, tier: str) -> pd.DataFrame:
    """One tier's segments sorted by (utterance_id, start_s), with a fresh 0..n-1 index.

    Adds ``start_boundary`` / ``end_boundary`` (bool): whether the edge is shared with the
    previous / next segment of the same utterance (a boundary between two labels).
    """
    seg = segments[segments["tier"] == tier]
    seg = seg.sort_values(["utterance_id", "start_s"], kind="stable").reset_index(drop=True)
    seg = seg.astype({"start_s": float, "end_s": float, "label": str})
    by_utt = seg.groupby("utterance_id", sort=False)
    prev_end = by_utt["end_s"].shift()
    next_start = by_utt["start_s"].shift(-1)
    seg["start_boundary"] = (seg["start_s"] - prev_end).abs().le(_TOL)
    seg["end_boundary"] = (next_start - seg["end_s"]).abs().le(_TOL)
    return seg


def assign_segments(
    utterance_ids: Sequence[str], times_s: np.ndarray, segments: pd.DataFrame
) -> np.ndarray:
    """Row of ``segments`` holding each frame centre, or -1 (frame-centre rule).

    ``utterance_ids`` (n,) and ``times_s`` (n,) describe the frames (centre, s from the
    utterance start); ``segments`` is one tier with columns ``utterance_id, start_s, end_s``
    and a 0..m-1 index (see :func:`tier_segments`). Returns int64 (n,).
    """
    frames = pd.DataFrame(
        {
            "utterance_id": np.asarray(utterance_ids, dtype=object),
            "t": np.asarray(times_s, np.float64),
            "frame": np.arange(len(times_s)),
        }
    )
    right = pd.DataFrame(
        {
            "utterance_id": segments["utterance_id"].to_numpy(dtype=object),
            "start_s": segments["start_s"].to_numpy(np.float64),
            "end_s": segments["end_s"].to_numpy(np.float64),
            "segment": np.arange(len(segments)),
        }
    ).sort_values("start_s", kind="stable")
    merged = pd.merge_asof(
        frames.sort_values("t", kind="stable"),
        right,
        left_on="t",
        right_on="start_s",
        by="utterance_id",
        direction="backward",
        allow_exact_matches=True,
    ).sort_values("frame")
    inside = merged["t"].to_numpy() < merged["end_s"].to_numpy()  # NaN (no segment) -> False
    seg = merged["segment"].to_numpy()
    return np.where(inside, np.nan_to_num(seg, nan=-1), -1).astype(np.int64)


def frame_table(
    utterance_ids: Sequence[str],
    times_s: np.ndarray,
    segments: pd.DataFrame,
    *,
    boundary_ms: float = 0.0,
    silence: str = "keep",
) -> pd.DataFrame:
    """The labelled frames of a store after the boundary and silence policies.

    Inputs as in :func:`assign_segments` (``segments`` from :func:`tier_segments`). Returns a
    DataFrame with one row per kept frame: ``frame`` (int, index into the inputs),
    ``segment`` (int, row of ``segments``), ``label`` (str) and ``centre_distance_s``
    (|t - segment midpoint|, s), sorted by ``frame``.
    """
    if silence not in SILENCE_POLICIES:
        raise ValueError(f"silence policy {silence!r}: use one of {SILENCE_POLICIES}")
    times_s = np.asarray(times_s, np.float64)
    seg_of = assign_segments(utterance_ids, times_s, segments)
    keep = seg_of >= 0
    frame = np.flatnonzero(keep)
    s = seg_of[keep]
    t = times_s[keep]
    start = segments["start_s"].to_numpy()[s]
    end = segments["end_s"].to_numpy()[s]
    label = segments["label"].to_numpy(dtype=object)[s]
    ok = np.ones(len(frame), dtype=bool)
    if boundary_ms > 0:
        gap = boundary_ms / 1000.0
        ok &= ~(segments["start_boundary"].to_numpy()[s] & (t - start < gap))
        ok &= ~(segments["end_boundary"].to_numpy()[s] & (end - t < gap))
    if silence == "drop":
        ok &= label != SILENCE
    return pd.DataFrame(
        {
            "frame": frame[ok],
            "segment": s[ok],
            "label": label[ok].astype(str),
            "centre_distance_s": np.abs(t - (start + end) / 2)[ok],
        }
    )


def unit_order(n_units: int, seed: int) -> np.ndarray:
    """A seeded rank (0..n-1) for each of ``n_units`` sampling units (segments, utterances).

    Depends only on ``n_units`` and ``seed``, so every model of a corpus ranks its segments
    (rows of :func:`tier_segments`) or utterances the same way.
    """
    rank = np.empty(n_units, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n_units)] = np.arange(n_units)
    return rank


def cap_units(table: pd.DataFrame, cap: int | None, seed: int, n_units: int) -> pd.DataFrame:
    """At most ``cap`` rows per ``label``, drawn round-robin over sampling units.

    ``table`` has columns ``label``, ``segment`` (the unit: a segment or utterance row, int)
    and optionally ``centre_distance_s``. Units are visited in the order of
    :func:`unit_order` (``n_units``: all units of the corpus, ``seed``); round ``r`` takes
    the ``r``-th frame of every unit of the class (nearest the unit centre first), so a
    class with at least ``cap`` units gets one frame from each of its first ``cap`` units.
    ``cap=None`` keeps everything. Returns the kept rows in their original order.
    """
    if cap is None or table.empty:
        return table
    rank = unit_order(n_units, seed)
    order = table.assign(
        _unit_rank=rank[table["segment"].to_numpy()],
        _dist=table.get("centre_distance_s", 0.0),
        _pos=np.arange(len(table)),
    ).sort_values(["segment", "_dist", "_pos"], kind="stable")
    order["_round"] = order.groupby("segment", sort=False).cumcount()
    order = order.sort_values(["label", "_round", "_unit_rank"], kind="stable")
    kept = order.groupby("label", sort=False).head(cap)
    return table.loc[kept.sort_values("_pos").index]
