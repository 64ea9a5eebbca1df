"""The head ablation's summary: a typed group's drop ranked among random controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens.attention.ablation import _table as ablation_table
from speechlens.attention.summary import TABLE, empirical_rank, summarise
from speechlens.tables import read_table, write_table

FOLDS = 3


def scores(values) -> pd.DataFrame:
    """Per-fold scores of one layer (2) and metric (macro_f1)."""
    return pd.DataFrame(
        {"layer": 2, "fold": range(FOLDS), "metric": "macro_f1", "value": list(values)}
    )


def group(name, kind, t, n, draw=""):
    return {
        "group": name,
        "kind": kind,
        "type": t,
        "draw": draw,
        "heads": [(1, h) for h in range(n)],
    }


def table_with(typed_drop: float, control_drops: list[float]) -> pd.DataFrame:
    baseline = scores([0.70, 0.72, 0.68])
    results = [(group("none", "none", "", 0), baseline)]
    results.append(
        (group("diagonal", "type", "diagonal", 4), scores(baseline["value"] + typed_drop))
    )
    for d, drop in enumerate(control_drops):
        shifted = scores(baseline["value"] + drop)
        results.append((group(f"random_4_{d}", "random", "", 4, str(d)), shifted))
    table = ablation_table(results, baseline, "phone", {"probe": "linear", "mode": "zero"}, {})
    return table.assign(fold=table["fold"].astype(str))


def test_a_group_that_hurts_more_than_every_control_has_rank_1_and_p_1_over_n_plus_1():
    controls = list(np.linspace(-0.05, 0.02, 10))
    out = summarise(table_with(-0.20, controls))
    (row,) = out.to_dict("records")
    assert row["group"] == "diagonal" and row["control_draws"] == 10
    assert row["delta_mean"] == pytest.approx(-0.20)
    assert row["rank"] == 1 and row["p_value"] == pytest.approx(1 / 11)
    assert row["control_mean"] == pytest.approx(np.mean(controls))
    assert row["control_sd"] == pytest.approx(np.std(controls, ddof=1))
    assert row["delta_sd"] == pytest.approx(0.0, abs=1e-12)


def test_a_group_like_its_controls_is_not_singled_out():
    controls = list(np.linspace(-0.10, 0.08, 10))  # -0.02 falls between draws 4 and 5
    (row,) = summarise(table_with(-0.02, controls)).to_dict("records")
    assert row["rank"] == 1 + 5 and row["p_value"] == pytest.approx(6 / 11)


def test_ties_count_against_the_group_and_no_controls_give_nan():
    assert empirical_rank(-0.1, np.array([-0.1, 0.0])) == (2.0, pytest.approx(2 / 3))
    rank, p = empirical_rank(-0.1, np.array([]))
    assert np.isnan(rank) and np.isnan(p)
    (row,) = summarise(table_with(-0.2, [])).to_dict("records")
    assert row["control_draws"] == 0 and np.isnan(row["p_value"])


def test_summary_round_trips_through_its_table_spec(tmp_path):
    out = summarise(table_with(-0.2, [0.0, -0.01, 0.01]))
    write_table(TABLE, out, tmp_path / "s.tsv")
    back = read_table(TABLE, tmp_path / "s.tsv")
    np.testing.assert_allclose(back["p_value"], out["p_value"])
    assert back["rank"].tolist() == [1.0]
