"""Cross-validated probing of every layer of a feature store, without leakage.

One concern per module, data flowing one way:

- :mod:`.task`: a task's config entry -> a typed :class:`Task` (defaults from the schema),
  checked against the corpus tables (:func:`check_task_sources`);
- :mod:`.control`: the control task (Hewitt & Liang 2019, adapted to frames): a seeded
  random function of an input-side identity that is not the target (by default a phone's
  slot: word type and position in the word), classes drawn from the target distribution;
- :mod:`.folds`: CV folds drawn on sampling units (speakers/utterances never on both sides);
- :mod:`.sampling`: the samples of a task on a store (a typed :class:`Sample`: labels,
  groups, test folds, control labels) and their features;
- :mod:`.estimators`: the probes (linear, knn, mlp, weighted_sum, kmeans) and baselines;
- :mod:`.table`: the probe table's columns (:data:`TABLE`);
- :mod:`.run`: the jobs, the probe table and its sidecar
  (:func:`run_task`, the workflow's entry point; :func:`probe_arrays` on arrays), on every
  kind of store (frame, segment, utterance: :func:`task_view`); utterance-level tasks also
  probe the model's own utterance embeddings (``layer`` ``embedding:<name>``);
  :func:`check_task_stores` checks the config's tasks against each model's store settings.
"""

from speechlens.lazy import lazy_getattr
from speechlens.probing.control import control_labels, unit_identities
from speechlens.probing.table import COLUMNS, EMBEDDING_PREFIX, TABLE, embedding_layer
from speechlens.probing.task import (
    LEVELS,
    PROBES,
    SUPERVISED,
    Control,
    ProbingError,
    Task,
    check_task_sources,
    check_task_stores,
    check_tasks,
    default_tasks,
    resolve_task,
    task_params,
)

# Imported on first use (PEP 562): they import scikit-learn, which the workflow's start-up
# (config checks through .task) does not need. speechlens.codeversion counts these module
# names as imports, so a code edit in them still reruns the rules that use this package.
_LAZY = {
    "speechlens.probing.estimators": ("make_probe",),
    "speechlens.probing.folds": ("group_folds", "make_splits"),
    "speechlens.probing.run": (
        "TaskData",
        "load_task",
        "probe_arrays",
        "run_task",
        "task_view",
    ),
    "speechlens.probing.sampling": (
        "Sample",
        "draw_samples",
        "frame_samples",
        "read_embeddings",
        "read_features",
        "utterance_samples",
        "where_mask",
    ),
}
__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = [  # the eager names above and the lazy ones of _LAZY
    "COLUMNS",
    "EMBEDDING_PREFIX",
    "LEVELS",
    "PROBES",
    "SUPERVISED",
    "TABLE",
    "Control",
    "ProbingError",
    "Sample",
    "Task",
    "TaskData",
    "check_task_sources",
    "check_task_stores",
    "check_tasks",
    "control_labels",
    "default_tasks",
    "draw_samples",
    "embedding_layer",
    "frame_samples",
    "group_folds",
    "load_task",
    "make_probe",
    "make_splits",
    "probe_arrays",
    "read_embeddings",
    "read_features",
    "resolve_task",
    "run_task",
    "task_params",
    "task_view",
    "unit_identities",
    "utterance_samples",
    "where_mask",
]
