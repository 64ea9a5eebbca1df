"""Cross-reference checks of a validated config: what the JSON schema cannot say.

The schema (``workflow/schemas/config.schema.yaml``) checks each value on its own; the
checks here relate values to each other: a model pair names configured models, the
attention and saliency models have the heads they analyse, the ablation task is a probing
task, a model trained by the workflow names a corpus. The Snakefile calls
:func:`check_references` once, after validation filled the defaults, so a bad config stops
the workflow before any job runs, with a message that names the config key.

Model families are never named here: what a family can do comes from its adapter's
declared capabilities (:func:`speechlens.models.has_capability`).
"""

from __future__ import annotations

from collections.abc import Mapping

from speechlens.config import ConfigError
from speechlens.models import ADAPTERS, TRAIN_PREFIX, has_capability


def check_references(config: Mapping) -> None:
    """Raise :class:`~speechlens.config.ConfigError` at the first config value that names
    something missing or unfit (a model, corpus, task), naming its key.

    ``config`` is the validated config (schema defaults filled).
    """
    _check_cka_pairs(config)
    _check_reduced_stores(config)
    _check_training(config)
    _check_attention(config)
    _check_saliency(config)


def families_with(capability: str) -> list[str]:
    """The registered model families that declare ``capability``, sorted."""
    return sorted(f for f in ADAPTERS if has_capability(f, capability))


def _model_family(config: Mapping, key: str, name: str) -> str:
    """The family of configured model ``name``; an error naming ``key`` if it is not one."""
    if name not in config["models"]:
        raise ConfigError(f"config key {key}: model {name!r} is not in `models`")
    return config["models"][name]["family"]


def _check_cka_pairs(config: Mapping) -> None:
    """Model pairs must name configured models, two different ones."""
    for i, pair in enumerate(config["cka"]["pairs"]):
        for name in pair:
            _model_family(config, f"cka.pairs[{i}]", name)
        if pair[0] == pair[1]:
            raise ConfigError(
                f"config key cka.pairs[{i}]: compares {pair[0]!r} with itself "
                "(that matrix is cka.within)"
            )


def _check_reduced_stores(config: Mapping) -> None:
    """Probing tasks and CKA pairs must fit each model's store (``features.pool``): a frame
    task needs frames or segments; a reduced store in a CKA pair needs ``align: segment`` on
    its tier (:func:`speechlens.probing.check_task_stores`,
    :func:`speechlens.cka.check_pairs`)."""
    from speechlens.cka import check_pairs
    from speechlens.probing import check_task_stores

    features = {
        name: {**config["features"], **(spec.get("features") or {})}
        for name, spec in config["models"].items()
    }
    cka = config["cka"]
    try:
        check_task_stores(config["probing"]["tasks"], features)
        check_pairs(cka["pairs"], features, cka["align"], cka["tier"])
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _check_training(config: Mapping) -> None:
    """``training.corpus`` must be a corpus; a ``train:`` source needs a family the workflow
    trains, and such a family needs a source (it has no published checkpoints)."""
    corpus = config["training"]["corpus"]
    if corpus is not None and corpus not in config["corpora"]:
        raise ConfigError(f"config key training.corpus: {corpus!r} is not in `corpora`")
    trained = families_with("trained_by_workflow")
    for name, spec in config["models"].items():
        source = spec.get("source") or ""
        family = spec["family"]
        if source.startswith(TRAIN_PREFIX) and family not in trained:
            raise ConfigError(
                f"config key models.{name}.source: {source!r} names a model trained by the "
                f"workflow (rule train_tera); use a family it trains ({', '.join(trained)}), "
                f"not {family}"
            )
        if family in trained and not source:
            raise ConfigError(
                f"config key models.{name}.source: a {family} model needs "
                f"`{TRAIN_PREFIX}<language>` or a folder written by rule train_tera"
            )


def _check_attention(config: Mapping) -> None:
    """Named attention models must exist and have self-attention; the ablation task must be
    a probing task."""
    for i, name in enumerate(config["attention"]["models"] or []):
        family = _model_family(config, f"attention.models[{i}]", name)
        if not has_capability(family, "self_attention"):
            raise ConfigError(
                f"config key attention.models[{i}]: model {name!r} (family {family}) "
                "has no self-attention heads"
            )
    ablation = config["attention"]["ablation"]
    if ablation["enabled"] and ablation["task"] not in config["probing"]["tasks"]:
        raise ConfigError(
            f"config key attention.ablation.task: {ablation['task']!r} is not in "
            f"probing.tasks ({sorted(config['probing']['tasks'])})"
        )


def _check_saliency(config: Mapping) -> None:
    """Named saliency models must exist and have decoder cross-attention."""
    for i, name in enumerate(config["saliency"]["models"] or []):
        family = _model_family(config, f"saliency.models[{i}]", name)
        if not has_capability(family, "cross_attention"):
            raise ConfigError(
                f"config key saliency.models[{i}]: model {name!r} (family {family}) has no "
                "cross-attention: it is not a whisper-style encoder-decoder model "
                f"(families with cross-attention: {', '.join(families_with('cross_attention'))})"
            )
