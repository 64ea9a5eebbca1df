"""Training data of a TERA model: one language of a corpus as log-mel frames.

Utterances of ``language`` are read from the corpus (``utterances.tsv`` + ``audio/``),
turned into the ``logmel`` baseline's features (80 bins, 25 ms / 10 ms, natural log;
:class:`speechlens.models.spectral.LogMelAdapter`) and split by speaker: the last
``heldout_speakers`` speakers in sorted order are held out for validation, so no held-out
speaker is ever trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import audio
from speechlens.models.spectral import LogMelAdapter


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
