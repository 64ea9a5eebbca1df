"""Config and cross-stage errors name the config key (or utterance) and what is available:
unknown model family, probing tasks naming a missing tier or column, CKA pairs that cannot
be compared, utterances too long for a model."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from speechlens import cka, store
from speechlens.config import ConfigError, check_config
from speechlens.extract import Item, check_lengths, extract_corpus
from speechlens.models import make_adapter
from speechlens.probing import ProbingError, check_task_sources, run_task
from tests.conftest import REPO
from tests.tiny_models import save_tiny

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# --- schema: checked at start-up by the Snakefile (check_config) ----------------------------


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["models"]["logmel"].update(family="whisperx"),
            "config key models.logmel.family: 'whisperx' is not one of ['whisper'",
        ),
        (
            lambda c: c["corpora"].update(f={"kind": "folder", "path": "/d", "max_duration_s": 0}),
            "config key corpora.f.max_duration_s: 0 is less than or equal to the minimum of 0",
        ),
        (
            lambda c: c["corpora"].update(f={"kind": "folder", "path": "/d", "on_bad_audio": "x"}),
            "config key corpora.f.on_bad_audio: 'x' is not one of ['fail', 'skip']",
        ),
        (
            lambda c: c["probing"].update(tasks={"t": {"level": "word", "source": "phone"}}),
            "config key probing.tasks.t.level: 'word' is not one of ['frame', 'utterance']",
        ),
        (
            lambda c: c["probing"].update(tasks={"t": {"level": "frame"}}),
            "config key probing.tasks.t: 'source' is a required property",
        ),
    ],
)
def test_schema_errors_name_the_key(mutate, expected):
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA)
    assert expected in str(err.value)


def test_folder_max_duration_is_valid_config():
    config = copy.deepcopy(DEFAULT)
    config["corpora"]["f"] = {"kind": "folder", "path": "/d", "max_duration_s": 30}
    check_config(config, SCHEMA)


def test_unknown_family_in_the_library_names_the_known_ones():
    with pytest.raises(KeyError, match=r"model family 'whisperx' unknown; known: \['data2vec"):
        make_adapter({"family": "whisperx"}, {})


# --- probing tasks against the corpus: checked before the store is opened -----------------


@pytest.fixture
def tables(tmp_path):
    utts = pd.DataFrame(
        {
            "utterance_id": ["a", "b"],
            "audio": ["audio/a.wav", "audio/b.wav"],
            "speaker": ["s1", "s2"],
            "language": ["en", "tr"],
            "gender": ["f", "m"],
            "text": ["x", "y"],
            "duration_s": [1.0, 1.0],
            "sample_rate": [16000, 16000],
        }
    )
    segs = pd.DataFrame(
        {
            "utterance_id": ["a", "b"],
            "tier": ["phone", "word"],
            "start_s": [0.0, 0.0],
            "end_s": [0.5, 0.5],
            "label": ["p", "w"],
        }
    )
    utts.to_csv(tmp_path / "utterances.tsv", sep="\t", index=False)
    segs.to_csv(tmp_path / "segments.tsv", sep="\t", index=False)
    return utts, segs


COLUMNS = "['utterance_id', 'audio', 'speaker', 'language', 'gender', 'text', 'duration_s', "


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {"level": "frame", "source": "syllable"},
            [
                "config key probing.tasks.mytask.source 'syllable' is neither a tier",
                "(tiers: ['phone', 'word'])",
                COLUMNS,
            ],
        ),
        (
            {"level": "utterance", "source": "accent"},
            ["probing.tasks.mytask.source 'accent' is not a column", COLUMNS],
        ),
        (
            {"level": "utterance", "source": "phone"},
            ["probing.tasks.mytask.source 'phone'", "'phone' is a tier: use level frame"],
        ),
        (
            {"level": "frame", "source": "phone", "group_by": "session"},
            ["probing.tasks.mytask.group_by 'session' is not a column", COLUMNS],
        ),
        (
            {"level": "utterance", "source": "language", "group_by": "phone"},
            ["probing.tasks.mytask.group_by 'phone' is not a column"],
        ),
        (
            {"level": "frame", "source": "phone", "where": {"language": "en", "dialect": "x"}},
            ["probing.tasks.mytask.where: ['dialect'] not columns", COLUMNS],
        ),
    ],
)
def test_task_naming_a_missing_tier_or_column(tables, task, expected):
    with pytest.raises(ProbingError) as err:
        check_task_sources(task, "mytask", *tables)
    for text in expected:
        assert text in str(err.value)


@pytest.mark.parametrize(
    "task",
    [
        {"level": "frame", "source": "phone", "group_by": "speaker"},
        {"level": "frame", "source": "language", "group_by": None},  # a column at frame level
        {"level": "utterance", "source": "gender", "group_by": "speaker"},
    ],
)
def test_valid_task_sources_pass(tables, task):
    check_task_sources(task, "ok", *tables)


def test_probe_rule_fails_before_opening_the_store(tables, tmp_path):
    """The store path does not exist: the task error must come first, naming the task."""
    with pytest.raises(ProbingError, match="probing.tasks.speaker_id.source 'spk'"):
        run_task(
            tmp_path / "no_such_store.zarr",
            tmp_path / "utterances.tsv",
            tmp_path / "segments.tsv",
            {"level": "utterance", "source": "spk"},
            {},
            tmp_path / "probes" / "speaker_id.tsv",
        )
    assert not (tmp_path / "probes").exists()


# --- CKA pairs that cannot be compared ------------------------------------------------------


def make_store(path, counts, *, layers=2, dim=4, rate=50.0, model="m"):
    rng = np.random.default_rng(len(counts))
    hidden = [rng.standard_normal((layers, n, dim)).astype(np.float32) for n in counts]
    group = store.create(
        path,
        num_layers=layers,
        hidden_size=dim,
        utterance_ids=[f"u{i}" for i in range(len(counts))],
        frame_counts=list(counts),
        frame_times=[0.01 + np.arange(n) / rate for n in counts],
        attrs={"frame_rate_hz": rate, "model": model},
        dtype="float32",
        chunk_frames=64,
    )
    store.write_block(group, 0, hidden)
    store.finish(group)
    return path


def test_cka_pair_with_too_few_frames_in_common(tmp_path):
    a = make_store(tmp_path / "a.zarr", [40, 30], model="fine", rate=100.0)
    b = make_store(tmp_path / "b.zarr", [1, 1], model="coarse", rate=1.0)
    with pytest.raises(cka.CkaError) as err:
        cka.across_models(a, b, tmp_path / "out.zarr", device="cpu")
    message = str(err.value)
    assert "fine vs coarse (align 'time'): only 2 units" in message
    assert "(70 and 2 stored units)" in message and "CKA needs >= 4" in message
    assert not (tmp_path / "out.zarr").exists()


def test_cka_segment_pair_with_a_missing_tier(tables, tmp_path):
    a = make_store(tmp_path / "a.zarr", [40, 30])
    b = make_store(tmp_path / "b.zarr", [80, 60], rate=100.0)
    with pytest.raises(cka.CkaError) as err:
        cka.across_models(
            a,
            b,
            tmp_path / "out.zarr",
            align="segment",
            segments_tsv=tmp_path / "segments.tsv",
            tier="syllable",
            device="cpu",
        )
    message = str(err.value)
    assert "no segments of tier 'syllable' (config key cka.tier)" in message
    assert "tiers ['phone', 'word']" in message


# --- utterances too long for a model: named by the features stage -------------------------


def test_check_lengths_names_each_unusable_utterance(tmp_path):
    lengths = [10, 31, 5, 40, 2, 50, 60, 70, 80]
    items = [Item(f"u{i}", tmp_path / f"u{i}.wav", n) for i, n in enumerate(lengths)]
    counts = [1] * len(items)
    check_lengths(items, counts, None, 1, "t.tsv")  # no limit
    check_lengths(items, counts, 80, 1, "t.tsv")  # at the limit
    with pytest.raises(store.StoreError) as err:
        check_lengths(items, counts, 30, 1, "corpus/utterances.tsv")
    message = str(err.value)
    assert message.startswith("corpus/utterances.tsv: 6 utterance(s) longer than the model")
    assert "'u1' (31.000 s), 'u3' (40.000 s), 'u5' (50.000 s)" in message and "'u0'" not in message
    assert "'u8'" not in message and "and 1 more" in message  # five named, then a count
    assert "max_duration_s: 30" in message

    counts[4] = 0  # 2 samples: no frame
    with pytest.raises(store.StoreError) as err:
        check_lengths(items, counts, None, 1, "corpus/utterances.tsv")
    assert "1 utterance(s) too short to give the model a single frame: 'u4' (2.000 s)" in str(
        err.value
    )


def test_whisper_extraction_names_the_long_utterance(tmp_path):
    root = tmp_path / "corpus"
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for uid, seconds in (("short", 1.0), ("lecture", 30.5), ("click", 0.005)):
        sf.write(
            root / "audio" / f"{uid}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)), 16000
        )
    ids = ["short", "lecture"]
    table = pd.DataFrame({"utterance_id": ids, "audio": [f"audio/{u}.wav" for u in ids]})
    table.to_csv(root / "utterances.tsv", sep="\t", index=False)
    source = save_tiny("whisper", tmp_path / "whisper")
    settings = {
        "dtype": "float32",
        "chunk_frames": 64,
        "block_frames": 2000,
        "batch_seconds": 60.0,
        "shards": 1,
        "device": "cpu",
        "compute_dtype": "float32",
    }
    adapter = make_adapter({"family": "whisper", "source": str(source)}, settings)
    out = tmp_path / "features.zarr"
    with pytest.raises(store.StoreError) as err:
        extract_corpus(adapter, root / "utterances.tsv", out, settings=settings, attrs={})
    message = str(err.value)
    assert str(root / "utterances.tsv") in message and "'lecture' (30.500 s)" in message
    assert "at most" not in message and "'short'" not in message
    assert "accepts (30 s)" in message
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))

    # 5 ms of audio: no log-mel frame (hop 10 ms), so no encoder frame
    table.assign(
        utterance_id=["short", "click"], audio=["audio/short.wav", "audio/click.wav"]
    ).to_csv(root / "utterances.tsv", sep="\t", index=False)
    with pytest.raises(store.StoreError, match=r"too short .* 'click' \(0.005 s\)"):
        extract_corpus(adapter, root / "utterances.tsv", out, settings=settings, attrs={})
    assert not out.exists()
