"""The seed studies' main claims, each a function from result tables to verdicts.

Every claim function takes a :class:`Results` (the tables of one run) and returns one
:class:`Verdict` per subject (a model, or the run). A verdict is ``agrees`` or
``disagrees`` only when a one-sided exact test reaches ``ALPHA`` in that direction;
otherwise ``inconclusive`` (measured, not enough evidence) or ``not measured`` (the run has
no table for it), each with the reason. Sources:

- 2409.03115 (TERA English vs Turkish): head ablation, typed group vs random groups;
- 2509.18010 (Papi et al., cross-attention vs saliency): head / layer / global averages;
- 2309.16937 (SSHR): language ID peaks in middle layers, content (phones) later;
- 2401.17632 (speech vs speaker models): weighted-sum layer weights of the phone task;
- 2410.12948 (what foundation models don't learn): separability vs depth is convex.
"""

from __future__ import annotations

from collections.abc import Callable

from speechlens.findings.attention_claims import (
    average_beats_heads,
    diagonal_heads_matter,
    last_layers_agree_best,
)
from speechlens.findings.probe_claims import (
    language_before_phone,
    separability_convex,
    speaker_models_early,
)
from speechlens.findings.verdict import VERDICTS, Results, Verdict

__all__ = ["CLAIMS", "VERDICTS", "Results", "Verdict"]

CLAIMS: dict[str, Callable[[Results], list[Verdict]]] = {
    "language_before_phone": language_before_phone,
    "speaker_models_early": speaker_models_early,
    "separability_convex": separability_convex,
    "diagonal_heads_matter": diagonal_heads_matter,
    "average_beats_heads": average_beats_heads,
    "last_layers_agree_best": last_layers_agree_best,
}
"""Every claim of the findings page, in page order."""
