# Models trained by the workflow: TERA per language (speechlens.tera). No computation here.


# The corpus whose utterances train the models (`training.corpus`, default: the first).
TRAINING_CORPUS = config["training"]["corpus"] or sorted(config["corpora"])[0]


wildcard_constraints:
    language="[a-z][a-z0-9-]*",


ruleorder: train_tera > convert_pypi_model


rule train_tera:
    """Pretrain a TERA model on one language of the training corpus (held-out speakers)."""
    input:
        utterances=f"resources/corpora/{TRAINING_CORPUS}/utterances.tsv",
        audio=f"resources/corpora/{TRAINING_CORPUS}/audio",
    output:
        directory("resources/models/tera_{language}"),
    log:
        "logs/models/tera_{language}.log",
    benchmark:
        "logs/models/tera_{language}.benchmark.tsv"
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        gpu=0 if config["training"]["device"] == "cpu" else 1,
    params:
        settings={
            k: v
            for k, v in config["training"].items()
            if k not in ("corpus", "threads")
        },
        state_dir="resources/training/tera_{language}",
        code=code_version("train_tera.py"),
    script:
        "../scripts/train_tera.py"
