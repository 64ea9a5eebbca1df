"""Corpus kind ``synthetic``: speech synthesised by libespeak-ng with exact alignments.

Every speaker is an espeak-ng voice (``language+variant``, e.g. ``en-us+f2``) with its own
base pitch, pitch range and rate; speakers alternate female/male (``en-us_f01``,
``en-us_m01``, ``en-us_f02``, ...) and cycle through the numbered variants of
``espeak-ng-data/voices/!v``. Each speaker reads ``sentences_per_speaker`` sentences
drawn without replacement from the language's sentence list; voices and sentences come
from NumPy generators seeded by ``(seed, speaker)``, so a speaker's voice and sentences do
not depend on the other speakers or languages.

``split`` partitions the voice variants and each language's sentence list into two
disjoint parts, so that a ``train`` corpus (e.g. the training audio of the TERA models)
and a ``probe`` corpus never share a voice variant or a sentence, whatever their seeds and
sizes (:func:`split_variants`, :func:`split_sentences`):

- ``probe``: the first :data:`PROBE_VARIANTS_PER_GENDER` variants of each gender in
  numeric order (``f1``-``f4``, ``m1``-``m4``: a distinct variant for each of up to 8
  speakers per language) and the sentences at even positions of the list (0, 2, 4, ...);
- ``train``: the other variants (``f5``, ``m5``-``m8`` with espeak-ng 1.51's data) and the
  sentences at odd positions; its speakers are named ``<language>_train_f01``, ... so that
  no speaker id is shared with a ``probe`` or ``all`` corpus either;
- ``all`` (the default): every variant and every sentence.

``sentence_index`` is always the position in the whole list.

The phone and word tiers are espeak-ng's own events (:mod:`speechlens.corpora.espeak_align`).
:data:`PAD_S` of silence is added before and after the speech; both tiers tile
``[0, duration_s]``. espeak-ng's 22050 Hz output is resampled with soxr (high quality) to
``sample_rate`` and written as 16-bit PCM WAV. Synthesis is a pure function of (text,
voice settings), so the same spec gives byte-identical audio and tables for any
``threads``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import audio, schema
from speechlens.corpora import espeak
from speechlens.corpora.contract import CorpusError, write_corpus
from speechlens.corpora.espeak_align import Interval, align

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = tuple(schema.defaults("$defs.synthetic")["languages"])
"""The languages of a spec that names none (the schema's default)."""
PAD_S = 0.15
"""Silence added before and after each utterance (seconds)."""
PITCH_RANGE = (35, 65)
"""espeak-ng base pitch (0-100, 50 = the variant's own) drawn per speaker."""
INTONATION_RANGE = (30, 80)
"""espeak-ng pitch range (0-100, 0 = monotone) drawn per speaker."""
RATE_RANGE = (150, 195)
"""Speaking rate in words per minute drawn per speaker."""
GENDER_CODES = {"female": "f", "male": "m"}
SPLITS = ("all", "probe", "train")
"""Values of the spec key ``split`` (module docstring)."""
PROBE_VARIANTS_PER_GENDER = 4
"""Voice variants of each gender in the ``probe`` part (the first ones); ``train`` has the rest."""
SPEAKER_TAGS = {"all": "", "probe": "", "train": "train_"}
"""Inserted into the speaker ids of each part (``en-us_train_f01``)."""


@dataclass(frozen=True)
class Options:
    """A validated spec: languages (espeak-ng voices), counts, seed, output rate (Hz),
    sentence files by language and the part of the voices and sentences used (``split``)."""

    languages: tuple[str, ...]
    speakers_per_language: int
    sentences_per_speaker: int
    seed: int
    sample_rate: int
    sentences: dict[str, Path]
    split: str


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a voice variant plus prosody (espeak-ng units)."""

    speaker_id: str
    language: str
    gender: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


@dataclass(frozen=True)
class Job:
    """One utterance to render: who says which sentence, and espeak-ng's random seed."""

    utterance_id: str
    speaker: Speaker
    text: str
    sentence_index: int
    seed: int


# -- spec -----------------------------------------------------------------------------


def parse_spec(spec: Mapping) -> Options:
    """Check ``spec`` and fill its defaults (the schema's ``$defs.synthetic``); raises
    :class:`CorpusError` naming the key."""
    spec = schema.merge(dict(spec), "$defs.synthetic")
    languages = spec["languages"]
    if isinstance(languages, str) or not isinstance(languages, Sequence) or not languages:
        raise CorpusError(f"corpus config key `languages`: expected a list, got {languages!r}")
    for lang in languages:
        if not isinstance(lang, str) or not lang or "+" in lang or lang != lang.strip():
            raise CorpusError(
                f"corpus config key `languages`: {lang!r} is not an espeak-ng voice name"
            )
    if len(set(languages)) != len(languages):
        raise CorpusError(f"corpus config key `languages`: duplicates in {list(languages)}")
    sentences = spec.get("sentences") or {}
    if not isinstance(sentences, Mapping):
        raise CorpusError(f"corpus config key `sentences`: expected a mapping, got {sentences!r}")
    if spec["split"] not in SPLITS:
        raise CorpusError(
            f"corpus config key `split`: {spec['split']!r} is not one of {list(SPLITS)}"
        )
    return Options(
        languages=tuple(languages),
        speakers_per_language=_int_at_least(spec, "speakers_per_language"),
        sentences_per_speaker=_int_at_least(spec, "sentences_per_speaker"),
        seed=_int_at_least(spec, "seed", minimum=0),
        sample_rate=_int_at_least(spec, "sample_rate", minimum=8000),
        sentences={str(k): Path(v) for k, v in sentences.items()},
        split=spec["split"],
    )


def _int_at_least(spec: Mapping, key: str, minimum: int = 1) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CorpusError(
            f"corpus config key `{key}`: expected an integer >= {minimum}, got {value!r}"
        )
    return value


def check_voices(languages: Sequence[str], engine: espeak.Espeak) -> None:
    """Raise :class:`CorpusError` naming ``languages`` for a voice espeak-ng lacks."""
    for lang in languages:
        if not engine.has_voice(lang):
            close = engine.suggest(lang)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise CorpusError(
                f"corpus config key `languages`: {lang!r} is not an espeak-ng voice{hint}"
            )


def load_sentences(language: str, files: Mapping[str, Path]) -> list[str]:
    """The distinct non-empty lines of the language's sentence file, in file order.

    ``files[language]`` (spec key ``sentences``) wins over the shipped list
    ``speechlens/corpora/sentences/<language>.txt``; lines starting with ``#`` are comments.
    """
    if language in files:
        path = files[language]
        if not path.is_file():
            raise CorpusError(f"corpus config key `sentences`: {language}: no file {path}")
        text = path.read_text(encoding="utf-8")
    else:
        shipped = resources.files("speechlens.corpora") / "sentences" / f"{language}.txt"
        if not shipped.is_file():
            raise CorpusError(
                f"no sentences for language {language!r}: add `sentences: {{{language}: "
                "path/to/sentences.txt}` (one sentence a line) to the corpus config"
            )
        text = shipped.read_text(encoding="utf-8")
    lines = [unicodedata.normalize("NFC", line.strip()) for line in text.splitlines()]
    kept = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if not kept:
        raise CorpusError(f"sentences for language {language!r} are empty")
    return kept


# -- planning -------------------------------------------------------------------------


def _rng(seed: int, name: str, stream: int) -> np.random.Generator:
    """A generator seeded by (seed, a stable hash of ``name``, stream number)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), stream])


def split_variants(variants: Mapping[str, str], split: str) -> dict[str, str]:
    """The voice variants (``{variant: gender}``, in numeric order) of part ``split``:
    ``probe`` the first :data:`PROBE_VARIANTS_PER_GENDER` of each gender, ``train`` the
    others, ``all`` every one."""
    if split == "all":
        return dict(variants)
    seen: dict[str, int] = {}  # variants of each gender met so far
    kept = {}
    for variant, gender in variants.items():
        in_probe = seen.get(gender, 0) < PROBE_VARIANTS_PER_GENDER
        seen[gender] = seen.get(gender, 0) + 1
        if in_probe == (split == "probe"):
            kept[variant] = gender
    return kept


def split_sentences(pool: Sequence[str], split: str) -> list[tuple[int, str]]:
    """``(position in pool, sentence)`` of part ``split``: ``probe`` the even positions,
    ``train`` the odd ones, ``all`` every one."""
    first = {"all": 0, "probe": 0, "train": 1}[split]
    step = 1 if split == "all" else 2
    return [(i, pool[i]) for i in range(first, len(pool), step)]


def make_speakers(
    language: str, count: int, seed: int, variants: Mapping[str, str], split: str = "all"
) -> list[Speaker]:
    """``count`` speakers, alternating female/male, cycling through the ``variants``
    (``{variant: gender}``) of part ``split``; prosody drawn from ``PITCH_RANGE`` etc. by
    ``(seed, id)``."""
    variants = split_variants(variants, split)
    by_gender = {g: [v for v, vg in variants.items() if vg == g] for g in GENDER_CODES}
    missing = [g for g, vs in by_gender.items() if not vs]
    if missing:
        part = "" if split == "all" else f" in split {split!r}"
        raise CorpusError(f"espeak-ng data has no {missing} voice variants in voices/!v{part}")
    speakers = []
    for i in range(count):
        gender = "female" if i % 2 == 0 else "male"
        number = i // 2
        tag = SPEAKER_TAGS[split]
        speaker_id = f"{language}_{tag}{GENDER_CODES[gender]}{number + 1:02d}"
        rng = _rng(seed, speaker_id, 0)
        pitch, pitch_range, rate = (
            int(rng.integers(lo, hi + 1)) for lo, hi in (PITCH_RANGE, INTONATION_RANGE, RATE_RANGE)
        )
        variant = by_gender[gender][number % len(by_gender[gender])]
        speakers.append(Speaker(speaker_id, language, gender, variant, pitch, pitch_range, rate))
    return speakers


def plan(
    options: Options, sentences: Mapping[str, list[str]], variants: Mapping[str, str]
) -> list[Job]:
    """Every utterance of the corpus, in output order (language, speaker, reading order)."""
    jobs = []
    for language in options.languages:
        pool = split_sentences(sentences[language], options.split)
        wanted = options.sentences_per_speaker
        if wanted > len(pool):
            part = "" if options.split == "all" else f" in split {options.split!r}"
            raise CorpusError(
                f"corpus config key `sentences_per_speaker`: {wanted} is more than the "
                f"{len(pool)} distinct sentences of language {language!r}{part}"
            )
        for speaker in make_speakers(
            language, options.speakers_per_language, options.seed, variants, options.split
        ):
            order = _rng(options.seed, speaker.speaker_id, 1).permutation(len(pool))[:wanted]
            for k, position in enumerate(order):
                index, text = pool[int(position)]
                utterance_id = f"{speaker.speaker_id}_{k + 1:03d}"
                seed = zlib.crc32(f"{options.seed}/{utterance_id}".encode())
                jobs.append(Job(utterance_id, speaker, text, index, seed))
    return jobs


def planned_utterances(spec: Mapping) -> pd.DataFrame:
    """The ``utterances.tsv`` identity columns (``utterance_id``, ``speaker``,
    ``language``, ``gender``, ``text``, ``voice``, ``variant``, ``sentence_index``) that
    :func:`build` would write for ``spec``, from its plan alone: nothing is synthesised, so
    a start-up check can compare corpora before they exist. Raises :class:`CorpusError`."""
    options = parse_spec(spec)
    sentences = {lang: load_sentences(lang, options.sentences) for lang in options.languages}
    jobs = plan(options, sentences, espeak.list_variants())
    return pd.DataFrame(
        [
            {
                key: row[key]
                for key in ("utterance_id", "speaker", "language", "gender", "text")
                + ("voice", "variant", "sentence_index")
            }
            for row in (_utterance_row(job, 0.0, options.sample_rate) for job in jobs)
        ]
    )


# -- rendering ------------------------------------------------------------------------


def pad(synthesis: espeak.Synthesis, seconds: float) -> espeak.Synthesis:
    """Add ``seconds`` of digital silence before and after; event samples shift with it."""
    n = round(seconds * synthesis.sample_rate)
    ms = round(n * 1000 / synthesis.sample_rate)
    shifted = tuple(
        dataclasses.replace(e, sample=e.sample + n, audio_position_ms=e.audio_position_ms + ms)
        for e in synthesis.events
    )
    samples = np.concatenate([np.zeros(n, np.int16), synthesis.samples, np.zeros(n, np.int16)])
    return espeak.Synthesis(samples, synthesis.sample_rate, shifted)


def render(job: Job, audio_dir: Path, sample_rate: int) -> tuple[dict, list[tuple]]:
    """Synthesise, align, resample and write one utterance.

    Returns its ``utterances.tsv`` row and its ``segments.tsv`` rows
    ``(utterance_id, tier, start_s, end_s, label, stress)``.
    """
    speaker = job.speaker
    settings = espeak.Settings(
        speaker.voice, speaker.rate, speaker.pitch, speaker.pitch_range, job.seed
    )
    synthesis = pad(espeak.engine().synthesize(job.text, settings), PAD_S)
    if not synthesis.samples.any():
        raise CorpusError(f"espeak-ng produced no audio for {job.utterance_id!r}: {job.text!r}")
    phone_tier, word_tier = align(synthesis, job.text, speaker.language)
    native = synthesis.samples.astype(np.float32) / audio.PCM16_SCALE
    samples = audio.resample(native, synthesis.sample_rate, sample_rate)
    audio.write_wav(audio_dir / f"{job.utterance_id}.wav", samples, sample_rate)
    duration = len(samples) / sample_rate
    rows = [
        row
        for tier, intervals in (("phone", phone_tier), ("word", word_tier))
        for row in _segment_rows(job.utterance_id, tier, intervals, synthesis.sample_rate, duration)
    ]
    return _utterance_row(job, duration, sample_rate), rows


def _segment_rows(
    utterance_id: str, tier: str, intervals: Sequence[Interval], rate: int, duration: float
) -> list[tuple]:
    """Intervals in samples at ``rate`` → rows in seconds, clipped to ``duration``; the
    last interval ends exactly at ``duration``."""
    rows = []
    for i, iv in enumerate(intervals):
        start = min(iv.start / rate, duration)
        end = duration if i == len(intervals) - 1 else min(iv.end / rate, duration)
        if end > start:
            rows.append((utterance_id, tier, start, end, iv.label, iv.stress))
    return rows


def _utterance_row(job: Job, duration: float, sample_rate: int) -> dict:
    speaker = job.speaker
    return {
        "utterance_id": job.utterance_id,
        "audio": f"audio/{job.utterance_id}.wav",
        "speaker": speaker.speaker_id,
        "language": speaker.language,
        "gender": speaker.gender,
        "text": job.text,
        "duration_s": duration,
        "sample_rate": sample_rate,
        "voice": speaker.voice,
        "variant": speaker.variant,
        "pitch": speaker.pitch,
        "pitch_range": speaker.pitch_range,
        "rate_wpm": speaker.rate,
        "sentence_index": job.sentence_index,
    }


def _render_task(task: tuple[Job, Path, int]) -> tuple[dict, list[tuple]]:
    return render(*task)


def _init_worker() -> None:
    espeak.engine()


def render_all(jobs: Sequence[Job], audio_dir: Path, sample_rate: int, threads: int) -> list:
    """Render ``jobs`` with ``threads`` worker processes; results in the order of ``jobs``.

    Workers are forked (not spawned: spawning re-runs the main module, which breaks
    scripts without a ``__main__`` guard such as Snakemake's) and each initialises its own
    espeak-ng. The parent has never synthesised, so every worker starts from the same
    pristine library state.
    """
    tasks = [(job, audio_dir, sample_rate) for job in jobs]
    workers = max(1, min(int(threads), len(tasks)))
    if workers == 1:
        return [_render_task(task) for task in tasks]
    context = multiprocessing.get_context("fork")
    chunk = max(1, len(tasks) // (workers * 8))
    with context.Pool(workers, initializer=_init_worker) as pool:
        return list(pool.imap(_render_task, tasks, chunksize=chunk))


# -- build ----------------------------------------------------------------------------


def build(spec: Mapping, out_dir: Path, *, threads: int = 1) -> None:
    """Build a ``synthetic`` corpus described by ``spec`` into ``out_dir`` (atomically).

    Spec keys (defaults in the schema's ``$defs.synthetic``): ``languages``,
    ``speakers_per_language``, ``sentences_per_speaker``, ``seed``, ``sample_rate`` (Hz),
    ``sentences`` (language → sentence file), ``split`` (``all``, ``probe`` or ``train``:
    module docstring). ``threads`` worker processes synthesise in parallel.
    """
    options = parse_spec(spec)
    check_voices(options.languages, espeak.engine())
    sentences = {lang: load_sentences(lang, options.sentences) for lang in options.languages}
    jobs = plan(options, sentences, espeak.list_variants(espeak.engine().data_path))

    def fill(tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        results = render_all(jobs, tmp / "audio", options.sample_rate, threads)
        utterances = pd.DataFrame([row for row, _ in results])
        segments = pd.DataFrame(
            [seg for _, segs in results for seg in segs],
            columns=["utterance_id", "tier", "start_s", "end_s", "label", "stress"],
        )
        return utterances, segments

    write_corpus(out_dir, fill)
    log.info("built synthetic corpus %s: %d utterances", out_dir, len(jobs))
