"""Cross-validation folds (scikit-learn splitters), drawn on sampling units, not on frames.

One set of folds serves every layer and probe of a task. The splitter runs over the
sampling *units* of the store's utterances (segments, or utterances for utterance-level
tasks), which fixes the test fold of every CV group (:func:`group_folds`); each sample is
then tested in its group's fold (``PredefinedSplit``). Units do not depend on the frame
grid, so all models of a corpus get the same folds.

- grouped (``group_by`` set, or any frame-level task): ``StratifiedGroupKFold``; frame
  groups are the ``group_by`` values of the frames' utterances, or the utterances
  themselves when ``group_by`` is null;
- utterance-level with ``group_by: null``: ``StratifiedKFold`` over utterances.

The MLP's early stopping holds out whole groups of a training fold in the same way
(:class:`speechlens.probes.grouped_mlp.GroupedEarlyStoppingMLP`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


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


def group_folds(unit: pd.DataFrame, *, grouped: bool, folds: int, seed: int) -> dict:
    """The test fold of every CV group, drawn on the corpus units (not on frames).

    ``unit`` has one row per sampling unit (segment or utterance) with ``label`` and
    ``group``; grouped: ``StratifiedGroupKFold`` over units by group; else (every unit its
    own group) ``StratifiedKFold``. Returns ``{group: fold}``.
    """
    splits = make_splits(
        unit["label"].to_numpy(str),
        unit["group"].to_numpy(str) if grouped else None,
        folds,
        seed,
    )
    groups = unit["group"].to_numpy(str)
    fold_of = {}
    for fold, (_, test) in enumerate(splits):
        fold_of.update(dict.fromkeys(groups[test], fold))
    return fold_of
