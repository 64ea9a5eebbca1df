"""Benchmark: build the default synthetic corpus and compare the wall time to its budget.

The default corpus (5 languages x 8 speakers x 15 sentences = 600 utterances) must build
in under 60 s on 2 cores. Prints the utterance count, the audio duration (s), the wall
time (s) and wall time / budget (< 1 passes).

    PYTHONPATH=src python benchmarks/synthetic_corpus.py [--threads 2] [--budget 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from speechlens import schema
from speechlens.corpora import synthetic
from speechlens.corpora.contract import read_corpus


def main() -> int:
    """Build the default corpus into a temporary folder; exit status 1 over budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--budget", type=float, default=60.0, help="budget in seconds (default 60)")
    args = parser.parse_args()
    spec = {"kind": "synthetic", **schema.defaults("$defs.synthetic")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        start = time.perf_counter()
        synthetic.build(spec, out, threads=args.threads)
        wall = time.perf_counter() - start
        utterances, segments = read_corpus(out)
    audio_s = float(utterances["duration_s"].sum())
    print(f"threads:       {args.threads}")
    print(f"utterances:    {len(utterances)}")
    print(f"segments:      {len(segments)}")
    print(f"audio seconds: {audio_s:.1f}")
    print(f"wall seconds:  {wall:.2f}")
    print(f"realtime x:    {audio_s / wall:.1f}")
    print(f"ratio to {args.budget:g} s budget: {wall / args.budget:.3f}")
    return 0 if wall < args.budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
