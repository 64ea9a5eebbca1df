"""A probing task as a typed value, resolved once from its config entry.

A task's config entry (``probing.tasks.<name>``, schema ``$defs.task``) is a mapping;
:func:`resolve_task` fills the schema's defaults (:func:`speechlens.schema.defaults`, the one
home of every default), checks every value and returns a frozen :class:`Task`. Everything
downstream (sampling, folds, probes) reads the typed task, never the mapping.

:func:`check_task_sources` checks a task against a corpus' tables (tiers of
``segments.tsv``, columns of ``utterances.tsv``); :func:`check_tasks` checks the config's
tasks without a corpus. Both name the config key. :func:`check_task_stores` checks every
task against every model's store settings (``features.pool``: a frame task cannot run on
utterance means).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from speechlens import reduce, schema
from speechlens.labels import SILENCE_POLICIES

LEVELS = ("frame", "utterance")
PROBES = ("linear", "knn", "mlp", "weighted_sum", "kmeans")
SUPERVISED = ("linear", "knn", "mlp", "weighted_sum")

#: The control identity of ``control: true`` (see :mod:`speechlens.probing.control`): the
#: phone's slot in the word tier at frame level, the sentence text at utterance level.
DEFAULT_CONTROL_BY = {"frame": ("word",), "utterance": ("text",)}

#: Task keys that choose where a task runs (which models), not what it computes: they are
#: not part of :class:`Task` and never a job's params (:func:`task_params`).
TARGETING_KEYS = ("models",)


class ProbingError(ValueError):
    """A task cannot be probed on the given store and corpus; the message says why."""


@dataclass(frozen=True)
class Control:
    """The control task's input-side identity: ``by`` names segment tiers (the unit's slot
    in that tier: enclosing segment's label and the unit's position in it) and/or
    utterances columns (the unit's utterance's value), joined in this order."""

    by: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """One probing task (schema ``$defs.task``), defaults filled and values checked.

    ``level``: ``frame`` or ``utterance``; ``source``: a segments tier or an utterances
    column (the labels); ``group_by``: utterances column of the CV groups or None;
    ``probes``: probe names; ``folds``, ``seed``; ``max_per_class``: frame-level cap or
    None; ``boundary_ms`` (ms); ``silence``: ``keep`` or ``drop``; ``knn_k``; ``control``:
    the control task's identity or None; ``where``: ``{column: value(s)}`` or None.
    """

    level: str
    source: str
    group_by: str | None
    probes: tuple[str, ...]
    folds: int
    seed: int
    max_per_class: int | None
    boundary_ms: float
    silence: str
    knn_k: int
    control: Control | None
    where: Mapping | None

    def as_dict(self) -> dict:
        """The task as config data (the sidecar's ``task_settings``)."""
        out = asdict(self)
        out["probes"] = list(self.probes)
        out["control"] = False if self.control is None else {"by": list(self.control.by)}
        out["where"] = None if self.where is None else dict(self.where)
        return out


def _key(name: str | None) -> str:
    return f"config key probing.tasks.{name}" if name else "task"


def default_tasks() -> dict:
    """The shipped tasks (the schema's default ``probing.tasks``), as config entries."""
    return schema.defaults("probing")["tasks"]


def _control(value, level: str, source: str, key: str) -> Control | None:
    if value is None or value is False:
        return None
    if value is True:
        by = DEFAULT_CONTROL_BY[level]
    elif isinstance(value, Mapping) and set(value) <= {"by"}:
        by = value.get("by") or DEFAULT_CONTROL_BY[level]
        if isinstance(by, str) or not all(isinstance(b, str) and b for b in by):
            raise ProbingError(f"{key}.control.by {by!r}: use a list of tiers or columns")
        by = tuple(by)
    else:
        raise ProbingError(f"{key}.control {value!r}: use true, false or {{by: [...]}}")
    if source in by:
        raise ProbingError(
            f"{key}.control.by {list(by)}: names the task's source {source!r}; the control "
            "identity must not be the target (give control.by, e.g. [word] or [text])"
        )
    return Control(by)


def resolve_task(task: Mapping | Task, name: str | None = None) -> Task:
    """The :class:`Task` of a config entry, with the schema's defaults; raises
    :class:`ProbingError` on a bad value (naming ``probing.tasks.<name>`` when given)."""
    if isinstance(task, Task):
        return task
    key = _key(name)
    known = set(schema.subschema("$defs.task")["properties"])
    unknown = set(task) - known
    if unknown:
        raise ProbingError(f"{key}: unknown task keys {sorted(unknown)}")
    out = {"level": None, "source": None, **schema.defaults("$defs.task"), **task_params(task)}
    if out["level"] not in LEVELS:
        raise ProbingError(f"{key}: task level {out['level']!r}: use one of {LEVELS}")
    if not out["source"]:
        raise ProbingError(f"{key}: task needs a label `source` (a tier or an utterances column)")
    probes = list(out["probes"] or [])
    bad = [p for p in probes if p not in PROBES]
    if bad or not probes:
        raise ProbingError(f"{key}: task probes {bad or '[]'}: use some of {PROBES}")
    if out["silence"] not in SILENCE_POLICIES:
        raise ProbingError(f"{key}: task silence {out['silence']!r}: use {SILENCE_POLICIES}")
    if int(out["folds"]) < 2:
        raise ProbingError(f"{key}: task folds must be >= 2")
    if out["where"] is not None and not isinstance(out["where"], Mapping):
        raise ProbingError(
            f"{key}: task where {out['where']!r}: use a mapping {{column: value(s)}}"
        )
    cap = out["max_per_class"]
    return Task(
        level=out["level"],
        source=str(out["source"]),
        group_by=out["group_by"],
        probes=tuple(probes),
        folds=int(out["folds"]),
        seed=int(out["seed"]),
        max_per_class=None if cap is None else int(cap),
        boundary_ms=float(out["boundary_ms"]),
        silence=out["silence"],
        knn_k=int(out["knn_k"]),
        control=_control(out["control"], out["level"], str(out["source"]), key),
        where=out["where"],
    )


def task_params(task: Mapping) -> dict:
    """A task's config entry without its :data:`TARGETING_KEYS`: what a probe job computes
    from (a rule's ``params``), so that probing one more model reruns no finished job."""
    return {k: v for k, v in task.items() if k not in TARGETING_KEYS}


def check_tasks(tasks: Mapping[str, Mapping]) -> dict[str, Task]:
    """Resolve every task of the config (``probing.tasks``) without a corpus; errors name
    ``probing.tasks.<name>``. Returns ``{name: Task}``."""
    return {name: resolve_task(task, name) for name, task in tasks.items()}


def check_task_stores(tasks: Mapping[str, Mapping], features: Mapping[str, Mapping]) -> None:
    """Start-up check: every task of ``tasks`` (``probing.tasks``) can run on the store of
    every model of ``features`` (model name -> its merged ``features`` settings).

    Raises :class:`speechlens.reduce.ReductionError` naming the config keys of the model's
    pool and the task (:func:`speechlens.reduce.check_task`; the tier rule is left to the
    probe job, which knows the corpus' tiers) or :class:`ProbingError` for a bad task.
    """
    resolved = check_tasks(tasks)
    for model, settings in features.items():
        for name, task in resolved.items():
            try:
                reduce.check_task(model, settings, name, task.as_dict())
            except reduce.ReductionError as err:
                raise reduce.ReductionError(
                    f"config keys models.{model}.features.pool and probing.tasks.{name}: {err}"
                ) from err


def check_task_sources(
    task: Mapping | Task, name: str, utterances: pd.DataFrame, segments: pd.DataFrame
) -> None:
    """Raise :class:`ProbingError` naming the config key ``probing.tasks.<name>`` when the
    task's ``source``, ``group_by``, a ``where`` column or a ``control.by`` tier or column is
    missing from the corpus, listing what is there.

    A frame-level ``source`` or ``control.by`` entry is a tier of ``segments`` or a column
    of ``utterances``; an utterance-level ``source``, ``control.by`` entry, ``group_by`` and
    the ``where`` keys are columns of ``utterances``.
    """
    task = resolve_task(task, name)
    key = _key(name)
    tiers = sorted(set(segments["tier"].astype(str)))
    columns = list(utterances.columns)
    source = task.source
    if task.level == "frame" and source not in tiers and source not in columns:
        raise ProbingError(
            f"{key}.source {source!r} is neither a tier of segments.tsv (tiers: {tiers}) "
            f"nor a column of utterances.tsv (columns: {columns})"
        )
    if task.level == "utterance" and source not in columns:
        raise ProbingError(
            f"{key}.source {source!r} is not a column of utterances.tsv (columns: {columns}"
            + (f"; {source!r} is a tier: use level frame)" if source in tiers else ")")
        )
    if task.group_by is not None and task.group_by not in columns:
        raise ProbingError(
            f"{key}.group_by {task.group_by!r} is not a column of utterances.tsv "
            f"(columns: {columns})"
        )
    missing = [c for c in task.where or {} if c not in columns]
    if missing:
        raise ProbingError(
            f"{key}.where: {missing} not columns of utterances.tsv (columns: {columns})"
        )
    if task.control is not None:
        usable = columns if task.level == "utterance" else tiers + columns
        missing = [b for b in task.control.by if b not in usable]
        if missing:
            what = (
                "columns of utterances.tsv"
                if task.level == "utterance"
                else f"tiers of segments.tsv (tiers: {tiers}) nor columns of utterances.tsv"
            )
            raise ProbingError(
                f"{key}.control.by: {missing} are not {what} (columns: {columns}); the "
                "control task needs an input-side identity (e.g. the word tier for phones)"
            )
