"""Benchmark: cost of the head statistics next to the forward passes that produce the maps.

On a synthetic corpus, Whisper tiny.en (pad30 and trim) runs with attention weights on the
batches the ``head_types`` rule uses; the streaming statistics (:class:`HeadStats`) are
timed separately. Prints seconds per utterance of each and their ratio (target: the
statistics cost well under the forward passes), and the time of one ablated extraction
pass (zero mode, half the heads) vs an un-ablated one (the hooks should cost ~nothing).

    .venv/bin/python benchmarks/attention.py [--utterances 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import Timer, build_corpus, whisper_tiny

from speechlens import audio
from speechlens.attention.head_types import corpus_items
from speechlens.attention.hooks import ablate
from speechlens.attention.settings import resolve
from speechlens.attention.stats import HeadStats
from speechlens.extract import plan_batches
from speechlens.models import ADAPTERS


def measure(adapter, items, settings) -> None:
    waves = [audio.load(it.path, sample_rate=adapter.sample_rate)[0] for it in items]
    batches = plan_batches([len(w) for w in waves], int(settings["batch_seconds"] * 16000))
    acc = HeadStats(
        adapter.num_layers - 1,
        adapter.num_heads,
        diagonal_ms=settings["diagonal_ms"],
        vertical_fraction=settings["vertical_fraction"],
        frame_rate_hz=adapter.frame_rate_hz,
    )
    forward = stats = 0.0
    for batch in batches:
        with Timer() as t:
            _, maps = adapter.forward([waves[i] for i in batch], output_attentions=True)
        forward += t.seconds
        with Timer() as t:
            for attn in maps:
                acc.update(attn)
        stats += t.seconds
    n = len(items)
    print(
        f"  forward with weights {forward / n * 1000:8.1f} ms/utt   statistics "
        f"{stats / n * 1000:8.1f} ms/utt   ratio {stats / forward:.3f}"
    )
    half = {b: range(adapter.num_heads // 2) for b in range(1, adapter.num_layers)}
    plain = ablated = 0.0
    for batch in batches:
        with Timer() as t:
            adapter.forward([waves[i] for i in batch])
        plain += t.seconds
        with Timer() as t, ablate(adapter, half):
            adapter.forward([waves[i] for i in batch])
        ablated += t.seconds
    print(
        f"  extraction pass {plain / n * 1000:8.1f} ms/utt   ablated {ablated / n * 1000:8.1f} "
        f"ms/utt   ratio {ablated / plain:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        speakers = max(1, args.utterances // 10)
        build_corpus(tmp / "corpus", languages=("en-us",), speakers=speakers, sentences=10)
        model = whisper_tiny(tmp / "whisper")
        settings = resolve({})
        for padding in ("pad30", "trim"):
            adapter = ADAPTERS["whisper"](str(model), padding=padding, device="cpu")
            adapter.load()
            items = corpus_items(adapter, tmp / "corpus" / "utterances.tsv", args.utterances, 0)
            print(f"whisper tiny.en, padding {padding}, {len(items)} utterances:")
            measure(adapter, items, settings)


if __name__ == "__main__":
    main()
