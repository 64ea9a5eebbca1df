# Decoder cross-attention vs input saliency (speechlens.saliency). No computation here.


include: "saliency_common.smk"


rule cross_attention_saliency:
    """Cross-attention of each transcript token vs its input and encoder-output saliency."""
    input:
        unpack(model_checkpoint),
        utterances="resources/corpora/{corpus}/utterances.tsv",
        audio="resources/corpora/{corpus}/audio",
    output:
        table="results/{corpus}/{model}/attention/cross_attention_saliency.tsv",
        meta="results/{corpus}/{model}/attention/cross_attention_saliency.json",
        summary="results/{corpus}/{model}/attention/cross_attention_saliency_summary.tsv",
        example=directory(
            "results/{corpus}/{model}/attention/cross_attention_saliency_example.zarr"
        ),
    log:
        "logs/{corpus}/{model}/attention/cross_attention_saliency.log",
    benchmark:
        "logs/{corpus}/{model}/attention/cross_attention_saliency.benchmark.tsv"
    priority: PRIORITY_MODEL_JOB
    conda:
        ENV
    threads: config["saliency"]["threads"]
    resources:
        gpu=lambda wildcards: int(config["saliency"]["device"] != "cpu"),
    params:
        model=model_spec,
        settings=settings_params("saliency"),
        code=code_version("cross_attention_saliency.py"),
    script:
        "../scripts/cross_attention_saliency.py"
