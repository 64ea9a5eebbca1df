"""Training data of a TERA model: one language of a corpus as log-mel frames.

Utterances of ``language`` are read from the corpus (``utterances.tsv`` + ``audio/``),
turned into the ``logmel`` baseline's features (80 bins, 25 ms / 10 ms, natural log;
:class:`speechlens.models.spectral.LogMelAdapter`) and split by speaker: the last
``heldout_speakers`` speakers in sorted order are held out for validation, so no held-out
speaker is ever trained on.

Train/probe separation: a model trained by the workflow must be analysed on audio it never
heard. :func:`shared_identities` compares the training utterances (the trained languages
of the training corpus) with an analysed corpus on three identities: speaker ids
(``speaker``), voice variants (``variant``, synthetic corpora) and sentences (``text``,
normalised by :func:`normalise_text`). The start-up check
(:func:`speechlens.checks.check_references`) applies it to the planned tables of synthetic
corpora; rule ``training_separation`` applies it to the built tables of every analysed
corpus (:func:`check_separation`) before a trained model runs on that corpus.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import audio
from speechlens.models.spectral import LogMelAdapter
from speechlens.tables import TableSpec, write_table

log = logging.getLogger(__name__)

IDENTITIES = {"speaker": "speakers", "variant": "voice variants", "text": "sentences"}
"""Utterance columns that identify what a model heard, with their names in messages."""
SHOWN = 5
"""Shared values named in an error message, per identity."""
SEPARATION = TableSpec(
    name="training_separation",
    columns=(
        "training_corpus",
        "probed_corpus",
        "languages",
        "identity",
        "training_values",
        "probed_values",
        "shared",
    ),
    numeric=("training_values", "probed_values", "shared"),
    text=("training_corpus", "probed_corpus", "languages", "identity"),
)
"""``resources/training/separation/{corpus}.tsv``: distinct values of each identity in the
training utterances and in the analysed corpus, and how many both hold (always 0: the
table is written only when nothing is shared)."""


class TrainingDataError(ValueError):
    """The corpus cannot provide the requested training data; the message says why."""


@dataclass
class Split:
    """Log-mel utterances ``(frame, n_mels)`` float32 of the training and held-out speakers."""

    train: list[np.ndarray]
    heldout: list[np.ndarray]
    train_speakers: list[str]
    heldout_speakers: list[str]

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation ``(n_mels,)`` over all training frames."""
        frames = np.concatenate(self.train).astype(np.float64)
        return frames.mean(0), np.maximum(frames.std(0), 1e-5)


def log_mel_frontend(sample_rate: int = 16000, n_mels: int = 80) -> LogMelAdapter:
    """The loaded log-mel front end shared by training and the ``tera`` adapter."""
    frontend = LogMelAdapter(sample_rate=sample_rate, n_mels=n_mels)
    frontend.load()
    return frontend


def load_split(
    utterances_tsv: str | Path,
    language: str,
    *,
    heldout_speakers: int = 2,
    sample_rate: int = 16000,
    n_mels: int = 80,
) -> Split:
    """Log-mel features of ``language``'s utterances, split by speaker (module docstring)."""
    utterances_tsv = Path(utterances_tsv)
    table = pd.read_csv(utterances_tsv, sep="\t", dtype=str, keep_default_na=False)
    rows = table[table["language"] == language]
    if rows.empty:
        known = sorted(table["language"].unique())
        raise TrainingDataError(
            f"{utterances_tsv}: no utterances of language {language!r} (languages: {known})"
        )
    speakers = sorted(rows["speaker"].unique())
    if len(speakers) <= heldout_speakers:
        raise TrainingDataError(
            f"{utterances_tsv}: language {language!r} has {len(speakers)} speakers; "
            f"training.heldout_speakers ({heldout_speakers}) must leave at least one to train on"
        )
    held = speakers[len(speakers) - heldout_speakers :] if heldout_speakers else []
    frontend = log_mel_frontend(sample_rate, n_mels)
    train, heldout = [], []
    for row in rows.itertuples():
        wave, _ = audio.load(utterances_tsv.parent / row.audio, sample_rate=sample_rate)
        feats = frontend.log_mel(wave)
        if len(feats):
            (heldout if row.speaker in held else train).append(feats)
    return Split(train, heldout, [s for s in speakers if s not in held], held)


class SeparationError(TrainingDataError):
    """An analysed corpus shares speakers, voice variants or sentences with the training
    utterances of a model trained by the workflow."""


def normalise_text(text: str) -> str:
    """Sentence identity: NFC, case-folded, every run of characters that are not letters,
    digits or marks turned into one space, stripped (``"Hello, World!"`` ->
    ``"hello world"``)."""
    text = unicodedata.normalize("NFC", str(text)).casefold()
    kept = "".join(ch if unicodedata.category(ch)[0] in "LNM" else " " for ch in text)
    return " ".join(kept.split())


def identity_values(table: pd.DataFrame, column: str) -> set[str]:
    """Distinct non-empty values of ``column`` (texts normalised); empty if it is absent."""
    if column not in table.columns:
        return set()
    values = table[column].fillna("").astype(str)
    if column == "text":
        values = values.map(normalise_text)
    return {v for v in values if v.strip()}


def shared_identities(training: pd.DataFrame, probed: pd.DataFrame) -> dict[str, list[str]]:
    """``{identity column: sorted values found in both tables}`` for each column of
    :data:`IDENTITIES` (empty lists when nothing is shared). ``variant`` is compared only
    when both tables have it."""
    return {
        column: sorted(identity_values(training, column) & identity_values(probed, column))
        for column in IDENTITIES
    }


def training_rows(table: pd.DataFrame, languages: Sequence[str]) -> pd.DataFrame:
    """The utterances a model trained on one of ``languages`` hears (``language`` column)."""
    return table[table["language"].astype(str).isin(list(languages))]


def overlap_message(shared: Mapping[str, Sequence[str]]) -> str:
    """``"2 speakers ['a', 'b'], 1 sentences ['x']"``: the non-empty identities of
    :func:`shared_identities`, the first :data:`SHOWN` values of each."""
    parts = []
    for column, values in shared.items():
        if values:
            more = f" and {len(values) - SHOWN} more" if len(values) > SHOWN else ""
            parts.append(f"{len(values)} {IDENTITIES[column]} {list(values[:SHOWN])}{more}")
    return ", ".join(parts)


def check_separation(
    training_tsv: str | Path,
    probed_tsv: str | Path,
    languages: Sequence[str],
    *,
    training_corpus: str,
    probed_corpus: str,
    out: str | Path | None = None,
) -> pd.DataFrame:
    """Check that corpus ``probed_corpus`` (its ``utterances.tsv``) shares no speaker,
    voice variant or sentence with the ``languages`` utterances of ``training_corpus``.

    Raises :class:`SeparationError` naming both corpora, both files and the shared values.
    Returns the :data:`SEPARATION` table (written to ``out`` when given)."""
    read = {"sep": "\t", "dtype": str, "keep_default_na": False}
    training = training_rows(pd.read_csv(training_tsv, **read), languages)
    probed = pd.read_csv(probed_tsv, **read)
    shared = shared_identities(training, probed)
    if any(shared.values()):
        raise SeparationError(
            f"corpus {probed_corpus!r} ({probed_tsv}) is analysed with models trained on the "
            f"{'/'.join(languages)} utterances of corpus {training_corpus!r} ({training_tsv}), "
            f"and they share {overlap_message(shared)}: a model must be probed on speakers "
            "and sentences it never heard (config key training.corpus; for synthetic "
            "corpora `split: train` and `split: probe`)"
        )
    table = SEPARATION.frame(
        [
            {
                "training_corpus": training_corpus,
                "probed_corpus": probed_corpus,
                "languages": ",".join(languages),
                "identity": column,
                "training_values": len(identity_values(training, column)),
                "probed_values": len(identity_values(probed, column)),
                "shared": 0,
            }
            for column in IDENTITIES
        ]
    )
    log.info(
        "corpus %r shares no speaker, voice variant or sentence with the %s utterances of "
        "corpus %r:\n%s",
        probed_corpus,
        "/".join(languages),
        training_corpus,
        table.to_string(index=False),
    )
    if out is not None:
        write_table(SEPARATION, table, out)
    return table
