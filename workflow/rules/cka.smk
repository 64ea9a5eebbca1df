rule cka_within:
    """Layer x layer CKA of one model over a seeded sample of its stored units (frames, or a
    reduced store's segments or utterance means)."""
    input:
        store="results/{corpus}/{model}/features.zarr",
    output:
        directory("results/{corpus}/{model}/cka.zarr"),
    log:
        "logs/{corpus}/{model}/cka.log",
    benchmark:
        "logs/{corpus}/{model}/cka.benchmark.tsv"
    conda:
        ENV
    threads: config["cka"]["threads"]
    resources:
        gpu=lambda wildcards: int(config["cka"]["device"] != "cpu"),
    params:
        settings=settings_params("cka"),
        code=code_version("cka.py"),
    script:
        "../scripts/cka.py"


rule cka_across:
    """Layer x layer CKA between two models on the same moments of audio."""
    input:
        store_a="results/{corpus}/{model_a}/features.zarr",
        store_b="results/{corpus}/{model_b}/features.zarr",
        segments="resources/corpora/{corpus}/segments.tsv",
    output:
        directory("results/{corpus}/cka/{model_a}--{model_b}.zarr"),
    log:
        "logs/{corpus}/cka/{model_a}--{model_b}.log",
    benchmark:
        "logs/{corpus}/cka/{model_a}--{model_b}.benchmark.tsv"
    conda:
        ENV
    threads: config["cka"]["threads"]
    resources:
        gpu=lambda wildcards: int(config["cka"]["device"] != "cpu"),
    params:
        settings=settings_params("cka"),
        code=code_version("cka.py"),
    script:
        "../scripts/cka.py"
