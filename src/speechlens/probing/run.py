"""Probe every layer of a store for one task: the jobs, the table and its sidecar.

Data flows one way: config entry -> :class:`~.task.Task` -> :class:`~.sampling.Sample`
(+ features) -> :class:`TaskData` -> :func:`probe_arrays` -> the table (:data:`TABLE`).
Jobs are (probe x fold x real/control target), each over all layers, single-threaded, in
``threads`` processes. With a control task (:mod:`.control`), the supervised probes are
also fitted on the control labels (probe ``{probe}_control``) on the same samples and folds,
and ``{probe}_selectivity`` rows hold real - control per fold (Hewitt & Liang 2019).
Iterative probes (``linear``, ``mlp``) add a ``not_converged`` row per (layer, fold): 1 when
that fold's fit stopped at its iteration limit (the ``mean`` row is the share of folds).

Every kind of store (:func:`speechlens.store.mode`) is probed: utterance tasks read
``pooled``; frame tasks read ``hidden`` of a frame store (all frames, or every k-th), or of
a ``segment:<tier>`` store as frames (:func:`speechlens.store.unit_view`: each stored
segment a sample centred at its midpoint, labelled by the frame-centre rule there), and
cannot run on an utterance store (:func:`speechlens.reduce.check_task`, an error naming the
model and the task). The table's ``layer`` holds the model's layer numbers
(:func:`speechlens.store.layer_numbers`: a ``layers`` subset keeps its numbers).

Utterance-level tasks on a store with the model's own utterance embeddings (speaker
encoders, capability ``utterance_level``: :func:`speechlens.store.embeddings`, e.g. GE2E's
``d_vector``) also probe each embedding, as rows with ``layer`` ``embedding:<name>``
(:func:`embedding_layer`): same samples, folds, probes, control task and selectivity as the
layers; the ``weighted_sum`` probe stays over the layers only (its weights are per layer).
Frame-level tasks never read embeddings.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import PredefinedSplit
from threadpoolctl import threadpool_limits

from speechlens import reduce, schema, store
from speechlens.atomic import atomic_path
from speechlens.corpora.contract import read_tables
from speechlens.probing import estimators as est
from speechlens.probing.folds import make_splits
from speechlens.probing.sampling import Sample, draw_samples, read_embeddings, read_features
from speechlens.probing.table import EMBEDDING_PREFIX, NOT_SCORES, TABLE, embedding_layer
from speechlens.probing.task import SUPERVISED, Task, check_task_sources, resolve_task
from speechlens.tables import write_table

_COST = {"weighted_sum": 0, "mlp": 1, "linear": 2, "kmeans": 3, "knn": 4}


@dataclass
class TaskData:
    """What is probed: features, labels, CV groups and the sampling record.

    ``X`` (layer, n, feature) in the store dtype; ``y`` (n,) str labels; ``groups`` (n,) CV
    groups or None; ``control`` (n,) control labels or None; ``info`` the sampling record;
    ``test_fold`` (n,) the fold in which each sample is tested, or None (folds are then
    drawn from ``y`` and ``groups`` by :func:`~.folds.make_splits`); ``layers`` (layer,)
    the model layer number of each row of ``X`` for the table, or None (``0..L-1``);
    ``embeddings`` ``{name: (n, embedding_feature)}`` the model's own utterance embeddings
    of the same samples (utterance-level tasks; ``{}``: none), probed as rows
    :func:`embedding_layer` ``(name)``.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    control: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    test_fold: np.ndarray | None = None
    layers: np.ndarray | None = None
    embeddings: dict = field(default_factory=dict)

    def layer_numbers(self) -> list[int]:
        """The table's ``layer`` value of each row of ``X``."""
        if self.layers is None:
            return list(range(self.X.shape[0]))
        if len(self.layers) != self.X.shape[0]:
            raise ValueError(f"{len(self.layers)} layer numbers for {self.X.shape[0]} layers")
        return [int(v) for v in self.layers]

    def embedding_arrays(self) -> dict[str, np.ndarray]:
        """``{table layer value: (n, embedding_feature)}`` of the embeddings; raises
        ``ValueError`` when one does not hold one row per sample."""
        out = {}
        for name, values in self.embeddings.items():
            if np.ndim(values) != 2 or len(values) != len(self.y):
                raise ValueError(
                    f"embedding {name!r}: shape {np.shape(values)}, expected "
                    f"({len(self.y)}, embedding_feature): one row per sample"
                )
            out[embedding_layer(name)] = values
        return out

    @classmethod
    def from_sample(cls, sample: Sample, X: np.ndarray, *, control: bool = True) -> TaskData:
        """The data of ``sample`` with its features ``X`` (layer, n, feature)."""
        return cls(
            X,
            sample.label,
            sample.group,
            sample.control if control else None,
            sample.info,
            sample.test_fold,
        )


def task_view(ds, task: Task, name: str, tiers=None, where: str = "store"):
    """The store ``ds`` as task ``name`` reads it.

    Raises :class:`speechlens.reduce.ReductionError` naming the model (the store's ``model``
    attr) and the task when the task needs frames the store does not hold
    (:func:`speechlens.reduce.check_task` on the store's recorded reduction; ``tiers``: the
    corpus' segment tiers). A frame task on a segment store gets
    :func:`speechlens.store.unit_view` (segments as frames); others get ``ds``.
    """
    red = store.reduction(ds)
    features = {k: red[k] for k in ("layers", "pool", "frame_stride")}
    model = str(ds.attrs.get("model") or where)
    reduce.check_task(model, features, name, task.as_dict(), tiers=tiers)
    return store.unit_view(ds, where) if task.level == "frame" else ds


def load_task(
    store_path,
    utterances: pd.DataFrame,
    segments: pd.DataFrame,
    task,
    name: str | None = None,
) -> tuple:
    """Open a store and gather a task's samples; returns (TaskData, store attrs).

    ``name``: the task's name in errors (default: its source). The TaskData's ``layers`` are
    the store's layer numbers; its ``embeddings`` the store's model embeddings of the samples
    for an utterance-level task (:func:`~.sampling.read_embeddings`; ``{}`` for a frame task
    or a store without them); its ``info`` records the store's ``mode`` and ``reduction``.
    """
    task = resolve_task(task, name)
    ds = store.open_store(store_path)
    store.validate(ds, str(store_path))
    tiers = set(segments["tier"].astype(str))
    view = task_view(ds, task, name or task.source, tiers, str(store_path))
    sample = draw_samples(view, utterances, segments, task)
    X = read_features(view, task.level, sample.index)
    data = TaskData.from_sample(sample, X)
    data.layers = store.layer_numbers(ds)
    if task.level == "utterance":
        data.embeddings = read_embeddings(view, sample.index)
    data.info = {**data.info, "store_mode": store.mode(ds), "reduction": store.reduction(ds)}
    return data, dict(ds.attrs)


def _fit_layer(probe, model, Xl, y, groups, train, test, fold, task, settings) -> dict:
    """Scores of one probe on one layer's (n, feature) float32 array and one fold."""
    if probe == "kmeans":
        n = settings["kmeans_seeds"]
        seeds = [task.seed + fold * n + i for i in range(n)]
        return est.kmeans_scores(Xl[train], Xl[test], y[test], len(np.unique(y)), seeds)
    g = None if groups is None else groups[train]
    return est.scores(y[test], est.fit_predict(probe, model, Xl[train], y[train], Xl[test], g))


def _job(
    X, y, groups, train, test, probe, fold, task, settings, layers, suffix="", embeddings=None
) -> tuple:
    """One (probe, fold, target) over all layers, then each embedding, single-threaded.

    Returns (rows, {layer: (wall s, CPU s)}, {layer: fits that hit their iteration limit}).
    ``X`` is (layer, n, feature); ``layers`` the layer number of each row of ``X`` (the
    ``layer`` of rows and keys); ``suffix`` names the target (``""`` or ``"_control"``);
    ``embeddings`` ``{layer value: (n, embedding_feature)}``, each probed alone after the
    layers (``weighted_sum`` ignores them: its weights are over the layers).
    """
    rows, seconds, capped = [], {}, {}
    name = probe + suffix
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if probe == "weighted_sum":
            t0, c0 = time.perf_counter(), time.process_time()
            model = est.make_probe(probe, task, settings).fit(X[:, train].swapaxes(0, 1), y[train])
            pred = model.predict(X[:, test].swapaxes(0, 1))
            rows += [("all", name, fold, m, v) for m, v in est.scores(y[test], pred).items()]
            rows += [
                (layers[i], name, fold, "layer_weight", float(w))
                for i, w in enumerate(model.layer_weights_)
            ]
            seconds["all"] = (time.perf_counter() - t0, time.process_time() - c0)
            return rows, seconds, capped
        inputs = [(layer, X[i]) for i, layer in enumerate(layers)]
        inputs += list((embeddings or {}).items())
        for layer, values in inputs:
            t0, c0 = time.perf_counter(), time.process_time()
            before = len(caught)
            model = None if probe == "kmeans" else est.make_probe(probe, task, settings)
            Xl = np.asarray(values).astype(np.float32)
            scores = _fit_layer(probe, model, Xl, y, groups, train, test, fold, task, settings)
            rows += [(layer, name, fold, m, v) for m, v in scores.items()]
            seconds[layer] = (time.perf_counter() - t0, time.process_time() - c0)
            n_capped = sum(issubclass(w.category, ConvergenceWarning) for w in caught[before:])
            n_capped += 0 if model is None else est.not_converged(model)
            if probe in est.ITERATIVE:
                rows.append((layer, name, fold, "not_converged", float(n_capped)))
            if n_capped:
                capped[layer] = n_capped
    return rows, seconds, capped


def probe_arrays(data: TaskData, task, settings: Mapping, *, threads: int = 1):
    """Probe every layer (and model embedding) of ``data`` with the task's probes on shared
    CV folds.

    ``task`` a :class:`~.task.Task` or config entry; ``settings`` ``probing.settings``
    (partial: the schema's defaults fill the rest). Returns (table, info): ``table`` a tidy
    DataFrame with columns ``layer, probe, fold, metric, value`` (per-fold rows, then
    ``mean``/``std`` rows over folds, std with ddof=1; ``layer`` the numbers of
    :meth:`TaskData.layer_numbers`, ``embedding:<name>`` for each of ``data.embeddings``
    (every probe but ``weighted_sum``, which weighs the layers), or ``all``; rows sorted by
    probe, then layers, then embeddings), and ``info`` with the folds' sizes,
    the wall and CPU seconds per (probe, layer) summed over folds (keys
    ``"{probe}/{layer}"``) and the fits that hit their iteration limit.
    """
    task = resolve_task(task)
    settings = schema.merge(dict(settings), "probing.settings")
    y = np.asarray(data.y, dtype=str)
    groups = None if data.groups is None else np.asarray(data.groups)
    if data.test_fold is None:
        splits = make_splits(y, groups, task.folds, task.seed)
    else:
        splits = list(PredefinedSplit(data.test_fold).split())
    targets = [("", y)]
    if data.control is not None:
        targets.append(("_control", np.asarray(data.control, dtype=str)))
    jobs = [
        (probe, fold, suffix, target)
        for probe in sorted(task.probes, key=_COST.get)
        for suffix, target in targets
        if not (suffix and probe not in SUPERVISED)
        for fold in range(len(splits))
    ]
    layers = data.layer_numbers()
    embeddings = data.embedding_arrays()
    if embeddings and task.level != "utterance":
        raise ValueError(f"model embeddings {list(embeddings)}: utterance-level tasks only")
    run = delayed(partial(_job, embeddings=embeddings))  # weighted_sum: layers only
    results = Parallel(n_jobs=min(threads, len(jobs)))(
        run(data.X, target, groups, *splits[fold], probe, fold, task, settings, layers, suffix)
        for probe, fold, suffix, target in jobs
    )
    rows = est.baselines(y, splits)
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
                "test_groups": None if groups is None else int(len(set(groups[te]))),
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
    control = table[table["probe"].str.endswith("_control") & ~table["metric"].isin(NOT_SCORES)]
    if control.empty:
        return table
    real = control.assign(probe=control["probe"].str.removesuffix("_control"))
    merged = real.merge(table, on=["layer", "probe", "fold", "metric"], suffixes=("_c", ""))
    sel = merged.assign(
        probe=merged["probe"] + "_selectivity", value=merged["value"] - merged["value_c"]
    )
    return pd.concat([table, sel[table.columns]], ignore_index=True)


def _with_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Append fold ``mean`` and ``std`` rows and sort deterministically: per probe, ``all``,
    then the layers by number, then the embeddings by name."""
    keys = ["layer", "probe", "metric"]
    grouped = table.groupby(keys, sort=False)["value"]
    mean = grouped.mean().reset_index().assign(fold="mean")
    std = grouped.std(ddof=1).reset_index().assign(fold="std")
    out = pd.concat([table, mean, std], ignore_index=True)
    text = out["layer"].astype(str)
    embedding = text.str.startswith(EMBEDDING_PREFIX)
    layer_key = out["layer"].map(
        lambda v: -1 if v == "all" else 2**62 if str(v).startswith(EMBEDDING_PREFIX) else int(v)
    )
    name_key = text.where(embedding, "")
    fold_key = out["fold"].map(lambda v: {"mean": 10**6, "std": 10**6 + 1}.get(v, v))
    out = out.assign(_l=layer_key, _e=name_key, _f=fold_key)
    out = out.sort_values(["probe", "_l", "_e", "metric", "_f"])
    return out.drop(columns=["_l", "_e", "_f"]).reset_index(drop=True)


def _versions() -> dict:
    """Versions of the packages a probe job runs on (torch read from its metadata: a job
    without a torch probe does not import it)."""
    from importlib.metadata import version

    import sklearn

    import speechlens

    return {
        "speechlens": speechlens.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": version("torch"),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


def run_task(
    store_path,
    utterances_tsv,
    segments_tsv,
    task: Mapping | Task,
    settings: Mapping,
    out_tsv,
    *,
    sidecar=None,
    threads: int = 1,
    name: str | None = None,
) -> None:
    """Probe one (store, task) and write the tidy table and its provenance sidecar.

    ``name`` is the task's name in the table (default: the stem of ``out_tsv``, i.e. the
    ``{task}`` of ``probes/{task}.tsv``); ``threads`` the processes probing in parallel.
    Writes ``out_tsv`` (:data:`TABLE`) and, when given, ``sidecar`` (JSON: task and
    settings with defaults, the linear probe's backend, sample counts per class, dropped
    classes, fold sizes, the control task's record, seconds per (probe, layer), the store's
    mode, reduction and layer numbers, the probed embeddings' ``layer`` values, store attrs,
    library versions), each atomically. The task is checked against the corpus tables
    before the store is opened, and against the store's reduction (:func:`task_view`)
    before any sample is drawn.
    """
    out_tsv = Path(out_tsv)
    name = name or out_tsv.stem
    task = resolve_task(task, name)
    settings = schema.merge(dict(settings), "probing.settings")
    utterances, segments = read_tables(utterances_tsv, segments_tsv)
    check_task_sources(task, name, utterances, segments)  # before the store is opened
    data, attrs = load_task(store_path, utterances, segments, task, name)
    table, info = probe_arrays(data, task, settings, threads=threads)
    table.insert(0, "level", task.level)
    table.insert(0, "task", name)
    table.insert(0, "model", str(attrs.get("model", "")))
    table.insert(0, "corpus", str(attrs.get("corpus", "")))
    per_class = pd.Series(data.y).value_counts().sort_index()
    record = {
        "task": name,
        "task_settings": task.as_dict(),
        "probe_settings": settings,
        "samples": int(len(data.y)),
        "samples_per_class": {str(k): int(v) for k, v in per_class.items()},
        "max_per_class": task.max_per_class if task.level == "frame" else None,
        "linear_backend": settings["linear_backend"] if "linear" in task.probes else None,
        "layers": data.layer_numbers(),
        "embeddings": list(data.embedding_arrays()),
        **data.info,
        **info,
        "inputs": {"store": str(store_path), "utterances": str(utterances_tsv)},
        "store_attrs": attrs,
        "versions": _versions(),
        "threads": threads,
    }
    if sidecar is not None:
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    write_table(TABLE, table, out_tsv)
