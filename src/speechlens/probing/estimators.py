"""The probes and baselines, each fitted inside a training fold only.

- ``linear``: ``StandardScaler`` + multinomial ``LogisticRegression`` (lbfgs, float32) with
  a fixed ``C`` (settings ``linear_c``: on standardised features and >= 1000 training
  samples a weak L2 penalty; no inner CV, to keep the grid cheap) and ``linear_max_iter``
  lbfgs iterations (set so that the default run's fits converge; fits that stop at the
  limit are counted per layer in the table, metric ``not_converged``). With
  ``linear_backend: torch`` the same objective is minimised by full-batch L-BFGS in torch
  (:class:`~speechlens.probes.linear_torch.TorchLogisticRegression`, standardisation
  inside, on ``linear_device``); a fit that ends with its largest gradient entry above the
  tolerance counts as ``not_converged``;
- ``knn``: ``StandardScaler`` + ``KNeighborsClassifier`` (cosine, brute force, ``knn_k``);
- ``mlp``: ``StandardScaler`` + one hidden ReLU layer, Adam, early stopping on whole CV
  groups of the training fold
  (:class:`~speechlens.probes.grouped_mlp.GroupedEarlyStoppingMLP`);
- ``weighted_sum``: :class:`~speechlens.probes.weighted_sum.WeightedSumClassifier` over all
  layers at once;
- ``kmeans``: ``KMeans`` (k = number of classes, standardised features) fitted on the
  training fold without labels; held-out samples are assigned to the nearest centroid and
  scored by NMI and AMI against their labels, averaged over ``kmeans_seeds`` seeds.

Baselines on the same folds: ``chance`` (the exact expected score of guessing from the
training fold's class distribution) and ``majority`` (``DummyClassifier``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    adjusted_mutual_info_score,
    f1_score,
    normalized_mutual_info_score,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from speechlens.probes.grouped_mlp import GroupedEarlyStoppingMLP
from speechlens.probing.task import ProbingError, Task

#: Probes whose fits can stop at an iteration limit (counted as ``not_converged`` rows).
ITERATIVE = ("linear", "mlp")
#: Solvers of the ``linear`` probe (setting ``linear_backend``).
LINEAR_BACKENDS = ("sklearn", "torch")


def make_probe(name: str, task: Task, settings: dict):
    """A fresh estimator for probe ``name`` (see the module docstring); ``settings`` is
    ``probing.settings`` with the schema's defaults filled."""
    seed = task.seed
    if name == "linear" and settings["linear_backend"] == "torch":
        from speechlens.probes.linear_torch import TorchLogisticRegression  # torch: on use

        return TorchLogisticRegression(
            C=settings["linear_c"],
            max_iter=settings["linear_max_iter"],
            device=settings["linear_device"],
            threads=1,  # one job per process, as the sklearn probe (threadpool_limits(1))
        )
    if name == "linear":
        if settings["linear_backend"] not in LINEAR_BACKENDS:
            raise ProbingError(
                f"probing.settings.linear_backend {settings['linear_backend']!r}: use one "
                f"of {LINEAR_BACKENDS}"
            )
        clf = LogisticRegression(C=settings["linear_c"], max_iter=settings["linear_max_iter"])
    elif name == "knn":
        clf = KNeighborsClassifier(n_neighbors=task.knn_k, metric="cosine", algorithm="brute")
    elif name == "mlp":
        clf = GroupedEarlyStoppingMLP(
            hidden=settings["mlp_hidden"],
            batch_size=settings["mlp_batch_size"],
            learning_rate=settings["mlp_learning_rate"],
            max_iter=settings["mlp_max_iter"],
            patience=settings["mlp_patience"],
            validation_fraction=0.1,
            seed=seed,
        )
    elif name == "weighted_sum":
        from speechlens.probes.weighted_sum import WeightedSumClassifier  # torch: on use

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


def not_converged(model) -> int:
    """1 when a fitted torch probe ended above its gradient tolerance (it records
    ``converged_``), else 0; scikit-learn fits report theirs as ``ConvergenceWarning``."""
    return int(not getattr(model, "converged_", True))


def fit_predict(name: str, est, X_train, y_train, X_test, groups_train=None) -> np.ndarray:
    """Fit ``est`` (from :func:`make_probe`) on the training fold and predict the test fold;
    the MLP gets the training fold's CV groups for its early-stopping split."""
    if name == "mlp":
        step = est.steps[-1][0]
        return est.fit(X_train, y_train, **{f"{step}__groups": groups_train}).predict(X_test)
    return est.fit(X_train, y_train).predict(X_test)


def scores(y_true, y_pred) -> dict:
    """Accuracy and macro-F1 of predictions."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def kmeans_scores(X_train, X_test, y_test, n_classes: int, seeds: list[int]) -> dict:
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


def chance_scores(y_train: np.ndarray, y_test: np.ndarray) -> dict:
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


def baselines(y: np.ndarray, splits: list) -> list:
    """``chance`` and ``majority`` (the training fold's most frequent class) rows
    ``(layer, probe, fold, metric, value)`` for every fold."""
    rows = []
    for fold, (train, test) in enumerate(splits):
        rows += [("all", "chance", fold, m, v) for m, v in chance_scores(y[train], y[test]).items()]
        dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), y[train])
        pred = dummy.predict(np.zeros((len(test), 1)))
        rows += [("all", "majority", fold, m, v) for m, v in scores(y[test], pred).items()]
    return rows
