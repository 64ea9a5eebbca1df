"""Rule findings: the seed studies' claims checked on a corpus' result tables."""

from speechlens.findings.page import evaluate, read_results, write_findings
from speechlens.logs import log_to

with log_to(snakemake.log[0]):
    p = snakemake.params
    keys = [(m, t) for m in p.probe_models for t in p.tasks]
    results = read_results(
        dict(zip(keys, snakemake.input.probes, strict=True)),
        p.models,
        ablation=dict(zip(p.attention_models, snakemake.input.ablation, strict=True)),
        saliency=dict(zip(p.saliency_models, snakemake.input.saliency, strict=True)),
    )
    write_findings(evaluate(results), snakemake.output.table, snakemake.output.html)
