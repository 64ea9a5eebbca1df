"""The head ablation's summary: each ablated group's drop against its random controls.

For every probed layer and metric, each group of heads chosen by type (``kind`` ``type``:
all heads of a type; ``all_but_type``: all heads but a type's) gets its fold-mean score
change ``delta_mean`` (ablated - un-ablated, same samples and folds; ``delta_sd`` its sd
over folds), and is compared with the ``random`` groups of the same number of heads, each
scored the same way (their fold-mean deltas, ``control_*``):

- ``rank``: the group's place among itself and its ``control_draws`` controls ordered by
  drop, 1 = the largest drop (most negative delta); ties count against the group, i.e.
  ``rank = 1 + #{controls with delta <= delta_mean}``;
- ``p_value``: the one-sided empirical (Monte Carlo) p-value of "ablating this group hurts
  more than ablating random heads of the same number", ``rank / (control_draws + 1)``
  (Phipson & Smyth 2010, "Permutation p-values should never be zero": the observed group
  counts as one draw). Its smallest possible value is ``1 / (control_draws + 1)``: with
  fewer than 19 draws no group can reach p < 0.05, with fewer than 9 not p < 0.1.

Groups without controls get NaN for both. The table (:data:`TABLE`) is written beside the
ablation table (``attention/ablation_summary.tsv``) and read by the figure and the findings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from speechlens.tables import TableSpec

KEYS = ("corpus", "model", "task", "probe", "mode")
TABLE = TableSpec(
    name="ablation_summary",
    columns=(
        *KEYS,
        "layer",
        "metric",
        "group",
        "kind",
        "type",
        "n_heads",
        "baseline",
        "delta_mean",
        "delta_sd",
        "control_draws",
        "control_mean",
        "control_sd",
        "rank",
        "p_value",
    ),
    numeric=(
        "layer",
        "n_heads",
        "baseline",
        "delta_mean",
        "delta_sd",
        "control_draws",
        "control_mean",
        "control_sd",
        "rank",
        "p_value",
    ),
    text=(*KEYS, "metric", "group", "kind", "type"),
    nullable=("delta_sd", "control_mean", "control_sd", "rank", "p_value"),
)
"""The ablation summary (``results/{corpus}/{model}/attention/ablation_summary.tsv``)."""


def empirical_rank(delta: float, controls: np.ndarray) -> tuple[float, float]:
    """``(rank, p_value)`` of a group's ``delta`` among ``controls`` (see the module
    docstring); NaN for both without controls."""
    controls = np.asarray(controls, dtype=np.float64)
    controls = controls[np.isfinite(controls)]
    if len(controls) == 0 or not np.isfinite(delta):
        return float("nan"), float("nan")
    rank = 1 + int((controls <= delta).sum())
    return float(rank), rank / (len(controls) + 1)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """The summary of an ablation table (:data:`speechlens.attention.ablation.TABLE`, its
    ``fold`` column as text): one row per (layer, metric, ablated group), in table order."""
    mean = table[table["fold"].astype(str) == "mean"]
    std = table[table["fold"].astype(str) == "std"]
    sd = {(r.layer, r.metric, r.group): r.delta for r in std.itertuples()}
    rows = []
    for (layer, metric), block in mean.groupby(["layer", "metric"], sort=True):
        random = block[block["kind"] == "random"]
        for r in (
            block[~block["kind"].isin(["none", "random"])].drop_duplicates("group").itertuples()
        ):
            controls = random.loc[random["n_heads"] == r.n_heads, "delta"].to_numpy(np.float64)
            rank, p = empirical_rank(float(r.delta), controls)
            rows.append(
                {
                    **{k: getattr(r, k) for k in KEYS},
                    "layer": layer,
                    "metric": metric,
                    "group": r.group,
                    "kind": r.kind,
                    "type": r.type,
                    "n_heads": int(r.n_heads),
                    "baseline": float(r.baseline),
                    "delta_mean": float(r.delta),
                    "delta_sd": float(sd.get((layer, metric, r.group), np.nan)),
                    "control_draws": len(controls),
                    "control_mean": float(controls.mean()) if len(controls) else np.nan,
                    "control_sd": float(controls.std(ddof=1)) if len(controls) > 1 else np.nan,
                    "rank": rank,
                    "p_value": p,
                }
            )
    return TABLE.frame(rows) if rows else TABLE.frame()
