"""Which samples a task probes: labels, CV groups, test folds and control labels.

Utterance-level tasks use every utterance of the store (``pooled``; and the model's own
utterance embeddings, :func:`read_embeddings`, where the store has them). Frame-level tasks
label the store's frames by the frame-centre rule (:mod:`speechlens.labels`) on the model's
own ``time_s``; a tier source labels by that tier, a column source (e.g. language) labels
the frames of the ``phone`` tier's segments (whole utterances when there is no phone tier)
by the utterance's value, so ``silence: drop`` can leave out silent frames. Classes found
in fewer than ``folds`` CV groups are dropped (listed in the sidecar); the rest are capped
at ``max_per_class`` frames by :func:`speechlens.labels.cap_units`. The sample is drawn
once per (store, task) and every layer and probe uses it. Shared across the models of a
corpus (same corpus tables and seed): the segment order of the cap and hence, up to the
cap, the same segments (one frame each, nearest the segment centre, wherever the model's
grid puts a frame centre in them); the folds (:mod:`.folds`); the control labels
(:mod:`.control`).

A task's ``where`` (``{column: value or [values]}``) keeps only the utterances matching
every column: the others give no sample and no units for the folds.

Reduced stores: frame tasks read a frame store's (possibly strided) frames as they are, and
a ``segment:<tier>`` store through :func:`speechlens.store.unit_view`, where each stored
segment is one "frame" centred at its midpoint: the frame-centre rule then labels it by the
segment holding its midpoint (itself, for a task on the store's tier), and the cap picks
at most one stored segment per sampling unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from speechlens import labels as lab
from speechlens import store
from speechlens.probing import control as ctl
from speechlens.probing.folds import group_folds
from speechlens.probing.task import ProbingError, Task, resolve_task


@dataclass
class Sample:
    """The samples of a task on one store (all arrays (n,), in store order).

    ``index``: store frames (``hidden``) or utterance rows (``pooled``), sorted ints;
    ``unit``: the sampling unit (segment row, or corpus utterance row) of each sample;
    ``label``: str targets; ``group``: str CV groups or None (plain stratified folds);
    ``test_fold``: the fold in which each sample is tested; ``control``: control labels or
    None; ``unit_counts``: class -> units of the kept classes (the control task's class
    distribution); ``info``: the sampling record for the sidecar.
    """

    index: np.ndarray
    unit: np.ndarray
    label: np.ndarray
    group: np.ndarray | None
    test_fold: np.ndarray
    control: np.ndarray | None = None
    unit_counts: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def where_mask(utts: pd.DataFrame, where: Mapping | None) -> np.ndarray:
    """Bool mask of the rows of ``utts`` whose every ``where`` column holds the value (or one
    of the list of values), compared as strings; all rows when ``where`` is empty."""
    keep = np.ones(len(utts), dtype=bool)
    for column, wanted in (where or {}).items():
        if column not in utts.columns:
            raise ProbingError(f"task where: {column!r} is not a column of utterances.tsv")
        values = wanted if isinstance(wanted, list | tuple) else [wanted]
        keep &= utts[column].astype(str).isin([str(v) for v in values]).to_numpy()
    if where and not keep.any():
        raise ProbingError(f"task where {dict(where)!r} matches no utterance of the store")
    return keep


def _utterance_rows(ds, utterances: pd.DataFrame) -> pd.DataFrame:
    """The corpus rows of the store's utterances, in store order (index = store row)."""
    ids = [str(u) for u in ds["utterance_id"].values]
    table = utterances.set_index("utterance_id")
    missing = [u for u in ids if u not in table.index]
    if missing:
        raise ProbingError(
            f"store utterances missing from the corpus table, e.g. {missing[0]!r} "
            "(store and corpus do not match)"
        )
    return table.loc[ids].reset_index()


def _filter_classes(labels: np.ndarray, groups: np.ndarray, folds: int) -> np.ndarray:
    """Mask of samples whose class occurs in at least ``folds`` distinct CV groups."""
    frame = pd.DataFrame({"label": labels, "group": groups})
    n_groups = frame.groupby("label")["group"].nunique()
    return frame["label"].map(n_groups).to_numpy() >= folds


def _frame_units(segments: pd.DataFrame, utts: pd.DataFrame, task: Task):
    """Sampling units (segments) of a frame task and whether labels come from a column.

    A tier source: that tier's segments. A column source: the ``phone`` tier (so silence
    can be dropped and frames are spread over phones), else one segment per utterance.
    """
    tiers = set(segments["tier"].unique())
    if task.source in tiers:
        return lab.tier_segments(segments, task.source), False
    if task.source not in utts.columns:
        raise ProbingError(f"task source {task.source!r} is neither a segments tier nor a column")
    if "phone" in tiers:
        return lab.tier_segments(segments, "phone"), True
    whole = utts[["utterance_id"]].assign(
        tier="utterance", start_s=0.0, end_s=utts["duration_s"].astype(float), label=""
    )
    return lab.tier_segments(whole, "utterance"), True


def frame_samples(ds, utterances: pd.DataFrame, segments: pd.DataFrame, task: Task) -> Sample:
    """Choose the frames of a frame-level task (only the store's frame coords are read)."""
    task = resolve_task(task)
    utts = _utterance_rows(ds, utterances)
    units, from_column = _frame_units(segments, utts, task)
    if task.where:
        allowed = set(utts["utterance_id"][where_mask(utts, task.where)])
        units = units[units["utterance_id"].isin(allowed)].reset_index(drop=True)
    table = lab.frame_table(
        utts["utterance_id"].to_numpy(dtype=object)[ds["utterance_index"].values],
        ds["time_s"].values,
        units,
        boundary_ms=0.0 if from_column else task.boundary_ms,
        silence=task.silence,
    ).rename(columns={"frame": "index"})
    by_utt = utts.set_index("utterance_id")
    unit_utt = units["utterance_id"].to_numpy(dtype=object)
    unit_label = units["label"].to_numpy(str)
    if from_column:
        unit_label = by_utt[task.source].loc[unit_utt].to_numpy(str)
        table["label"] = unit_label[table["segment"].to_numpy()]
    in_store = units["utterance_id"].isin(set(utts["utterance_id"])).to_numpy()
    unit_group = np.full(len(units), "", dtype=object)
    key = unit_utt[in_store]
    unit_group[in_store] = key if task.group_by is None else by_utt[task.group_by].loc[key]
    unit_group = unit_group.astype(str)
    table["group"] = unit_group[table["segment"].to_numpy()]
    unit = pd.DataFrame(
        {"label": unit_label, "raw": units["label"].to_numpy(str), "group": unit_group}
    )[in_store]
    identity = None
    if task.control is not None:
        identity = ctl.unit_identities(units, utterances, segments, task.control.by)
    return _select(table, unit, len(units), task, ds.sizes["frame"], identity)


def utterance_samples(ds, utterances: pd.DataFrame, task: Task) -> Sample:
    """Choose the utterances of an utterance-level task (``index``: store utterance rows).

    Every utterance is used (``max_per_class`` caps frames only); ungrouped tasks use each
    utterance as its own CV group for the class filter (a class needs ``folds`` utterances).
    """
    task = resolve_task(task)
    utts = _utterance_rows(ds, utterances)
    if task.source not in utts.columns:
        raise ProbingError(
            f"utterance-level task source {task.source!r} is not an utterances column"
        )
    order = {u: i for i, u in enumerate(utterances["utterance_id"])}
    label = utts[task.source].astype(str).to_numpy()
    table = pd.DataFrame(
        {
            "index": np.arange(len(utts)),
            "segment": utts["utterance_id"].map(order).to_numpy(),
            "label": label,
            "group": utts[task.group_by or "utterance_id"].astype(str).to_numpy(),
        }
    )
    unit = pd.DataFrame({"label": label, "raw": label, "group": table["group"].to_numpy()})
    if task.where:
        keep = where_mask(utts, task.where)
        table, unit = table[keep], unit[keep]
    identity = None
    if task.control is not None:  # by corpus utterance row, as ``segment``
        identity = ctl.unit_identities(utterances, utterances, None, task.control.by)
    out = _select(table, unit, len(utterances), task, len(utts), identity)
    if task.group_by is None:
        out.group = None
    return out


def draw_samples(ds, utterances: pd.DataFrame, segments: pd.DataFrame, task: Task) -> Sample:
    """The task's :class:`Sample` on an open store (frame or utterance level); raises
    :class:`ProbingError` when fewer than 2 classes are left."""
    task = resolve_task(task)
    if task.level == "frame":
        sample = frame_samples(ds, utterances, segments, task)
    else:
        sample = utterance_samples(ds, utterances, task)
    if len(set(sample.label)) < 2:
        raise ProbingError(f"task source {task.source!r}: fewer than 2 classes to probe")
    return sample


def _select(
    table: pd.DataFrame,
    unit: pd.DataFrame,
    n_units: int,
    task: Task,
    n_store: int,
    identity: np.ndarray | None,
) -> Sample:
    """Drop unlabelled samples and rare classes, cap per class, assign folds and controls.

    ``table``: candidate samples (``index, segment, label, group``); ``unit``: the sampling
    units of the store's utterances (``label`` task label, ``raw`` tier label, ``group``),
    which set the control distribution and the folds; ``n_units`` all units of the corpus;
    ``identity`` (n_units,) the control identity of every unit, or None.
    """
    table = table[table["label"] != ""]
    keep = _filter_classes(table["label"].to_numpy(), table["group"].to_numpy(), task.folds)
    dropped = sorted(set(table["label"][~keep]))
    table = table[keep]
    if table.empty:
        raise ProbingError(
            f"task source {task.source!r}: no class has samples in {task.folds} CV groups "
            f"({task.group_by or 'utterance'}) to fill {task.folds} folds; classes dropped: "
            f"{dropped[:20]} (lower the task's `folds` or add "
            f"{'speakers' if task.group_by == 'speaker' else 'groups'})"
        )
    eligible = table["label"].value_counts().sort_index()
    cap = task.max_per_class if task.level == "frame" else None
    table = lab.cap_units(table, cap, task.seed, n_units)
    unit = unit[unit["label"].isin(set(table["label"]))]
    if task.silence == "drop":
        unit = unit[unit["raw"] != lab.SILENCE]
    counts = {str(k): int(v) for k, v in unit["label"].value_counts().sort_index().items()}
    grouped = task.group_by is not None or task.level == "frame"
    fold_of = group_folds(unit, grouped=grouped, folds=task.folds, seed=task.seed)
    test_fold = table["group"].map(fold_of).to_numpy(np.int64)
    info = {
        "eligible_per_class": {str(k): int(v) for k, v in eligible.items()},
        "dropped_classes": dropped,
        "eligible": int(eligible.sum()),
        "store_size": int(n_store),
    }
    control = None
    if identity is not None:
        ident = identity[table["segment"].to_numpy()]
        control = ctl.control_labels(ident, counts, task.seed)
        info["control"] = {
            "by": list(task.control.by),
            "identities": int(len(set(ident))),
            "class_distribution": counts,
            "test_identities_seen_in_training": ctl.seen_in_training(ident, test_fold),
        }
    return Sample(
        index=table["index"].to_numpy(np.int64),
        unit=table["segment"].to_numpy(np.int64),
        label=table["label"].to_numpy(str),
        group=table["group"].to_numpy(str),
        test_fold=test_fold,
        control=control,
        unit_counts=counts,
        info=info,
    )


def read_features(ds, level: str, index: np.ndarray) -> np.ndarray:
    """The selected samples of every layer, (layer, n, feature) in the store dtype.

    ``index`` (sorted ints) are store frames (``hidden``) or utterance rows (``pooled``);
    layers are read one at a time, so only the selected rows are ever held in memory.
    """
    var, dim = ("hidden", "frame") if level == "frame" else ("pooled", "utterance")
    arr = ds[var]
    out = np.empty((arr.sizes["layer"], len(index), arr.sizes["feature"]), dtype=arr.dtype)
    for layer in range(arr.sizes["layer"]):
        out[layer] = arr.isel(layer=layer, **{dim: index}).values
    return out


def read_embeddings(ds, index: np.ndarray) -> dict[str, np.ndarray]:
    """The selected utterances' model embeddings (:func:`speechlens.store.embeddings`):
    ``{name: (n, embedding_feature)}`` in the store dtype, in the order of the store's
    embedding names; ``{}`` for a store without embeddings. ``index`` (sorted ints): store
    utterance rows, as for ``pooled`` (the embedding rows follow ``ds["utterance_id"]``)."""
    arr = store.embeddings(ds)
    if arr is None:
        return {}
    return {
        name: arr.isel(embedding_name=k, utterance=index).values
        for k, name in enumerate(store.embedding_names(ds))
    }
