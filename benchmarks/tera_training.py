"""Benchmark: cost of TERA pretraining (rule train_tera) with the default `training` settings.

Builds the default synthetic corpus' languages (8 speakers x 15 sentences), trains
``--steps`` steps on one language with the schema's default settings and ``--threads``
threads, and prints wall and CPU seconds per step and the extrapolation to the configured
number of steps (default 300), plus the held-out L1 loss against the mean predictor's.
On a shared machine trust the CPU seconds (the wall time depends on the other load).

    .venv/bin/python benchmarks/tera_training.py [--language en-us] [--steps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import build_corpus

from speechlens.tera.train import TrainSettings, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", default="en-us")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder (else built)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = TrainSettings()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = args.corpus
        if corpus is None:
            corpus = tmp / "corpus"
            build_corpus(corpus, languages=(args.language,), threads=args.threads)
        settings = {"steps": args.steps, "eval_every": args.steps, "checkpoint_every": 10**9}
        log = train(corpus / "utterances.tsv", args.language, tmp / "model",
                    settings, state_dir=tmp / "state", threads=args.threads)  # fmt: skip
    last = log.iloc[-1]
    wall, cpu = last["seconds"] / args.steps, last["cpu_seconds"] / args.steps
    print(f"{args.language}: {args.steps} steps, {args.threads} threads (one held-out evaluation)")
    print(f"  per step: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(
        f"  {default.steps} steps (the default): ~{default.steps * wall / 60:.1f} min wall, "
        f"~{default.steps * cpu / 60:.1f} CPU-min (/{args.threads} cores: "
        f"~{default.steps * cpu / 60 / args.threads:.1f} min on idle cores)"
    )
    print(
        f"  held-out L1 after {args.steps} steps: {last['heldout_loss']:.4f} "
        f"(mean predictor {last['heldout_mean_loss']:.4f}, "
        f"ratio {last['heldout_loss'] / last['heldout_mean_loss']:.3f})"
    )


if __name__ == "__main__":
    main()
