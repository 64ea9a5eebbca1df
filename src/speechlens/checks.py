"""Cross-reference checks of a validated config: what the JSON schema cannot say.

The schema (``workflow/schemas/config.schema.yaml``) checks each value on its own; the
checks here relate values to each other: a model pair names configured models, the
attention and saliency models have the heads they analyse, the ablation task is a probing
task, a model trained by the workflow names a corpus whose audio no analysed corpus shares
(:func:`trained_languages`, :func:`analysed_corpora`). The Snakefile calls
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
    _check_task_models(config)
    _check_speaker_folds(config)
    _check_reduced_stores(config)
    _check_training(config)
    _check_training_separation(config)
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


def task_models(config: Mapping, task: str) -> list[str]:
    """The models probed on task ``task`` (``probing.tasks.<task>.models``; null = every
    configured model), sorted."""
    named = config["probing"]["tasks"][task].get("models")
    return sorted(config["models"] if named is None else named)


def probed_pairs(config: Mapping) -> list[tuple[str, str]]:
    """Every ``(model, task)`` pair that has a probe job, sorted by model then task."""
    tasks = config["probing"]["tasks"]
    return sorted((model, task) for task in tasks for model in task_models(config, task))


def _check_task_models(config: Mapping) -> None:
    """A task's ``models`` must name configured models."""
    for task, entry in config["probing"]["tasks"].items():
        for i, name in enumerate(entry.get("models") or []):
            _model_family(config, f"probing.tasks.{task}.models[{i}]", name)


def _check_speaker_folds(config: Mapping) -> None:
    """A language task whose folds are grouped by speaker needs, in every class, as many
    speakers as folds. On a synthetic corpus that is ``speakers_per_language`` (known before
    any job runs; another corpus's speakers are only known once it is built, where the
    probe job's own check names the classes it had to drop)."""
    for task, spec in config["probing"]["tasks"].items():
        if spec["source"] != "language" or spec["group_by"] != "speaker":
            continue
        for corpus in analysed_corpora(config):
            settings = config["corpora"][corpus]
            if settings["kind"] != "synthetic":
                continue
            if spec["folds"] > settings["speakers_per_language"]:
                raise ConfigError(
                    f"config key probing.tasks.{task}.folds: {spec['folds']} folds grouped "
                    f"by speaker need {spec['folds']} speakers per language, but "
                    f"corpora.{corpus}.speakers_per_language is "
                    f"{settings['speakers_per_language']} (lower the folds or add speakers)"
                )


def _check_reduced_stores(config: Mapping) -> None:
    """Probing tasks and CKA pairs must fit each model's store (``features.pool``): a frame
    task needs frames or segments; a reduced store in a CKA pair needs ``align: segment`` on
    its tier (:func:`speechlens.probing.check_task_stores`,
    :func:`speechlens.cka.check_pairs`)."""
    from speechlens.cka import check_pairs
    from speechlens.probing.task import check_task_stores

    features = {
        name: {**config["features"], **(spec.get("features") or {})}
        for name, spec in config["models"].items()
    }
    cka = config["cka"]
    try:
        for task, entry in config["probing"]["tasks"].items():
            models = task_models(config, task)
            check_task_stores({task: entry}, {m: features[m] for m in models})
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
                f"workflow (rule train_tera); use family {' or '.join(trained)}, not {family}"
            )
        if family in trained and not source:
            raise ConfigError(
                f"config key models.{name}.source: a {family} model needs "
                f"`{TRAIN_PREFIX}<language>` or a folder written by rule train_tera"
            )


def trained_languages(config: Mapping) -> dict[str, str]:
    """``{model: language}`` of the models trained by the workflow (``source:
    train:<language>``; their random-init controls too: they share the training corpus'
    input normalisation)."""
    return {
        name: spec["source"].removeprefix(TRAIN_PREFIX)
        for name, spec in config["models"].items()
        if (spec.get("source") or "").startswith(TRAIN_PREFIX)
    }


def analysed_corpora(config: Mapping) -> list[str]:
    """The corpora the analyses run on, sorted: every corpus but ``training.corpus`` when a
    model is trained by the workflow (that corpus is built for training only)."""
    training = config["training"]["corpus"] if trained_languages(config) else None
    return sorted(name for name in config["corpora"] if name != training)


def _check_training_separation(config: Mapping) -> None:
    """Models trained by the workflow are analysed on audio they never heard: a training
    corpus of its own, which shares no speaker, voice variant or sentence with an analysed
    corpus. Compared here on the planned tables of synthetic corpora (and identical
    settings); rule training_separation compares the built tables of every corpus."""
    from speechlens.corpora.contract import CorpusError
    from speechlens.corpora.synthetic import planned_utterances
    from speechlens.tera.data import overlap_message, shared_identities, training_rows

    trained = trained_languages(config)
    if not trained:
        return
    training = config["training"]["corpus"]
    if training is None:
        raise ConfigError(
            f"config key training.corpus: models {sorted(trained)} are trained by the workflow "
            f"({TRAIN_PREFIX}<language>); name the corpus of their training audio, a corpus of "
            "its own: it is built for training only and must share no speaker or sentence "
            f"with the analysed corpora (corpora: {sorted(config['corpora'])})"
        )
    probed = analysed_corpora(config)
    if not probed:
        raise ConfigError(
            f"config key training.corpus: {training!r} is the only corpus; add a corpus to "
            "analyse (the training corpus is not analysed: a trained model is probed on "
            "audio it never heard)"
        )
    languages = sorted(set(trained.values()))
    spec = config["corpora"][training]

    def planned(name: str, corpus: Mapping):
        try:
            return planned_utterances(corpus)
        except CorpusError as err:
            raise ConfigError(f"config key corpora.{name}: {err}") from err

    rows = None
    if spec["kind"] == "synthetic":
        table = planned(training, spec)
        rows = training_rows(table, languages)
        for name, language in sorted(trained.items()):
            if language not in set(table["language"]):
                raise ConfigError(
                    f"config key models.{name}.source: training corpus {training!r} has no "
                    f"language {language!r} (config key corpora.{training}.languages: "
                    f"{sorted(set(table['language']))})"
                )
    for name in probed:
        other = config["corpora"][name]
        if other == spec:
            found = "the same settings (the same audio)"
        elif rows is not None and other["kind"] == "synthetic":
            found = overlap_message(shared_identities(rows, planned(name, other)))
        else:
            continue  # different kinds or sources: compared on the built tables
        if found:
            raise ConfigError(
                f"config keys training.corpus and corpora.{name}: corpus {name!r} is analysed "
                f"with models {sorted(trained)}, trained on the {'/'.join(languages)} "
                f"utterances of corpus {training!r} (corpora.{training}), and they share "
                f"{found}; give them disjoint speakers and sentences (synthetic corpora: "
                f"`split: train` for {training!r}, `split: probe` for {name!r})"
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
    named = config["attention"]["models"]
    for i, name in enumerate(ablation.get("models") or []):
        family = _model_family(config, f"attention.ablation.models[{i}]", name)
        if named is not None and name not in named:
            raise ConfigError(
                f"config key attention.ablation.models[{i}]: model {name!r} is not one of "
                f"attention.models ({named})"
            )
        if not has_capability(family, "self_attention"):
            raise ConfigError(
                f"config key attention.ablation.models[{i}]: model {name!r} (family {family}) "
                "has no self-attention heads"
            )
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
