"""Cross-attention vs saliency over a corpus: settings, utterance selection, outputs.

Writes three outputs (each under a temporary name, renamed when complete):

- the tidy table (:data:`~speechlens.saliency.correlate.COLUMNS`), one row per
  (utterance, token, layer, head, method);
- the summary (:func:`~speechlens.saliency.correlate.summarise`);
- one example utterance as a Zarr store (float16, named dims) for figures: ``mel``
  ``(mel_bin, mel_frame)``, ``saliency`` ``(method, token, frame)``, ``cross_attention``
  ``(layer, head, token, frame)``, ``input_map`` (signed gradient x input) and ``spes_map``
  ``(token, mel_bin, mel_frame)``; valid frames only, ``time_s`` coordinates in seconds.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import audio
from speechlens.atomic import atomic_path, write_text
from speechlens.config import ConfigError
from speechlens.saliency.correlate import COLUMNS, correlation_rows, summarise
from speechlens.saliency.forced import (
    ForcedTranscript,
    from_ids,
    reference_transcript,
    teacher_forcing,
)
from speechlens.saliency.methods import (
    ENCODER_MODES,
    SIGNS,
    gradient_saliency,
    perturbation_saliency,
)
from speechlens.saliency.whisper import WhisperForSaliency

log = logging.getLogger(__name__)

METHODS = ("gradient_x_input", "spes", "encoder_output")
TRANSCRIPTS = ("reference", "hypothesis")
PERTURBATION_KEYS = ("budget", "batch_size", "patch_frames", "patch_bins", "occlude_prob", "seed")


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key saliency.{key}: {message}")


def check_settings(settings: Mapping) -> dict:
    """Check the ``saliency`` settings (defaults come from the config schema); returns a copy.

    Raises :class:`~speechlens.config.ConfigError` naming the key.
    """
    s = dict(settings)
    required = (
        "transcript",
        "languages",
        "max_utterances",
        "methods",
        "gradient_sign",
        "encoder_saliency",
        "grad_batch",
        "perturbation",
    )
    if s.get("padding") not in (None, "pad30", "trim"):
        raise _fail("padding", f"must be pad30, trim or null, got {s['padding']!r}")
    for key in required:
        if key not in s:
            raise _fail(key, "missing")
    if s["transcript"] not in TRANSCRIPTS:
        raise _fail("transcript", f"must be one of {TRANSCRIPTS}, got {s['transcript']!r}")
    if not s["methods"] or any(m not in METHODS for m in s["methods"]):
        raise _fail("methods", f"must be a non-empty subset of {METHODS}, got {s['methods']!r}")
    if s["gradient_sign"] not in SIGNS:
        raise _fail("gradient_sign", f"must be one of {SIGNS}, got {s['gradient_sign']!r}")
    if s["encoder_saliency"] not in ENCODER_MODES:
        raise _fail("encoder_saliency", f"must be one of {ENCODER_MODES}")
    if not isinstance(s["languages"], list | tuple) or not s["languages"]:
        raise _fail("languages", "must be a non-empty list of language patterns, e.g. ['en*']")
    if s["max_utterances"] is not None and int(s["max_utterances"]) < 1:
        raise _fail("max_utterances", "must be >= 1 or null")
    if int(s["grad_batch"]) < 1:
        raise _fail("grad_batch", "must be >= 1")
    p = dict(s["perturbation"])
    for key in PERTURBATION_KEYS:
        if key not in p:
            raise _fail(f"perturbation.{key}", "missing")
    for key in ("budget", "batch_size", "patch_frames", "patch_bins"):
        if int(p[key]) < 1:
            raise _fail(f"perturbation.{key}", f"must be >= 1, got {p[key]}")
    if not 0 < float(p["occlude_prob"]) < 1:
        raise _fail("perturbation.occlude_prob", f"must be in (0, 1), got {p['occlude_prob']}")
    s["perturbation"] = p
    return s


def select_utterances(
    utterances_tsv: str | Path, languages, max_utterances: int | None
) -> pd.DataFrame:
    """Utterances whose ``language`` matches a pattern (``fnmatch``, e.g. ``en*``), in file
    order, at most ``max_utterances``. Fails naming the file when columns or matches are missing."""
    table = pd.read_csv(utterances_tsv, sep="\t", keep_default_na=False, dtype=str)
    missing = {"utterance_id", "audio", "language", "text"} - set(table.columns)
    if missing:
        raise ValueError(f"{utterances_tsv}: missing column(s) {sorted(missing)}")
    keep = table["language"].map(lambda lang: any(fnmatch.fnmatch(lang, p) for p in languages))
    chosen = table[keep]
    if chosen.empty:
        found = sorted(table["language"].unique())
        raise ValueError(
            f"{utterances_tsv}: no utterance matches config key saliency.languages "
            f"{list(languages)} (languages found: {found})"
        )
    if max_utterances is not None:
        chosen = chosen.iloc[: int(max_utterances)]
    return chosen.reset_index(drop=True)


def transcript_for(model: WhisperForSaliency, mel, text: str, kind: str) -> ForcedTranscript:
    """The reference text's tokens, or the model's own greedy hypothesis."""
    if kind == "reference":
        return reference_transcript(model.tokenizer, text)
    prompt = model.tokenizer.prefix_tokens
    limit = model.model.config.max_target_positions - len(prompt) - 1
    return from_ids(model.tokenizer, model.greedy_ids(mel, prompt, max_new_tokens=min(limit, 200)))


def explain(model: WhisperForSaliency, wave: np.ndarray, forced: ForcedTranscript, s: Mapping):
    """All configured saliency maps and the cross-attention of one utterance.

    Returns ``(maps, cross, n_frames, extra)``: ``maps`` method -> ``(token, frame)``,
    ``cross`` ``(layer, head, token, frame)``, ``n_frames`` the valid encoder frames, and
    ``extra`` (mel, un-pooled maps, timings) for the example store.
    """
    mel = model.log_mel(wave)
    n_mel, n_frames = model.mel_frame_count(len(wave)), model.frame_count(len(wave))
    ids, positions, targets = teacher_forcing(forced.prompt, forced.content)
    timings = {}
    start = time.perf_counter()
    grads = gradient_saliency(
        model,
        mel,
        ids,
        positions,
        targets,
        sign=s["gradient_sign"],
        encoder=s["encoder_saliency"],
        grad_batch=int(s["grad_batch"]),
    )
    timings["gradient"] = time.perf_counter() - start
    maps = {}
    if "gradient_x_input" in s["methods"]:
        maps["gradient_x_input"] = grads.gradient_x_input
    extra = {"mel": mel[0, :, :n_mel].cpu().numpy(), "input_map": grads.input_map[:, :, :n_mel]}
    if "spes" in s["methods"]:
        start = time.perf_counter()
        p = s["perturbation"]
        pert = perturbation_saliency(
            model, mel, ids, positions, targets, n_mel, **{k: p[k] for k in PERTURBATION_KEYS}
        )
        timings["spes"] = time.perf_counter() - start
        maps["spes"] = pert.saliency
        extra["spes_map"] = pert.patch_map
    if "encoder_output" in s["methods"]:
        maps["encoder_output"] = grads.encoder_output
    extra["timings"] = timings
    extra["logprob"] = grads.logprob
    return maps, grads.cross, n_frames, extra


def save_example(path, utterance: Mapping, forced, maps, cross, n_frames, extra, attrs) -> None:
    """One utterance's spectrogram, saliency maps and cross-attention (float16 Zarr store)."""
    import xarray as xr

    n_mel = extra["mel"].shape[1]
    f16 = np.float16
    data = {
        "mel": (("mel_bin", "mel_frame"), extra["mel"].astype(f16)),
        "saliency": (
            ("method", "token", "frame"),
            np.stack([m[:, :n_frames] for m in maps.values()]).astype(f16),
        ),
        "cross_attention": (("layer", "head", "token", "frame"), cross[..., :n_frames].astype(f16)),
        "input_map": (("token", "mel_bin", "mel_frame"), extra["input_map"].astype(f16)),
        "logprob": (("token",), extra["logprob"].astype(np.float32)),
    }
    if "spes_map" in extra:
        data["spes_map"] = (("token", "mel_bin", "mel_frame"), extra["spes_map"].astype(f16))
    ds = xr.Dataset(
        data,
        coords={
            "method": np.asarray(list(maps), dtype=object),  # variable-length strings
            "token_text": ("token", np.asarray(forced.tokens, dtype=object)),
            "frame_time_s": ("frame", np.arange(n_frames) * 0.02),
            "mel_time_s": ("mel_frame", np.arange(n_mel) * 0.01),
        },
        attrs={
            "utterance_id": utterance["utterance_id"],
            "text": utterance["text"],
            "units": "saliency of log p (gradient methods) or of p (spes); attention weights",
            **attrs,
        },
    )
    with atomic_path(path, is_dir=True) as tmp:
        ds.to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)


def run_corpus(
    source: str,
    utterances_tsv: str | Path,
    settings: Mapping,
    table_path: str | Path,
    summary_path: str | Path,
    example_path: str | Path,
    *,
    revision: str | None = None,
    padding: str = "pad30",
    threads: int = 1,
) -> pd.DataFrame:
    """Explain every selected utterance's tokens with ``source``'s Whisper; write the outputs.

    ``padding`` is the model's own option (``pad30`` or ``trim``, see
    :class:`~speechlens.saliency.whisper.WhisperForSaliency`).

    Returns the tidy table.
    """
    s = check_settings(settings)
    chosen = select_utterances(utterances_tsv, s["languages"], s["max_utterances"])
    model = WhisperForSaliency(
        source, revision=revision, device=s.get("device", "auto"), threads=threads, padding=padding
    )
    corpus_dir = Path(utterances_tsv).parent
    example_id = s.get("example_utterance")  # None: the first utterance explained
    if example_id is not None and example_id not in set(chosen["utterance_id"]):
        raise _fail("example_utterance", f"{example_id!r} is not among the selected utterances")
    saved = False
    attrs = {
        "model_source": str(source),
        "model_revision": str(revision),
        "settings": json.dumps(s, sort_keys=True, default=str),
        "transcript": s["transcript"],
        "padding": padding,
    }
    tables = []
    for row in chosen.to_dict("records"):
        wave, _ = audio.load(corpus_dir / row["audio"], sample_rate=model.sample_rate)
        mel = model.log_mel(wave)
        forced = transcript_for(model, mel, row["text"], s["transcript"])
        if not forced.content:
            log.warning("%s: no content tokens to explain; skipped", row["utterance_id"])
            continue
        maps, cross, n_frames, extra = explain(model, wave, forced, s)
        log.info(
            "%s: %d tokens, %d frames, seconds %s",
            row["utterance_id"],
            len(forced.content),
            n_frames,
            {k: round(v, 2) for k, v in extra["timings"].items()},
        )
        tables.append(correlation_rows(row["utterance_id"], forced.tokens, cross, maps, n_frames))
        if not saved and example_id in (None, row["utterance_id"]):
            save_example(example_path, row, forced, maps, cross, n_frames, extra, attrs)
            saved = True
    if not saved:
        raise ValueError(
            f"{utterances_tsv}: no example saved: utterance {example_id!r} has no tokens to "
            "explain (config key saliency.example_utterance)"
            if example_id
            else f"{utterances_tsv}: none of the selected utterances has tokens to explain"
        )
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    write_text(table_path, table.to_csv(sep="\t", index=False, float_format="%.6g"))
    write_text(summary_path, summarise(table).to_csv(sep="\t", index=False, float_format="%.6g"))
    return table
