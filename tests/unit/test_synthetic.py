"""Corpus kind ``synthetic``: libespeak-ng speech with exact phone and word alignments."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speechlens.corpora import espeak, espeak_align, phones, synthetic
from speechlens.corpora.contract import SILENCE, UTTERANCE_COLUMNS, CorpusError, read_corpus

TINY = {
    "kind": "synthetic",
    "languages": ["en-us", "tr"],
    "speakers_per_language": 2,
    "sentences_per_speaker": 2,
    "seed": 3,
}
FRAME_S = 0.01
VOWEL_LABELS = (
    set(phones.VOWELS) | {v + phones.LONG for v in phones.VOWELS} | {"aɪ", "aʊ", "eɪ", "oʊ"}
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny corpus built twice: serially and with two worker processes."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.build(TINY, root / "serial", threads=1)
    synthetic.build(TINY, root / "parallel", threads=2)
    return root / "serial", root / "parallel"


@pytest.fixture(scope="module")
def tables(built):
    return read_corpus(built[0])


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tier(segments, utterance_id: str, tier: str):
    rows = segments[(segments.utterance_id == utterance_id) & (segments.tier == tier)]
    return rows.sort_values("start_s")


# -- the built corpus ------------------------------------------------------------------


def test_utterances_table(built, tables):
    utterances, _ = tables
    assert list(utterances.columns[: len(UTTERANCE_COLUMNS)]) == UTTERANCE_COLUMNS
    assert {"voice", "variant", "pitch", "pitch_range", "rate_wpm"} <= set(utterances.columns)
    assert len(utterances) == 2 * 2 * 2
    assert set(utterances.language) == {"en-us", "tr"}
    assert set(utterances.gender) == {"female", "male"}
    assert set(utterances.speaker) == {"en-us_f01", "en-us_m01", "tr_f01", "tr_m01"}
    for row in utterances.itertuples():
        info = sf.info(str(built[0] / row.audio))
        assert row.audio == f"audio/{row.utterance_id}.wav"
        assert (info.samplerate, info.subtype, info.channels) == (16000, "PCM_16", 1)
        assert row.sample_rate == 16000
        assert row.duration_s == pytest.approx(info.frames / info.samplerate, abs=1e-6)
        assert row.voice == f"{row.language}+{row.variant}"


def test_tiers_tile_the_audio(tables):
    utterances, segments = tables
    assert set(segments.tier) == {"phone", "word"}
    for row in utterances.itertuples():
        for tier in ("phone", "word"):
            rows = _tier(segments, row.utterance_id, tier)
            starts, ends = rows.start_s.to_numpy(), rows.end_s.to_numpy()
            assert starts[0] == 0.0
            assert np.all(starts < ends)
            np.testing.assert_allclose(starts[1:], ends[:-1], atol=1e-6)
            assert ends[-1] == pytest.approx(row.duration_s, abs=1e-6)
            assert np.all(ends <= row.duration_s + 1e-6)
            assert rows.label.iloc[0] == SILENCE and rows.label.iloc[-1] == SILENCE


def test_silence_is_quiet_and_vowels_are_loud(built, tables):
    """Alignments are real: 10 ms frames inside ``sil`` are far quieter than vowel frames."""
    utterances, segments = tables
    sil, vowel = [], []
    for row in utterances.itertuples():
        samples, rate = sf.read(str(built[0] / row.audio))
        hop = int(FRAME_S * rate)
        frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
        rms = np.sqrt((frames**2).mean(axis=1))
        begin = np.arange(len(rms)) * FRAME_S
        for seg in _tier(segments, row.utterance_id, "phone").itertuples():
            inside = (begin >= seg.start_s) & (begin + FRAME_S <= seg.end_s)
            if seg.label == SILENCE:
                sil.extend(rms[inside])
            elif seg.label in VOWEL_LABELS:
                vowel.extend(rms[inside])
    assert len(sil) > 50 and len(vowel) > 50
    assert np.median(sil) < 0.1 * np.median(vowel)
    assert np.percentile(sil, 95) < 0.1 * np.median(vowel)


def test_words_cover_their_phones(tables):
    utterances, segments = tables
    for utterance_id in utterances.utterance_id:
        words = _tier(segments, utterance_id, "word")
        words = words[words.label != SILENCE]
        for seg in _tier(segments, utterance_id, "phone").itertuples():
            if seg.label == SILENCE:
                continue
            inside = (words.start_s <= seg.start_s + 1e-9) & (words.end_s >= seg.end_s - 1e-9)
            assert inside.sum() == 1, f"{utterance_id}: phone {seg.label} at {seg.start_s}"


def test_word_labels_spell_the_text(tables):
    utterances, segments = tables
    for row in utterances.itertuples():
        words = _tier(segments, row.utterance_id, "word")
        spoken = " ".join(words.label[words.label != SILENCE]).split()
        assert spoken == espeak_align.word_label(row.text, row.language).split()


def test_phone_labels_and_stress(tables):
    _, segments = tables
    phone_rows = segments[segments.tier == "phone"]
    assert set(phone_rows.label) <= phones.PHONES
    assert set(phone_rows.stress) <= {0, 1, 2}
    assert (phone_rows.stress[phone_rows.label == SILENCE] == 0).all()
    assert (phone_rows.stress == 1).any()
    assert (segments.stress[segments.tier == "word"] == 0).all()


def test_same_spec_gives_identical_bytes_for_any_threads(built):
    serial, parallel = built
    assert _digest(serial) == _digest(parallel)


# -- configuration errors --------------------------------------------------------------


def test_unknown_voice_names_the_key_and_value(tmp_path):
    spec = {**TINY, "languages": ["en-us", "xx-nope"]}
    with pytest.raises(CorpusError, match=r"`languages`.*'xx-nope'"):
        synthetic.build(spec, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_language_without_sentences_needs_a_file(tmp_path):
    spec = {**TINY, "languages": ["it"], "speakers_per_language": 1, "sentences_per_speaker": 1}
    with pytest.raises(CorpusError, match=r"'it'.*`sentences"):
        synthetic.build(spec, tmp_path / "c")
    lines = tmp_path / "it.txt"
    lines.write_text("Il gatto dorme sul divano.\nOggi piove molto forte.\n", encoding="utf-8")
    synthetic.build({**spec, "sentences": {"it": str(lines)}}, tmp_path / "c")
    utterances, segments = read_corpus(tmp_path / "c")
    assert list(utterances.language) == ["it"]
    assert set(segments.label[segments.tier == "phone"]) <= phones.PHONES


def test_too_many_sentences_per_speaker(tmp_path):
    lines = tmp_path / "few.txt"
    lines.write_text("One short sentence here.\n", encoding="utf-8")
    spec = {**TINY, "languages": ["en-us"], "sentences": {"en-us": str(lines)}}
    with pytest.raises(CorpusError, match="`sentences_per_speaker`"):
        synthetic.build(spec, tmp_path / "c")


# -- sentences and speakers ------------------------------------------------------------


@pytest.mark.parametrize("language", synthetic.DEFAULT_LANGUAGES)
def test_shipped_sentence_lists(language):
    sentences = synthetic.load_sentences(language, {})
    assert len(sentences) >= 60
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert 5 <= len(sentence.split()) <= 12, sentence
        assert not any(ch.isdigit() for ch in sentence), sentence


def test_speakers_are_gender_balanced_and_distinct():
    variants = espeak.list_variants()
    speakers = synthetic.make_speakers("de", 8, 0, variants)
    assert [s.gender for s in speakers].count("female") == 4
    assert len({s.speaker_id for s in speakers}) == 8
    assert len({(s.variant, s.pitch, s.pitch_range, s.rate) for s in speakers}) == 8
    assert all(variants[s.variant] == s.gender for s in speakers)
    assert speakers[0].speaker_id == "de_f01" and speakers[1].speaker_id == "de_m01"
    assert synthetic.make_speakers("de", 8, 0, variants) == speakers
    assert synthetic.make_speakers("de", 8, 1, variants) != speakers


def test_split_partitions_variants_and_sentences():
    variants = espeak.list_variants()
    probe = synthetic.split_variants(variants, "probe")
    train = synthetic.split_variants(variants, "train")
    assert synthetic.split_variants(variants, "all") == variants
    assert not set(probe) & set(train) and {**probe, **train} == variants
    for gender in ("female", "male"):
        ordered = [v for v, g in variants.items() if g == gender]
        assert [v for v, g in probe.items() if g == gender] == ordered[:4]
        assert [v for v, g in train.items() if g == gender] == ordered[4:]
    pool = [f"s{i}" for i in range(7)]
    assert synthetic.split_sentences(pool, "all") == list(enumerate(pool))
    assert synthetic.split_sentences(pool, "probe") == [(0, "s0"), (2, "s2"), (4, "s4"), (6, "s6")]
    assert synthetic.split_sentences(pool, "train") == [(1, "s1"), (3, "s3"), (5, "s5")]
    with pytest.raises(CorpusError, match=r"`split`: 'test' is not one of"):
        synthetic.parse_spec({**TINY, "split": "test"})


def test_split_all_is_the_unsplit_corpus():
    """`split: all` (the default) plans exactly what a spec without the key plans."""
    assert synthetic.parse_spec(TINY).split == "all"
    same = synthetic.planned_utterances({**TINY, "split": "all"})
    pd.testing.assert_frame_equal(synthetic.planned_utterances(TINY), same)
    assert sorted(set(same.speaker)) == ["en-us_f01", "en-us_m01", "tr_f01", "tr_m01"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    """The probe and train parts of one language, 8 speakers x 1 sentence each, built."""
    root = tmp_path_factory.mktemp("parts")
    spec = {**TINY, "languages": ["en-us"], "speakers_per_language": 8, "sentences_per_speaker": 1}
    for split in ("probe", "train"):
        synthetic.build({**spec, "split": split}, root / split, threads=2)
    return {split: root / split for split in ("probe", "train")}


def test_split_parts_share_no_voice_speaker_or_sentence(parts):
    probe, train = (read_corpus(parts[s])[0] for s in ("probe", "train"))
    assert len(probe) == len(train) == 8
    assert sorted(set(probe.variant)) == ["f1", "f2", "f3", "f4", "m1", "m2", "m3", "m4"]
    assert sorted(set(train.variant)) == ["f5", "m5", "m6", "m7", "m8"]
    assert set(train.speaker) == {f"en-us_train_{g}{n:02d}" for g in "fm" for n in range(1, 5)}
    assert not set(probe.speaker) & set(train.speaker)
    assert not set(probe.text) & set(train.text)
    assert (probe.sentence_index % 2 == 0).all() and (train.sentence_index % 2 == 1).all()
    pool = synthetic.load_sentences("en-us", {})
    for table in (probe, train):
        assert [pool[i] for i in table.sentence_index] == table.text.tolist()


def test_planned_utterances_are_the_built_ones(parts):
    """The start-up check's plan (nothing synthesised) is what the build writes."""
    spec = {**TINY, "languages": ["en-us"], "speakers_per_language": 8, "sentences_per_speaker": 1}
    for split, folder in parts.items():
        planned = synthetic.planned_utterances({**spec, "split": split})
        built = read_corpus(folder)[0][list(planned.columns)]
        pd.testing.assert_frame_equal(planned.astype(str), built.astype(str))


def test_plan_is_seeded_per_speaker():
    options = synthetic.parse_spec({**TINY, "sentences_per_speaker": 5})
    sentences = {lang: synthetic.load_sentences(lang, {}) for lang in options.languages}
    variants = espeak.list_variants()
    jobs = synthetic.plan(options, sentences, variants)
    fewer = synthetic.plan(synthetic.parse_spec({**TINY, "languages": ["tr"]}), sentences, variants)
    by_id = {job.utterance_id: job for job in jobs}
    assert all(by_id[job.utterance_id].text == job.text for job in fewer)
    per_speaker = [job.text for job in jobs if job.speaker.speaker_id == "tr_m01"]
    assert len(set(per_speaker)) == 5


# -- espeak-ng itself ------------------------------------------------------------------


def test_event_samples_match_audio_positions():
    engine = espeak.engine()
    result = engine.synthesize("Fresh bread smells wonderful.", espeak.Settings("en-us+m3"))
    assert result.sample_rate == 22050
    assert result.samples.dtype == np.int16 and result.samples.ndim == 1
    for event in result.events:
        assert 0 <= event.sample <= len(result.samples)
        assert abs(event.sample * 1000 / result.sample_rate - event.audio_position_ms) <= 1
    kinds = [e.kind for e in result.events]
    assert kinds.count(espeak.EVENT_WORD) == 4
    words = [e for e in result.events if e.kind == espeak.EVENT_WORD]
    assert [(w.text_position, w.length) for w in words][-1] == (20, 9)  # 1-based characters


def test_synthesis_does_not_depend_on_history():
    engine = espeak.engine()
    settings = espeak.Settings("tr+f2", rate=160, pitch=60, range=40, seed=5)
    first = engine.synthesize("Çocuklar ıslak kumdan kale yaptılar.", settings)
    engine.synthesize("Something else entirely.", espeak.Settings("en-us+m1"))
    again = engine.synthesize("Çocuklar ıslak kumdan kale yaptılar.", settings)
    assert np.array_equal(first.samples, again.samples)
    assert first.events == again.events


def test_pauses_are_silence_even_with_echo():
    """Variant m2 adds an echo, so pauses are not digital silence: events decide."""
    raw = espeak.engine().synthesize("Hello, my friend. Goodbye.", espeak.Settings("en-us+m2"))
    result = synthetic.pad(raw, synthetic.PAD_S)
    assert [e.mnemonic for e in result.events] == [e.mnemonic for e in raw.events]
    phonemes = [e for e in result.events if e.kind == espeak.EVENT_PHONEME]
    ends = [e.sample for e in phonemes[1:]] + [len(result.samples)]
    pauses = [
        e.sample for e, end in zip(phonemes, ends, strict=True) if e.is_pause and end > e.sample
    ]
    assert pauses and all(not e.name for e in phonemes if e.is_pause)
    phone_tier, _ = espeak_align.align(result, "Hello, my friend. Goodbye.", "en-us")
    for start in pauses:
        owner = [p for p in phone_tier if p.start <= start < p.end]
        assert owner[0].label == SILENCE
    echo = [p for p in phone_tier if p.label == SILENCE and result.samples[p.start : p.end].any()]
    assert echo, "expected a pause that holds the echo"


@pytest.mark.parametrize("language", synthetic.DEFAULT_LANGUAGES)
def test_shipped_languages_need_no_label_reduction(language):
    """Every raw espeak-ng phoneme name of a shipped language is listed after cleaning."""
    engine = espeak.engine()
    for sentence in synthetic.load_sentences(language, {})[:3]:
        result = engine.synthesize(sentence, espeak.Settings(f"{language}+f1"))
        for event in result.events:
            if event.kind == espeak.EVENT_PHONEME and event.name:
                bare, _ = phones.split_stress(event.name)
                assert phones.clean(bare) in phones.PHONES, (language, event.name)


def test_unknown_voice_is_reported():
    engine = espeak.engine()
    assert engine.has_voice("en-us") and not engine.has_voice("xx-nope")
    assert "en-us" in engine.suggest("en-uss")


# -- pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ˈaɪ", ("aɪ", 1)),
        ("ˌɛ", ("ɛ", 2)),
        ("ə-", ("ə", 0)),
        ("ˈɑ̃", ("ɑ̃", 1)),
        ("", (SILENCE, 0)),
        ("g", ("ɡ", 0)),
        ("tʲ", ("t", 0)),
        ("ʲ", (phones.UNKNOWN, 0)),
        ("ɐ̃ʊ", ("ɐ̃", 0)),
    ],
)
def test_normalise_phone(name, expected):
    assert phones.normalise(name) == expected
    assert expected[0] in phones.PHONES


@pytest.mark.parametrize(
    ("span", "language", "expected"),
    [
        ("Hello, ", "en-us", "hello"),
        ("of the ", "en-us", "of the"),
        ("l'orage ", "fr", "l'orage"),
        ("après-midi.", "fr", "après-midi"),
        ("İstanbul'da ", "tr", "istanbul'da"),
        ("IŞIK?", "tr", "ışık"),
        ("¿Puedes ", "es", "puedes"),
        ("?! ", "en-us", phones.UNKNOWN),
    ],
)
def test_word_label(span, language, expected):
    assert espeak_align.word_label(span, language) == expected


def _event(kind, sample, name="", mnemonic="", position=0):
    return espeak.Event(kind, sample, 0, position, 0, name, mnemonic)


def test_align_carves_pauses_and_closures():
    """Pauses and digital silence at a phone's edge become ``sil``; the hiatus link merges."""
    rate = 1000
    samples = np.ones(100, np.int16)
    samples[40:55] = 0  # closure before the stop at 55
    events = [
        _event(espeak.EVENT_WORD, 0, position=1),
        _event(espeak.EVENT_PHONEME, 5, "ð", "D"),
        _event(espeak.EVENT_PHONEME, 20, "ˈɪ", "'I"),
        _event(espeak.EVENT_PHONEME, 30, "", ";"),  # hiatus link: part of ɪ
        _event(espeak.EVENT_WORD, 40, position=5),
        _event(espeak.EVENT_PHONEME, 55, "t", "t"),
        _event(espeak.EVENT_PHONEME, 70, "", "_:"),  # pause
        _event(espeak.EVENT_PHONEME, 80, "ɑ", "A"),
    ]
    result = espeak.Synthesis(samples, rate, tuple(events))
    phone_tier, word_tier = espeak_align.align(result, "The tea", "en-us")
    assert [(p.start, p.end, p.label, p.stress) for p in phone_tier] == [
        (0, 5, SILENCE, 0),
        (5, 20, "ð", 0),
        (20, 40, "ɪ", 1),
        (40, 55, SILENCE, 0),
        (55, 70, "t", 0),
        (70, 80, SILENCE, 0),
        (80, 100, "ɑ", 0),
    ]
    assert [(w.start, w.end, w.label) for w in word_tier] == [
        (0, 5, SILENCE),
        (5, 40, "the"),
        (40, 55, SILENCE),
        (55, 100, "tea"),
    ]
