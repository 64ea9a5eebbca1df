# Config accessors and target lists. No computation here.


wildcard_constraints:
    corpus="[a-z0-9_]+",
    model="[a-z0-9_]+",
    task="[a-z0-9_]+",
    model_a="[a-z0-9_]+",
    model_b="[a-z0-9_]+",


ENV = "../envs/speechlens.yaml"


def corpus_spec(wildcards):
    """The validated config entry of one corpus (defaults filled by the schema)."""
    return config["corpora"][wildcards.corpus]


def all_outputs():
    """Every final target of the configured experiment."""
    return expand(
        [
            "resources/corpora/{corpus}/utterances.tsv",
            "results/figures/{corpus}/corpus_summary.png",
        ],
        corpus=sorted(config["corpora"]),
    )
