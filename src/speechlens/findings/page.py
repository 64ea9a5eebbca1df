"""The findings page of a run: read its result tables, evaluate every claim, write
``findings.tsv`` (:data:`TABLE`) and an HTML page for the report."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping

import pandas as pd

from speechlens.atomic import write_text
from speechlens.attention.summary import TABLE as SUMMARY
from speechlens.findings.claims import CLAIMS
from speechlens.findings.verdict import ALPHA, Results, Verdict
from speechlens.tables import TableSpec, read_table, write_table

TABLE = TableSpec(
    "findings",
    ("study", "claim", "subject", "verdict", "p_value", "measured", "reason"),
    numeric=("p_value",),
    nullable=("p_value",),
)

STUDIES = {
    "attention_heads_en_tr": "TERA English vs Turkish: head types and ablation (arXiv 2409.03115)",
    "cross_attention_saliency": "Cross-attention is half explanation (Papi et al., 2509.18010)",
    "language_vs_content_layers": "SSHR: language vs content across layers (arXiv 2309.16937)",
    "speech_vs_speaker_models": "Speech vs speaker models (arXiv 2401.17632)",
    "what_foundation_models_miss": "What foundation models don't learn (arXiv 2410.12948)",
}
"""Seed study key (its ``config/studies/<key>.yaml``) -> title on the page."""

CAVEAT = (
    "Verdicts are computed from this run's tables by speechlens.findings, never written by "
    "hand. On synthetic speech and small models they are indications, not replications of "
    f"the published studies. A verdict is 'agrees' or 'disagrees' only when a one-sided exact "
    f"test gives p <= {ALPHA} in that direction; otherwise 'inconclusive' (measured, too little "
    "evidence) or 'not measured' (this run has no table for it). The p column is the test "
    "behind the verdict: the claim's direction, the opposite one for 'disagrees'."
)


def read_results(
    probes: Mapping[tuple[str, str], str | os.PathLike],
    models: Mapping[str, dict],
    ablation: Mapping[str, str | os.PathLike] | None = None,
    saliency: Mapping[str, str | os.PathLike] | None = None,
) -> Results:
    """The :class:`Results` of a run from its table paths: ``probes`` ``{(model, task):
    probe tsv}``, ``ablation`` ``{model: ablation_summary.tsv}``, ``saliency`` ``{model:
    cross_attention_saliency.tsv}``; ``models`` as in :class:`Results`, ``num_layers``
    filled from the probe tables when absent."""
    read = _read_tsv
    res = Results(
        probes={key: read(p) for key, p in probes.items()},
        models={m: dict(info) for m, info in models.items()},
        ablation={m: read_table(SUMMARY, p) for m, p in (ablation or {}).items()},
        saliency={m: _numeric(read(p), "pearson_r") for m, p in (saliency or {}).items()},
    )
    for (model, _), table in res.probes.items():
        layers = table["layer"][table["layer"].str.fullmatch(r"\d+")].astype(int)
        info = res.models.setdefault(model, {})
        info.setdefault("num_layers", int(layers.max()) + 1 if len(layers) else 1)
    return res


def _read_tsv(path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"fold": str, "layer": str}, keep_default_na=False)


def _numeric(table: pd.DataFrame, column: str) -> pd.DataFrame:
    table[column] = pd.to_numeric(table[column].replace("", float("nan")), errors="coerce")
    return table


def evaluate(res: Results) -> list[Verdict]:
    """Every claim of :data:`~speechlens.findings.claims.CLAIMS` on ``res``, in page order."""
    return [v for claim in CLAIMS.values() for v in claim(res)]


def write_findings(verdicts: list[Verdict], out_tsv, out_html) -> pd.DataFrame:
    """Write the verdicts as ``findings.tsv`` and the HTML page; return the table."""
    table = pd.DataFrame([v.__dict__ for v in verdicts], columns=list(TABLE.columns))
    table = write_table(TABLE, table, out_tsv)
    write_text(out_html, render_html(table))
    return table


COLOURS = {"agrees": "#1a7f37", "disagrees": "#cf222e", "inconclusive": "#9a6700"}


def render_html(table: pd.DataFrame) -> str:
    """A self-contained page: one section per seed study, one row per claim and subject."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Findings</title><style>"
        "body{font-family:sans-serif;font-size:14px;max-width:70em}"
        "table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}"
        "</style></head><body><h1>Findings</h1>",
        f"<p><em>{html.escape(CAVEAT)}</em></p>",
    ]
    for study, title in STUDIES.items():
        rows = table[table["study"] == study]
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if rows.empty:
            parts.append("<p>No claim of this study was checked in this run.</p>")
            continue
        parts.append(
            "<table><tr><th>claim</th><th>subject</th><th>verdict</th><th>measured</th>"
            "<th>why</th></tr>"
        )
        for r in rows.itertuples():
            colour = COLOURS.get(r.verdict, "#57606a")
            parts.append(
                f"<tr><td>{html.escape(r.claim)}</td><td>{html.escape(r.subject)}</td>"
                f"<td style='color:{colour}'><b>{html.escape(r.verdict)}</b></td>"
                f"<td>{html.escape(r.measured)}</td><td>{html.escape(r.reason)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)
