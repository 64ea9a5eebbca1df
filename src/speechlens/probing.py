"""Cross-validated probing of every layer of a feature store, without leakage.

A *task* is data (see :data:`TASK_DEFAULTS`): the level (``frame`` or ``utterance``), the
label source (a segments tier such as ``phone``, or an utterances column such as
``language``), the CV grouping column, the probes and the sampling policy. The entry point
for the workflow is :func:`run_task`; :func:`probe_arrays` does the probing on arrays.

Samples. Utterance-level tasks use every utterance of the store (``pooled``). Frame-level
tasks label the store's frames by the frame-centre rule (:mod:`speechlens.labels`) on the
model's own ``time_s``; a tier source labels by that tier, a column source (e.g. language)
labels the frames of the ``phone`` tier's segments (whole utterances when there is no phone
tier) by the utterance's value, so ``silence: drop`` can leave out silent frames. Classes
found in fewer than ``folds`` CV groups are dropped (listed in the sidecar); the rest are
capped at ``max_per_class`` frames by :func:`speechlens.labels.cap_units`. The sample is
drawn once per (store, task) and every layer and probe uses it, reading only those frames
(layer by layer). Shared across the models of a corpus (same corpus tables and seed): the
segment order of the cap and hence, up to the cap, the same segments, one frame each (the
one nearest the segment centre) wherever the model's grid puts a frame centre in them; the
folds (drawn on the corpus units, below); the control mapping.

A task's ``where`` (``{column: value or [values]}``, e.g. ``{language: en-us}``) keeps only
the utterances matching every column: the others give no sample and no units for the folds.

Cross-validation (scikit-learn splitters; one set of folds for every layer and probe). The
splitter runs over the sampling *units* of the store's utterances (segments, or utterances
for utterance-level tasks), which fixes the test fold of every CV group; each sample is
tested in its group's fold (``PredefinedSplit``). Units do not depend on the frame grid, so
all models of a corpus get the same folds (up to classes one grid cannot sample).

- grouped (``group_by`` set, or any frame-level task): ``StratifiedGroupKFold``; frame-level
  groups are the ``group_by`` values of the frames' utterances, or the utterances themselves
  when ``group_by`` is null, so frames of one utterance (and one speaker, when grouped by
  speaker) are never on both sides of a fold;
- utterance-level with ``group_by: null``: ``StratifiedKFold`` over utterances (the speaker
  task: every speaker is seen in training, never its test utterances).

Probes (each fitted inside the training fold only; features standardised in the fold):

- ``linear``: ``StandardScaler`` + multinomial ``LogisticRegression`` (lbfgs, float32) with a
  fixed ``C`` (settings ``linear_c``, default 1.0: on standardised features and >= 1000
  training samples a weak L2 penalty; no inner CV, to keep the grid cheap). Each layer is
  fitted from scratch (warm starts from the previous layer were measured to save nothing);
- ``knn``: ``StandardScaler`` + ``KNeighborsClassifier`` (cosine, brute force, ``knn_k``);
- ``mlp``: ``StandardScaler`` + ``MLPClassifier`` (one hidden layer, early stopping on 10 % of
  the training fold);
- ``weighted_sum``: :class:`~speechlens.probes.weighted_sum.WeightedSumClassifier` over all
  layers at once (its rows have ``layer = all``; its weights are ``layer_weight`` rows);
- ``kmeans``: the clustering view: ``KMeans`` (k = number of classes, standardised
  features) fitted on the training fold without labels; the held-out samples are assigned
  to their nearest centroid and scored by NMI and AMI against their labels. Fold ``f``
  uses seeds ``seed + f * kmeans_seeds + i`` (several seeds over the folds), averaged over
  its ``kmeans_seeds`` runs.

Baselines on the same folds: ``chance``, the expected score of guessing labels from the
training fold's class distribution, and ``majority`` (``DummyClassifier`` predicting the
training fold's most frequent class). With ``control: true`` the supervised
probes are also fitted on a type-level control task (:func:`speechlens.labels.control_mapping`)
on the same samples and folds (probe ``{probe}_control``), and ``{probe}_selectivity`` rows
hold real - control per fold.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.cluster import KMeans
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    adjusted_mutual_info_score,
    f1_score,
    normalized_mutual_info_score,
)
from sklearn.model_selection import PredefinedSplit, StratifiedGroupKFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from speechlens import labels as lab
from speechlens import store
from speechlens.atomic import atomic_path
from speechlens.corpora.contract import read_tables
from speechlens.probes.weighted_sum import WeightedSumClassifier

LEVELS = ("frame", "utterance")
PROBES = ("linear", "knn", "mlp", "weighted_sum", "kmeans")
SUPERVISED = ("linear", "knn", "mlp", "weighted_sum")
COLUMNS = ["corpus", "model", "task", "level", "layer", "probe", "fold", "metric", "value"]

#: Task keys and their defaults (``level`` and ``source`` are required).
TASK_DEFAULTS: dict = {
    "level": None,  # frame | utterance
    "source": None,  # a segments tier (phone, word) or an utterances column (speaker, ...)
    "group_by": None,  # utterances column grouping the CV folds; null: none (see module doc)
    "probes": ["linear", "knn", "mlp", "weighted_sum", "kmeans"],
    "folds": 5,
    "seed": 0,
    "max_per_class": 200,  # frame-level: cap on frames per class; null: no cap
    "boundary_ms": 0.0,  # drop frames within this distance of a segment boundary (tiers only)
    "silence": "keep",  # keep | drop the `sil` label (and, for column sources, its frames)
    "knn_k": 10,
    "control": False,  # also probe a type-level control task; adds selectivity rows
    "where": None,  # {column: value or [values]}: only utterances matching every column
}

#: The shipped tasks (the default experiment's `probing.tasks`).
DEFAULT_TASKS: dict = {
    "phone": {"level": "frame", "source": "phone", "group_by": "speaker", "control": True},
    "language": {"level": "utterance", "source": "language", "group_by": "speaker"},
    "language_frame": {
        "level": "frame",
        "source": "language",
        "group_by": "speaker",
        "silence": "drop",
        "max_per_class": 1000,
    },
    "speaker": {"level": "utterance", "source": "speaker", "group_by": None},
    "gender": {"level": "utterance", "source": "gender", "group_by": "speaker"},
}

#: Probe settings shared by every task (the workflow's `probing.settings`).
SETTINGS_DEFAULTS: dict = {
    "linear_c": 1.0,  # inverse L2 strength of the logistic regression (standardised inputs)
    "linear_max_iter": 100,  # lbfgs iterations (fits that stop here are counted in the sidecar)
    "mlp_hidden": 256,  # units of the one hidden layer (ReLU)
    "mlp_max_iter": 200,  # epochs at most; early stopping on 10 % of the training fold
    "mlp_batch_size": 512,
    "mlp_learning_rate": 0.005,  # Adam
    "mlp_patience": 3,  # epochs without validation improvement before stopping
    "weighted_sum_epochs": 20,
    "weighted_sum_batch_size": 1024,
    "weighted_sum_lr": 0.01,  # Adam
    "weighted_sum_min_steps": 200,  # more epochs on small data (utterance-level tasks)
    "kmeans_seeds": 1,  # k-means runs per fold (seeds differ between folds and runs)
}


class ProbingError(ValueError):
    """A task cannot be probed on the given store and corpus; the message says why."""


# ----------------------------------------------------------------------------- task data


def resolve_task(task: Mapping) -> dict:
    """The task with defaults filled in; raises :class:`ProbingError` on a bad value."""
    unknown = set(task) - set(TASK_DEFAULTS)
    if unknown:
        raise ProbingError(f"unknown task keys {sorted(unknown)}")
    out = {**TASK_DEFAULTS, **task}
    if out["level"] not in LEVELS:
        raise ProbingError(f"task level {out['level']!r}: use one of {LEVELS}")
    if not out["source"]:
        raise ProbingError("task needs a label `source` (a tier or an utterances column)")
    bad = [p for p in out["probes"] if p not in PROBES]
    if bad or not out["probes"]:
        raise ProbingError(f"task probes {bad or '[]'}: use some of {PROBES}")
    if out["silence"] not in lab.SILENCE_POLICIES:
        raise ProbingError(f"task silence {out['silence']!r}: use {lab.SILENCE_POLICIES}")
    if int(out["folds"]) < 2:
        raise ProbingError("task folds must be >= 2")
    if out["where"] is not None and not isinstance(out["where"], Mapping):
        raise ProbingError(f"task where {out['where']!r}: use a mapping {{column: value(s)}}")
    return out


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


def check_task_sources(
    task: Mapping, name: str, utterances: pd.DataFrame, segments: pd.DataFrame
) -> None:
    """Raise :class:`ProbingError` naming the config key ``probing.tasks.<name>`` when the
    task's ``source``, ``group_by`` or a ``where`` column is missing from the corpus, listing
    what is there.

    A frame-level ``source`` is a tier of ``segments`` or a column of ``utterances``; an
    utterance-level ``source``, ``group_by`` and the ``where`` keys are columns of
    ``utterances``.
    """
    key = f"config key probing.tasks.{name}"
    tiers = sorted(set(segments["tier"].astype(str)))
    columns = list(utterances.columns)
    source = task["source"]
    if task["level"] == "frame" and source not in tiers and source not in columns:
        raise ProbingError(
            f"{key}.source {source!r} is neither a tier of segments.tsv (tiers: {tiers}) "
            f"nor a column of utterances.tsv (columns: {columns})"
        )
    if task["level"] == "utterance" and source not in columns:
        raise ProbingError(
            f"{key}.source {source!r} is not a column of utterances.tsv (columns: {columns}"
            + (f"; {source!r} is a tier: use level frame)" if source in tiers else ")")
        )
    group_by = task.get("group_by")
    if group_by is not None and group_by not in columns:
        raise ProbingError(
            f"{key}.group_by {group_by!r} is not a column of utterances.tsv (columns: {columns})"
        )
    missing = [c for c in task.get("where") or {} if c not in columns]
    if missing:
        raise ProbingError(
            f"{key}.where: {missing} not columns of utterances.tsv (columns: {columns})"
        )


@dataclass
class TaskData:
    """What is probed: features, labels, CV groups and the sampling record.

    ``X`` (layer, n, feature) in the store dtype; ``y`` (n,) str labels; ``groups`` (n,) CV
    groups or None (plain stratified folds); ``control`` (n,) control labels or None;
    ``test_fold`` (n,) the fold in which each sample is tested, or None (folds are then
    drawn from ``y`` and ``groups`` by :func:`make_splits`); ``info`` what the provenance
    sidecar records about the sample.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    control: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    test_fold: np.ndarray | None = None


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


def _frame_units(
    segments: pd.DataFrame, utts: pd.DataFrame, task: dict
) -> tuple[pd.DataFrame, bool]:
    """Sampling units (segments) of a frame task and whether labels come from a column.

    A tier source: that tier's segments. A column source: the ``phone`` tier (so silence
    can be dropped and frames are spread over phones), else one segment per utterance;
    the label is replaced by the column value after the silence policy.
    """
    tiers = set(segments["tier"].unique())
    source = task["source"]
    if source in tiers:
        return lab.tier_segments(segments, source), False
    if source not in utts.columns:
        raise ProbingError(f"task source {source!r} is neither a segments tier nor a column")
    if "phone" in tiers:
        return lab.tier_segments(segments, "phone"), True
    whole = utts[["utterance_id"]].assign(
        tier="utterance", start_s=0.0, end_s=utts["duration_s"].astype(float), label=""
    )
    return lab.tier_segments(whole, "utterance"), True


def frame_samples(ds, utterances: pd.DataFrame, segments: pd.DataFrame, task: dict) -> dict:
    """Choose the frames of a frame-level task: labels, groups and sorted store frames.

    Returns a dict with ``index`` (sorted int store frame indices), ``unit`` (the segment
    of each frame: row of :func:`speechlens.labels.tier_segments`), ``label``, ``group`` and
    ``test_fold`` (n,), ``unit_counts`` (label -> number of units of the kept classes in
    the store's utterances: the label distribution of the control task) and ``info`` (the
    sampling record). Only the frame coords are read from the store.
    """
    utts = _utterance_rows(ds, utterances)
    units, from_column = _frame_units(segments, utts, task)
    if task["where"]:
        allowed = set(utts["utterance_id"][where_mask(utts, task["where"])])
        units = units[units["utterance_id"].isin(allowed)].reset_index(drop=True)
    table = lab.frame_table(
        utts["utterance_id"].to_numpy(dtype=object)[ds["utterance_index"].values],
        ds["time_s"].values,
        units,
        boundary_ms=0.0 if from_column else float(task["boundary_ms"]),
        silence=task["silence"],
    ).rename(columns={"frame": "index"})
    by_utt = utts.set_index("utterance_id")
    unit_utt = units["utterance_id"].to_numpy(dtype=object)
    unit_label = units["label"].to_numpy(str)
    if from_column:
        unit_label = by_utt[task["source"]].loc[unit_utt].to_numpy(str)
        table["label"] = unit_label[table["segment"].to_numpy()]
    in_store = units["utterance_id"].isin(set(utts["utterance_id"])).to_numpy()
    unit_group = np.full(len(units), "", dtype=object)
    key = unit_utt[in_store]
    unit_group[in_store] = key if task["group_by"] is None else by_utt[task["group_by"]].loc[key]
    unit_group = unit_group.astype(str)
    table["group"] = unit_group[table["segment"].to_numpy()]
    unit = pd.DataFrame(
        {"label": unit_label, "raw": units["label"].to_numpy(str), "group": unit_group}
    )[in_store]
    return _select(table, unit, len(units), task, ds.sizes["frame"])


def _select(table: pd.DataFrame, unit: pd.DataFrame, n_units: int, task: dict, n_store: int):
    """Drop unlabelled samples and rare classes, cap per class, assign folds.

    ``table``: candidate samples (``index, segment, label, group``); ``unit``: the sampling
    units of the store's utterances (``label`` task label, ``raw`` tier label, ``group``),
    which set the control distribution and the folds; ``n_units`` all units of the corpus.
    See :func:`frame_samples` for the result.
    """
    table = table[table["label"] != ""]
    keep = _filter_classes(table["label"].to_numpy(), table["group"].to_numpy(), task["folds"])
    dropped = sorted(set(table["label"][~keep]))
    table = table[keep]
    eligible = table["label"].value_counts().sort_index()
    cap = task["max_per_class"] if task["level"] == "frame" else None
    table = lab.cap_units(table, cap, task["seed"], n_units)
    unit = unit[unit["label"].isin(set(table["label"]))]
    if task["silence"] == "drop":
        unit = unit[unit["raw"] != lab.SILENCE]
    counts = unit["label"].value_counts().sort_index()
    fold_of = _group_folds(
        unit, grouped=task["group_by"] is not None or task["level"] == "frame", task=task
    )
    return {
        "index": table["index"].to_numpy(np.int64),
        "unit": table["segment"].to_numpy(np.int64),
        "label": table["label"].to_numpy(str),
        "group": table["group"].to_numpy(str),
        "test_fold": table["group"].map(fold_of).to_numpy(np.int64),
        "unit_counts": {str(k): int(v) for k, v in counts.items()},
        "info": {
            "eligible_per_class": {str(k): int(v) for k, v in eligible.items()},
            "dropped_classes": dropped,
            "eligible": int(eligible.sum()),
            "store_size": int(n_store),
        },
    }


def _group_folds(unit: pd.DataFrame, *, grouped: bool, task: dict) -> dict:
    """The test fold of every CV group, drawn on the corpus units (not on frames).

    ``unit`` has one row per sampling unit (segment or utterance) with ``label`` and
    ``group``; grouped: ``StratifiedGroupKFold`` over units by group; else (every unit its
    own group) ``StratifiedKFold``. Folds drawn on units do not depend on a model's frame
    grid, so the models of a corpus share them.
    """
    splits = make_splits(
        unit["label"].to_numpy(str),
        unit["group"].to_numpy(str) if grouped else None,
        task["folds"],
        task["seed"],
    )
    groups = unit["group"].to_numpy(str)
    fold_of = {}
    for fold, (_, test) in enumerate(splits):
        fold_of.update(dict.fromkeys(groups[test], fold))
    return fold_of


def utterance_samples(ds, utterances: pd.DataFrame, task: dict) -> dict:
    """Choose the utterances of an utterance-level task (same return as :func:`frame_samples`,
    ``index`` being store utterance rows). Every utterance is used (``max_per_class``
    caps frames only); ungrouped tasks use each utterance as its own CV group for the class
    filter (a class needs ``folds`` utterances).
    """
    utts = _utterance_rows(ds, utterances)
    source = task["source"]
    if source not in utts.columns:
        raise ProbingError(f"utterance-level task source {source!r} is not an utterances column")
    order = {u: i for i, u in enumerate(utterances["utterance_id"])}
    label = utts[source].astype(str).to_numpy()
    group_col = task["group_by"] or "utterance_id"
    table = pd.DataFrame(
        {
            "index": np.arange(len(utts)),
            "segment": utts["utterance_id"].map(order).to_numpy(),
            "label": label,
            "group": utts[group_col].astype(str).to_numpy(),
        }
    )
    unit = pd.DataFrame({"label": label, "raw": label, "group": table["group"].to_numpy()})
    if task["where"]:
        keep = where_mask(utts, task["where"])
        table, unit = table[keep], unit[keep]
    out = _select(table, unit, len(utterances), task, len(utts))
    if task["group_by"] is None:
        out["group"] = None
    return out


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


def load_task(store_path, utterances: pd.DataFrame, segments: pd.DataFrame, task: dict):
    """Open a store and gather a task's samples; returns (TaskData, store attrs)."""
    ds = store.open_store(store_path)
    store.validate(ds, str(store_path))
    if task["level"] == "frame":
        picked = frame_samples(ds, utterances, segments, task)
    else:
        picked = utterance_samples(ds, utterances, task)
    if len(set(picked["label"])) < 2:
        raise ProbingError(f"task source {task['source']!r}: fewer than 2 classes to probe")
    y = picked["label"]
    control = None
    if task["control"]:
        mapping = lab.control_mapping(picked["unit_counts"], task["seed"])
        control = np.asarray([mapping[v] for v in y], dtype=str)
        picked["info"]["control_mapping"] = mapping
    X = read_features(ds, task["level"], picked["index"])
    data = TaskData(X, y, picked["group"], control, picked["info"], picked["test_fold"])
    return data, dict(ds.attrs)


# ----------------------------------------------------------------------------- probing


def make_splits(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list:
    """The CV folds as a list of (train, test) index arrays (sklearn splitters, shuffled).

    ``groups`` None: ``StratifiedKFold``; else ``StratifiedGroupKFold`` (no group on both
    sides of any fold).
    """
    zeros = np.zeros(len(y))
    if groups is None:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return list(cv.split(zeros, y))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(cv.split(zeros, y, groups))


def make_probe(name: str, task: dict, settings: dict):
    """A fresh scikit-learn estimator for a per-layer probe (see the module docstring)."""
    seed = task["seed"]
    if name == "linear":
        clf = LogisticRegression(C=settings["linear_c"], max_iter=settings["linear_max_iter"])
    elif name == "knn":
        clf = KNeighborsClassifier(n_neighbors=task["knn_k"], metric="cosine", algorithm="brute")
    elif name == "mlp":
        clf = MLPClassifier(
            hidden_layer_sizes=(settings["mlp_hidden"],),
            early_stopping=True,
            validation_fraction=0.1,
            batch_size=settings["mlp_batch_size"],
            learning_rate_init=settings["mlp_learning_rate"],
            max_iter=settings["mlp_max_iter"],
            n_iter_no_change=settings["mlp_patience"],
            random_state=seed,
        )
    elif name == "weighted_sum":
        return WeightedSumClassifier(
            epochs=settings["weighted_sum_epochs"],
            batch_size=settings["weighted_sum_batch_size"],
            lr=settings["weighted_sum_lr"],
            min_steps=settings["weighted_sum_min_steps"],
            seed=seed,
        )
    else:
        raise ProbingError(f"no estimator for probe {name!r}")
    return make_pipeline(StandardScaler(), clf)


def _scores(y_true, y_pred) -> dict:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def _kmeans_scores(X_train, X_test, y_test, n_classes: int, seeds: list[int]) -> dict:
    """NMI and AMI against ``y_test`` of k-means clusters fitted on the training fold.

    ``X_train`` (n_train, feature) is standardised and clustered (k = ``n_classes``, one
    run per seed); ``X_test`` is assigned to the nearest centroids. Averaged over seeds.
    """
    scaler = StandardScaler().fit(X_train)
    train, test = scaler.transform(X_train), scaler.transform(X_test)
    nmi, ami = [], []
    for s in seeds:
        pred = KMeans(n_clusters=n_classes, n_init=1, random_state=s).fit(train).predict(test)
        nmi.append(normalized_mutual_info_score(y_test, pred))
        ami.append(adjusted_mutual_info_score(y_test, pred))
    return {"nmi": float(np.mean(nmi)), "ami": float(np.mean(ami))}


def _fit_layer(probe, est, Xl, y, train, test, fold, task, settings) -> dict:
    """Scores of one probe on one layer's (n, feature) float32 array and one fold."""
    if probe == "kmeans":
        n = settings["kmeans_seeds"]
        seeds = [task["seed"] + fold * n + i for i in range(n)]
        return _kmeans_scores(Xl[train], Xl[test], y[test], len(np.unique(y)), seeds)
    return _scores(y[test], est.fit(Xl[train], y[train]).predict(Xl[test]))


def _job(X, y, train, test, probe, fold, task, settings, suffix="") -> tuple[list, dict, dict]:
    """One (probe, fold, target) over all layers, single-threaded.

    Returns (rows, {layer: (wall s, CPU s)}, number of fits per layer that hit their
    iteration limit). ``X`` is (layer, n, feature); ``suffix`` names the target (``""`` or
    ``"_control"``).
    """
    rows, seconds, capped = [], {}, {}
    name = probe + suffix
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if probe == "weighted_sum":
            t0, c0 = time.perf_counter(), time.process_time()
            est = make_probe(probe, task, settings).fit(X[:, train].swapaxes(0, 1), y[train])
            pred = est.predict(X[:, test].swapaxes(0, 1))
            rows += [("all", name, fold, m, v) for m, v in _scores(y[test], pred).items()]
            rows += [
                (i, name, fold, "layer_weight", float(w)) for i, w in enumerate(est.layer_weights_)
            ]
            seconds["all"] = (time.perf_counter() - t0, time.process_time() - c0)
            return rows, seconds, capped
        for layer in range(X.shape[0]):
            t0, c0 = time.perf_counter(), time.process_time()
            before = len(caught)
            est = None if probe == "kmeans" else make_probe(probe, task, settings)
            Xl = X[layer].astype(np.float32)
            scores = _fit_layer(probe, est, Xl, y, train, test, fold, task, settings)
            rows += [(layer, name, fold, m, v) for m, v in scores.items()]
            seconds[layer] = (time.perf_counter() - t0, time.process_time() - c0)
            n_capped = sum(issubclass(w.category, ConvergenceWarning) for w in caught[before:])
            if n_capped:
                capped[layer] = n_capped
    return rows, seconds, capped


def _chance_scores(y_train: np.ndarray, y_test: np.ndarray) -> dict:
    """Expected scores of stratified guessing: labels drawn from the training fold's class
    distribution, independently of the input.

    accuracy = sum_c p_train(c) p_test(c); macro-F1 averages, over the classes of either
    side, the F1 of the expected counts: 2 p_train(c) p_test(c) / (p_train(c) + p_test(c)).
    (The exact expectation, free of the noise of one random draw per fold.)
    """
    train = pd.Series(y_train).value_counts(normalize=True)
    test = pd.Series(y_test).value_counts(normalize=True)
    p, q = train.align(test, fill_value=0.0)
    return {
        "accuracy": float((p * q).sum()),
        "macro_f1": float((2 * p * q / (p + q)).mean()),
    }


def _baselines(y: np.ndarray, splits: list) -> list:
    """``chance`` (expected stratified guessing) and ``majority`` (``DummyClassifier``
    predicting the training fold's most frequent class) rows for every fold."""
    rows = []
    for fold, (train, test) in enumerate(splits):
        rows += [
            ("all", "chance", fold, m, v) for m, v in _chance_scores(y[train], y[test]).items()
        ]
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), y[train])
        pred = dummy.predict(np.zeros((len(test), 1)))
        rows += [("all", "majority", fold, m, v) for m, v in _scores(y[test], pred).items()]
    return rows


_COST = {"weighted_sum": 0, "mlp": 1, "linear": 2, "kmeans": 3, "knn": 4}


def probe_arrays(data: TaskData, task: Mapping, settings: Mapping, *, threads: int = 1):
    """Probe every layer of ``data`` with the task's probes on shared CV folds.

    Returns (table, info): ``table`` a tidy DataFrame with columns ``layer, probe, fold,
    metric, value`` (per-fold rows, then ``mean``/``std`` rows over folds, std with ddof=1),
    and ``info`` with the folds' sizes and the wall and CPU seconds per (probe, layer)
    summed over folds (keys ``"{probe}/{layer}"``).
    Jobs (probe x fold x real/control) run in ``threads`` processes, single-threaded each.
    """
    task = resolve_task(task)
    settings = {**SETTINGS_DEFAULTS, **settings}
    y = np.asarray(data.y, dtype=str)
    if data.test_fold is None:
        splits = make_splits(y, data.groups, task["folds"], task["seed"])
    else:
        splits = list(PredefinedSplit(data.test_fold).split())
    targets = [("", y)]
    if data.control is not None:
        targets.append(("_control", np.asarray(data.control, dtype=str)))
    jobs = [
        (probe, fold, suffix, target)
        for probe in sorted(task["probes"], key=_COST.get)
        for suffix, target in targets
        if not (suffix and probe not in SUPERVISED)
        for fold in range(len(splits))
    ]
    run = delayed(_job)
    results = Parallel(n_jobs=min(threads, len(jobs)))(
        run(data.X, target, *splits[fold], probe, fold, task, settings, suffix)
        for probe, fold, suffix, target in jobs
    )
    rows = _baselines(y, splits)
    timing: dict = {}
    capped: dict = {}
    for (probe, _, suffix, _), (job_rows, seconds, n_capped) in zip(jobs, results, strict=True):
        rows += job_rows
        for layer, (wall, cpu) in seconds.items():
            key = f"{probe}{suffix}/{layer}"
            old = timing.get(key, (0.0, 0.0))
            timing[key] = (old[0] + wall, old[1] + cpu)
        for layer, n in n_capped.items():
            key = f"{probe}{suffix}/{layer}"
            capped[key] = capped.get(key, 0) + n
    table = pd.DataFrame(rows, columns=["layer", "probe", "fold", "metric", "value"])
    table = _with_summary(_with_selectivity(table))
    info = {
        "folds": [
            {
                "n_train": int(len(tr)),
                "n_test": int(len(te)),
                "test_groups": None if data.groups is None else int(len(set(data.groups[te]))),
            }
            for tr, te in splits
        ],
        "seconds": {k: round(v[0], 3) for k, v in sorted(timing.items())},
        "cpu_seconds": {k: round(v[1], 3) for k, v in sorted(timing.items())},
        "fits_at_iteration_limit": dict(sorted(capped.items())),
    }
    return table, info


def _with_selectivity(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``{probe}_selectivity`` rows: real - control per (layer, fold, metric)."""
    control = table[table["probe"].str.endswith("_control") & (table["metric"] != "layer_weight")]
    if control.empty:
        return table
    real = control.assign(probe=control["probe"].str.removesuffix("_control"))
    merged = real.merge(table, on=["layer", "probe", "fold", "metric"], suffixes=("_c", ""))
    sel = merged.assign(
        probe=merged["probe"] + "_selectivity", value=merged["value"] - merged["value_c"]
    )
    return pd.concat([table, sel[table.columns]], ignore_index=True)


def _with_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Append fold ``mean`` and ``std`` rows and sort deterministically."""
    keys = ["layer", "probe", "metric"]
    grouped = table.groupby(keys, sort=False)["value"]
    mean = grouped.mean().reset_index().assign(fold="mean")
    std = grouped.std(ddof=1).reset_index().assign(fold="std")
    out = pd.concat([table, mean, std], ignore_index=True)
    layer_key = out["layer"].map(lambda v: -1 if v == "all" else int(v))
    fold_key = out["fold"].map(lambda v: {"mean": 10**6, "std": 10**6 + 1}.get(v, v))
    out = out.assign(_l=layer_key, _f=fold_key).sort_values(["probe", "_l", "metric", "_f"])
    return out.drop(columns=["_l", "_f"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- entry point


def _versions() -> dict:
    import sklearn
    import torch

    import speechlens

    return {
        "speechlens": speechlens.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


def run_task(
    store_path,
    utterances_tsv,
    segments_tsv,
    task: Mapping,
    settings: Mapping,
    out_tsv,
    *,
    threads: int = 1,
    name: str | None = None,
) -> None:
    """Probe one (store, task) and write the tidy table and its provenance sidecar.

    ``name`` is the task's name in the table (default: the stem of ``out_tsv``, i.e. the
    ``{task}`` of ``probes/{task}.tsv``); ``threads`` the processes probing in parallel.

    Writes ``out_tsv`` (columns :data:`COLUMNS`) and ``out_tsv`` with suffix ``.json``
    (task and settings with defaults, sample counts per class, dropped classes, fold sizes,
    control mapping, seconds per (probe, layer), store attrs, library versions), each
    atomically. ``task`` and ``settings`` may be partial (defaults from
    :data:`TASK_DEFAULTS` and :data:`SETTINGS_DEFAULTS`).
    """
    out_tsv = Path(out_tsv)
    name = name or out_tsv.stem
    task = resolve_task(task)
    settings = {**SETTINGS_DEFAULTS, **settings}
    utterances, segments = read_tables(utterances_tsv, segments_tsv)
    check_task_sources(task, name, utterances, segments)  # before the store is opened
    data, attrs = load_task(store_path, utterances, segments, task)
    table, info = probe_arrays(data, task, settings, threads=threads)
    table.insert(0, "level", task["level"])
    table.insert(0, "task", name)
    table.insert(0, "model", str(attrs.get("model", "")))
    table.insert(0, "corpus", str(attrs.get("corpus", "")))
    per_class = pd.Series(data.y).value_counts().sort_index()
    sidecar = {
        "task": name,
        "task_settings": task,
        "probe_settings": settings,
        "samples": int(len(data.y)),
        "samples_per_class": {str(k): int(v) for k, v in per_class.items()},
        "max_per_class": task["max_per_class"] if task["level"] == "frame" else None,
        **data.info,
        **info,
        "inputs": {"store": str(store_path), "utterances": str(utterances_tsv)},
        "store_attrs": attrs,
        "versions": _versions(),
        "threads": threads,
    }
    with atomic_path(out_tsv.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_path(out_tsv) as tmp:
        table[COLUMNS].to_csv(tmp, sep="\t", index=False, lineterminator="\n", float_format="%.6f")
