"""Bad input to a ``folder`` corpus: each case stops with the manifest row, file and reason
(``on_bad_audio: fail``) or is skipped and listed in skipped.tsv with the count logged
(``skip``); segments, labels and manifests with odd content are errors naming the row."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechlens.audio import AudioError
from speechlens.corpora import folder
from speechlens.corpora.alignments import END_TOLERANCE_S
from speechlens.corpora.contract import SEGMENT_COLUMNS, SILENCE, CorpusError, read_corpus

HEADER = ["utterance_id", "audio", "speaker", "language", "text"]


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 50 * c) * t) for c in range(channels)], 1)
    return x.astype(np.float32)[:, 0] if channels == 1 else x.astype(np.float32)


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in [header, *rows]), encoding="utf-8")
    return path


def _wav_header_only(path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 0)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _truncated(path: Path) -> None:
    sf.write(path, tone(16000, 1.0), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:5000])


def _nan(path: Path) -> None:
    x = tone(16000, 0.5)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")


# file name -> (writer, words expected in the reason)
BAD = {
    "empty.wav": (lambda p: p.write_bytes(b""), "cannot read audio"),
    "header_cut.flac": (lambda p: p.write_bytes(b"fLaC\x00\x00"), "cannot read audio"),
    "truncated.wav": (_truncated, "truncated file"),
    "notes.txt": (lambda p: p.write_text("not audio\n" * 50), "cannot read audio"),
    "zero_frames.wav": (_wav_header_only, "empty audio"),
    "silent.wav": (lambda p: sf.write(p, np.zeros(8000), 16000), "silent audio"),
    "nan.wav": (_nan, "NaN or infinite"),
    "long.flac": (lambda p: sf.write(p, tone(8000, 31.0), 8000), "too long: 31.00 s"),
}


@pytest.fixture
def root(tmp_path) -> Path:
    """A corpus folder with one good file (a.wav, 1 s, 8 kHz) and every bad one."""
    root = tmp_path / "src"
    root.mkdir()
    sf.write(root / "a.wav", tone(8000, 1.0), 8000)
    for name, (make, _) in BAD.items():
        make(root / name)
    return root


def build(root: Path, out: Path, **spec):
    folder.build({"path": str(root), "max_duration_s": 30, **spec}, out)
    return read_corpus(out)


@pytest.mark.parametrize("name", sorted(BAD))
def test_fail_names_row_file_and_reason(root, tmp_path, name):
    write_rows(
        root / "manifest.tsv", HEADER, [["a", "a.wav", "s", "en", "t"], ["b", name, "s", "en", "t"]]
    )
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build(root, out)
    message = str(err.value)
    assert "manifest.tsv row 3: utterance 'b': bad audio" in message
    assert str(root / name) in message and BAD[name][1] in message
    assert isinstance(err.value.__cause__, AudioError)
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_fail_stops_at_the_first_bad_file(root, tmp_path):
    rows = [["a", "a.wav", "s", "en", "t"], ["x", "silent.wav", "s", "en", "t"]]
    rows += [["y", "empty.wav", "s", "en", "t"]]
    write_rows(root / "manifest.tsv", HEADER, rows)
    with pytest.raises(CorpusError, match="row 3: utterance 'x'") as err:
        build(root, tmp_path / "out", on_bad_audio="fail")
    assert "empty.wav" not in str(err.value)


def test_skip_lists_every_bad_file_with_its_reason(root, tmp_path, caplog):
    names = sorted(BAD)
    rows = [["a", "a.wav", "s", "en", "t"]]
    rows += [[f"b{i}", name, "s", "en", "t"] for i, name in enumerate(names)]
    write_rows(root / "manifest.tsv", HEADER, rows)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="speechlens.corpora.folder"):
        utts, _ = build(root, out, on_bad_audio="skip")
    assert list(utts["utterance_id"]) == ["a"]
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t", dtype={"utterance_id": str})
    assert list(skipped.columns) == folder.SKIPPED_COLUMNS
    assert list(skipped["utterance_id"]) == [f"b{i}" for i in range(len(names))]
    assert list(skipped["audio"]) == names
    assert list(skipped["manifest_row"]) == list(range(3, 3 + len(names)))
    for name, reason in zip(names, skipped["reason"], strict=True):
        assert BAD[name][1] in reason, name
    assert f"skipped {len(names)} of {len(names) + 1} utterances" in caplog.text
    assert sorted(p.name for p in (out / "audio").iterdir()) == ["a.wav"]


def test_max_duration_is_optional(root, tmp_path):
    write_rows(root / "manifest.tsv", HEADER, [["long", "long.flac", "s", "en", "t"]])
    utts, _ = build(root, tmp_path / "out", max_duration_s=None)
    assert utts["duration_s"].iloc[0] == pytest.approx(31.0, abs=1e-3)
    with pytest.raises(CorpusError, match="max_duration_s 'x' is not a positive number"):
        build(root, tmp_path / "out2", max_duration_s="x")
    with pytest.raises(CorpusError, match="max_duration_s 0 is not a positive number"):
        build(root, tmp_path / "out2", max_duration_s=0)


def test_multichannel_and_rates_are_noted_in_table_and_log(root, tmp_path, caplog):
    sf.write(root / "st.flac", tone(44100, 0.5, channels=2), 44100)
    sf.write(root / "six.wav", tone(48000, 0.5, channels=6), 48000, subtype="FLOAT")
    rows = [["a", "a.wav", "s", "en", "t"], ["st", "st.flac", "s", "en", "t"]]
    rows += [["six", "six.wav", "s", "en", "t"]]
    write_rows(root / "manifest.tsv", HEADER, rows)
    with caplog.at_level(logging.INFO, logger="speechlens.corpora.folder"):
        utts, _ = build(root, tmp_path / "out")
    assert list(utts["source_channels"]) == [1, 2, 6]
    assert list(utts["source_sample_rate"]) == [8000, 44100, 48000]
    assert set(utts["sample_rate"]) == {16000}
    for utt, seconds in (("a", 1.0), ("st", 0.5), ("six", 0.5)):
        info = sf.info(tmp_path / "out" / "audio" / f"{utt}.wav")
        assert (info.channels, info.samplerate) == (1, 16000)
        assert info.frames == round(seconds * 16000)
    assert "mixed 2 of 3 files to mono (channels: files) {2: 1, 6: 1}" in caplog.text
    assert "resampled 3 of 3 files with soxr (native Hz: files) {8000: 1, 44100: 1, 48000: 1}" in (
        caplog.text
    )


# --- manifests ------------------------------------------------------------------------------


def manifest_error(root: Path, tmp_path: Path, content: bytes | str) -> str:
    path = root / "m.tsv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CorpusError) as err:
        build(root, tmp_path / "out", manifest="m.tsv")
    assert str(path) in str(err.value)
    assert not (tmp_path / "out").exists()
    return str(err.value)


def test_manifest_symlinked_folder_escaping(root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sf.write(outside / "x.wav", tone(8000, 0.2), 8000)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    message = manifest_error(root, tmp_path, "\t".join(HEADER) + "\nx\tlinked/x.wav\ts\ten\tt\n")
    assert "row 2" in message and "outside the corpus folder" in message
    message = manifest_error(root, tmp_path, "\t".join(HEADER) + "\nx\tsub/../../a.wav\ts\ten\tt\n")
    assert "row 2" in message and "'sub/../../a.wav'" in message and "outside" in message


def test_manifest_symlink_inside_the_folder_is_fine(root, tmp_path):
    (root / "alias.wav").symlink_to(root / "a.wav")
    write_rows(root / "manifest.tsv", HEADER, [["x", "alias.wav", "s", "en", "t"]])
    utts, _ = build(root, tmp_path / "out")
    assert utts["source_audio"].iloc[0] == "alias.wav"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty file (no header)"),
        ("\t".join(HEADER) + "\n", "no utterances"),
        (
            "utterance_id\taudio\taudio\tspeaker\tlanguage\ttext\n",
            "repeated column names ['audio']",
        ),
        ("utterance_id\tspeaker\n", "missing columns ['audio', 'language', 'text']"),
        ("\t".join(HEADER) + "\nx\ta.wav\ts\ten\n", "row 2: 4 fields, the header has 5"),
        ("\t".join(HEADER).encode() + b"\nx\ta.wav\ts\t\xff\xfe\tt\n", "cannot parse"),
        ("\t".join(HEADER) + "\nx\ta.wav\ts\ten\tt\nX\ta.wav\ts\ten\tt\n", "row 3: duplicate"),
        ("\t".join(HEADER) + "\nx\tnope/a.wav\ts\ten\tt\n", "row 2: audio 'nope/a.wav' is not"),
        ("\t".join(HEADER) + "\nx\t\ts\ten\tt\n", "row 2: empty audio path"),
        ("\t".join(HEADER) + "\nx\t.\ts\ten\tt\n", "row 2: audio '.' is not an existing file"),
        ("\t".join(HEADER) + "\na\x00b\ta.wav\ts\ten\tt\n", "row 2: utterance_id 'a\\x00b'"),
        ("\t".join(HEADER) + "\n.hidden\ta.wav\ts\ten\tt\n", "row 2: utterance_id '.hidden'"),
    ],
)
def test_manifest_errors_name_the_row(root, tmp_path, content, expected):
    assert expected in manifest_error(root, tmp_path, content)


def test_manifest_quoted_cells_with_tabs_and_newlines(root, tmp_path):
    """A quoted cell may hold tabs and newlines (cleaned to spaces); rows keep their number."""
    text = (
        "\t".join(HEADER) + '\nx\ta.wav\ts\ten\t"two\tlines\nof text"\ny\tmissing.wav\ts\ten\tt\n'
    )
    message = manifest_error(root, tmp_path, text)
    assert "row 4: audio 'missing.wav'" in message  # the quoted cell spans lines 2-3
    (root / "m.tsv").write_text(text.split("y\t")[0])
    utts, _ = build(root, tmp_path / "out", manifest="m.tsv")
    assert utts["text"].iloc[0] == "two lines of text"


# --- segments ---------------------------------------------------------------------------------


def segments(root: Path, tmp_path: Path, rows: list[list[str]]):
    write_rows(root / "manifest.tsv", HEADER, [["a", "a.wav", "s", "en", "t"]])
    write_rows(root / "segs.tsv", SEGMENT_COLUMNS, rows)
    return build(root, tmp_path / "out", alignments="segs.tsv", fill_silence=False)[1]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("tʃ", "tʃ"),  # IPA
        ("e\u0301", "\u00e9"),  # NFD -> NFC
        ("日本", "日本"),
        ("a\u200db", "a\u200db"),  # zero-width joiner: part of some scripts
        ('"quoted"', '"quoted"'),
        ("NA", "NA"),  # not a missing value
        ("", SILENCE),
        ("  ", SILENCE),
    ],
)
def test_labels_accepted_and_normalised(root, tmp_path, label, expected):
    label_cell = f'"{label.replace(chr(34), chr(34) * 2)}"' if '"' in label else label
    segs = segments(root, tmp_path, [["a", "phone", "0.1", "0.2", label_cell]])
    assert list(segs["label"]) == [expected]


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f"])
def test_labels_with_control_characters_are_errors(root, tmp_path, char):
    with pytest.raises(CorpusError) as err:
        segments(
            root,
            tmp_path,
            [["a", "phone", "0.1", "0.2", "ok"], ["a", "phone", "0.2", "0.3", f"x{char}y"]],
        )
    message = str(err.value)
    assert "segs.tsv row 3" in message and "control characters" in message
    assert f"U+{ord(char):04X}" in message


def test_label_with_a_bare_tab_splits_the_row(root, tmp_path):
    with pytest.raises(CorpusError, match=r"segs.tsv row 2: 6 fields, the header has 5"):
        segments(root, tmp_path, [["a", "phone", "0.1", "0.2", "x\ty"]])


def test_tolerance_at_both_ends_of_the_audio(root, tmp_path):
    """Up to END_TOLERANCE_S (10 ms) outside the audio is clipped, beyond is an error."""
    assert pytest.approx(0.010) == END_TOLERANCE_S
    segs = segments(
        root, tmp_path, [["a", "p", "-0.0099", "0.5", "x"], ["a", "p", "0.5", "1.0099", "y"]]
    )
    assert list(segs["start_s"]) == [0.0, 0.5] and list(segs["end_s"]) == [0.5, 1.0]
    for row in (["a", "p", "-0.0101", "0.5", "x"], ["a", "p", "0.5", "1.0101", "y"]):
        with pytest.raises(CorpusError, match="segs.tsv row 2: interval .* outside the audio"):
            segments(root, tmp_path, [row])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([["a", "p", "0.2", "0.2", "x"]], "row 2: end_s 0.200000 <= start_s 0.200000"),
        ([["a", "p", "0.1", "0.3", "x"], ["a", "p", "0.2", "0.4", "y"]], "row 3: interval"),
        ([["a", "p", "0.1", "0.3", "x"], ["a", "p", "0.1", "0.3", "x"]], "overlaps"),
        ([["b", "p", "0.1", "0.3", "x"]], "row 2: unknown utterance_id 'b'"),
        ([["a", "p", "nan", "0.3", "x"]], "row 2: start_s 'nan' is not finite"),
        ([["a", "p", "0.1", "inf", "x"]], "row 2: end_s 'inf' is not finite"),
        ([["a", "p", "0.1", "", "x"]], "row 2: end_s '' is not a number"),
        ([["a", "p", "0.1", "2.0", "x"]], "row 2: interval 0.100000-2.000000 s 'x' lies outside"),
    ],
)
def test_segment_errors_name_the_row(root, tmp_path, rows, expected):
    with pytest.raises(CorpusError) as err:
        segments(root, tmp_path, rows)
    assert "segs.tsv" in str(err.value) and expected in str(err.value)


def test_overlap_in_another_tier_is_fine(root, tmp_path):
    segs = segments(
        root, tmp_path, [["a", "phone", "0.1", "0.3", "x"], ["a", "word", "0.2", "0.4", "y"]]
    )
    assert list(segs["tier"]) == ["phone", "word"]
