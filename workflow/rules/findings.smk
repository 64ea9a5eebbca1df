# The findings page: each seed study's claims, what this run measured, and a computed
# verdict (speechlens.findings). No computation here.


rule findings:
    """Claims of the seed studies checked on a corpus' result tables."""
    input:
        unpack(findings_inputs),
    output:
        table="results/{corpus}/findings.tsv",
        html=report(
            "results/{corpus}/findings.html",
            caption="../report/findings.rst",
            category="1. Findings",
            subcategory="{corpus}",
        ),
    log:
        "logs/{corpus}/findings.log",
    benchmark:
        "logs/{corpus}/findings.benchmark.tsv"
    conda:
        ENV
    params:
        models=findings_models(),
        probed=probed_pairs(config),  # (model, task) of each input.probes table
        attention_models=lambda wildcards, input: [
            p.split("/")[2] for p in input.ablation
        ],
        saliency_models=lambda wildcards, input: [
            p.split("/")[2] for p in input.saliency
        ],
        code=code_version("findings.py"),
    script:
        "../scripts/findings.py"
