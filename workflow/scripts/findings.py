"""Rule findings: the seed studies' claims checked on a corpus' result tables."""

from speechlens.findings.page import evaluate, read_results, write_findings
from speechlens.logs import log_to

with log_to(snakemake.log[0]):
    p = snakemake.params
    results = read_results(
        dict(zip(map(tuple, p.probed), snakemake.input.probes, strict=True)),
        p.models,
        ablation=dict(zip(p.attention_models, snakemake.input.ablation, strict=True)),
        saliency=dict(zip(p.saliency_models, snakemake.input.saliency, strict=True)),
    )
    write_findings(evaluate(results), snakemake.output.table, snakemake.output.html)
