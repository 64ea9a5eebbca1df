"""Public corpus kinds (librispeech, timit, commonvoice, voxceleb) end to end: each release is
written in its real layout, archived, served on 127.0.0.1, downloaded, extracted and built
into the corpus contract; plus seeded per-speaker sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechlens.corpora import CORPORA, build_corpus, librispeech, timit
from speechlens.corpora.contract import SILENCE, CorpusError, read_corpus
from speechlens.corpora.download import fetch_and_extract, sha256sum
from speechlens.corpora.sources import Source, sample
from tests import corpus_layouts as layouts
from tests.httpserver import FileServer


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    with FileServer(root) as srv:
        yield srv


def serve(server: FileServer, folder, name: str) -> tuple[str, str]:
    """Archive ``folder`` as ``name`` on the server; returns (url, sha256)."""
    archive = layouts.pack(folder, server.root / name)
    return f"{server.url}/{name}", sha256sum(archive)


def tier(segments: pd.DataFrame, utt: str, name: str) -> list[tuple[float, float, str]]:
    rows = segments[(segments.utterance_id == utt) & (segments.tier == name)]
    return [(round(r.start_s, 6), round(r.end_s, 6), r.label) for r in rows.itertuples()]


def test_kinds_are_registered():
    assert {"librispeech", "timit", "commonvoice", "voxceleb"} <= set(CORPORA)


# --- librispeech ---------------------------------------------------------------------------


@pytest.fixture
def libri(tmp_path, server):
    """dev-clean.tar.gz and an MFA alignments zip on the server."""
    release = tmp_path / "release"
    expected = layouts.make_librispeech(release)
    phones = layouts.make_mfa_alignments(tmp_path / "mfa", expected)
    url, sha = serve(server, release, "dev-clean.tar.gz")
    aurl, asha = serve(server, tmp_path / "mfa", "dev-clean-alignments.zip")
    return (
        {"url": url, "sha256": sha, "alignments": {"url": aurl, "sha256": asha}},
        expected,
        phones,
    )


def test_librispeech_downloads_and_builds_the_contract(tmp_path, server, libri):
    pins, expected, phones = libri
    spec = {"kind": "librispeech", "downloads": str(tmp_path / "dl"), "retries": 0, **pins}
    build_corpus(spec, tmp_path / "ls", threads=2)
    utts, segs = read_corpus(tmp_path / "ls")
    assert sorted(utts.utterance_id) == sorted(expected)
    for row in utts.itertuples():
        want = expected[row.utterance_id]
        assert (row.speaker, row.gender, row.text) == (
            want["speaker"],
            want["gender"],
            want["text"],
        )
        assert (row.language, str(row.chapter), row.subset) == ("en", want["chapter"], "dev-clean")
        assert row.duration_s == pytest.approx(want["duration_s"], abs=1e-6)
        assert row.source_audio == f"{row.speaker}/{want['chapter']}/{row.utterance_id}.flac"
        info = sf.info(tmp_path / "ls" / row.audio)
        assert (info.samplerate, info.subtype) == (16000, "PCM_16")
        # the MFA phones, with the gaps before and after filled with silence
        want_phones = [(0.0, 0.05, SILENCE)] + [
            (a, round(b, 6), p) for a, b, p in phones[row.utterance_id]
        ]
        want_phones.append(
            (round(want["duration_s"] - 0.05, 6), round(want["duration_s"], 6), SILENCE)
        )
        assert tier(segs, row.utterance_id, "phone") == want_phones
        assert [s[2] for s in tier(segs, row.utterance_id, "word")] == [
            SILENCE, want["text"].split()[0].lower(), SILENCE
        ]  # fmt: skip
    # cached under downloads/: the archive and its extracted folder
    assert sha256sum(tmp_path / "dl" / "dev-clean.tar.gz") == pins["sha256"]
    extracted = tmp_path / "dl" / "dev-clean.tar.gz.extracted"
    assert (extracted / "LibriSpeech" / "SPEAKERS.TXT").is_file()
    # a second corpus from the same subset downloads nothing
    before = len(server.requests)
    build_corpus({**spec, "alignments": None, "max_utterances": 2}, tmp_path / "ls2")
    assert len(server.requests) == before
    assert len(read_corpus(tmp_path / "ls2")[0]) == 2


def test_librispeech_from_an_extracted_copy_with_per_speaker_sampling(tmp_path, monkeypatch):
    expected = layouts.make_librispeech(tmp_path / "copy")
    layouts.make_mfa_alignments(tmp_path / "mfa", expected)
    monkeypatch.chdir(tmp_path)  # relative paths, as in a workflow run
    spec = {
        "kind": "librispeech",
        "path": "copy",
        "max_speakers": 2,
        "utterances_per_speaker": 2,
        "seed": 1,
        "alignments": {"path": str(tmp_path / "mfa")},
    }
    build_corpus(spec, "a")
    utts, segs = read_corpus(tmp_path / "a")
    assert utts.speaker.value_counts().tolist() == [2, 2]
    assert set(segs.utterance_id) == set(utts.utterance_id)
    build_corpus(spec, tmp_path / "b")  # same seed, same slice
    assert read_corpus(tmp_path / "b")[0].utterance_id.tolist() == utts.utterance_id.tolist()


def test_librispeech_pins_and_layout_errors(tmp_path):
    url, sha = librispeech.ARCHIVES["dev-clean"]
    assert url == "https://www.openslr.org/resources/12/dev-clean.tar.gz"
    assert librispeech.archive_pin({"subset": "dev-clean"}) == (url, sha)
    mirror = "https://mirror.example/openslr/12/dev-clean.tar.gz"
    assert librispeech.archive_pin({"subset": "dev-clean", "url": mirror}) == (mirror, sha)
    with pytest.raises(CorpusError, match="`sha256` is required for url"):
        librispeech.archive_pin({"subset": "dev-clean", "url": "https://x.example/mine.tar.gz"})
    expected = layouts.make_librispeech(tmp_path / "copy")
    utt = sorted(expected)[0]
    info = expected[utt]
    (
        tmp_path / "copy/LibriSpeech/dev-clean" / info["speaker"] / info["chapter"] / f"{utt}.flac"
    ).unlink()
    with pytest.raises(
        CorpusError, match=rf"\.trans\.txt line 1: audio .*{utt}\.flac does not exist"
    ):
        build_corpus({"kind": "librispeech", "path": str(tmp_path / "copy")}, tmp_path / "out")
    with pytest.raises(CorpusError, match="no LibriSpeech/test-other or test-other folder"):
        build_corpus(
            {"kind": "librispeech", "path": str(tmp_path / "copy"), "subset": "test-other"},
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


# --- timit ---------------------------------------------------------------------------------


@pytest.fixture
def timit_copy(tmp_path, server):
    """A TIMIT copy downloaded as a zip from the server (as a lab would share it)."""
    written = layouts.make_timit(tmp_path / "release")
    url, sha = serve(server, tmp_path / "release", "timit.zip")
    return fetch_and_extract(url, sha, tmp_path / "dl", retries=0) / "TIMIT", written


def test_soundfile_reads_timit_nist_sphere(timit_copy):
    root, written = timit_copy
    samples, rate = sf.read(root / "TRAIN/DR1/FCJF0/SA1.WAV", dtype="int16")
    assert rate == 16000 and sf.info(root / "TRAIN/DR1/FCJF0/SA1.WAV").format == "NIST"
    np.testing.assert_array_equal(samples, written["FCJF0_SA1"])


def test_timit_builds_with_phones_words_speakers_and_dialects(tmp_path, timit_copy):
    root, written = timit_copy
    build_corpus({"kind": "timit", "path": str(root)}, tmp_path / "t")
    utts, segs = read_corpus(tmp_path / "t")
    assert sorted(utts.utterance_id) == sorted(written)  # SA1.WAV.wav copies not listed
    row = utts.set_index("utterance_id").loc["FCJF0_SA1"]
    assert (row.speaker, row.gender, row.dialect, row.split, row.sentence) == (
        "FCJF0", "female", "DR1", "train", "SA1"
    )  # fmt: skip
    assert row.text == "She peeps SA1." and row.duration_s == pytest.approx(0.5)
    assert utts.set_index("utterance_id").loc["MDAB0_SX14", "gender"] == "male"
    assert utts.set_index("utterance_id").loc["FAEM0_SI1039", "split"] == "test"
    audio, _ = sf.read(tmp_path / "t" / row.audio, dtype="int16")
    assert np.abs(audio.astype(int) - written["FCJF0_SA1"]).max() <= 1  # 16 kHz: no resampling
    want = [(a / 16000, b / 16000, p) for a, b, p in layouts.TIMIT_PHN]
    assert tier(segs, "FCJF0_SA1", "phone") == want
    # overlapping words: the later one starts where the previous ends
    assert tier(segs, "FCJF0_SA1", "word") == [
        (0.0, 0.05, SILENCE), (0.05, 0.125, "she"), (0.125, 0.35, "peep"), (0.35, 0.5, SILENCE)
    ]  # fmt: skip


def test_timit_39_folding_splits_and_sentence_types(tmp_path, timit_copy):
    root, _ = timit_copy
    spec = {
        "kind": "timit",
        "path": str(root),
        "phone_set": "timit39",
        "splits": ["train"],
        "sentence_types": ["si", "sx"],
    }
    build_corpus(spec, tmp_path / "t39")
    utts, segs = read_corpus(tmp_path / "t39")
    assert sorted(utts.utterance_id) == ["FCJF0_SI1039", "FCJF0_SX14", "MDAB0_SI1039", "MDAB0_SX14"]
    # h# and pcl -> sil; q dropped, its gap filled with sil
    assert [p for _, _, p in tier(segs, "FCJF0_SX14", "phone")] == [
        SILENCE, "sh", SILENCE, "iy", SILENCE, "p", SILENCE
    ]  # fmt: skip
    assert set(timit.FOLD_39.values()) - {None, SILENCE} <= {"aa", "ah", "er", "hh", "ih", "l",
        "m", "n", "ng", "sh", "uw"}  # fmt: skip


def test_timit_label_file_errors_name_the_line(tmp_path, timit_copy):
    root, _ = timit_copy
    phn = root / "TRAIN/DR1/FCJF0/SX14.PHN"
    phn.write_text("0 800 h#\n800 oops sh\n")
    with pytest.raises(CorpusError, match=r"SX14\.PHN line 2: expected '<start> <end> <label>'"):
        build_corpus({"kind": "timit", "path": str(root)}, tmp_path / "bad")


# --- commonvoice ---------------------------------------------------------------------------


def test_commonvoice_release_builds_for_language_id(tmp_path, server):
    expected = layouts.make_commonvoice(tmp_path / "release")
    url, sha = serve(server, tmp_path / "release", "cv-corpus-test.tar.gz")
    root = fetch_and_extract(url, sha, tmp_path / "dl", retries=0) / "cv-corpus-test"
    build_corpus({"kind": "commonvoice", "path": str(root)}, tmp_path / "cv")
    utts, segs = read_corpus(tmp_path / "cv")
    assert sorted(utts.utterance_id) == sorted(expected) and segs.empty
    genders = {"female_feminine": "female", "male_masculine": "male", "": "unknown"}
    for row in utts.itertuples():
        want = expected[row.utterance_id]
        assert (row.speaker, row.language, row.text) == (
            want["speaker"],
            want["language"],
            want["text"],
        )
        assert row.gender == genders.get(want["gender"], want["gender"])
        assert row.source_sample_rate == 48000 and row.sample_rate == 16000
    assert 'He said "hello to me' in set(utts.text)  # an unquoted TSV with a bare quote
    # per-language sampling: at most one utterance per speaker, two per language
    spec = {"kind": "commonvoice", "path": str(root), "utterances_per_speaker": 1,
            "max_utterances": 2, "languages": ["en", "tr"]}  # fmt: skip
    build_corpus(spec, tmp_path / "cv2")
    small = read_corpus(tmp_path / "cv2")[0]
    assert small.language.value_counts().to_dict() == {"en": 2, "tr": 2}
    assert not small.speaker.duplicated().any()


def test_commonvoice_errors_name_the_row(tmp_path):
    layouts.make_commonvoice(tmp_path / "release")
    en = tmp_path / "release/cv-corpus-test/en"
    (en / "clips/common_voice_en_1001.mp3").unlink()
    with pytest.raises(CorpusError, match=r"en/validated\.tsv row 3: clip .* does not exist"):
        build_corpus({"kind": "commonvoice", "path": str(en)}, tmp_path / "out")
    with pytest.raises(CorpusError, match=r"no validated\.tsv in the language folders \['de'\]"):
        build_corpus(
            {"kind": "commonvoice", "path": str(en.parent), "languages": ["de"]}, tmp_path / "out"
        )


# --- voxceleb ------------------------------------------------------------------------------


def test_voxceleb_speaker_folders_build_for_speaker_id(tmp_path, server):
    ids = layouts.make_voxceleb(tmp_path / "release")
    url, sha = serve(server, tmp_path / "release", "vox1_test.zip")
    root = fetch_and_extract(url, sha, tmp_path / "dl", retries=0)
    spec = {"kind": "voxceleb", "path": str(root / "wav"), "meta": "../vox1_meta.csv"}
    build_corpus(spec, tmp_path / "vox")
    utts, _ = read_corpus(tmp_path / "vox")
    assert sorted(utts.utterance_id) == ids
    by_id = utts.set_index("utterance_id")
    assert tuple(by_id.loc["id10002-0_laIeN-Q44-00002", ["speaker", "video", "gender"]]) == (
        "id10002", "0_laIeN-Q44", "male"
    )  # fmt: skip
    assert by_id.loc["id10003-5ablueV_1tw-00001", "gender"] == "female"
    assert by_id.loc["id10001-1zcIwhmdeo4-00001", "nationality"] == "Ireland"
    assert set(utts.language) == {"unknown"}


def test_voxceleb_m4a_only_is_a_clear_error(tmp_path):
    clip = tmp_path / "vox2/id00012/21Uxsk56VDQ/00001.m4a"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    with pytest.raises(CorpusError, match=r"1 \.m4a files: convert them to WAV first"):
        build_corpus({"kind": "voxceleb", "path": str(tmp_path / "vox2")}, tmp_path / "out")


# --- sampling ------------------------------------------------------------------------------


def sources(n_speakers: int, per_speaker: int, language: str = "en") -> list[Source]:
    return [
        Source(f"{language}_s{s}_u{u}", f"{s}/{u}.wav", f"{language}_s{s}", language)
        for s in range(n_speakers)
        for u in range(per_speaker)
    ]


def test_sampling_is_seeded_per_speaker_and_per_language():
    pool = sources(6, 5) + sources(4, 3, "tr")
    spec = {"max_speakers": 3, "utterances_per_speaker": 2, "seed": 7}
    picked = sample(pool, spec)
    for lang in ("en", "tr"):
        counts = pd.Series([s.speaker for s in picked if s.language == lang]).value_counts()
        assert len(counts) == 3 and set(counts) == {2}
    assert sample(list(reversed(pool)), spec) == picked  # order of listing does not matter
    # the English slice does not depend on which other languages are listed
    assert [s for s in picked if s.language == "en"] == sample(sources(6, 5), spec)
    slices = {tuple(s.utterance_id for s in sample(pool, {**spec, "seed": k})) for k in range(5)}
    assert len(slices) > 1  # the seed matters
    capped = sample(pool, {"max_utterances": 4})
    assert [s.language for s in capped].count("en") == 4 and len(capped) == 8
    assert sample(pool, {}) == sorted(pool, key=lambda s: s.utterance_id)
    with pytest.raises(CorpusError, match="max_utterances 0 is not a positive integer"):
        sample(pool, {"max_utterances": 0})


# --- config schema -------------------------------------------------------------------------


def test_schema_accepts_the_kinds_and_names_bad_keys(repo):
    from speechlens.config import config_errors, load_schema

    schema = load_schema(repo / "workflow" / "schemas" / "config.schema.yaml")
    good = {
        "corpora": {
            "ls": {"kind": "librispeech", "subset": "dev-other", "max_utterances": 100,
                   "alignments": {"url": "https://x.example/a.zip", "sha256": "a" * 64}},
            "ls_local": {"kind": "librispeech", "path": "/data/ls", "alignments": {"path": "/a"}},
            "timit": {"kind": "timit", "path": "/data/timit", "phone_set": "timit39",
                      "sentence_types": ["si", "sx"], "utterances_per_speaker": 5},
            "cv": {"kind": "commonvoice", "path": "/data/cv", "languages": ["en", "tr"]},
            "vox": {"kind": "voxceleb", "path": "/data/vox1/wav", "meta": "../vox1_meta.csv",
                    "max_speakers": 40, "seed": 3},
        }
    }  # fmt: skip
    assert config_errors(good, schema) == []
    bad = {
        "corpora": {
            "ls": {"kind": "librispeech", "subsett": "dev-clean", "sha256": "abc"},
            "ls2": {"kind": "librispeech", "alignments": {"url": "https://x.example/a.zip"}},
            "timit": {"kind": "timit", "path": "/t", "phone_set": "timit48"},
            "cv": {"kind": "commonvoice"},
            "vox": {"kind": "voxceleb", "path": "/v", "max_utterances": 0},
        }
    }
    errors = "\n".join(config_errors(bad, schema))
    assert "corpora.ls: Additional properties are not allowed ('subsett'" in errors
    assert "config key corpora.ls.sha256: 'abc' does not match" in errors
    assert "config key corpora.ls2.alignments" in errors
    assert "config key corpora.timit.phone_set: 'timit48' is not one of" in errors
    assert "config key corpora.cv: 'path' is a required property" in errors
    assert "config key corpora.vox.max_utterances: 0 is less than the minimum of 1" in errors


def test_the_workflow_fills_the_defaults_the_library_reads(repo):
    """One home for defaults: the schema. Snakemake's validate fills a corpus entry with the
    same values that the kinds read through speechlens.schema (no Python copy to drift)."""
    from snakemake.utils import validate

    from speechlens import schema

    config = {
        "corpora": {
            "synth": {"kind": "synthetic"},
            "fold": {"kind": "folder", "path": "/f"},
            "ls": {"kind": "librispeech"},
            "timit": {"kind": "timit", "path": "/t"},
            "cv": {"kind": "commonvoice", "path": "/c"},
            "vox": {"kind": "voxceleb", "path": "/v"},
            "hf": {"kind": "hf_dataset", "path": "/h"},
        }
    }
    user = {name: dict(spec) for name, spec in config["corpora"].items()}
    validate(config, str(repo / "workflow" / "schemas" / "config.schema.yaml"))
    filled = config["corpora"]
    for name, spec in user.items():
        library = schema.merge(spec, f"$defs.{spec['kind']}")
        assert filled[name] == library, name
    for name in ("ls", "timit", "cv", "vox", "hf"):
        assert filled[name]["seed"] == 0 and filled[name]["max_utterances"] is None
    assert filled["ls"]["subset"] == "dev-clean" and filled["vox"]["language"] == "unknown"
    assert filled["fold"]["manifest"] == "manifest.tsv" and filled["cv"]["table"] == "validated.tsv"
    assert filled["ls"]["sha256"] is None and filled["ls"]["alignments"] is None
