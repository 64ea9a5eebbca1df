"""Corpus kind ``folder``: manifest + audio (+ TextGrids or a segments table) -> contract."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from praatio import textgrid

from speechlens.audio import AudioError
from speechlens.corpora import alignments, folder
from speechlens.corpora.contract import (
    SEGMENT_COLUMNS,
    SILENCE,
    UTTERANCE_COLUMNS,
    CorpusError,
    read_corpus,
)

HEADER = ["utterance_id", "audio", "speaker", "language", "text", "split"]
# id, file, native rate (Hz), channels, duration (s), format
FILES = [
    ("utt_a", "wav/a.wav", 8000, 1, 1.0, "WAV"),
    ("utt_b", "flac/b.flac", 44100, 2, 0.75, "FLAC"),
    ("utt_c", "c.ogg", 22050, 1, 0.5, "OGG"),
]


def tone(rate: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.02 * rng.standard_normal((len(t), channels))
    return x.astype(np.float32)[:, 0] if channels == 1 else x.astype(np.float32)


def write_table(path: Path, header: list[str], rows: list[list], sep: str = "\t") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_textgrid(path: Path, duration: float, tiers: dict, *, blanks: bool = False) -> Path:
    """``tiers``: name -> list of (start, end, label) or, for point tiers, (time, label)."""
    tg = textgrid.Textgrid()
    for name, entries in tiers.items():
        if entries and len(entries[0]) == 2:
            tg.addTier(textgrid.PointTier(name, entries, 0, duration))
        else:
            tg.addTier(textgrid.IntervalTier(name, entries, 0, duration))
    tg.save(str(path), format="long_textgrid", includeBlankSpaces=blanks)
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A corpus folder: wav 8 kHz, stereo flac 44.1 kHz, ogg 22.05 kHz; manifest.tsv."""
    root = tmp_path / "src"
    for i, (_, name, rate, channels, seconds, fmt) in enumerate(FILES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        subtype = "VORBIS" if fmt == "OGG" else None
        sf.write(path, tone(rate, seconds, channels, seed=i), rate, format=fmt, subtype=subtype)
    rows = [
        [utt, name, f"spk{i % 2}", "en", f"text  of\t{utt}", "train"]
        for i, (utt, name, *_) in enumerate(FILES)
    ]
    write_table(root / "manifest.tsv", HEADER, rows)
    return root


@pytest.fixture
def textgrids(corpus) -> Path:
    """TextGrids for utt_a (gaps, empty intervals, odd labels, a point tier) and utt_b."""
    tg_dir = corpus / "tg"
    tg_dir.mkdir()
    write_textgrid(
        tg_dir / "utt_a.TextGrid",
        1.0,
        {
            "phones": [(0.1, 0.3, "h"), (0.3, 0.5, " a\tb "), (0.6, 0.9, "t")],
            "words": [(0.1, 0.5, "hat"), (0.6, 0.9, "")],
            "tones": [(0.2, "H")],
            "comments": [(0.0, 1.0, "ignored")],
        },
    )
    write_textgrid(
        tg_dir / "utt_b.TextGrid",
        0.75,
        {"phones": [(0.2, 0.4, "o"), (0.4, 0.755, "k")]},  # ends 5 ms late: clipped
        blanks=True,
    )
    return tg_dir


def build(corpus: Path, out: Path, **spec):
    folder.build({"kind": "folder", "path": str(corpus), **spec}, out)
    return read_corpus(out)


def tiles(segments: pd.DataFrame, durations: pd.Series) -> None:
    """Assert each (utterance, tier) runs from 0 to the duration without gaps or overlaps."""
    for (utt, _tier), group in segments.groupby(["utterance_id", "tier"]):
        starts, ends = group["start_s"].to_numpy(), group["end_s"].to_numpy()
        assert starts[0] == 0.0
        np.testing.assert_allclose(starts[1:], ends[:-1], atol=1e-9)
        assert ends[-1] == pytest.approx(durations[utt], abs=1e-6)


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


# --- successful builds -------------------------------------------------------------------


def test_build_with_textgrids(corpus, textgrids, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="speechlens.corpora.folder"):
        utts, segs = build(corpus, out, alignments="tg")

    assert list(utts.columns[: len(UTTERANCE_COLUMNS)]) == UTTERANCE_COLUMNS
    assert {"split", "source_audio", "source_channels", "source_sample_rate"} <= set(utts.columns)
    assert list(segs.columns) == SEGMENT_COLUMNS
    assert list(utts["utterance_id"]) == ["utt_a", "utt_b", "utt_c"]
    assert set(utts["gender"]) == {"unknown"} and set(utts["split"]) == {"train"}
    assert utts.loc[0, "text"] == "text of utt_a"
    assert list(utts["source_channels"]) == [1, 2, 1]
    assert list(utts["source_sample_rate"]) == [8000, 44100, 22050]
    assert list(utts["source_audio"]) == [name for _, name, *_ in FILES]

    for row, (_, _, _, _, seconds, _) in zip(utts.itertuples(), FILES, strict=True):
        assert row.audio == f"audio/{row.utterance_id}.wav"
        info = sf.info(out / row.audio)
        assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
        assert info.samplerate == row.sample_rate == 16000
        assert row.duration_s == pytest.approx(info.frames / 16000, abs=1e-6)
        assert row.duration_s == pytest.approx(seconds, abs=1e-3)
    assert sorted(p.name for p in (out / "audio").iterdir()) == [
        "utt_a.wav",
        "utt_b.wav",
        "utt_c.wav",
    ]
    assert not (out / "skipped.tsv").exists()

    durations = utts.set_index("utterance_id")["duration_s"]
    tiles(segs, durations)
    a_phone = segs[(segs.utterance_id == "utt_a") & (segs.tier == "phone")]
    assert list(a_phone["label"]) == [SILENCE, "h", "a b", SILENCE, "t", SILENCE]
    assert list(a_phone["start_s"]) == pytest.approx([0, 0.1, 0.3, 0.5, 0.6, 0.9])
    a_word = segs[(segs.utterance_id == "utt_a") & (segs.tier == "word")]
    assert list(a_word["label"]) == [SILENCE, "hat", SILENCE, SILENCE, SILENCE]
    assert set(segs["tier"]) == {"phone", "word"}  # point tier and unmapped tier ignored
    b_phone = segs[segs.utterance_id == "utt_b"]
    assert list(b_phone["label"]) == [SILENCE, "o", "k"]
    assert b_phone["end_s"].iloc[-1] == pytest.approx(durations["utt_b"])
    assert "utt_c" not in set(segs["utterance_id"])  # no TextGrid: no segments
    assert "tones (point tier)" in caplog.text and "comments" in caplog.text


def test_build_with_segments_table_and_no_fill(corpus, tmp_path):
    rows = [
        ["utt_a", "phones", "0.1", "0.3", "h"],
        ["utt_a", "phones", "0.3", "0.5", "line\nbreak"],
        ["utt_a", "phones", "0.6", "1.008", ""],  # 8 ms late: clipped
        ["utt_c", "word", "0.0", "0.5", "  spaced\ttab "],
    ]
    write_table(corpus / "segs.tsv", SEGMENT_COLUMNS, rows)
    utts, segs = build(corpus, tmp_path / "out", alignments="segs.tsv", fill_silence=False)
    assert list(segs["tier"]) == ["phone", "phone", "phone", "word"]
    assert list(segs["label"]) == ["h", "line break", SILENCE, "spaced tab"]
    assert list(segs["start_s"]) == pytest.approx([0.1, 0.3, 0.6, 0.0])
    assert segs["end_s"].iloc[2] == pytest.approx(utts["duration_s"].iloc[0])

    utts, filled = build(corpus, tmp_path / "out2", alignments=str(corpus / "segs.tsv"))
    tiles(filled, utts.set_index("utterance_id")["duration_s"])
    assert len(filled) == len(segs) + 2  # silence before 0.1 and in 0.5-0.6


def test_build_csv_manifest_gender_rate_and_threads(corpus, tmp_path):
    rows = [
        [utt, name, "s", "en", "hi", g]
        for (utt, name, *_), g in zip(FILES, ["f", "", "m"], strict=True)
    ]
    write_table(corpus / "list.csv", HEADER[:5] + ["gender"], rows, sep=",")
    utts, _ = build(corpus, tmp_path / "one", manifest="list.csv", sample_rate=8000)
    assert list(utts["gender"]) == ["f", "unknown", "m"]
    assert set(utts["sample_rate"]) == {8000}
    assert sf.info(tmp_path / "one" / "audio" / "utt_b.wav").samplerate == 8000

    folder.build(
        {"path": corpus, "manifest": corpus / "list.csv", "sample_rate": 8000},
        tmp_path / "two",
        threads=3,
    )
    threaded, _ = read_corpus(tmp_path / "two")
    pd.testing.assert_frame_equal(utts, threaded)
    for utt in threaded["utterance_id"]:
        one, _ = sf.read(tmp_path / "one" / "audio" / f"{utt}.wav", dtype="int16")
        two, _ = sf.read(tmp_path / "two" / "audio" / f"{utt}.wav", dtype="int16")
        np.testing.assert_array_equal(one, two)


def test_rebuild_replaces_existing_corpus(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "audio").mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    build(corpus, out)
    assert not (out / "stale.txt").exists() and (out / "utterances.tsv").exists()


# --- bad audio: fail and skip -----------------------------------------------------------


@pytest.fixture
def bad_audio(corpus) -> Path:
    """Adds a silent and a corrupt file to the manifest (rows 5 and 6)."""
    sf.write(corpus / "quiet.wav", np.zeros(4000), 8000)
    (corpus / "broken.flac").write_bytes(b"fLaC but not really")
    with (corpus / "manifest.tsv").open("a") as f:
        f.write("utt_q\tquiet.wav\tspk0\ten\tshh\ttrain\n")
        f.write("utt_x\tbroken.flac\tspk1\ten\toops\ttest\n")
    return corpus


def test_bad_audio_fails_by_default(bad_audio, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build(bad_audio, out)
    message = str(err.value)
    assert "manifest.tsv row 5" in message and "quiet.wav" in message and "silent" in message
    assert isinstance(err.value.__cause__, AudioError)
    assert_no_output(out)


def test_bad_audio_fails_with_threads(bad_audio, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="manifest.tsv row 5: utterance 'utt_q'"):
        folder.build({"path": bad_audio}, out, threads=4)
    assert_no_output(out)


def test_bad_audio_skip_writes_skipped_tsv(bad_audio, tmp_path):
    segs = [["utt_q", "phone", "0.1", "0.2", "x"], ["utt_a", "phone", "0.1", "0.2", "y"]]
    write_table(bad_audio / "segs.tsv", SEGMENT_COLUMNS, segs)
    out = tmp_path / "out"
    utts, segments = build(bad_audio, out, on_bad_audio="skip", alignments="segs.tsv")
    assert list(utts["utterance_id"]) == ["utt_a", "utt_b", "utt_c"]
    assert set(segments["utterance_id"]) == {"utt_a"}
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert list(skipped.columns) == folder.SKIPPED_COLUMNS
    assert list(skipped["utterance_id"]) == ["utt_q", "utt_x"]
    assert list(skipped["manifest_row"]) == [5, 6]
    assert "silent" in skipped["reason"][0] and "cannot read" in skipped["reason"][1]
    assert not (out / "audio" / "utt_q.wav").exists()


def test_skip_with_nothing_left_fails(corpus, tmp_path):
    sf.write(corpus / "quiet.wav", np.zeros(100), 8000)
    write_table(corpus / "m.tsv", HEADER[:5], [["q", "quiet.wav", "s", "en", "t"]])
    with pytest.raises(CorpusError, match="no usable audio"):
        build(corpus, tmp_path / "out", manifest="m.tsv", on_bad_audio="skip")
    assert_no_output(tmp_path / "out")


# --- manifest errors ----------------------------------------------------------------------


def manifest_error(corpus: Path, tmp_path: Path, header: list[str], rows: list[list]) -> str:
    write_table(corpus / "bad.tsv", header, rows)
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build(corpus, out, manifest="bad.tsv")
    assert_no_output(out)
    assert "bad.tsv" in str(err.value)
    return str(err.value)


def test_manifest_missing_columns(corpus, tmp_path):
    message = manifest_error(corpus, tmp_path, ["utterance_id", "audio"], [["a", "wav/a.wav"]])
    assert "speaker" in message and "language" in message and "text" in message


def test_manifest_duplicate_id(corpus, tmp_path):
    rows = [["a", "wav/a.wav", "s", "en", "t"], ["a", "c.ogg", "s", "en", "t"]]
    message = manifest_error(corpus, tmp_path, HEADER[:5], rows)
    assert "row 3" in message and "duplicate" in message and "'a'" in message


def test_manifest_empty_id(corpus, tmp_path):
    rows = [["a", "wav/a.wav", "s", "en", "t"], ["  ", "c.ogg", "s", "en", "t"]]
    assert "row 3: empty utterance_id" in manifest_error(corpus, tmp_path, HEADER[:5], rows)


def test_manifest_unsafe_id(corpus, tmp_path):
    rows = [["../evil", "wav/a.wav", "s", "en", "t"]]
    assert "row 2" in manifest_error(corpus, tmp_path, HEADER[:5], rows)


def test_manifest_missing_audio(corpus, tmp_path):
    rows = [["a", "wav/a.wav", "s", "en", "t"], ["b", "wav/nope.wav", "s", "en", "t"]]
    message = manifest_error(corpus, tmp_path, HEADER[:5], rows)
    assert "row 3" in message and "nope.wav" in message and "not an existing file" in message


def test_manifest_audio_outside_folder(corpus, tmp_path):
    sf.write(tmp_path / "outside.wav", tone(8000, 0.1), 8000)
    rows = [["a", "../outside.wav", "s", "en", "t"]]
    message = manifest_error(corpus, tmp_path, HEADER[:5], rows)
    assert "row 2" in message and "outside the corpus folder" in message

    (corpus / "link.wav").symlink_to(tmp_path / "outside.wav")
    rows = [["a", "wav/a.wav", "s", "en", "t"], ["b", "link.wav", "s", "en", "t"]]
    message = manifest_error(corpus, tmp_path, HEADER[:5], rows)
    assert "row 3" in message and "outside the corpus folder" in message

    rows = [["a", str(tmp_path / "outside.wav"), "s", "en", "t"]]
    assert "outside" in manifest_error(corpus, tmp_path, HEADER[:5], rows)


def test_manifest_ragged_row_and_blank_lines(corpus, tmp_path):
    (corpus / "bad.tsv").write_text(
        "\t".join(HEADER[:5]) + "\n\na\twav/a.wav\ts\ten\tt\n\nb\tc.ogg\ts\n"
    )
    with pytest.raises(CorpusError, match=r"bad.tsv row 5: 3 fields"):
        build(corpus, tmp_path / "out", manifest="bad.tsv")


def test_manifest_not_found(corpus, tmp_path):
    with pytest.raises(CorpusError, match="nope.tsv: no such file"):
        build(corpus, tmp_path / "out", manifest="nope.tsv")


# --- alignment errors ---------------------------------------------------------------------


def segments_error(corpus: Path, tmp_path: Path, rows: list[list]) -> str:
    write_table(corpus / "segs.tsv", SEGMENT_COLUMNS, rows)
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build(corpus, out, alignments="segs.tsv")
    assert_no_output(out)
    assert "segs.tsv" in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (["utt_a", "phone", "0.5", "0.5", "x"], ["end_s 0.500000 <= start_s 0.500000"]),
        (["utt_a", "phone", "0.6", "0.4", "x"], ["end_s 0.400000 <= start_s 0.600000"]),
        (["utt_b", "phone", "0.5", "0.77", "x"], ["outside the audio", "0.770000"]),
        (["utt_a", "phone", "-0.02", "0.1", "x"], ["outside the audio", "-0.020000"]),
        (["utt_a", "phone", "0.15", "0.3", "x"], ["overlaps", "0.100000-0.200000"]),
        (["nobody", "phone", "0.1", "0.2", "x"], ["unknown utterance_id 'nobody'"]),
        (["utt_a", "phone", "abc", "0.2", "x"], ["start_s 'abc' is not a number"]),
        (["utt_a", "", "0.1", "0.2", "x"], ["empty tier"]),
    ],
)
def test_segment_table_errors(corpus, tmp_path, bad, expected):
    rows = [["utt_a", "phone", "0.1", "0.2", "ok"], ["utt_b", "phone", "0", "0.1", "ok"], bad]
    message = segments_error(corpus, tmp_path, rows)
    assert "row 4" in message
    for text in expected:
        assert text in message


def test_segment_table_missing_columns(corpus, tmp_path):
    write_table(corpus / "segs.tsv", ["utterance_id", "start_s"], [["utt_a", "0"]])
    with pytest.raises(
        CorpusError, match=r"segs.tsv: missing columns \['tier', 'end_s', 'label'\]"
    ):
        build(corpus, tmp_path / "out", alignments="segs.tsv")


def textgrid_error(corpus: Path, tmp_path: Path) -> str:
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build(corpus, out, alignments="tg")
    assert_no_output(out)
    return str(err.value)


def test_textgrid_beyond_audio(corpus, textgrids, tmp_path):
    write_textgrid(textgrids / "utt_c.TextGrid", 0.6, {"words": [(0.1, 0.6, "long")]})
    message = textgrid_error(corpus, tmp_path)
    assert "utt_c.TextGrid" in message and "'words'" in message
    assert "outside the audio" in message and "0.600000" in message


def test_textgrid_unknown_utterance(corpus, textgrids, tmp_path):
    write_textgrid(textgrids / "stranger.TextGrid", 0.5, {"words": [(0.1, 0.2, "x")]})
    message = textgrid_error(corpus, tmp_path)
    assert "stranger.TextGrid" in message and "unknown utterance_id 'stranger'" in message


def test_textgrid_overlap_and_garbage(corpus, textgrids, tmp_path):
    text = (textgrids / "utt_b.TextGrid").read_text()
    (textgrids / "utt_b.TextGrid").write_text(text.replace("xmin = 0.4", "xmin = 0.3", 1))
    message = textgrid_error(corpus, tmp_path)
    assert "utt_b.TextGrid" in message and "overlap" in message and "0.3" in message

    (textgrids / "utt_b.TextGrid").write_text('File type = "ooTextFile"\nnonsense\n')
    message = textgrid_error(corpus, tmp_path)
    assert "utt_b.TextGrid" in message and "cannot read TextGrid" in message


def test_textgrids_without_mapped_tiers(corpus, tmp_path):
    (corpus / "tg").mkdir()
    write_textgrid(corpus / "tg" / "utt_a.TextGrid", 1.0, {"MAU": [(0.1, 0.2, "x")]})
    assert "no TextGrid has a tier named in `tiers`" in textgrid_error(corpus, tmp_path)
    _, segs = build(corpus, tmp_path / "out", alignments="tg", tiers={"MAU": "phone"})
    assert list(segs["label"]) == [SILENCE, "x", SILENCE]


def test_two_tiers_mapping_to_one(corpus, tmp_path):
    (corpus / "tg").mkdir()
    tiers = {"phones": [(0.1, 0.2, "x")], "phone": [(0.3, 0.4, "y")]}
    write_textgrid(corpus / "tg" / "utt_a.TextGrid", 1.0, tiers)
    message = textgrid_error(corpus, tmp_path)
    assert "utt_a.TextGrid" in message and "'phones' and 'phone' both map to 'phone'" in message


def test_alignments_not_found(corpus, tmp_path):
    with pytest.raises(CorpusError, match="nothing_here: no such file or folder"):
        build(corpus, tmp_path / "out", alignments="nothing_here")


# --- spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"path": None}, "`path`"),
        ({"path": "/no/such/folder"}, "not a folder"),
        ({"on_bad_audio": "ignore"}, "on_bad_audio"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 16000.5}, "sample_rate"),
        ({"tiers": ["phones"]}, "tiers"),
    ],
)
def test_bad_spec(corpus, tmp_path, spec, match):
    with pytest.raises(CorpusError, match=match):
        folder.build({"path": str(corpus), **spec}, tmp_path / "out")
    assert_no_output(tmp_path / "out")


def test_null_spec_values_take_defaults(corpus, tmp_path):
    spec = {"manifest": None, "sample_rate": None, "alignments": None, "tiers": None}
    utts, segs = build(corpus, tmp_path / "out", **spec)
    assert set(utts["sample_rate"]) == {16000} and segs.empty


def test_ids_differing_only_in_case(corpus, tmp_path):
    rows = [["Utt", "wav/a.wav", "s", "en", "t"], ["utt", "c.ogg", "s", "en", "t"]]
    assert "row 3: duplicate utterance_id 'utt'" in manifest_error(
        corpus, tmp_path, HEADER[:5], rows
    )


def test_label_normalisation():
    assert alignments.normalise_label(" a\t b\n c ") == "a b c"
    assert alignments.normalise_label(" \t\n") == SILENCE
    assert alignments.normalise_label("e\u0301") == "\u00e9"  # NFC


def test_failed_rebuild_keeps_previous_corpus(bad_audio, tmp_path):
    out = tmp_path / "out"
    build(bad_audio, out, on_bad_audio="skip")
    before = (out / "utterances.tsv").read_text()
    with pytest.raises(CorpusError):
        build(bad_audio, out)
    assert (out / "utterances.tsv").read_text() == before and (out / "skipped.tsv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
