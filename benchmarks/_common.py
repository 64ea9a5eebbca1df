"""Shared set-up of the extraction benchmarks: a synthetic corpus and model checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from speechlens import schema
from speechlens.corpora import synthetic

SETTINGS = {
    "dtype": "float16",
    "chunk_frames": 4096,
    "block_frames": 20000,
    "batch_seconds": 60.0,
    "shards": 1,
    "device": "cpu",
    "compute_dtype": "float32",
}
"""The default `features` settings of config/config.yaml, on the CPU."""


def build_corpus(
    out: Path, *, languages=("en-us", "tr", "de", "es", "fr"), speakers=8, sentences=15, threads=2
) -> pd.DataFrame:
    """Build a synthetic corpus into ``out``; returns its utterance table."""
    spec = {
        **schema.defaults("$defs.synthetic"),
        "kind": "synthetic",
        "languages": list(languages),
        "speakers_per_language": speakers,
        "sentences_per_speaker": sentences,
    }
    synthetic.build(spec, out, threads=threads)
    return pd.read_csv(out / "utterances.tsv", sep="\t")


def whisper_tiny(out: Path) -> Path:
    """Whisper tiny.en converted from the PyPI package into ``out``."""
    from speechlens.models.convert.ct2_whisper import convert, default_source_dir

    if not (out / "model.safetensors").exists():
        convert(default_source_dir(), out)
    return out


def wav2vec2_base_sized(out: Path) -> Path:
    """A random wav2vec2 with the base architecture (12 x 768, 12 heads), saved locally."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(out)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(
            out
        )
    return out


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def du(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
