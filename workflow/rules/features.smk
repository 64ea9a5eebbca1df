rule features_shard:
    """Extract one shard of a corpus (whole blocks of utterances) with one model."""
    input:
        unpack(model_checkpoint),
        unpack(features_segments),
        utterances="resources/corpora/{corpus}/utterances.tsv",
        audio="resources/corpora/{corpus}/audio",
    output:
        directory("results/{corpus}/{model}/shards/{shard}-of-{shards}.zarr"),
    log:
        "logs/{corpus}/{model}/shards/{shard}-of-{shards}.log",
    benchmark:
        "logs/{corpus}/{model}/shards/{shard}-of-{shards}.benchmark.tsv"
    priority: PRIORITY_MODEL_JOB
    conda:
        ENV
    threads: lambda wildcards: features_settings(wildcards)["threads"]
    resources:
        gpu=extraction_gpus,
        mem_mb=lambda wildcards: features_settings(wildcards)["mem_mb"],
    params:
        model=model_spec,
        settings=features_params,
        corpus=corpus_spec,
        code=code_version("features.py"),
    script:
        "../scripts/features.py"


rule features:
    """Every layer of one model over one corpus (or the reduced store its `features` settings
    choose: layers, pool, frame_stride), in a chunked Zarr store (gathers shards)."""
    input:
        unpack(features_inputs),
    output:
        directory("results/{corpus}/{model}/features.zarr"),
    log:
        "logs/{corpus}/{model}/features.log",
    benchmark:
        "logs/{corpus}/{model}/features.benchmark.tsv"
    priority: PRIORITY_MODEL_JOB
    conda:
        ENV
    threads: lambda wildcards: features_settings(wildcards)["threads"]
    resources:
        gpu=lambda wildcards: (
            0 if feature_shards(wildcards) else extraction_gpus(wildcards)
        ),
        mem_mb=lambda wildcards: features_settings(wildcards)["mem_mb"],
    params:
        model=model_spec,
        settings=features_params,
        corpus=corpus_spec,
        code=code_version("features.py"),
    script:
        "../scripts/features.py"
