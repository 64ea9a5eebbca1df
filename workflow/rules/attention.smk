# Self-attention head types and head ablation (speechlens.attention); target lists and
# config checks in rules/common.smk. No computation here.


rule head_types:
    """Per-head attention statistics and types (diagonal, vertical, global) of one model."""
    input:
        unpack(model_checkpoint),
        utterances="resources/corpora/{corpus}/utterances.tsv",
        audio="resources/corpora/{corpus}/audio",
    output:
        table="results/{corpus}/{model}/attention/head_types.tsv",
        provenance="results/{corpus}/{model}/attention/head_types.json",
        examples=directory("results/{corpus}/{model}/attention/examples.zarr"),
    log:
        "logs/{corpus}/{model}/attention/head_types.log",
    benchmark:
        "logs/{corpus}/{model}/attention/head_types.benchmark.tsv"
    priority: PRIORITY_MODEL_JOB
    conda:
        ENV
    threads: config["attention"]["threads"]
    resources:
        gpu=extraction_gpus,
        mem_mb=lambda wildcards: features_settings(wildcards)["mem_mb"],
    params:
        model=model_spec,
        features=features_params,
        corpus=corpus_spec,
        settings=attention_settings(),
        code=code_version("head_types.py"),
    script:
        "../scripts/head_types.py"


rule head_ablation:
    """Ablate groups of heads by type (and random controls), re-extract and re-probe."""
    input:
        unpack(model_checkpoint),
        utterances="resources/corpora/{corpus}/utterances.tsv",
        segments="resources/corpora/{corpus}/segments.tsv",
        audio="resources/corpora/{corpus}/audio",
        head_types="results/{corpus}/{model}/attention/head_types.tsv",
    output:
        table="results/{corpus}/{model}/attention/ablation.tsv",
        provenance="results/{corpus}/{model}/attention/ablation.json",
        summary="results/{corpus}/{model}/attention/ablation_summary.tsv",
    log:
        "logs/{corpus}/{model}/attention/ablation.log",
    benchmark:
        "logs/{corpus}/{model}/attention/ablation.benchmark.tsv"
    priority: PRIORITY_MODEL_JOB
    conda:
        ENV
    threads: config["attention"]["threads"]
    resources:
        gpu=extraction_gpus,
        mem_mb=lambda wildcards: features_settings(wildcards)["mem_mb"],
    params:
        model=model_spec,
        features=features_params,
        corpus=corpus_spec,
        settings=attention_settings(),
        task_name=config["attention"]["ablation"]["task"],
        task=lambda wildcards: task_params(
            config["probing"]["tasks"][config["attention"]["ablation"]["task"]]
        ),
        probe_settings=config["probing"]["settings"],
        code=code_version("head_ablation.py"),
    script:
        "../scripts/head_ablation.py"
