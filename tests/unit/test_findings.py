"""Findings verdicts: tables built so that each claim holds, fails, or lacks evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens.findings import stats
from speechlens.findings.claims import CLAIMS, Results
from speechlens.findings.verdict import MIN_RANDOM_DRAWS, judge


def probe_table(curve, probe="linear", metric="macro_f1", folds=5, noise=0.005, seed=0):
    """A probe table whose per-fold layer curves are ``curve`` plus small noise."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "layer": str(layer),
            "probe": probe,
            "fold": str(f),
            "metric": metric,
            "value": v + noise * rng.standard_normal(),
        }
        for f in range(folds)
        for layer, v in enumerate(curve)
    ]
    table = pd.DataFrame(rows)
    summary = table.groupby(["layer", "probe", "metric"])["value"].mean().reset_index()
    return pd.concat([table, summary.assign(fold="mean")], ignore_index=True)


def bump(n, peak):
    """A curve over ``n`` layers with its maximum at layer ``peak``."""
    return [1.0 - abs(layer - peak) / n for layer in range(n)]


def layer_weights(n, centre):
    """Weighted-sum layer-weight rows peaked around ``centre`` (a layer index)."""
    w = np.exp(-((np.arange(n) - centre) ** 2))
    w /= w.sum()
    return pd.DataFrame(
        [
            {
                "layer": str(layer),
                "probe": "weighted_sum",
                "fold": str(f),
                "metric": "layer_weight",
                "value": w[layer] * (1 + 0.01 * f),
            }
            for f in range(5)
            for layer in range(n)
        ]
    )


def verdicts(name, res):
    return {v.subject: v for v in CLAIMS[name](res)}


def test_language_before_phone_agrees_and_disagrees():
    models = {"m": {"num_layers": 9}}
    res = Results(
        probes={
            ("m", "language"): probe_table(bump(9, 4)),
            ("m", "phone"): probe_table(bump(9, 8)),
        },
        models=models,
    )
    v = verdicts("language_before_phone", res)["m"]
    assert v.verdict == "agrees" and v.p_value < 0.05
    res.probes[("m", "language")], res.probes[("m", "phone")] = (
        res.probes[("m", "phone")],
        res.probes[("m", "language")],
    )
    v = verdicts("language_before_phone", res)["m"]
    assert v.verdict == "disagrees" and v.p_value < 0.05  # the p behind it: the opposite test


def test_language_before_phone_inconclusive_on_equal_peaks_and_not_measured():
    res = Results(
        probes={
            ("m", "language"): probe_table(bump(9, 5), seed=1),
            ("m", "phone"): probe_table(bump(9, 5), seed=2),
        },
        models={"m": {"num_layers": 9}},
    )
    assert verdicts("language_before_phone", res)["m"].verdict == "inconclusive"
    res = Results(probes={("m", "phone"): probe_table(bump(9, 5))}, models={"m": {"num_layers": 9}})
    v = verdicts("language_before_phone", res)["m"]
    assert v.verdict == "not measured" and "not measured in this run" in v.reason


def test_random_init_and_spectral_models_are_left_out():
    res = Results(
        probes={
            ("r", "language"): probe_table(bump(9, 4)),
            ("r", "phone"): probe_table(bump(9, 8)),
        },
        models={"r": {"num_layers": 9, "random": True}, "s": {"num_layers": 1}},
    )
    assert set(verdicts("language_before_phone", res)) == {"run"}


def test_speaker_models_early():
    models = {"spk": {"num_layers": 5, "speaker": True}, "asr": {"num_layers": 7}}
    res = Results(
        probes={("spk", "phone"): layer_weights(5, 1), ("asr", "phone"): layer_weights(7, 6)},
        models=models,
    )
    (v,) = CLAIMS["speaker_models_early"](res)
    assert v.verdict == "agrees" and "spk" in v.subject
    res.probes[("spk", "phone")] = layer_weights(5, 4)
    res.probes[("asr", "phone")] = layer_weights(7, 1)
    (v,) = CLAIMS["speaker_models_early"](res)
    assert v.verdict == "disagrees"


def test_layer_weight_centre_is_the_weighted_mean_depth():
    table = pd.DataFrame(
        [
            {
                "layer": str(i),
                "probe": "weighted_sum",
                "fold": "0",
                "metric": "layer_weight",
                "value": w,
            }
            for i, w in enumerate([0.0, 0.0, 1.0, 0.0, 0.0])
        ]
    )
    from speechlens.findings.probe_claims import layer_weight_centre

    assert layer_weight_centre(table) == pytest.approx([0.5])


def test_convexity_reads_the_curvature_sign():
    convex = [(x - 4) ** 2 / 16 for x in range(9)]
    concave = [1 - c for c in convex]
    res = Results(
        probes={
            ("m", "emotion"): probe_table(convex, probe="knn"),
            ("m", "stress"): probe_table(concave, probe="knn"),
        },
        models={"m": {"num_layers": 9}},
    )
    v = verdicts("separability_convex", res)
    assert v["m / emotion"].verdict == "agrees"
    assert v["m / stress"].verdict == "disagrees" and v["m / stress"].p_value < 0.05


def ablation_summary(typed_delta, random_deltas, size=6):
    """An ablation summary table, built with the library's own summariser."""
    from speechlens.attention.summary import summarise

    rows = []

    def add(group, kind, typ, draw, n, delta):
        for fold in range(5):
            rows.append(
                {
                    "corpus": "c",
                    "model": "m",
                    "task": "phone",
                    "probe": "linear",
                    "mode": "zero",
                    "group": group,
                    "kind": kind,
                    "type": typ,
                    "draw": draw,
                    "n_heads": n,
                    "layer": 4,
                    "fold": str(fold),
                    "metric": "macro_f1",
                    "value": 0.6 + delta,
                    "baseline": 0.6,
                    "delta": delta + 0.001 * (fold - 2),
                }
            )

    add("none", "none", "", "", 0, 0.0)
    add("diagonal", "type", "diagonal", "", size, typed_delta)
    for i, d in enumerate(random_deltas):
        add(f"random_{size}_{i}", "random", "", str(i), size, d)
    add("random_18_0", "random", "", "0", 18, -0.9)  # another size: never a control of size 6
    table = pd.DataFrame(rows)
    summary = table.groupby(
        [c for c in table.columns if c not in ("fold", "value", "baseline", "delta")], dropna=False
    )
    means = summary[["value", "baseline", "delta"]].mean().reset_index().assign(fold="mean")
    sds = summary[["value", "baseline", "delta"]].std(ddof=1).reset_index().assign(fold="std")
    return summarise(pd.concat([table, means, sds], ignore_index=True))


def test_diagonal_heads_need_enough_draws_then_rank():
    res = Results(ablation={"m": ablation_summary(-0.17, [-0.16, 0.03])})
    (v,) = CLAIMS["diagonal_heads_matter"](res)
    assert v.verdict == "inconclusive" and str(MIN_RANDOM_DRAWS) in v.reason
    rng = np.random.default_rng(0)
    res = Results(ablation={"m": ablation_summary(-0.17, rng.uniform(-0.2, 0.03, 10))})
    (v,) = CLAIMS["diagonal_heads_matter"](res)
    assert v.verdict == "inconclusive"  # 10 draws: p >= 1/11 even at rank 1
    res = Results(ablation={"m": ablation_summary(-0.3, rng.uniform(-0.05, 0.02, 19))})
    (v,) = CLAIMS["diagonal_heads_matter"](res)
    assert v.verdict == "agrees" and v.p_value == pytest.approx(1 / 20)
    res = Results(ablation={"m": ablation_summary(0.05, rng.uniform(-0.2, -0.05, 19))})
    (v,) = CLAIMS["diagonal_heads_matter"](res)
    assert v.verdict == "disagrees" and v.p_value == pytest.approx(1 / 20)


def saliency_table(global_r, head_r, layers=4, heads=2, utts=12, seed=0):
    """Per-token r: every head ~ head_r, layer means = mean of heads, global = global_r."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(u, t, layer, head, r):
        rows.append(
            {
                "utterance_id": f"u{u:02d}",
                "token_index": t,
                "layer": layer,
                "head": head,
                "method": "spes",
                "pearson_r": r,
            }
        )

    for u in range(utts):
        for t in range(3):
            for layer in range(layers):
                rs = [head_r(layer) + 0.01 * rng.standard_normal() for _ in range(heads)]
                for h, r in enumerate(rs):
                    add(u, t, str(layer), str(h), r)
                add(u, t, str(layer), "mean", float(np.mean(rs)))
            add(u, t, "all", "mean", global_r + 0.01 * rng.standard_normal())
    return pd.DataFrame(rows)


def test_average_beats_heads_and_last_layers():
    res = Results(saliency={"w": saliency_table(0.6, lambda layer: 0.1 + 0.1 * layer)})
    assert verdicts("average_beats_heads", res)["w / spes"].verdict == "agrees"
    assert verdicts("last_layers_agree_best", res)["w / spes"].verdict == "agrees"
    res = Results(saliency={"w": saliency_table(0.05, lambda layer: 0.6 - 0.1 * layer)})
    v = verdicts("average_beats_heads", res)["w / spes"]
    assert v.verdict == "disagrees" and v.p_value < 0.05 and "(opposite)" in v.reason
    assert verdicts("last_layers_agree_best", res)["w / spes"].verdict == "disagrees"


def test_crossfit_best_head_is_unbiased_on_noise():
    rng = np.random.default_rng(3)
    rows = [
        {
            "utterance_id": f"u{u:03d}",
            "layer": str(layer),
            "head": str(h),
            "method": "spes",
            "token_index": 0,
            "pearson_r": rng.standard_normal(),
        }
        for u in range(200)
        for layer in range(4)
        for h in range(6)
    ]
    from speechlens.findings.attention_claims import _per_utterance, crossfit_best_head

    per_utt = _per_utterance(pd.DataFrame(rows), "spes")
    crossfit = crossfit_best_head(per_utt).mean()
    in_sample = per_utt.groupby(["layer", "head"]).mean().max()
    assert abs(crossfit) < 0.15 and in_sample > crossfit + 0.1


def test_exact_tests():
    assert stats.rank_test_less([0, 0, 0], [1, 1, 1]) == pytest.approx(1 / 20)
    assert stats.rank_test_less([1, 1, 1], [1, 1, 1]) == 1.0
    assert stats.sign_test([1, 1, 1, 1, 1])[0] == pytest.approx(1 / 32)
    assert stats.empirical_rank_p(-1.0, np.zeros(9)) == (1, 0.1)


def test_findings_page_from_files(tmp_path):
    from speechlens.findings.page import TABLE, evaluate, read_results, write_findings
    from speechlens.tables import read_table

    probes = {}
    for task, peak in (("language", 4), ("phone", 8)):
        path = tmp_path / f"{task}.tsv"
        probe_table(bump(9, peak)).to_csv(path, sep="\t", index=False)
        probes[("m", task)] = path
    res = read_results(probes, {"m": {}})
    assert res.models["m"]["num_layers"] == 9
    table = write_findings(evaluate(res), tmp_path / "f.tsv", tmp_path / "f.html")
    back = read_table(TABLE, tmp_path / "f.tsv")
    assert len(back) == len(table)
    row = back[back["claim"].str.startswith("language information")].iloc[0]
    assert row["verdict"] == "agrees"
    assert set(back["study"]) >= {"cross_attention_saliency", "attention_heads_en_tr"}
    page = (tmp_path / "f.html").read_text()
    assert "indications, not replications" in page and "agrees" in page


def test_saliency_claims_fall_back_to_gradient_x_input():
    table = saliency_table(0.6, lambda layer: 0.1 + 0.1 * layer)
    table = table.assign(method="gradient_x_input")
    (v,) = CLAIMS["average_beats_heads"](Results(saliency={"w": table}))
    assert v.verdict == "agrees" and "gradient_x_input" in v.measured
    assert v.subject == "w / gradient_x_input"


def test_each_saliency_method_gets_its_own_verdict():
    """SPES on 2 utterances cannot carry a verdict (sign test p >= 1/4); gradient x input on
    12 can, and must not be hidden behind SPES."""
    spes = saliency_table(0.6, lambda layer: 0.1 + 0.1 * layer, utts=2)
    grad = saliency_table(0.6, lambda layer: 0.1 + 0.1 * layer, seed=1)
    table = pd.concat([spes, grad.assign(method="gradient_x_input")])
    for claim in ("average_beats_heads", "last_layers_agree_best"):
        v = verdicts(claim, Results(saliency={"w": table}))
        assert set(v) == {"w / spes", "w / gradient_x_input"}
        assert v["w / spes"].verdict == "inconclusive" and v["w / spes"].p_value == 0.25
        assert v["w / gradient_x_input"].verdict == "agrees"
        assert "over 12 utterances" in v["w / gradient_x_input"].measured
    (only,) = CLAIMS["average_beats_heads"](Results(saliency={"w": table}), method="spes")
    assert only.subject == "w / spes"


def test_one_utterance_cannot_cross_fit_a_best_head():
    """SPES on 1 utterance (the offline study): no held-out utterance to report the chosen
    head on, so the comparison is not measured, and the reason says why."""
    table = saliency_table(0.6, lambda layer: 0.1 + 0.1 * layer, utts=1)
    (v,) = CLAIMS["average_beats_heads"](Results(saliency={"w": table}))
    assert v.verdict == "not measured" and np.isnan(v.p_value)
    assert "at least 2 utterances" in v.reason and "spes has 1" in v.reason
    assert v.measured.startswith("r global 0.") and "over 1 utterance (spes)" in v.measured
    (v,) = CLAIMS["last_layers_agree_best"](Results(saliency={"w": table}))
    assert v.verdict == "inconclusive" and v.p_value == 0.5


def test_judge_reports_the_p_behind_the_verdict():
    assert judge(0.01, 0.99) == ("agrees", 0.01)
    assert judge(0.99, 0.01) == ("disagrees", 0.01)
    assert judge(0.3, 0.7) == ("inconclusive", 0.3)
    verdict, p = judge(float("nan"), 0.01)
    assert verdict == "not measured" and np.isnan(p)
