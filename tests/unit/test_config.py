"""Config schema: the default validates, defaults are filled, bad keys are named."""

from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.utils import validate

from speechlens.config import ConfigError, check_config, config_errors, config_hash, load_schema
from tests.conftest import REPO

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    assert config_errors(DEFAULT, load_schema(SCHEMA_PATH)) == []


def test_schema_fills_defaults_per_corpus_kind():
    config = {
        "corpora": {
            "a": {"kind": "synthetic"},
            "b": {"kind": "folder", "path": "/data"},
        }
    }
    validate(config, str(SCHEMA_PATH))
    assert config["corpora"]["a"]["speakers_per_language"] == 8
    assert config["corpora"]["a"]["languages"] == ["en-us", "tr", "de", "es", "fr"]
    # defaults of the other kind must not leak into a corpus
    assert "on_bad_audio" not in config["corpora"]["a"]
    assert config["corpora"]["b"]["on_bad_audio"] == "fail"
    assert "speakers_per_language" not in config["corpora"]["b"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["corpora"]["synth"].update(speekers=3), "corpora.synth: Additional"),
        (lambda c: c["corpora"]["synth"].update(seed="x"), "corpora.synth.seed"),
        (lambda c: c["corpora"]["synth"].update(languages=[]), "corpora.synth.languages"),
        (lambda c: c["corpora"]["synth"].update(kind="nope"), "corpora.synth.kind"),
        (lambda c: c["corpora"].update(Bad={"kind": "synthetic"}), "corpora: 'Bad'"),
        (lambda c: c.update(modelz={}), "(top level)"),
        (lambda c: c["corpora"].update(f={"kind": "folder"}), "corpora.f: 'path' is a required"),
    ],
)
def test_bad_config_names_the_key(mutate, expected):
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        check_config(config, SCHEMA_PATH)
    assert expected in str(info.value)


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 16


def test_schema_probing_defaults_are_the_library_defaults():
    """The workflow's validated config and the library (which reads the packaged schema)
    resolve every shipped task and the probe settings the same way."""
    from speechlens.probing import default_tasks, resolve_task
    from speechlens.schema import defaults

    config = {"corpora": {"a": {"kind": "synthetic"}}}
    validate(config, str(SCHEMA_PATH))
    assert config["probing"]["settings"] == defaults("probing.settings")
    assert set(config["probing"]["tasks"]) == set(default_tasks())
    for name, task in default_tasks().items():
        assert resolve_task(config["probing"]["tasks"][name]) == resolve_task(task), name
