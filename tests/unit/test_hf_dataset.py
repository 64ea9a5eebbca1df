"""Corpus kind ``hf_dataset``: a Hugging Face dataset's parquet shards -> the corpus contract.

Fixtures are parquet files written here as ``datasets`` writes them (an Audio struct
``{bytes, path}`` holding real WAV and FLAC bytes, a ClassLabel column named in the
``huggingface`` schema metadata, free label columns), in a local folder and in a
huggingface_hub cache laid out as a hub snapshot (read offline: no network).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from speechlens import audio, schema
from speechlens.corpora import CORPORA, build_corpus, hf_dataset, hf_files
from speechlens.corpora.contract import UTTERANCE_COLUMNS, CorpusError, read_corpus
from speechlens.corpora.sources import Source, sample

EMOTIONS = ["neutral", "happy", "sad", "angry"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CARD = """---
dataset_info:
  features:
  - name: audio
    dtype: audio
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*
  - split: train
    path: data/train-*
---
# A tiny emotion dataset
"""


def tone(rate: int, seconds: float, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return (np.stack([x, 0.5 * x], axis=1) if channels == 2 else x).astype(np.float32)


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype="PCM_16")
    return buf.getvalue()


# (file stem, emotion class, speaker, text, rate Hz, channels, seconds, format)
ROWS = [
    ("a", 0, "spk1", "hello there", 16000, 1, 0.30, "WAV"),
    ("b", 1, "spk1", "good  morning", 22050, 2, 0.25, "FLAC"),
    ("c", 2, "spk2", "see you", 8000, 1, 0.40, "WAV"),
    ("d", 3, "spk2", "no way", 44100, 1, 0.20, "FLAC"),
    ("e", 1, "spk3", "fine", 16000, 1, 0.35, "WAV"),
    ("f", -1, "spk3", "maybe", 16000, 1, 0.30, "FLAC"),
]


def audio_bytes(stem, rate, channels, seconds, fmt) -> bytes:
    freq = 150.0 + 40 * (ord(stem) - ord("a"))
    return encode(tone(rate, seconds, channels, freq), rate, fmt)


def write_shard(path: Path, rows: list[tuple], *, bad: set[str] = frozenset(), group=2) -> Path:
    """One parquet shard as ``datasets`` writes it; rows in ``bad`` hold garbage bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = []
    for stem, _, _, _, rate, ch, secs, fmt in rows:
        data = b"RIFF\x00\x00garbage" if stem in bad else audio_bytes(stem, rate, ch, secs, fmt)
        cells.append({"bytes": data, "path": f"{stem}.{fmt.lower()}"})
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "audio": pa.array(cells, type=audio_type),
            "emotion": pa.array([r[1] for r in rows], type=pa.int64()),
            "speaker_id": [r[2] for r in rows],
            "transcript": [r[3] for r in rows],
            "accent": ["us" if i % 2 else "uk" for i in range(len(rows))],
            "duration_s": [r[6] for r in rows],  # clashes with the contract: kept as hf_
            "is_acted": [i % 3 == 0 for i in range(len(rows))],
            "tokens": pa.array([[1, 2]] * len(rows), type=pa.list_(pa.int64())),  # left out
        }
    )
    features = {
        "audio": {"sampling_rate": None, "_type": "Audio"},
        "emotion": {"names": EMOTIONS, "_type": "ClassLabel"},
        "speaker_id": {"dtype": "string", "_type": "Value"},
    }
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=group)
    return path


def make_dataset(root: Path, *, bad: set[str] = frozenset(), card: str | None = CARD) -> Path:
    """data/test-0000{0,1}-of-00002.parquet (3 rows each), a train shard, and the card."""
    write_shard(root / "data" / "test-00000-of-00002.parquet", ROWS[:3], bad=bad)
    write_shard(root / "data" / "test-00001-of-00002.parquet", ROWS[3:], bad=bad)
    write_shard(root / "data" / "train-00000-of-00001.parquet", ROWS[:2])
    if card is not None:
        (root / "README.md").write_text(card, encoding="utf-8")
    return root


def local_spec(root: Path, **over) -> dict:
    return {
        "kind": "hf_dataset",
        "path": str(root),
        "split": "test",
        "columns": {"speaker": "speaker_id", "text": "transcript"},
        "language": "en",
        **over,
    }


def reference(stem, rate, channels, seconds, fmt, tmp_path: Path) -> np.ndarray:
    """The folder kind's decoding of the same bytes from a file, as 16-bit samples: what the
    corpus must hold."""
    path = tmp_path / f"ref_{stem}.{fmt.lower()}"
    path.write_bytes(audio_bytes(stem, rate, channels, seconds, fmt))
    samples, _ = audio.load(path, sample_rate=16000)
    return audio.to_pcm16(samples)


# --- local folder ----------------------------------------------------------------------------


def test_registered_with_schema_defaults():
    assert CORPORA["hf_dataset"] is hf_dataset.build
    filled = hf_dataset.parse_spec({"kind": "hf_dataset", "path": "/"}).spec
    assert filled["split"] == "train" and filled["columns"]["audio"] == "audio"
    assert {k: filled[k] for k in schema.defaults("$defs.hf_dataset")} == {
        **schema.defaults("$defs.hf_dataset"),
        "path": "/",
    }


def test_local_folder_builds_the_contract(tmp_path):
    root = make_dataset(tmp_path / "ds")
    out = tmp_path / "corpus"
    build_corpus(local_spec(root), out)
    utts, segs = read_corpus(out)
    assert list(utts.columns[: len(UTTERANCE_COLUMNS)]) == UTTERANCE_COLUMNS and segs.empty
    # the test split only (not train), in split order, ids from the row index in the split
    assert list(utts.utterance_id) == [f"test-{i:06d}" for i in range(6)]
    assert list(utts.speaker) == [r[2] for r in ROWS]
    assert list(utts.text) == ["hello there", "good morning", "see you", "no way", "fine", "maybe"]
    assert set(utts.language) == {"en"} and set(utts.gender) == {"unknown"}
    # ClassLabel ints become their names; -1 (no label) an empty cell
    assert list(utts.emotion) == ["neutral", "happy", "sad", "angry", "happy", ""]
    assert list(utts.accent) == ["uk", "us", "uk", "uk", "us", "uk"]
    assert list(utts.is_acted) == [True, False, False, True, False, False]
    assert list(utts.hf_duration_s) == pytest.approx([r[6] for r in ROWS])
    assert "tokens" not in utts.columns and "speaker_id" not in utts.columns
    files = ["data/test-00000-of-00002.parquet"] * 3 + ["data/test-00001-of-00002.parquet"] * 3
    assert list(utts.source_file) == files and list(utts.source_row) == [0, 1, 2, 0, 1, 2]
    assert list(utts.source_sample_rate) == [r[4] for r in ROWS]
    assert list(utts.source_channels) == [r[5] for r in ROWS]
    assert set(utts.sample_rate) == {16000}
    for (stem, _, _, _, rate, ch, secs, fmt), row in zip(ROWS, utts.itertuples(), strict=True):
        written, written_rate = sf.read(out / row.audio, dtype="int16")
        expected = reference(stem, rate, ch, secs, fmt, tmp_path)
        assert written_rate == 16000 and row.duration_s == pytest.approx(secs, abs=1e-3)
        np.testing.assert_array_equal(written, expected)  # same decoding as the folder kind
    record = json.loads((out / hf_dataset.PROVENANCE_FILE).read_text())
    assert record["path"] == str(root.resolve()) and record["commit"] is None
    assert record["chosen_by"] == "the configs entry of README.md"
    assert record["patterns"] == ["data/test-*"]
    assert [f["path"] for f in record["files"]] == sorted(set(files))
    for f in record["files"]:
        data = (root / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert f["rows"] == 3
    assert record["class_labels"] == {"emotion": EMOTIONS}
    assert list(record["left_out_columns"]) == ["tokens"]
    assert record["utterances"] == 6 and record["skipped"] == 0


def test_mapped_columns_ids_gender_and_language(tmp_path):
    root = make_dataset(tmp_path / "ds")
    spec = local_spec(
        root,
        columns={"utterance_id": "accent", "speaker": "speaker_id", "gender": "accent"},
    )
    with pytest.raises(CorpusError, match=r"row 2: duplicate utterance_id 'uk'"):
        build_corpus(spec, tmp_path / "dup")
    spec["columns"] = {"speaker": "speaker_id", "language": "accent", "gender": "transcript"}
    build_corpus(spec, tmp_path / "c")
    utts, _ = read_corpus(tmp_path / "c")
    assert list(utts.language) == ["uk", "us", "uk", "uk", "us", "uk"]
    assert list(utts.text) == [""] * 6 and "transcript" not in utts.columns
    assert "accent" not in utts.columns  # mapped: not repeated as a label column


def test_gender_values_are_normalised(tmp_path):
    from speechlens.corpora.hf_table import _contract_values

    col = {"gender": "g", "speaker": None, "language": None, "text": None, "utterance_id": None}
    for raw, want in [("F", "female"), ("male", "male"), ("M", "male"), ("", "unknown")]:
        assert _contract_values({"g": raw}, col, "x-0", "en")["gender"] == want
    assert _contract_values({"g": "nonbinary"}, col, "x-0", "en")["gender"] == "nonbinary"


def test_missing_mapped_column_names_the_key_and_lists_columns(tmp_path):
    root = make_dataset(tmp_path / "ds")
    spec = local_spec(root, columns={"speaker": "spk"})
    with pytest.raises(CorpusError) as err:
        build_corpus(spec, tmp_path / "c")
    message = str(err.value)
    assert "config key columns.speaker names column 'spk'" in message
    assert "test-00000-of-00002.parquet" in message
    assert "['audio', 'emotion', 'speaker_id', 'transcript', 'accent'" in message
    with pytest.raises(CorpusError, match=r"columns.audio: column 'transcript' is string, not"):
        build_corpus(local_spec(root, columns={"audio": "transcript"}), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_bad_audio_bytes_fail_naming_the_row(tmp_path):
    root = make_dataset(tmp_path / "ds", bad={"e"})
    with pytest.raises(CorpusError) as err:
        build_corpus(local_spec(root), tmp_path / "c")
    message = str(err.value)
    assert "data/test-00001-of-00002.parquet row 1: utterance 'test-000004'" in message
    assert "bad audio bytes (cannot read audio" in message
    assert not (tmp_path / "c").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # staging gone


def test_bad_audio_bytes_skipped(tmp_path, caplog):
    root = make_dataset(tmp_path / "ds", bad={"b", "e"})
    out = tmp_path / "c"
    with caplog.at_level(logging.WARNING, logger="speechlens.corpora.hf_dataset"):
        build_corpus(local_spec(root, on_bad_audio="skip"), out, threads=2)
    utts, _ = read_corpus(out)
    assert list(utts.utterance_id) == ["test-000000", "test-000002", "test-000003", "test-000005"]
    skipped = (out / "skipped.tsv").read_text().splitlines()
    assert skipped[0] == "utterance_id\tsource_file\tsource_row\treason"
    assert skipped[1].startswith("test-000001\tdata/test-00000-of-00002.parquet\t1\tcannot read")
    assert skipped[2].startswith("test-000004\tdata/test-00001-of-00002.parquet\t1\tcannot read")
    assert "skipped 2 of 6 utterances" in caplog.text
    assert json.loads((out / "hf_dataset.json").read_text())["skipped"] == 2


def test_rows_without_bytes_and_too_long_audio_are_bad_audio(tmp_path):
    root = tmp_path / "ds"
    write_shard(root / "data" / "test.parquet", ROWS[:3])
    table = pq.read_table(root / "data" / "test.parquet")
    cells = table.column("audio").to_pylist()
    cells[2] = {"bytes": None, "path": "/elsewhere/c.wav"}
    column = pa.array(cells, type=table.schema.field("audio").type)
    pq.write_table(table.set_column(0, "audio", column), root / "data" / "test.parquet")
    spec = local_spec(root, on_bad_audio="skip", max_duration_s=0.28, columns={})
    build_corpus(spec, tmp_path / "c")
    skipped = (tmp_path / "c" / "skipped.tsv").read_text()
    assert "test-000000\tdata/test.parquet\t0\ttoo long: 0.30 s > max_duration_s 0.28 s" in skipped
    assert "no audio bytes; only a path '/elsewhere/c.wav'" in skipped
    utts, _ = read_corpus(tmp_path / "c")
    assert list(utts.utterance_id) == ["test-000001"] and list(utts.speaker) == ["unknown"]


def test_slices_are_seeded_as_for_the_other_kinds(tmp_path):
    root = make_dataset(tmp_path / "ds")
    spec = local_spec(root, max_speakers=2, utterances_per_speaker=1, seed=3)
    build_corpus(spec, tmp_path / "a")
    build_corpus(spec, tmp_path / "b")
    a, _ = read_corpus(tmp_path / "a")
    b, _ = read_corpus(tmp_path / "b")
    assert list(a.utterance_id) == list(b.utterance_id) and a.speaker.nunique() == 2
    # the very slice sources.sample draws from the same records
    pool = [Source(f"test-{i:06d}", "", r[2], "en") for i, r in enumerate(ROWS)]
    assert list(a.utterance_id) == [s.utterance_id for s in sample(pool, spec)]
    drawn = set()
    for seed in range(6):
        build_corpus({**spec, "seed": seed}, tmp_path / f"s{seed}")
        drawn.add(tuple(read_corpus(tmp_path / f"s{seed}")[0].utterance_id))
    assert len(drawn) > 1  # the seed matters


# --- which files -----------------------------------------------------------------------------


def test_card_patterns():
    card = (
        "---\nconfigs:\n- config_name: emo\n  data_files:\n"
        "  - split: test\n    path: [a/*, b/*]\n---\n"
    )
    assert hf_files.card_patterns(card, "emo", "test", "card") == ["a/*", "b/*"]
    with pytest.raises(CorpusError, match=r"no config 'default' .*configs: \['emo'\]"):
        hf_files.card_patterns(card, "default", "test", "card")
    with pytest.raises(CorpusError, match=r"no split 'train' .*splits: \['test'\]"):
        hf_files.card_patterns(card, "emo", "train", "card")
    bare = "---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n"
    assert hf_files.card_patterns(bare, "default", "train", "card") == ["data/*.parquet"]
    assert hf_files.card_patterns("# no header\n", "default", "train", "card") is None


def test_usual_layouts_without_a_card(tmp_path):
    root = tmp_path / "export"  # the hub's parquet export: <config>/<split>/<n>.parquet
    write_shard(root / "emo" / "test" / "0000.parquet", ROWS[:2])
    write_shard(root / "emo" / "test" / "0001.parquet", ROWS[2:4])
    write_shard(root / "emo" / "train" / "0000.parquet", ROWS[4:])
    found = hf_files.choose(root, "emo", "test", None, "x")
    assert found.files == ("emo/test/0000.parquet", "emo/test/0001.parquet")
    assert found.chosen_by == "the usual parquet layout"
    with pytest.raises(CorpusError, match=r"no parquet files for config 'emo' split 'dev'"):
        hf_files.choose(root, "emo", "dev", None, "x")
    picked = hf_files.choose(root, "emo", "dev", ["emo/train/*.parquet"], "x")
    assert picked.files == ("emo/train/0000.parquet",) and picked.chosen_by == "data_files"
    (root / "emo" / "test" / "extra.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match=r"are not parquet"):
        hf_files.choose(root, "emo", "test", ["emo/test/*"], "x")
    build_corpus(local_spec(root, config="emo", split="test", columns={}), tmp_path / "c")
    assert len(read_corpus(tmp_path / "c")[0]) == 4


def test_spec_errors(tmp_path):
    with pytest.raises(CorpusError, match="exactly one of `repo`"):
        hf_dataset.parse_spec({"kind": "hf_dataset"})
    with pytest.raises(CorpusError, match="exactly one of `repo`"):
        hf_dataset.parse_spec({"repo": "a/b", "revision": COMMIT, "path": str(tmp_path)})
    with pytest.raises(CorpusError, match="`revision` is required with repo 'a/b'"):
        hf_dataset.parse_spec({"repo": "a/b"})
    with pytest.raises(CorpusError, match="is not a folder"):
        hf_dataset.parse_spec({"path": str(tmp_path / "nope")})


# --- the hub, through huggingface_hub's cache (offline) --------------------------------------


def hub_cache(cache: Path, repo: str, dataset: Path, commit: str = COMMIT) -> Path:
    """Lay ``dataset`` out as huggingface_hub caches a snapshot: blobs named by their sha256,
    snapshots/<commit>/ holding relative links to them, refs/main naming the commit."""
    store = cache / f"datasets--{repo.replace('/', '--')}"
    snapshot = store / "snapshots" / commit
    for path in sorted(p for p in dataset.rglob("*") if p.is_file()):
        blob = store / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(path.read_bytes())
        link = snapshot / path.relative_to(dataset)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (store / "refs").mkdir(parents=True, exist_ok=True)
    (store / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def hub_spec(cache: Path, **over) -> dict:
    spec = {
        "kind": "hf_dataset",
        "repo": "org/emotions",
        "revision": COMMIT,
        "cache_dir": str(cache),
        "split": "test",
        "columns": {"speaker": "speaker_id"},
        **over,
    }
    return spec


def test_hub_snapshot_from_the_cache_offline(tmp_path, offline, caplog):
    cache = tmp_path / "hub"
    snapshot = hub_cache(cache, "org/emotions", make_dataset(tmp_path / "ds"))
    build_corpus(hub_spec(cache), tmp_path / "c")
    utts, _ = read_corpus(tmp_path / "c")
    assert len(utts) == 6 and list(utts.emotion[:2]) == ["neutral", "happy"]
    record = json.loads((tmp_path / "c" / "hf_dataset.json").read_text())
    assert record["repo"] == "org/emotions" and record["revision"] == COMMIT
    assert record["commit"] == COMMIT and record["path"] is None
    for f in record["files"]:  # the blobs are named by their sha256 in the cache
        assert (snapshot / f["path"]).resolve().name == f["sha256"]
    # a branch name resolves through refs/ to the same commit, with a warning
    with caplog.at_level(logging.WARNING, logger="speechlens.corpora.hf_files"):
        build_corpus(hub_spec(cache, revision="main"), tmp_path / "m")
    assert "revision 'main' is not a commit hash" in caplog.text
    record = json.loads((tmp_path / "m" / "hf_dataset.json").read_text())
    assert record["revision"] == "main" and record["commit"] == COMMIT


def test_hub_offline_without_the_cache_says_how_to_provide_it(tmp_path, offline):
    with pytest.raises(CorpusError) as err:
        build_corpus(hub_spec(tmp_path / "empty"), tmp_path / "c")
    message = str(err.value)
    assert "hf_dataset org/emotions@" + COMMIT in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"hf download org/emotions --repo-type dataset --revision {COMMIT}" in message
    assert "set `path`" in message


def test_hub_download_asks_for_the_card_then_the_split(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = hub_cache(tmp_path / "hub", "org/emotions", make_dataset(tmp_path / "ds"))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    build_corpus(hub_spec(tmp_path / "hub"), tmp_path / "c")
    assert [c[0] for c in calls] == ["org/emotions"] * 2
    assert [c[1]["allow_patterns"] for c in calls] == [["README.md"], ["data/test-*"]]
    for _, kwargs in calls:
        assert kwargs["repo_type"] == "dataset" and kwargs["revision"] == COMMIT
        assert kwargs["cache_dir"] == str(tmp_path / "hub")
    calls.clear()
    (snapshot / "README.md").unlink()  # no card: the usual layouts are asked for
    build_corpus(hub_spec(tmp_path / "hub"), tmp_path / "d")
    patterns = calls[1][1]["allow_patterns"]
    assert "data/test-*.parquet" in patterns and "default/test/*.parquet" in patterns
    assert len(read_corpus(tmp_path / "d")[0]) == 6


# --- config ----------------------------------------------------------------------------------


def test_schema_accepts_the_kind_and_names_bad_keys(repo):
    from speechlens.config import config_errors, load_schema

    loaded = load_schema(repo / "workflow" / "schemas" / "config.schema.yaml")
    good = {"corpora": {"emo": hub_spec(Path("/c")), "local": local_spec(Path("/d"))}}
    assert config_errors(good, loaded) == []
    bad = {"corpora": {"emo": {**hub_spec(Path("/c")), "columns": {"label": "x"}, "splits": 1}}}
    errors = "\n".join(config_errors(bad, loaded))
    assert "corpora.emo: Additional properties are not allowed ('splits'" in errors
    assert "corpora.emo.columns: Additional properties are not allowed ('label'" in errors


CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted([*CONFIG_DIR.glob("examples/*.yaml"), *CONFIG_DIR.glob("studies/*.yaml")])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_validate(path, repo):
    from speechlens.config import config_errors, load_schema

    config = yaml.safe_load(path.read_text())
    assert (
        config_errors(config, load_schema(repo / "workflow" / "schemas" / "config.schema.yaml"))
        == []
    )
    for name, corpus in config["corpora"].items():
        if corpus["kind"] == "hf_dataset":
            hf_dataset.parse_spec(corpus)  # the library accepts it too
            assert corpus["repo"].startswith("DynamicSuperb/"), name


def test_dynamic_superb_example_is_the_papers_protocol(repo):
    config = yaml.safe_load(
        (repo / "config" / "studies" / "what_foundation_models_miss.yaml").read_text()
    )
    tasks = config["probing"]["tasks"]
    assert tasks and all(t["level"] == "utterance" for t in tasks.values())
    for task in tasks.values():
        assert set(task["probes"]) == {"knn", "mlp", "kmeans"} and task["folds"] == 5
    assert (
        config["figures"]["metric"] == "macro_f1" and config["figures"]["cluster_metric"] == "nmi"
    )
