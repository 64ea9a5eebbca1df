"""Claims about attention: head ablation (2409.03115), cross-attention vs saliency
(2509.18010)."""

from __future__ import annotations

import pandas as pd

from speechlens.findings import stats
from speechlens.findings.verdict import MIN_RANDOM_DRAWS, Results, Verdict, judge, missing, spread

# ---------------------------------------------------------------- head ablation


def diagonal_heads_matter(res: Results, head_type: str = "diagonal", metric: str = "macro_f1"):
    """2409.03115: diagonal heads matter most for phone classification. Read from the head
    ablation's summary (:mod:`speechlens.attention.summary`, the one home of the statistic):
    the fold-mean score change of ablating all ``head_type`` heads, its rank among random
    groups of the same size and its empirical one-sided p-value. At least
    :data:`~speechlens.findings.verdict.MIN_RANDOM_DRAWS` draws are needed for p <= 0.05."""
    claim = f"{head_type} heads matter most for phone classification"
    study = "attention_heads_en_tr"
    out = []
    for model, table in sorted(res.ablation.items()):
        rows = table[(table["kind"] == "type") & (table["type"] == head_type)]
        if metric in set(rows["metric"]):
            rows = rows[rows["metric"] == metric]
        if rows.empty:
            out.append(
                missing(study, claim, model, f"{head_type} heads (none was typed {head_type})")
            )
            continue
        for r in rows.itertuples():
            n = int(r.control_draws) if r.control_draws == r.control_draws else 0
            subject = f"{model} (layer {int(r.layer)}, {r.metric})"
            measured = (
                f"Δ {r.delta_mean:+.3f} ± {r.delta_sd:.3f} over folds ({int(r.n_heads)} heads) vs "
                f"random {r.control_mean:+.3f} ± {r.control_sd:.3f} over {n} draws"
            )
            if n < MIN_RANDOM_DRAWS:
                out.append(
                    Verdict(
                        study,
                        claim,
                        subject,
                        measured,
                        "inconclusive",
                        float(r.p_value),
                        f"{n} random draws: the smallest reachable p is {1 / (n + 1):.2f}; "
                        f"{MIN_RANDOM_DRAWS} needed for p <= 0.05",
                    )
                )
                continue
            p_against = (n + 2 - float(r.rank)) / (n + 1)  # ranked from the smallest drop
            out.append(
                Verdict(
                    study,
                    claim,
                    subject,
                    measured + f"; rank {int(r.rank)} of {n + 1}",
                    *judge(float(r.p_value), p_against),
                    f"empirical one-sided p over {n} random groups of the same size: "
                    f"{float(r.p_value):.3g} (larger drop), {p_against:.3g} (smaller)",
                )
            )
    return out or [missing(study, claim, "run", "a head-ablation summary")]


# ------------------------------------------------------- cross-attention vs saliency


PREFERRED_METHODS = ("spes", "gradient_x_input")
"""Saliency the claims compare attention with: SPES, the reference of 2509.18010, and
gradient x input. Each one the run has gets its own verdict: SPES is often run on fewer
utterances (it costs n_masks forward passes each), so its verdict carries less evidence."""


def saliency_methods(table: pd.DataFrame, method: str | None = None) -> list[str]:
    """``[method]`` if given, else those of :data:`PREFERRED_METHODS` that ``table`` has rows
    of, in that order (``["spes"]`` if neither, reported as not measured)."""
    if method is not None:
        return [method]
    present = set(table["method"])
    return [m for m in PREFERRED_METHODS if m in present] or ["spes"]


def _per_utterance(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Mean r per (utterance, layer, head) of one saliency method: tokens of an utterance
    are not independent, so utterances are the unit of the tests."""
    sub = table[table["method"] == method].dropna(subset=["pearson_r"])
    return sub.groupby(["utterance_id", "layer", "head"], sort=True)["pearson_r"].mean()


def crossfit_best_head(per_utt: pd.Series) -> pd.Series:
    """Per utterance, the r of the single head chosen on the *other* half of the utterances
    (halves by sorted utterance order, even/odd), so choice and report never share data.
    Empty with fewer than 2 utterances: no half is left to report on."""
    heads = per_utt[
        (per_utt.index.get_level_values("head").astype(str) != "mean")
        & (per_utt.index.get_level_values("layer").astype(str) != "all")
    ]
    utts = sorted(set(heads.index.get_level_values("utterance_id")))
    halves = [set(utts[0::2]), set(utts[1::2])]
    out = {}
    for pick, report in ((0, 1), (1, 0)):
        chosen = heads[heads.index.get_level_values("utterance_id").isin(halves[pick])]
        if chosen.empty:
            continue
        best = chosen.groupby(["layer", "head"]).mean().idxmax()
        for u in halves[report]:
            key = (u, *best)
            if key in heads.index:
                out[u] = heads.loc[key]
    return pd.Series(out, dtype=float)


SALIENCY_STUDY = "cross_attention_saliency"


def _each_model_and_method(res: Results, method: str | None, claim: str, one) -> list[Verdict]:
    """``one(study, claim, subject, table, method)`` for each model's saliency table and
    each of its :func:`saliency_methods` (subject ``model / method``)."""
    out = [
        one(SALIENCY_STUDY, claim, f"{model} / {used}", table, used)
        for model, table in sorted(res.saliency.items())
        for used in saliency_methods(table, method)
    ]
    return out or [missing(SALIENCY_STUDY, claim, "run", "a cross-attention vs saliency table")]


def average_beats_heads(res: Results, method: str | None = None):
    """2509.18010: averaging cross-attention over heads and layers agrees better with
    saliency than any single head. Per utterance: r of the global average minus r of the
    cross-fitted best single head; exact sign test over utterances. One verdict per model
    and saliency method (``method``: that one only; None: :func:`saliency_methods`)."""
    claim = (
        "averaging cross-attention over heads and layers agrees better with saliency "
        "than any single head"
    )
    return _each_model_and_method(res, method, claim, _average_vs_best_head)


def _average_vs_best_head(study, claim, subject, table, used) -> Verdict:
    """:func:`average_beats_heads` for one model and one saliency method."""
    per_utt = _per_utterance(table, used)
    if per_utt.empty:
        return missing(study, claim, subject, f"{used} saliency")
    glob = per_utt[per_utt.index.get_level_values("layer").astype(str) == "all"]
    glob = glob.groupby("utterance_id").mean()
    best = crossfit_best_head(per_utt)
    if best.empty:  # one half of the utterances chooses the head, the other reports it
        return missing(
            study,
            claim,
            subject,
            f"cross-fitted best head: it needs at least 2 utterances (one chooses the "
            f"head, the other reports it); {used} has {len(glob)}",
            measured=f"r global {glob.mean():.3f} over {len(glob)} utterance ({used})",
        )
    diff = (glob - best).dropna()
    p_pos, p_neg = stats.sign_test(diff.to_numpy())
    return Verdict(
        study,
        claim,
        subject,
        f"r global {glob.mean():.3f} vs cross-fitted best head {best.mean():.3f}; "
        f"difference {spread(diff.to_numpy())} over {len(diff)} utterances ({used})",
        *judge(p_pos, p_neg),
        f"exact sign test over utterances: p={p_pos:.3g} (claim), {p_neg:.3g} (opposite)",
    )


def last_layers_agree_best(res: Results, method: str | None = None):
    """2509.18010: the last decoder layers agree best with saliency. Per utterance: r of the
    layer average over the last third of the decoder layers minus that over the others;
    exact sign test over utterances. One verdict per model and saliency method."""
    return _each_model_and_method(
        res, method, "the last decoder layers agree best", _last_vs_earlier_layers
    )


def _last_vs_earlier_layers(study, claim, subject, table, used) -> Verdict:
    """:func:`last_layers_agree_best` for one model and one saliency method."""
    per_utt = _per_utterance(table, used)
    layers = per_utt[
        (per_utt.index.get_level_values("head").astype(str) == "mean")
        & (per_utt.index.get_level_values("layer").astype(str) != "all")
    ]
    if layers.empty:
        return missing(study, claim, subject, f"{used} saliency")
    frame = layers.reset_index().assign(layer=lambda d: d["layer"].astype(int))
    n = frame["layer"].max() + 1
    last = frame["layer"] >= n - max(1, n // 3)
    by = frame.groupby(["utterance_id", last])["pearson_r"].mean().unstack()
    diff = (by[True] - by[False]).dropna().to_numpy()
    p_pos, p_neg = stats.sign_test(diff)
    return Verdict(
        study,
        claim,
        subject,
        f"r last third − earlier layers: {spread(diff)} over {len(diff)} utterances ({used})",
        *judge(p_pos, p_neg),
        f"exact sign test over utterances: p={p_pos:.3g} (claim), {p_neg:.3g} (opposite)",
    )
