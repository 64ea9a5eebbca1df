"""Benchmark: extraction overhead, throughput and store size.

1. Overhead: ``extract_corpus`` on the default corpus (600 utterances) vs a bare loop of the
   same model forward passes on the same batches (audio preloaded, nothing stored).
   Target: overhead <= 15 %.
2. Audio seconds processed per second on CPU for Whisper tiny.en (pad30 and trim) and for a
   wav2vec2-base-sized model, and the store's bytes per audio second.

    .venv/bin/python benchmarks/extract_overhead.py [--utterances 600] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch
from _common import SETTINGS, Timer, build_corpus, du, wav2vec2_base_sized, whisper_tiny

from speechlens import audio
from speechlens.extract import extract_corpus, plan_batches, plan_blocks, plan_items
from speechlens.models import make_adapter


def bare_loop(adapter, items) -> float:
    """Seconds of forward passes alone, on exactly the batches extraction uses."""
    counts = [adapter.frame_count(it.n_samples) for it in items]
    waves = [audio.load(it.path, sample_rate=adapter.sample_rate)[0] for it in items]
    max_samples = int(SETTINGS["batch_seconds"] * adapter.sample_rate)
    with Timer() as t:
        for block in plan_blocks(counts, SETTINGS["block_frames"]):
            block_waves = [waves[i] for i in block]
            for batch in plan_batches([len(w) for w in block_waves], max_samples):
                adapter.forward([block_waves[j] for j in batch])
    return t.seconds


def measure(name, spec, corpus: Path, tmp: Path, threads: int, audio_s: float) -> None:
    adapter = make_adapter(spec, SETTINGS, threads=threads)
    adapter.load()
    table = corpus / "utterances.tsv"
    utts = pd.read_csv(table, sep="\t", dtype={"utterance_id": str})
    items = plan_items(utts["utterance_id"], [corpus / a for a in utts["audio"]], 16000)
    bare = bare_loop(adapter, items)
    out = tmp / f"{name}.zarr"
    with Timer() as t:
        extract_corpus(adapter, table, out, settings=SETTINGS, attrs={})
    size = du(out)
    print(
        f"{name:24s} bare {bare:7.1f} s  extract {t.seconds:7.1f} s  "
        f"overhead {t.seconds / bare - 1:+.1%}  {audio_s / t.seconds:7.1f} audio-s/s  "
        f"{size / audio_s / 1e3:7.1f} kB per audio-s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=600, help="600 = the default corpus")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="whisper_trim,whisper_pad30,wav2vec2_base")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sentences = max(1, round(args.utterances / 40))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        utts = build_corpus(tmp / "corpus", sentences=sentences, threads=args.threads)
        audio_s = float(utts["duration_s"].sum())
        print(f"corpus: {len(utts)} utterances, {audio_s:.0f} s of audio; {args.threads} threads")
        specs = {
            "whisper_trim": {
                "family": "whisper",
                "source": str(whisper_tiny(tmp / "wt")),
                "padding": "trim",
            },
            "whisper_pad30": {"family": "whisper", "source": str(tmp / "wt"), "padding": "pad30"},
            "wav2vec2_base": {
                "family": "wav2vec2",
                "source": str(wav2vec2_base_sized(tmp / "w2v")),
            },
            "logmel": {"family": "logmel"},
        }
        for name in args.models.split(","):
            measure(name, specs[name], tmp / "corpus", tmp, args.threads, audio_s)


if __name__ == "__main__":
    main()
