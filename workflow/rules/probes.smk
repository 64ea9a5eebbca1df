from speechlens.probing.task import check_tasks, task_params

# A bad task (e.g. control.by naming the task's source) stops start-up, naming the key;
# a task a model's reduced store cannot serve is caught by check_references (Snakefile).
check_tasks(config["probing"]["tasks"])


rule probe:
    """Cross-validated probes of every layer of one model for one task."""
    input:
        store="results/{corpus}/{model}/features.zarr",
        utterances="resources/corpora/{corpus}/utterances.tsv",
        segments="resources/corpora/{corpus}/segments.tsv",
    output:
        table="results/{corpus}/{model}/probes/{task}.tsv",
        provenance="results/{corpus}/{model}/probes/{task}.json",
    log:
        "logs/{corpus}/{model}/probes/{task}.log",
    benchmark:
        "logs/{corpus}/{model}/probes/{task}.benchmark.tsv"
    conda:
        ENV
    threads: config["probing"]["threads"]
    resources:
        gpu=int(
            config["probing"]["settings"]["linear_backend"] == "torch"
            and config["probing"]["settings"]["linear_device"] != "cpu"
        ),
    params:
        task=lambda wildcards: task_params(config["probing"]["tasks"][wildcards.task]),
        settings=config["probing"]["settings"],
        code=code_version("probe.py"),
    script:
        "../scripts/probe.py"
