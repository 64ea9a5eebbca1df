"""Verdicts: what a claim check returns, and the tables of a run it reads.

A verdict is ``agrees`` or ``disagrees`` only when a one-sided exact p-value is at most
:data:`ALPHA` in that direction; otherwise ``inconclusive`` (measured, not enough evidence)
or ``not measured`` (the run has no table for it), each with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.05
MIN_RANDOM_DRAWS = 19
"""Random ablation groups of the typed group's size needed to rank its drop among them: with
``n`` draws the smallest empirical p is ``1 / (n + 1)``, so 19 is the fewest that can reach
:data:`ALPHA`."""
VERDICTS = ("agrees", "disagrees", "inconclusive", "not measured")


@dataclass(frozen=True)
class Verdict:
    """One claim checked on one subject: ``measured`` states the numbers and their spread,
    ``p_value`` the one-sided exact p behind ``verdict`` (:func:`judge`: the claim's
    direction, the opposite one for ``disagrees``; NaN when none), ``reason`` why the
    verdict is what it is."""

    study: str
    claim: str
    subject: str
    measured: str
    verdict: str
    p_value: float
    reason: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} not in {VERDICTS}")


@dataclass
class Results:
    """The tables of one run that the claims read.

    ``probes``: ``{(model, task): probe table}``; ``models``: ``{model: {"num_layers": int,
    "speaker": bool, "random": bool}}`` (``speaker``: a speaker model, i.e. trained for
    utterance-level speaker embeddings); ``ablation``: ``{model: ablation table}``;
    ``saliency``: ``{model: per-token cross-attention vs saliency table}``.
    """

    probes: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    ablation: dict = field(default_factory=dict)
    saliency: dict = field(default_factory=dict)

    def layered(self, random: bool = False) -> list[str]:
        """Models with at least 3 layers (a depth curve), pretrained unless ``random``."""
        return sorted(
            m
            for m, info in self.models.items()
            if info.get("num_layers", 1) >= 3 and bool(info.get("random")) == random
        )


def judge(p_for: float, p_against: float) -> tuple[str, float]:
    """Verdict from the two one-sided p-values, and the p behind it: ``p_for`` (the claim's
    direction) for agrees and inconclusive, ``p_against`` for disagrees; NaN ``p_for``: not
    measured."""
    if np.isnan(p_for):
        return "not measured", p_for
    if p_for <= ALPHA:
        return "agrees", p_for
    if p_against <= ALPHA:
        return "disagrees", p_against
    return "inconclusive", p_for


def spread(values: np.ndarray) -> str:
    values = np.asarray(values, float)
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}"


def missing(study: str, claim: str, subject: str, what: str, measured: str = "") -> Verdict:
    """A *not measured* verdict: this run has no ``what``; ``measured``: what it does have."""
    return Verdict(
        study,
        claim,
        subject,
        measured,
        "not measured",
        float("nan"),
        f"not measured in this run: it has no {what}",
    )
