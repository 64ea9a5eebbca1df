"""The control task: a seeded random function of an input-side identity that is not the target.

Hewitt & Liang (2019), "Designing and Interpreting Probes with Control Tasks" (EMNLP), give
every *word type* a control label drawn at random from the empirical distribution of the
real labels; the control task can then be solved only by memorising word identity, and a
probe's *selectivity* (real accuracy - control accuracy) says how much of its accuracy comes
from the property rather than from the probe's own capacity. Adapted to frames here: the
type is an input-side **identity** of each sampling unit, never the target label itself.

- Frame tasks: by default the unit's **slot**: the label of the word-tier segment holding
  the unit's midpoint and the unit's position (0-based, in time order) among the units in
  that word, e.g. ``cat#1`` for the /a/ of "cat". The same phone in two slots (``cat#1``,
  ``bat#1``) gets independent control labels; one slot always gets the same label. Units
  whose midpoint lies in no word segment share the slot ``<none>``.
- ``control: {by: [...]}`` names tiers (each gives such a slot) and/or utterances columns
  (each gives the unit's utterance value, e.g. ``text``), joined in order.
- Utterance-level tasks: utterances columns only, by default the sentence ``text``.

Control classes are drawn from the empirical target distribution ``p(c)`` (the classes'
shares of the store's sampling units): each identity ``i`` gets class
``F^-1(u(seed, i))``, the inverse CDF of ``p`` over the sorted classes at a uniform number
``u`` made from a keyed hash (BLAKE2b) of the seed and the identity. So the draw of one
identity depends only on (seed, identity, p): the same on every model of a corpus and
unchanged when other identities come or go.

Deviation from the paper, named: Hewitt & Liang's types are word tokens' word types; here a
type is a slot (or the configured identity), because a frame-level target (the phone) is
not a property of a word type but of a position in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from speechlens import labels as lab

NO_SEGMENT = "<none>"
_SEP = "\x1f"


def slot_parts(units: pd.DataFrame, segments: pd.DataFrame, tier: str) -> np.ndarray:
    """Each unit's slot in ``tier``: ``"{label}#{position}"`` (n_units,) str.

    ``units`` (sorted by utterance and start, as from :func:`speechlens.labels.tier_segments`)
    has ``utterance_id, start_s, end_s`` (s); the enclosing segment of ``tier`` is the one
    holding the unit's midpoint (frame-centre rule); ``position`` counts the units of that
    segment in order from 0. Units in no segment of ``tier`` get :data:`NO_SEGMENT`.
    """
    outer = lab.tier_segments(segments, tier)
    mid = (units["start_s"].to_numpy(float) + units["end_s"].to_numpy(float)) / 2
    row = lab.assign_segments(units["utterance_id"].to_numpy(dtype=object), mid, outer)
    position = pd.Series(row).groupby(row).cumcount().to_numpy()
    label = outer["label"].to_numpy(dtype=str)
    out = np.full(len(units), NO_SEGMENT, dtype=object)
    inside = row >= 0
    out[inside] = [f"{w}#{p}" for w, p in zip(label[row[inside]], position[inside], strict=True)]
    return out.astype(str)


def unit_identities(
    units: pd.DataFrame,
    utterances: pd.DataFrame,
    segments: pd.DataFrame | None,
    by: Sequence[str],
) -> np.ndarray:
    """The control identity of every sampling unit, (n_units,) str.

    ``units`` has ``utterance_id`` (and ``start_s, end_s`` for segment units);
    ``utterances`` is indexed by nothing in particular and has ``utterance_id`` and the
    columns named in ``by``; ``segments`` (all tiers) gives the tiers named in ``by`` (None
    at utterance level). Entries that are tiers give the unit's slot (:func:`slot_parts`),
    others the unit's utterance's column value.
    """
    tiers = set() if segments is None else set(segments["tier"].astype(str))
    by_utt = utterances.set_index("utterance_id")
    unit_utt = units["utterance_id"].to_numpy(dtype=object)
    parts = []
    for name in by:
        if name in tiers:
            parts.append(slot_parts(units, segments, name))
        else:
            parts.append(by_utt[name].loc[unit_utt].astype(str).to_numpy(dtype=str))
    if len(parts) == 1:
        return parts[0].astype(str)
    return np.asarray([_SEP.join(p) for p in zip(*parts, strict=True)], dtype=str)


def _uniform(seed: int, identity: str) -> float:
    """A number in [0, 1) fixed by (seed, identity): a keyed 64-bit BLAKE2b hash."""
    digest = hashlib.blake2b(f"{seed}{_SEP}{identity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def control_labels(
    identities: np.ndarray, distribution: Mapping[str, float], seed: int
) -> np.ndarray:
    """Control label of each sample, (n,) str: the class drawn for its identity.

    ``identities`` (n,) str; ``distribution`` maps every target class to its frequency (the
    empirical target distribution); a class is drawn per identity by the inverse CDF of the
    normalised distribution over the sorted classes at :func:`_uniform` (seed, identity).
    """
    classes = sorted(distribution)
    p = np.asarray([distribution[c] for c in classes], np.float64)
    if not len(classes) or p.sum() <= 0:
        raise ValueError("control task: empty target distribution")
    cdf = np.cumsum(p / p.sum())
    unique, inverse = np.unique(np.asarray(identities, dtype=str), return_inverse=True)
    u = np.asarray([_uniform(seed, i) for i in unique])
    drawn = np.minimum(np.searchsorted(cdf, u, side="right"), len(classes) - 1)
    return np.asarray(classes, dtype=str)[drawn][inverse]


def seen_in_training(identities: np.ndarray, test_fold: np.ndarray) -> list[float]:
    """Per fold, the share of test samples whose identity occurs in the training fold (a
    control identity never seen in training cannot be memorised: near 1 is wanted)."""
    identities = np.asarray(identities, dtype=str)
    out = []
    for fold in np.unique(test_fold):
        test = test_fold == fold
        seen = np.isin(identities[test], identities[~test])
        out.append(round(float(seen.mean()), 4))
    return out
