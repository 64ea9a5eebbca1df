"""Property-based tests of the manifest and segments readers: arbitrary tables give a
correct parse or a CorpusError naming the file (and row); valid tables round-trip through
the readers, the checks and the written ``segments.tsv`` unchanged up to the documented
normalisation (whitespace runs to one space, NFC, empty label -> ``sil``, microseconds)."""

from __future__ import annotations

import csv
import io
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from speechlens.corpora import folder
from speechlens.corpora.alignments import (
    check_alignments,
    read_segment_table,
    segments_frame,
)
from speechlens.corpora.contract import (
    SEGMENT_COLUMNS,
    SILENCE,
    TSV,
    CorpusError,
    validate_tables,
)
from speechlens.corpora.tables import clean, read_table

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MANIFEST = ["utterance_id", "audio", "speaker", "language", "text"]

# Cells: arbitrary text (tabs, newlines, quotes, control and non-BMP characters included)
cells = st.text(max_size=12)
ids = st.text(
    alphabet=st.characters(categories=["L", "N"], include_characters="_-"), min_size=1, max_size=8
)
# Labels a transcription can hold: any text without control characters other than whitespace
labels = st.one_of(
    st.text(
        alphabet=st.characters(exclude_categories=["Cc", "Cs"], include_characters="\t\n\r "),
        max_size=10,
    ),
    # decomposed accents and jamo (NFC composes them), IPA, whitespace runs, quotes
    st.lists(
        st.sampled_from(["e\u0301", "A\u030a", "\u1100\u1161", "tʃ", "ə", " ", "\t", '"', "x"]),
        max_size=5,
    ).map("".join),
)


def to_text(rows: list[list[str]], sep: str = "\t") -> str:
    """CRLF rows as a csv writer makes them (cells with a separator, quote, CR or LF quoted)."""
    out = io.StringIO()
    csv.writer(out, delimiter=sep, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def in_tmp(name: str, content: bytes | str):
    folder_ = tempfile.TemporaryDirectory()
    path = Path(folder_.name) / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder_, path


def assert_names(err: CorpusError, path: Path) -> None:
    assert str(err).startswith(str(path)), err


# --- read_table: any bytes ----------------------------------------------------------------


@FUZZ
@given(
    name=st.sampled_from(["t.tsv", "t.csv", "t.TSV"]),
    content=st.one_of(
        st.binary(max_size=400),
        st.text(alphabet=st.sampled_from('ab,\t\n\r" \x00é'), max_size=200).map(str.encode),
    ),
)
def test_read_table_any_bytes(name, content):
    folder_, path = in_tmp(name, content)
    with folder_:
        try:
            header, rows = read_table(path)
        except CorpusError as err:
            assert_names(err, path)
            return
        assert header and len(set(header)) == len(header)
        assert header == [c.strip() for c in header]
        lines = [line for line, _ in rows]
        assert lines == sorted(set(lines)) and all(line >= 2 for line in lines)
        assert all(list(record) == header for _, record in rows)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["a", "b", "c", " a", "d e"]), min_size=1, max_size=4),
    rows=st.lists(st.lists(cells, max_size=5), max_size=6),
    sep=st.sampled_from(["\t", ","]),
)
def test_read_table_round_trip(header, rows, sep):
    """Tables written by a csv writer read back cell for cell, or fail naming the row."""
    assume(any(c.strip() for c in header))
    folder_, path = in_tmp("t.csv" if sep == "," else "t.tsv", to_text([header, *rows], sep))
    with folder_:
        try:
            got_header, got = read_table(path)
        except CorpusError as err:
            assert_names(err, path)
            message = str(err)
            stripped = [c.strip() for c in header]
            repeated = len(set(stripped)) < len(stripped)
            ragged = any(len(r) != len(header) and any(c.strip() for c in r) for r in rows)
            nul = "\x00" in to_text([header, *rows], sep)
            assert repeated or ragged or nul, message
            if not repeated and ragged:
                assert " row " in message
            return
        assert got_header == [c.strip() for c in header]
        kept = [r for r in rows if any(c.strip() for c in r)]  # blank rows are skipped
        assert [list(record.values()) for _, record in got] == kept


# --- manifests ----------------------------------------------------------------------------


def manifest_root() -> tempfile.TemporaryDirectory:
    root = tempfile.TemporaryDirectory()
    for name in ("a.wav", "b.flac", "sub/c.wav"):
        (Path(root.name) / name).parent.mkdir(parents=True, exist_ok=True)
        (Path(root.name) / name).write_bytes(b"")
    return root


audio_cells = st.sampled_from(
    ["a.wav", "b.flac", "sub/c.wav", "./a.wav", "sub/../a.wav", "../a.wav", "/etc/passwd", "", "x"]
)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.one_of(ids, cells), audio_cells, cells, cells, cells), min_size=0, max_size=6
    )
)
def test_manifest_arbitrary_rows(rows):
    """Either every row is usable (unique safe ids, audio inside the folder) or the error
    names the manifest and, for a row problem, the row."""
    with manifest_root() as name:
        root = Path(name)
        path = root / "manifest.tsv"
        path.write_text(to_text([MANIFEST, *map(list, rows)]), encoding="utf-8")
        try:
            parsed = folder.read_manifest(path, root.resolve())
        except CorpusError as err:
            assert_names(err, path)
            return
        seen = set()
        for row in parsed:
            assert row.id and row.id == clean(row.id) and "/" not in row.id
            assert row.id.casefold() not in seen
            seen.add(row.id.casefold())
            assert row.source.is_file() and row.source.is_relative_to(root.resolve())
            assert all(v == clean(v) for v in row.values.values())


@FUZZ
@given(
    utts=st.lists(ids, min_size=1, max_size=6, unique_by=str.casefold),
    texts=st.lists(cells, min_size=6, max_size=6),
    sep=st.sampled_from(["\t", ","]),
)
def test_manifest_round_trip(utts, texts, sep):
    """A valid manifest (any text, quoted as needed) reads back cleaned, with its line numbers."""
    with manifest_root() as name:
        root = Path(name)
        rows = [[u, "sub/c.wav", f"spk {t}", "en", t] for u, t in zip(utts, texts, strict=False)]
        text = to_text([MANIFEST, *rows], sep)
        assume("\x00" not in text)
        path = root / ("m.csv" if sep == "," else "m.tsv")
        path.write_text(text, encoding="utf-8")
        parsed = folder.read_manifest(path, root.resolve())
        assert [r.id for r in parsed] == utts
        assert [r.values["text"] for r in parsed] == [clean(t) for t in texts[: len(utts)]]
        assert [r.values["speaker"] for r in parsed] == [clean(f"spk {t}") for t in texts][
            : len(utts)
        ]
        assert all(r.values["gender"] == "unknown" for r in parsed)
        # line numbers: one line per row, unless quoted cells span lines
        lines = [r.line for r in parsed]
        if not any(c in t for t in texts[: len(utts)] for c in "\r\n"):
            assert lines == list(range(2, 2 + len(utts)))
        assert lines == sorted(set(lines)) and lines[0] == 2


# --- segments -----------------------------------------------------------------------------


KNOWN = {"u1", "u2"}
DURATION = {"u1": 2.0, "u2": 1.5}


@st.composite
def tiers(draw):
    """Valid alignments: per (utterance, tier) sorted, non-overlapping intervals in the audio."""
    rows = []
    for utt in sorted(KNOWN):
        for tier in draw(st.lists(st.sampled_from(["phone", "word", "ipa ☃"]), unique=True)):
            cuts = draw(
                st.lists(
                    st.integers(0, int(DURATION[utt] * 1000)), min_size=2, max_size=8, unique=True
                )
            )
            cuts.sort()
            for start, end in zip(cuts[:-1], cuts[1:], strict=True):
                if draw(st.booleans()):  # leave gaps
                    rows.append([utt, tier, f"{start / 1000}", f"{end / 1000}", draw(labels)])
    return draw(st.permutations(rows))


@settings(FUZZ, max_examples=80)
@given(rows=tiers(), fill=st.booleans())
def test_segments_round_trip(rows, fill):
    """Valid segments survive reading, checking, fitting and the written segments.tsv."""
    folder_, path = in_tmp("segs.tsv", to_text([SEGMENT_COLUMNS, *rows]))
    with folder_:
        aligned = check_alignments(read_segment_table(path, KNOWN, {}, "manifest.tsv"))
        table = segments_frame(list(DURATION.items()), aligned, fill)
        buffer = io.StringIO()
        table.to_csv(buffer, **TSV)
        buffer.seek(0)
        back = pd.read_csv(
            buffer, sep="\t", dtype={"label": str, "tier": str}, keep_default_na=False
        )
    utterances = pd.DataFrame(
        {"utterance_id": list(DURATION), "duration_s": list(DURATION.values())}
    ).assign(audio="", speaker="", language="", gender="", text="", sample_rate=16000)
    validate_tables(utterances, back, "fuzz")

    def documented(label: str) -> str:  # NFC, whitespace runs to one space, empty -> sil
        return " ".join(unicodedata.normalize("NFC", label).split()) or SILENCE

    expected = {(u, t, float(s), float(e), documented(label)) for u, t, s, e, label in rows}
    got = set(back.itertuples(index=False, name=None))
    if fill:
        gaps = {r for r in got if r not in expected}
        assert all(r[4] == SILENCE for r in gaps)
        assert expected <= got
        for (utt, _tier), group in back.groupby(["utterance_id", "tier"]):
            assert group["start_s"].iloc[0] == 0 and group["end_s"].iloc[-1] == DURATION[utt]
    else:
        assert got == expected and len(back) == len(rows)
    for label in back["label"]:
        assert label == unicodedata.normalize("NFC", label) == clean(label) and label


time_cells = st.one_of(
    st.sampled_from(["0", "0.5", "1.0", "1.499", "2.0", "2.02", "-0.005", "-1", "nan", "inf"]),
    st.sampled_from(["", "1e-7", "0.0000004", "abc", " 0.3 ", "1,5"]),
    st.floats(-1, 3, allow_nan=False).map(str),
)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3", "", " u1 "]),
            st.sampled_from(["phone", "word", "", "\t"]),
            time_cells,
            time_cells,
            cells,
        ),
        max_size=8,
    )
)
def test_segments_arbitrary_rows(rows):
    """Arbitrary segment rows: a CorpusError naming the file and row, or checked segments
    that tile nothing twice and lie within the audio (10 ms tolerance, clipped)."""
    folder_, path = in_tmp("segs.tsv", to_text([SEGMENT_COLUMNS, *map(list, rows)]))
    with folder_:
        try:
            aligned = check_alignments(read_segment_table(path, KNOWN, {}, "manifest.tsv"))
            table = segments_frame(list(DURATION.items()), aligned, False)
        except CorpusError as err:
            assert_names(err, path)
            if "missing columns" not in str(err) and "cannot parse" not in str(err):
                assert " row " in str(err), err
            return
    assert set(table["utterance_id"]) <= KNOWN
    assert (table["start_s"] < table["end_s"]).all() and (table["start_s"] >= 0).all()
    assert (table["end_s"] <= table["utterance_id"].map(DURATION)).all()
    for _, group in table.groupby(["utterance_id", "tier"]):
        assert (group["start_s"].to_numpy()[1:] >= group["end_s"].to_numpy()[:-1] - 1e-6).all()
