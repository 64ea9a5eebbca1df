"""The probe table's contract: its columns, and the ``layer`` values of model embeddings.

A module of its own (no scikit-learn), so that readers of probe tables (figures, findings)
import it without the probing machinery of :mod:`.run`.
"""

from __future__ import annotations

from speechlens.tables import TableSpec

#: The probe table (``results/{corpus}/{model}/probes/{task}.tsv``): one row per (layer,
#: probe, fold, metric); ``layer`` an int (the model's layer number), ``all`` (baselines,
#: the weighted-sum probe's score) or ``embedding:<name>`` (a model embedding, utterance
#: tasks only; read as text); ``fold`` an int, ``mean`` or ``std``.
TABLE = TableSpec(
    name="probe",
    columns=("corpus", "model", "task", "level", "layer", "probe", "fold", "metric", "value"),
    numeric=("value",),
    text=("corpus", "model", "task", "level", "layer", "probe", "fold", "metric"),
    nullable=("value",),
    float_format="%.6f",
)
COLUMNS = list(TABLE.columns)
#: Metrics that are not scores: no selectivity is taken of them.
NOT_SCORES = ("layer_weight", "not_converged")
#: Prefix of the ``layer`` value of a model embedding's rows (``embedding:d_vector``).
EMBEDDING_PREFIX = "embedding:"


def embedding_layer(name: str) -> str:
    """The table's ``layer`` value of the rows of model embedding ``name``."""
    return f"{EMBEDDING_PREFIX}{name}"


__all__ = ["COLUMNS", "EMBEDDING_PREFIX", "NOT_SCORES", "TABLE", "embedding_layer"]
