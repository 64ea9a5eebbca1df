# Models trained by the workflow: TERA per language (speechlens.tera). No computation here.


# The corpus whose utterances train the models (`training.corpus`: built for training only,
# never analysed; start-up checks that it is set when a model is trained).
TRAINING_CORPUS = config["training"]["corpus"]
# The languages of the `train:<language>` sources (sorted).
TRAINED_LANGUAGES = sorted(set(trained_languages(config).values()))


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
    priority: PRIORITY_INPUTS
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


rule training_separation:
    """Check that an analysed corpus shares no speaker, voice variant or sentence with the
    training utterances (the trained languages of the training corpus); fails naming both
    corpora and what they share. Every job running a trained model on the corpus needs it.
    """
    input:
        training=f"resources/corpora/{TRAINING_CORPUS}/utterances.tsv",
        probed="resources/corpora/{corpus}/utterances.tsv",
    output:
        "resources/training/separation/{corpus}.tsv",
    log:
        "logs/training/separation/{corpus}.log",
    priority: PRIORITY_INPUTS
    conda:
        ENV
    params:
        training_corpus=TRAINING_CORPUS,
        languages=TRAINED_LANGUAGES,
        code=code_version("training_separation.py"),
    script:
        "../scripts/training_separation.py"
