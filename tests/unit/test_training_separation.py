"""Models trained by the workflow are probed on audio they never heard (issue 14.6).

Start-up (:func:`speechlens.checks.check_references`) compares the planned tables of
synthetic corpora; rule training_separation (:func:`speechlens.tera.data.check_separation`)
the built ``utterances.tsv`` of the training corpus and of each analysed corpus.
"""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
from snakemake.utils import validate

from speechlens.checks import analysed_corpora, check_references, trained_languages
from speechlens.config import ConfigError
from speechlens.corpora import synthetic
from speechlens.tables import read_table
from speechlens.tera.data import (
    SEPARATION,
    SeparationError,
    check_separation,
    normalise_text,
    shared_identities,
)
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = {
    "corpora": {
        "synth": {"kind": "synthetic", "languages": ["en-us", "tr", "de"], "split": "probe"},
        "synth_train": {"kind": "synthetic", "languages": ["en-us", "tr"], "split": "train"},
    },
    "models": {
        "logmel": {"family": "logmel"},
        "tera_en": {"family": "tera", "source": "train:en-us"},
        "tera_tr": {"family": "tera", "source": "train:tr"},
    },
    "training": {"corpus": "synth_train"},
}


def validated(mutate=None) -> dict:
    config = copy.deepcopy(CONFIG)
    if mutate is not None:
        mutate(config)
    validate(config, str(SCHEMA))
    return config


# -- start-up: the corpus configs ----------------------------------------------------------


def test_disjoint_training_and_probed_corpora_pass():
    config = validated()
    check_references(config)
    assert trained_languages(config) == {"tera_en": "en-us", "tera_tr": "tr"}
    assert analysed_corpora(config) == ["synth"]  # the training corpus is not analysed


def test_without_trained_models_every_corpus_is_analysed():
    config = validated(lambda c: [c["models"].pop(m) for m in ("tera_en", "tera_tr")])
    check_references(config)
    assert analysed_corpora(config) == ["synth", "synth_train"]


def _split(corpus: str, value: str):
    return lambda c: c["corpora"][corpus].update(split=value)


@pytest.mark.parametrize(
    ("mutate", "shared"),
    [
        # the same part: both have speaker f01 on variant f1 and draw from the same sentences
        (_split("synth_train", "probe"), r"share \d+ speakers .*\d+ voice variants .*sentences"),
        # `all` uses f1-f4, m1-m4 for 8 speakers: only the sentences meet a `train` corpus
        (_split("synth", "all"), r"share \d+ sentences \["),
        # ... but with 12 speakers `all` reaches f5 and m5, m6: voices meet too
        (
            lambda c: c["corpora"]["synth"].update(split="all", speakers_per_language=12),
            r"share \d+ voice variants \['f5', 'm5', 'm6'\], \d+ sentences",
        ),
    ],
)
def test_overlapping_synthetic_corpora_fail_naming_both_corpora_and_keys(mutate, shared):
    config = validated(mutate)
    with pytest.raises(ConfigError) as err:
        check_references(config)
    message = str(err.value)
    assert message.startswith("config keys training.corpus and corpora.synth: corpus 'synth'")
    assert "corpus 'synth_train' (corpora.synth_train)" in message
    assert "['tera_en', 'tera_tr']" in message and "en-us/tr utterances" in message
    assert re.search(shared, message), message


def test_only_the_trained_languages_count_and_voices_meet_across_languages():
    """synth_train's German is not trained on: its rows (the same speakers and sentences as
    a German train-part corpus) are not compared. Its en-us/tr rows are, on the voice
    variant (the timbre): en-us+f5 is tr+f5's and de+f5's voice."""

    def german_train_part(config):
        config["corpora"]["synth_train"]["languages"] = ["en-us", "tr", "de"]
        config["corpora"]["synth"].update(languages=["de"], split="train")

    config = validated(german_train_part)
    with pytest.raises(ConfigError) as err:
        check_references(config)
    message = str(err.value)
    assert "share 5 voice variants ['f5', 'm5', 'm6', 'm7', 'm8']; give them" in message
    found = message.split("they share ")[1].split(";")[0]
    assert found == "5 voice variants ['f5', 'm5', 'm6', 'm7', 'm8']"  # no speaker, sentence
    config["corpora"]["synth"]["split"] = "probe"
    check_references(config)


def test_identical_settings_of_any_kind_are_the_same_audio():
    folder = {"kind": "folder", "path": "/data/mine"}

    def two_folders(config):
        config["corpora"] = {"mine": dict(folder), "mine_train": dict(folder)}
        config["training"]["corpus"] = "mine_train"

    with pytest.raises(ConfigError, match=r"corpora\.mine: .* share the same settings"):
        check_references(validated(two_folders))

    def other_folder(config):
        two_folders(config)
        config["corpora"]["mine"]["path"] = "/data/other"

    check_references(validated(other_folder))  # left to rule training_separation


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["training"].update(corpus=None),
            "config key training.corpus: models ['tera_en', 'tera_tr'] are trained by the workflow",
        ),
        (
            lambda c: c["corpora"].pop("synth"),
            "config key training.corpus: 'synth_train' is the only corpus",
        ),
        (
            lambda c: c["corpora"]["synth_train"].update(languages=["tr"]),
            "config key models.tera_en.source: training corpus 'synth_train' has no language "
            "'en-us' (config key corpora.synth_train.languages: ['tr'])",
        ),
        (
            lambda c: c["corpora"]["synth_train"].update(sentences_per_speaker=36),
            "config key corpora.synth_train: corpus config key `sentences_per_speaker`: 36 is "
            "more than the 35 distinct sentences of language 'en-us' in split 'train'",
        ),
    ],
)
def test_a_training_corpus_that_cannot_work_names_its_key(mutate, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_references(validated(mutate))


def test_the_default_experiment_separates_training_from_probing():
    import yaml

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(SCHEMA))
    check_references(config)
    training = config["training"]["corpus"]
    assert trained_languages(config) and training not in analysed_corpora(config)
    for name in ("tests/workflow/tiny.yaml",):
        tiny = yaml.safe_load((REPO / name).read_text())
        validate(tiny, str(SCHEMA))
        check_references(tiny)
        assert tiny["training"]["corpus"] not in analysed_corpora(tiny)


# -- the built tables ----------------------------------------------------------------------


def _table(tmp_path, name: str, rows: list[tuple]) -> str:
    path = tmp_path / f"{name}.tsv"
    pd.DataFrame(rows, columns=["utterance_id", "speaker", "language", "text"]).to_csv(
        path, sep="\t", index=False
    )
    return str(path)


TRAIN_ROWS = [
    ("t1", "spk_a", "en-us", "The cat sat on the mat."),
    ("t2", "spk_b", "en-us", "Rain fell all night."),
    ("t3", "spk_x", "de", "Guten Morgen, Welt!"),
]


@pytest.mark.parametrize(
    ("probed_rows", "shared"),
    [
        ([("p1", "spk_b", "en-us", "A new sentence.")], "1 speakers ['spk_b']"),
        ([("p1", "spk_z", "en-us", "the CAT sat on the mat")], "1 sentences ['the cat sat"),
        (
            [("p1", "spk_a", "tr", "Rain  fell, all night!"), ("p2", "spk_c", "tr", "x y")],
            "1 speakers ['spk_a'], 1 sentences ['rain fell all night']",
        ),
    ],
)
def test_table_check_names_both_corpora_and_what_they_share(tmp_path, probed_rows, shared):
    training = _table(tmp_path, "train", TRAIN_ROWS)
    probed = _table(tmp_path, "probe", probed_rows)
    with pytest.raises(SeparationError) as err:
        check_separation(
            training, probed, ["en-us"], training_corpus="mine_train", probed_corpus="mine"
        )
    message = str(err.value)
    assert f"corpus 'mine' ({probed})" in message
    assert f"en-us utterances of corpus 'mine_train' ({training})" in message
    assert shared in message


def test_table_check_passes_disjoint_tables_and_ignores_untrained_languages(tmp_path):
    training = _table(tmp_path, "train", TRAIN_ROWS)
    # spk_x and its sentence are German: no model was trained on the training corpus' German
    probed = _table(tmp_path, "probe", [("p1", "spk_x", "de", "Guten Morgen Welt")])
    out = tmp_path / "separation.tsv"
    table = check_separation(
        training, probed, ["en-us"], training_corpus="t", probed_corpus="p", out=out
    )
    written = read_table(SEPARATION, out)
    assert written["identity"].tolist() == ["speaker", "variant", "text"]
    assert written["shared"].tolist() == [0, 0, 0]
    assert written["training_values"].tolist() == [2, 0, 2]
    assert table["probed_values"].tolist() == [1, 0, 1]
    with pytest.raises(SeparationError, match="1 speakers \\['spk_x'\\]"):
        check_separation(training, probed, ["en-us", "de"], training_corpus="t", probed_corpus="p")


def test_sentence_identity_ignores_case_punctuation_and_spacing():
    assert normalise_text("  The CAT, sat!\tOn “the” mat. ") == "the cat sat on the mat"
    assert normalise_text("Işık İstanbul'da") == normalise_text("işık i̇stanbul da")
    assert normalise_text("don't") != normalise_text("dont")
    left = pd.DataFrame({"speaker": ["a"], "text": ["Hello, world"], "variant": ["f1"]})
    right = pd.DataFrame({"speaker": ["b"], "text": ["hello world!"]})
    assert shared_identities(left, right) == {
        "speaker": [],
        "variant": [],  # only compared when both tables have the column
        "text": ["hello world"],
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three small synthetic corpora (one language): the train part, the probe part, all."""
    root = tmp_path_factory.mktemp("separation")
    base = {"kind": "synthetic", "languages": ["tr"], "sentences_per_speaker": 2, "seed": 1}
    for split, speakers in (("train", 6), ("probe", 6), ("all", 10)):
        spec = {**base, "speakers_per_language": speakers, "split": split}
        synthetic.build(spec, root / split, threads=2)
    return root


def test_table_check_on_built_synthetic_corpora(built):
    """The train part passes against the probe part; against `all` (whose fifth female and
    male speakers have the train part's variants f5, m5) it fails naming them."""
    train = built / "train" / "utterances.tsv"
    check_separation(
        train, built / "probe" / "utterances.tsv", ["tr"], training_corpus="a", probed_corpus="b"
    )
    with pytest.raises(SeparationError, match=r"voice variants \['f5', 'm5'\]"):
        check_separation(
            train, built / "all" / "utterances.tsv", ["tr"], training_corpus="a", probed_corpus="c"
        )
