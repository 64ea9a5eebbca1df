"""Phone and word tiers of one espeak-ng synthesis, from the engine's own events.

The alignments are espeak-ng's own events (see :mod:`speechlens.corpora.espeak`), in samples of
its 22050 Hz output, converted to seconds of the written audio:

- **phone tier**: a phone runs from its phoneme event to the next phoneme event (the
  last one to the end of the audio); a sounding phoneme without an IPA name (the hiatus
  link ``;`` of English and Spanish) is merged into the phone before it. Pause phonemes
  (espeak-ng mnemonics ``_``, ``_:``, ``_!``, ``_|``) are ``sil``, and so are runs of exact
  digital silence of at least :data:`MIN_SILENCE_S` at the start or end of a phone:
  espeak-ng emits the pre-pause before a word and the closure of a stop as silence
  *before* the stop's phoneme event, inside the previous phone's span. Labels are
  normalised by :mod:`speechlens.corpora.phones`; their stress goes to the ``stress``
  column (1 primary, 2 secondary, 0 otherwise).
- **word tier**: a word runs from the start of its first non-silent phone to the end of
  its last one; everything else is ``sil``. Its label is the input text from this word
  event to the next one, lowercased, punctuation stripped (apostrophes and hyphens inside
  a word kept). espeak-ng speaks some word pairs as one unit (``of the``, ``for a``) and
  reports one word event for them: their label holds both words.

Used by the corpus kind ``synthetic`` (:mod:`speechlens.corpora.synthetic`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from speechlens.corpora import espeak, phones
from speechlens.corpora.contract import SILENCE

MIN_SILENCE_S = 0.01
"""Shortest run of exact zeros (seconds) at a phone's edge that is relabelled ``sil``."""
_APOSTROPHES = {"\u2019": "'", "\u02bc": "'", "\u2010": "-", "\u2011": "-"}


@dataclass(frozen=True)
class Interval:
    """A labelled interval ``[start, end)`` in samples; ``word`` is the index of the word
    event a phone belongs to (-1 for silence)."""

    start: int
    end: int
    label: str
    stress: int = 0
    word: int = -1


def word_label(span: str, language: str) -> str:
    """Text of one word event → word label: lowercased (Turkish dotted/dotless i kept
    apart for ``tr`` and ``az``), punctuation stripped except ``'`` and ``-`` inside a word,
    whitespace collapsed. Returns ``phones.UNKNOWN`` if nothing is left."""
    for src, dst in _APOSTROPHES.items():
        span = span.replace(src, dst)
    if language.split("-")[0] in ("tr", "az"):
        span = span.replace("I", "ı").replace("İ", "i")
    words = [_strip_word(token) for token in span.lower().split()]
    label = " ".join(w for w in words if w)
    return label or phones.UNKNOWN


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM"


def _strip_word(token: str) -> str:
    kept = "".join(ch for ch in token if _is_word_char(ch) or ch in "'-")
    return kept.strip("'-")


def word_labels(text: str, events: Sequence[espeak.Event], language: str) -> list[str]:
    """Label of every word event: the text from its ``text_position`` (1-based, in
    characters) to the next word event's, normalised by :func:`word_label`."""
    starts = [e.text_position - 1 for e in events if e.kind == espeak.EVENT_WORD]
    ends = starts[1:] + [len(text)]
    return [
        word_label(text[max(a, 0) : max(b, a)], language) for a, b in zip(starts, ends, strict=True)
    ]


def phone_marks(events: Sequence[espeak.Event]) -> list[Interval]:
    """Start marks (``end`` unset) of the phoneme events, in emission order.

    Pauses start ``sil``; a sounding phoneme without an IPA name (the hiatus link ``;``)
    starts no mark, so the phone before it extends over it (``spn`` if there is none).
    Each phone belongs to the last word event emitted before it (word 0 if none was).
    """
    marks: list[Interval] = []
    word = -1
    for event in events:
        if event.kind == espeak.EVENT_WORD:
            word += 1
        elif event.kind != espeak.EVENT_PHONEME:
            continue
        elif event.is_pause:
            marks.append(Interval(event.sample, -1, SILENCE))
        elif event.name:
            label, stress = phones.normalise(event.name)
            marks.append(Interval(event.sample, -1, label, stress, max(word, 0)))
        elif not marks or marks[-1].label == SILENCE:
            marks.append(Interval(event.sample, -1, phones.UNKNOWN, 0, max(word, 0)))
    return marks


def tile(marks: Sequence[Interval], n_samples: int) -> list[Interval]:
    """Turn start marks into intervals tiling ``[0, n_samples)``: each mark lasts until the
    next later mark; the stretch before the first mark is silence; empty ones vanish."""
    out = []
    ordered = sorted(marks, key=lambda m: m.start)  # stable: emission order for ties
    starts = [0] + [min(max(m.start, 0), n_samples) for m in ordered]
    labelled = [Interval(0, -1, SILENCE)] + list(ordered)
    for i, mark in enumerate(labelled):
        start = starts[i]
        end = starts[i + 1] if i + 1 < len(starts) else n_samples
        if end > start:
            out.append(Interval(start, end, mark.label, mark.stress, mark.word))
    return merge_silence(out)


def merge_silence(intervals: Sequence[Interval]) -> list[Interval]:
    """Join consecutive ``sil`` intervals into one."""
    out: list[Interval] = []
    for iv in intervals:
        if out and iv.label == SILENCE and out[-1].label == SILENCE:
            out[-1] = Interval(out[-1].start, iv.end, SILENCE)
        else:
            out.append(iv)
    return out


def zero_runs(samples: np.ndarray, min_length: int) -> np.ndarray:
    """``(k, 2)`` array of ``[start, end)`` sample ranges where ``samples`` is exactly 0 for
    at least ``min_length`` samples."""
    is_zero = np.concatenate([[0], (samples == 0).astype(np.int8), [0]])
    change = np.diff(is_zero)
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    keep = ends - starts >= min_length
    return np.stack([starts[keep], ends[keep]], axis=1)


def trim_silence(intervals: Sequence[Interval], runs: np.ndarray) -> list[Interval]:
    """Relabel as ``sil`` the digital-silence ``runs`` that cover a phone's start or end
    (espeak-ng puts stop closures before the stop's event); a phone that is entirely
    silent becomes ``sil``. Runs strictly inside a phone are left alone."""
    out = []
    for iv in intervals:
        if iv.label == SILENCE:
            out.append(iv)
            continue
        start, end = iv.start, iv.end
        for run_start, run_end in runs:
            if run_start <= start < run_end:
                start = min(int(run_end), end)
            if run_start < end <= run_end:
                end = max(int(run_start), start)
        pieces = [
            Interval(iv.start, start, SILENCE),
            Interval(start, end, iv.label, iv.stress, iv.word),
            Interval(end, iv.end, SILENCE),
        ]
        out.extend(p for p in pieces if p.end > p.start)
    return merge_silence(out)


def word_intervals(phone_tier: Sequence[Interval], labels: Sequence[str]) -> list[Interval]:
    """Word tier from the phone tier: each word spans its non-silent phones; the rest is
    ``sil``. Returns intervals tiling the same range as ``phone_tier``."""
    spans: dict[int, list[int]] = {}
    for iv in phone_tier:
        if iv.label != SILENCE:
            span = spans.setdefault(iv.word, [iv.start, iv.end])
            span[1] = iv.end
    out = []
    cursor = phone_tier[0].start
    for word, (start, end) in spans.items():
        if start > cursor:
            out.append(Interval(cursor, start, SILENCE))
        label = labels[word] if 0 <= word < len(labels) else phones.UNKNOWN
        out.append(Interval(start, end, label, 0, word))
        cursor = end
    if phone_tier[-1].end > cursor:
        out.append(Interval(cursor, phone_tier[-1].end, SILENCE))
    return out


def align(
    synthesis: espeak.Synthesis, text: str, language: str
) -> tuple[list[Interval], list[Interval]]:
    """(phone tier, word tier) of one synthesis, in samples of ``synthesis.samples``."""
    n_samples = len(synthesis.samples)
    min_silence = round(MIN_SILENCE_S * synthesis.sample_rate)
    phone_tier = tile(phone_marks(synthesis.events), n_samples)
    phone_tier = trim_silence(phone_tier, zero_runs(synthesis.samples, min_silence))
    labels = word_labels(text, synthesis.events, language)
    return phone_tier, word_intervals(phone_tier, labels)
