"""MLP probe whose early stopping validates on held-out *groups* (e.g. speakers).

scikit-learn's ``MLPClassifier(early_stopping=True)`` validates on a random
``validation_fraction`` of the training samples. With frames, a random split puts frames
of one utterance and one speaker on both sides, so the validation score rewards memorising
speakers and the stopping epoch is chosen on leaked data. Here the held-out part is whole
groups (the task's CV group column; :func:`validation_split`), and the loop is
scikit-learn's own: one Adam epoch at a time (``partial_fit``, the optimiser's state and the
shuffling stream carried over), the validation accuracy after each epoch, stop when it has
not improved by ``tol`` for more than ``patience`` epochs, and keep the best epoch's
weights. Without groups every sample is its own group (scikit-learn's behaviour, up to the
stratified draw).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sklearn.neural_network import MLPClassifier


def validation_split(
    y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) index arrays of a training fold, whole groups on each side.

    About ``fraction`` of the groups are held out, stratified by ``y``: the first split of
    ``StratifiedGroupKFold`` with ``round(1 / fraction)`` splits (fewer, at least 2, when
    there are fewer groups or the largest class has fewer members). When no class has 2
    members, stratification is impossible and ``GroupShuffleSplit`` holds out ``fraction``
    of the groups. ``groups`` None: every sample is its own group.
    """
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("MLP early stopping needs at least 2 groups in the training fold")
    largest = int(np.unique(y, return_counts=True)[1].max())
    if largest < 2:
        cv = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        return next(cv.split(np.zeros(len(y)), y, groups))
    n_splits = max(2, min(round(1 / fraction), n_groups, largest))
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # classes rarer than n_splits
        fit, val = next(cv.split(np.zeros(len(y)), y, groups))
    return fit, val


class GroupedEarlyStoppingMLP(ClassifierMixin, BaseEstimator):
    """One-hidden-layer ReLU MLP (Adam, cross-entropy) with group-held-out early stopping.

    ``fit(X, y, groups=None)``: ``X`` (n, feature) float, ``y`` (n,) labels, ``groups``
    (n,) CV groups. After fitting: ``validation_index_`` (rows of ``X`` held out),
    ``validation_scores_`` (accuracy per epoch), ``n_iter_`` (epochs run) and ``converged_``
    (False when ``max_iter`` epochs ran without the stopping rule firing; a
    ``ConvergenceWarning`` is then issued, as scikit-learn does).
    """

    def __init__(
        self,
        hidden=256,
        batch_size=512,
        learning_rate=0.005,
        max_iter=200,
        patience=3,
        validation_fraction=0.1,
        tol=1e-4,
        seed=0,
    ):
        self.hidden = hidden
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.tol = tol
        self.seed = seed

    def fit(self, X, y, groups=None):
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        fit, val = validation_split(y, groups, self.validation_fraction, self.seed)
        self.validation_index_ = val
        mlp = MLPClassifier(
            hidden_layer_sizes=(self.hidden,),
            batch_size=min(self.batch_size, len(fit)),
            learning_rate_init=self.learning_rate,
            random_state=np.random.RandomState(self.seed),  # one stream over all epochs
        )
        best, stale, scores = -np.inf, 0, []
        best_params = None
        self.converged_ = False
        for _ in range(self.max_iter):
            mlp.partial_fit(X[fit], y[fit], classes=self.classes_)
            score = float(np.mean(mlp.predict(X[val]) == y[val]))
            scores.append(score)
            stale = stale + 1 if score < best + self.tol else 0
            if score > best:
                best = score
                best_params = ([c.copy() for c in mlp.coefs_], [b.copy() for b in mlp.intercepts_])
            if stale > self.patience:
                self.converged_ = True
                break
        if not self.converged_:
            warnings.warn(
                f"grouped-early-stopping MLP: {self.max_iter} epochs without the validation "
                "score settling",
                ConvergenceWarning,
                stacklevel=2,
            )
        mlp.coefs_, mlp.intercepts_ = best_params
        self.mlp_ = mlp
        self.n_iter_ = len(scores)
        self.validation_scores_ = scores
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted labels (n,) for ``X`` (n, feature)."""
        return self.mlp_.predict(X)
