"""Claims about attention: head ablation (2409.03115), cross-attention vs saliency
(2509.18010)."""

from __future__ import annotations

import pandas as pd

from speechlens.findings import stats
from speechlens.findings.verdict import MIN_RANDOM_DRAWS, Results, Verdict, decide, missing, spread

# ---------------------------------------------------------------- head ablation


def diagonal_heads_matter(res: Results, head_type: str = "diagonal"):
    """2409.03115: diagonal heads matter most for phone classification. The mean-over-folds
    score change of ablating all ``head_type`` heads, ranked among random groups of the same
    size (empirical one-sided p; at least :data:`MIN_RANDOM_DRAWS` draws needed)."""
    claim = f"{head_type} heads matter most for phone classification"
    study = "attention_heads_en_tr"
    out = []
    for model, table in sorted(res.ablation.items()):
        mean = table[(table["fold"].astype(str) == "mean")]
        typed = mean[(mean["kind"] == "type") & (mean["type"] == head_type)]
        if typed.empty:
            out.append(missing(study, claim, model, f"a {head_type} head group (none typed)"))
            continue
        size = int(typed["n_heads"].iloc[0])
        delta = float(typed["delta"].mean())
        random = mean[(mean["kind"] == "random") & (mean["n_heads"].astype(int) == size)]
        controls = random.groupby("group")["delta"].mean().to_numpy()
        versus = spread(controls) if len(controls) else "none"
        measured = f"Δ {delta:+.3f} ({size} heads) vs random {versus}"
        if len(controls) < MIN_RANDOM_DRAWS:
            out.append(
                Verdict(
                    study,
                    claim,
                    model,
                    measured,
                    "inconclusive",
                    float("nan"),
                    f"{len(controls)} random draws; {MIN_RANDOM_DRAWS} needed to rank the drop",
                )
            )
            continue
        rank, p = stats.empirical_rank_p(delta, controls)
        _, p_against = stats.empirical_rank_p(-delta, -controls)
        out.append(
            Verdict(
                study,
                claim,
                model,
                measured + f"; rank {rank} of {len(controls) + 1}",
                decide(p, p_against),
                p,
                f"empirical one-sided p over {len(controls)} random draws",
            )
        )
    return out or [missing(study, claim, "run", "a head-ablation table")]


# ------------------------------------------------------- cross-attention vs saliency


def _per_utterance(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Mean r per (utterance, layer, head) of one saliency method: tokens of an utterance
    are not independent, so utterances are the unit of the tests."""
    sub = table[table["method"] == method].dropna(subset=["pearson_r"])
    return sub.groupby(["utterance_id", "layer", "head"], sort=True)["pearson_r"].mean()


def crossfit_best_head(per_utt: pd.Series) -> pd.Series:
    """Per utterance, the r of the single head chosen on the *other* half of the utterances
    (halves by sorted utterance order, even/odd), so choice and report never share data."""
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


def average_beats_heads(res: Results, method: str = "spes"):
    """2509.18010: averaging cross-attention over heads and layers agrees better with
    saliency than any single head. Per utterance: r of the global average minus r of the
    cross-fitted best single head; exact sign test over utterances."""
    claim = (
        "averaging cross-attention over heads and layers agrees better with saliency "
        "than any single head"
    )
    study = "cross_attention_saliency"
    out = []
    for model, table in sorted(res.saliency.items()):
        per_utt = _per_utterance(table, method)
        if per_utt.empty:
            out.append(missing(study, claim, model, f"{method} saliency"))
            continue
        best = crossfit_best_head(per_utt)
        glob = per_utt[per_utt.index.get_level_values("layer").astype(str) == "all"]
        glob = glob.groupby("utterance_id").mean()
        diff = (glob - best).dropna()
        p_pos, p_neg = stats.sign_test(diff.to_numpy())
        out.append(
            Verdict(
                study,
                claim,
                model,
                f"r global {glob.mean():.3f} vs cross-fitted best head {best.mean():.3f}; "
                f"difference {spread(diff.to_numpy())} over {len(diff)} utterances ({method})",
                decide(p_pos, p_neg),
                p_pos,
                f"exact sign test over utterances: p={p_pos:.3g}",
            )
        )
    return out or [missing(study, claim, "run", "a cross-attention vs saliency table")]


def last_layers_agree_best(res: Results, method: str = "spes"):
    """2509.18010: the last decoder layers agree best with saliency. Per utterance: r of the
    layer average over the last third of the decoder layers minus that over the others;
    exact sign test over utterances."""
    claim = "the last decoder layers agree best"
    study = "cross_attention_saliency"
    out = []
    for model, table in sorted(res.saliency.items()):
        per_utt = _per_utterance(table, method)
        layers = per_utt[
            (per_utt.index.get_level_values("head").astype(str) == "mean")
            & (per_utt.index.get_level_values("layer").astype(str) != "all")
        ]
        if layers.empty:
            out.append(missing(study, claim, model, f"{method} saliency"))
            continue
        frame = layers.reset_index().assign(layer=lambda d: d["layer"].astype(int))
        n = frame["layer"].max() + 1
        last = frame["layer"] >= n - max(1, n // 3)
        by = frame.groupby(["utterance_id", last])["pearson_r"].mean().unstack()
        diff = (by[True] - by[False]).dropna().to_numpy()
        p_pos, p_neg = stats.sign_test(diff)
        out.append(
            Verdict(
                study,
                claim,
                model,
                f"r last third − earlier layers: {spread(diff)} "
                f"over {len(diff)} utterances ({method})",
                decide(p_pos, p_neg),
                p_pos,
                f"exact sign test over utterances: p={p_pos:.3g}",
            )
        )
    return out or [missing(study, claim, "run", "a cross-attention vs saliency table")]
