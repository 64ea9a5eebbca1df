"""Reduced feature stores: a subset of layers, a frame stride, or segment / utterance pooling.

A layer-wise study writes ``layers x frames x features`` values per model (about 1 MB per
audio-second for a base model in float16). The ``features`` settings (per model under
``models.<name>.features``) choose a smaller store:

- ``layers``: the model layers kept (numbers on the full layer axis; the store's ``layer``
  coordinate keeps these numbers);
- ``pool``:

  - ``frame``: every frame (the full store; with ``frame_stride: k`` every k-th frame of each
    utterance, frames ``0, k, 2k, ...``);
  - ``segment:<tier>``: one vector per segment of that tier of the corpus' ``segments.tsv``,
    the mean of the frames whose centres fall inside it (the frame-centre rule of
    :mod:`speechlens.labels`: ``start_s <= t < end_s``). Segments that hold no frame centre
    (shorter than the model's hop) have no mean and are left out; their number is recorded
    in the store's attrs. Store dims ``layer, segment, feature``;
  - ``utterance``: only ``pooled(layer, utterance, feature)``, the mean of all frames.

Means are taken in float32 from the model's float32 outputs, before the cast to the store
dtype. ``pooled`` is always the mean over *all* frames of the utterance (not the strided
ones). The store's attrs hold :meth:`Reduction.attrs` under ``reduction``.

Consumers ask :func:`speechlens.store.mode` which kind of store they hold. The start-up check
:func:`check_task` says whether a probing task can run on a model's store.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from speechlens import labels, schema

MODES = ("frame", "segment", "utterance")


class ReductionError(ValueError):
    """A reduction setting is invalid or does not fit the corpus, model or task."""


@dataclass(frozen=True)
class Reduction:
    """How a store is reduced (see the module docstring). Build it with :meth:`from_settings`.

    ``layers``: kept model layers (None: all); ``mode``: ``frame``, ``segment`` or
    ``utterance``; ``tier``: the pooled tier (segment mode); ``frame_stride``: k >= 1.
    """

    layers: tuple[int, ...] | None
    mode: str
    tier: str | None
    frame_stride: int

    @classmethod
    def from_settings(cls, settings: Mapping | None, where: str = "features") -> Reduction:
        """Parse the ``layers``, ``pool`` and ``frame_stride`` keys of ``features`` settings
        (missing keys take the schema's defaults); errors name ``where`` (the config key)."""
        merged = schema.merge(dict(settings or {}), "features")
        pool = str(merged["pool"])
        mode, _, tier = pool.partition(":")
        if mode not in MODES or (mode == "segment") != bool(tier):
            raise ReductionError(
                f"{where}.pool {pool!r}: use frame, utterance or segment:<tier> "
                "(e.g. segment:phone)"
            )
        stride = merged["frame_stride"]
        if not isinstance(stride, int | np.integer) or isinstance(stride, bool) or stride < 1:
            raise ReductionError(f"{where}.frame_stride {stride!r}: use an integer >= 1")
        if stride > 1 and mode != "frame":
            raise ReductionError(
                f"{where}.frame_stride {stride} applies to pool frame only (pool is {pool!r})"
            )
        layers = merged["layers"]
        if layers is not None:
            bad = [v for v in layers if not isinstance(v, int | np.integer) or v < 0]
            if not layers or bad or len(set(layers)) != len(layers):
                raise ReductionError(
                    f"{where}.layers {layers!r}: use distinct layer numbers >= 0, or null (all)"
                )
            layers = tuple(sorted(int(v) for v in layers))
        return cls(layers, mode, tier or None, int(stride))

    @property
    def pool(self) -> str:
        """The ``pool`` setting: ``frame``, ``utterance`` or ``segment:<tier>``."""
        return f"segment:{self.tier}" if self.mode == "segment" else self.mode

    @property
    def is_full(self) -> bool:
        """Whether nothing is reduced (every layer, every frame)."""
        return self.layers is None and self.mode == "frame" and self.frame_stride == 1

    def layer_index(self, num_layers: int, where: str = "features") -> np.ndarray:
        """The kept layers as indices into a model's ``num_layers`` layers (int64, sorted)."""
        if self.layers is None:
            return np.arange(num_layers, dtype=np.int64)
        over = [v for v in self.layers if v >= num_layers]
        if over:
            raise ReductionError(
                f"{where}.layers {list(self.layers)}: the model has layers 0..{num_layers - 1} "
                f"only (not {over})"
            )
        return np.asarray(self.layers, dtype=np.int64)

    def attrs(self) -> dict:
        """What a store records under ``attrs["reduction"]`` (JSON)."""
        return {
            "layers": None if self.layers is None else list(self.layers),
            "pool": self.pool,
            "mode": self.mode,
            "tier": self.tier,
            "frame_stride": self.frame_stride,
            "pooled": "mean of all frames of the utterance, float32 before the cast",
            "segment_mean": "mean of the frames whose centre t satisfies start_s <= t < end_s"
            if self.mode == "segment"
            else None,
        }


@dataclass
class Layout:
    """Where each utterance's reduced units go, planned before any extraction.

    ``unit_counts[i]``: units (frames or segments) stored for utterance ``i`` (0 in utterance
    mode); ``unit_times[i]``: their centre times (s); ``segments``: the stored segments in
    store order (columns ``utterance_index, tier, label, start_s, end_s, n_frames``; segment
    mode only); ``dropped_segments``: segments of the tier that hold no frame centre.
    """

    reduction: Reduction
    unit_counts: list[int]
    unit_times: list[np.ndarray]
    segments: pd.DataFrame | None = None
    dropped_segments: int = 0
    _pool: list[np.ndarray] | None = None  # segment mode: per utterance, frame -> local segment

    def reduce(self, row: int, hidden: np.ndarray) -> np.ndarray | None:
        """The stored units of utterance ``row`` from its float32 (layer, frame, feature) hidden
        states: (layer, unit_counts[row], feature) float32, or None in utterance mode."""
        mode = self.reduction.mode
        if mode == "utterance":
            return None
        if mode == "frame":
            k = self.reduction.frame_stride
            return hidden if k == 1 else np.ascontiguousarray(hidden[:, ::k])
        assign = self._pool[row]
        n = self.unit_counts[row]
        inside = assign >= 0
        weights = np.zeros((n, len(assign)), np.float32)
        weights[assign[inside], np.flatnonzero(inside)] = 1.0
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("sf,lfd->lsd", weights, np.asarray(hidden, np.float32))


def plan(
    reduction: Reduction,
    utterance_ids: Sequence[str],
    frame_times: Sequence[np.ndarray],
    segments: pd.DataFrame | None = None,
    where: str = "features",
) -> Layout:
    """The :class:`Layout` of ``reduction`` for utterances with model frames centred at
    ``frame_times[i]`` (s). ``segments`` is the corpus' segments table (segment mode only);
    a tier it lacks is an error naming ``where``.pool and the tiers that exist."""
    mode = reduction.mode
    if mode == "utterance":
        return Layout(reduction, [0] * len(frame_times), [np.zeros(0)] * len(frame_times))
    if mode == "frame":
        k = reduction.frame_stride
        times = [np.asarray(t, np.float64)[::k] for t in frame_times]
        return Layout(reduction, [len(t) for t in times], times)
    if segments is None:
        raise ReductionError(f"{where}.pool {reduction.pool!r} needs the corpus' segments.tsv")
    tiers = sorted(set(segments["tier"].astype(str)))
    if reduction.tier not in tiers:
        raise ReductionError(
            f"{where}.pool {reduction.pool!r}: segments.tsv has no tier {reduction.tier!r} "
            f"(tiers: {tiers})"
        )
    tier = labels.tier_segments(segments, reduction.tier)
    tier = tier[tier["utterance_id"].isin(set(map(str, utterance_ids)))].reset_index(drop=True)
    lengths = [len(t) for t in frame_times]
    frame_utt = np.repeat(np.asarray(utterance_ids, dtype=object), lengths)
    all_times = np.concatenate([np.asarray(t, np.float64) for t in frame_times] or [[]])
    seg_of = labels.assign_segments(frame_utt, all_times, tier)
    n_frames = np.bincount(seg_of[seg_of >= 0], minlength=len(tier))
    kept = np.flatnonzero(n_frames > 0)
    new_index = np.full(len(tier), -1, np.int64)
    new_index[kept] = np.arange(len(kept))
    row_of = {str(u): i for i, u in enumerate(utterance_ids)}
    table = pd.DataFrame(
        {
            "utterance_index": tier["utterance_id"].astype(str).map(row_of).to_numpy(np.int64),
            "tier": reduction.tier,
            "label": tier["label"].astype(str).to_numpy(),
            "start_s": tier["start_s"].to_numpy(np.float64),
            "end_s": tier["end_s"].to_numpy(np.float64),
            "n_frames": n_frames.astype(np.int64),
        }
    ).iloc[kept]
    # store order: by utterance row, then start (tier_segments sorts by id, not by row)
    order = np.lexsort((table["start_s"].to_numpy(), table["utterance_index"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    global_new = np.where(seg_of >= 0, new_index[np.maximum(seg_of, 0)], -1)
    global_new = np.where(global_new >= 0, rank[np.maximum(global_new, 0)], -1)
    counts = np.bincount(table["utterance_index"].to_numpy(), minlength=len(frame_times))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    pools = []
    for i, n in enumerate(lengths):
        local = global_new[offsets[i] : offsets[i] + n]
        pools.append(np.where(local >= 0, local - starts[i], -1))
    mids = ((table["start_s"] + table["end_s"]) / 2).to_numpy()
    times = [mids[s : s + c] for s, c in zip(starts, counts, strict=True)]
    return Layout(
        reduction,
        [int(c) for c in counts],
        times,
        table,
        int(len(tier) - len(kept)),
        pools,
    )


def check_task(
    model: str,
    features: Mapping | None,
    task_name: str,
    task: Mapping,
    tiers: Collection[str] | None = None,
) -> None:
    """Start-up check: can probing task ``task_name`` run on model ``model``'s store?

    ``features`` are the model's merged ``features`` settings; ``task`` the task's config
    entry (``level``, ``source``, ``boundary_ms``); ``tiers`` the corpus' segment tiers when
    known (None: the tier rule below is left to the probe job, which knows them). Raises
    :class:`ReductionError` naming the model and the task when the task needs frames the
    store does not have:

    - an utterance store has no frames: frame-level tasks cannot run;
    - on a ``segment:<tier>`` store a frame task becomes a segment task (one sample per
      stored segment, labelled by the frame-centre rule at the segment's midpoint), which
      is only defined when its label source is that tier or an utterances column; a task on
      another tier, or one with ``boundary_ms`` > 0 (a per-frame policy), needs frames.
    """
    red = Reduction.from_settings(features, where=f"models.{model}.features")
    if task.get("level") != "frame" or red.mode == "frame":
        return
    what = f"probing task {task_name!r} (level frame, source {task.get('source')!r})"
    if red.mode == "utterance":
        raise ReductionError(
            f"model {model!r} stores utterance means only (features.pool utterance): "
            f"{what} needs frames; use pool frame or segment:<tier> for this model, or drop "
            "the task"
        )
    if float(task.get("boundary_ms") or 0) > 0:
        raise ReductionError(
            f"model {model!r} stores {red.pool} means: {what} drops frames near boundaries "
            f"(boundary_ms {task['boundary_ms']}), which needs frames; set boundary_ms 0 or "
            "use pool frame for this model"
        )
    source = str(task.get("source"))
    if tiers is not None and source != red.tier and source in set(tiers):
        raise ReductionError(
            f"model {model!r} stores {red.pool} means: {what} labels another tier, which "
            f"needs frames; use pool segment:{source} or frame for this model"
        )
