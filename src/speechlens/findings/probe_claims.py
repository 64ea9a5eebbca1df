"""Claims about layer curves of the probe tables (SSHR, 2401.17632, 2410.12948)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from speechlens.findings import stats
from speechlens.findings.verdict import Results, Verdict, judge, missing, spread

# ---------------------------------------------------------------------------- SSHR


def language_before_phone(res: Results, probe: str = "linear", metric: str = "macro_f1"):
    """SSHR (2309.16937): language information peaks in middle layers, phone information
    later. Per model: per-fold peak depth of the language task (``language_frame`` if run,
    else ``language``) vs the ``phone`` task; exact rank test that language peaks earlier.
    ``disagrees`` also when language peaks significantly later."""
    claim = "language information peaks in middle layers, phone information later"
    out = []
    for model in res.layered():
        lang = res.probes.get((model, "language_frame"), res.probes.get((model, "language")))
        phone = res.probes.get((model, "phone"))
        if lang is None or phone is None:
            out.append(
                missing("language_vs_content_layers", claim, model, "language or phone probe")
            )
            continue
        a = stats.peak_depths(stats.fold_curves(lang, probe, metric))
        b = stats.peak_depths(stats.fold_curves(phone, probe, metric))
        p, q = stats.rank_test_less(a, b), stats.rank_test_less(b, a)
        verdict, p_verdict = judge(p, q)
        middle = 0.2 <= float(np.median(a)) <= 0.8 if len(a) else False
        reason = (
            f"exact rank test over folds ({probe}, {metric}): p={p:.3g} (earlier), {q:.3g} (later)"
        )
        if verdict == "agrees" and not middle:
            verdict, reason = "inconclusive", reason + "; language peaks earlier but not mid-depth"
        out.append(
            Verdict(
                "language_vs_content_layers",
                claim,
                model,
                f"peak depth: language {spread(a)}, phone {spread(b)} (0 = input, 1 = last layer)",
                verdict,
                p_verdict,
                reason,
            )
        )
    return out or [missing("language_vs_content_layers", claim, "run", "a layered model")]


# ------------------------------------------------------------- speech vs speaker models


def layer_weight_centre(table: pd.DataFrame) -> np.ndarray:
    """Per fold, the centre of mass (relative depth) of the weighted-sum probe's softmax
    layer weights (SUPERB weighted sum, as read by 2401.17632), shape ``(folds,)``."""
    rows = table[
        (table["probe"] == "weighted_sum")
        & (table["metric"] == "layer_weight")
        & ~table["fold"].astype(str).isin(stats.SUMMARY_FOLDS)
    ]
    if rows.empty:
        return np.array([])
    curves = rows.assign(layer=rows["layer"].astype(int)).pivot_table(
        index="fold", columns="layer", values="value"
    )
    layers = np.asarray(curves.columns, int)
    depth = stats.relative_depth(layers, int(layers.max()) + 1)
    weights = curves.to_numpy(float)
    return (weights * depth).sum(1) / weights.sum(1)


def speaker_models_early(res: Results):
    """2401.17632: speaker models carry phone information in early layers, speech models in
    later ones. Per-fold centre of mass of the phone task's weighted-sum layer weights (the
    paper's reading), speaker models vs speech models pooled; exact rank test."""
    claim = "speaker models carry phone information in early layers, speech models in later ones"
    study = "speech_vs_speaker_models"
    groups = {True: [], False: []}
    names = {True: [], False: []}
    for model in res.layered():
        table = res.probes.get((model, "phone"))
        if table is None:
            continue
        centres = layer_weight_centre(table)
        if len(centres):
            speaker = bool(res.models[model].get("speaker"))
            groups[speaker].append(centres)
            names[speaker].append(model)
    if not names[True] or not names[False]:
        return [
            missing(
                study, claim, "run", "weighted-sum phone probes of a speaker and a speech model"
            )
        ]
    a, b = np.concatenate(groups[True]), np.concatenate(groups[False])
    p, q = stats.rank_test_less(a, b), stats.rank_test_less(b, a)
    return [
        Verdict(
            study,
            claim,
            f"speaker {', '.join(names[True])} vs speech {', '.join(names[False])}",
            f"layer-weight centre (relative depth): speaker {spread(a)}, speech {spread(b)}",
            *judge(p, q),
            f"exact rank test over folds: p={p:.3g} (speaker earlier), {q:.3g} (later)",
        )
    ]


# ----------------------------------------------------- what foundation models miss


def separability_convex(res: Results, probe: str = "knn", metric: str = "macro_f1"):
    """2410.12948: separability vs depth is convex ("some models exhibit a convex
    relationship between the separability of the learned representations and model
    depth"). Read literally: per fold, the quadratic coefficient of the ``probe``'s score vs
    relative depth is positive; exact sign test over folds, per model and task."""
    claim = "separability vs depth is convex"
    study = "what_foundation_models_miss"
    out = []
    for (model, task), table in sorted(res.probes.items()):
        if model not in res.layered():
            continue
        a = stats.curvature(stats.fold_curves(table, probe, metric))
        if len(a) == 0:
            continue
        p_pos, p_neg = stats.sign_test(a)
        out.append(
            Verdict(
                study,
                claim,
                f"{model} / {task}",
                f"curvature of {probe} {metric} vs depth: {spread(a)} over {len(a)} folds",
                *judge(p_pos, p_neg),
                f"exact sign test over folds: p={p_pos:.3g} (convex), {p_neg:.3g} (concave)",
            )
        )
    return out or [missing(study, claim, "run", f"{probe} probes of a layered model")]
