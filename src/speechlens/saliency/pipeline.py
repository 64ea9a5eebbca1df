"""Cross-attention vs saliency over a corpus: settings, utterance selection, outputs.

Writes three outputs (each under a temporary name, renamed when complete):

- the tidy table (:data:`~speechlens.saliency.correlate.TABLE`), one row per
  (utterance, token, layer, head, method), with a JSON sidecar (``<table>.json``: model,
  settings, padding and whether it is an approximation);
- the summary (:func:`~speechlens.saliency.correlate.summarise`);
- one example utterance as a Zarr store (float16, named dims) for figures: ``mel``
  ``(mel_bin, mel_frame)``, ``saliency`` ``(method, token, frame)``, ``cross_attention``
  ``(layer, head, token, frame)``, ``input_map`` (signed gradient x input), ``spes_map`` and
  ``rise_grid_map`` ``(token, mel_bin, mel_frame)``; valid frames only, time coordinates in
  seconds (frame centres).

The encoder input is the model's own by default (``pad30`` for Whisper: 30 s, as trained).
``padding: trim`` (valid frames only) is an *approximation* of the model's computation; the
sidecar, the example's attributes and the figure say so.
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
from speechlens.saliency.correlate import SUMMARY, TABLE, correlation_rows, summarise
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
    rise_grid_saliency,
)
from speechlens.saliency.prompt import language_filter, prompts
from speechlens.saliency.spes import SpesSettings, spes_saliency
from speechlens.saliency.whisper import WhisperForSaliency
from speechlens.schema import merge
from speechlens.tables import write_table

log = logging.getLogger(__name__)

METHODS = ("gradient_x_input", "spes", "rise_grid", "encoder_output")
TRANSCRIPTS = ("reference", "hypothesis")
RISE_GRID_KEYS = ("budget", "batch_size", "patch_frames", "patch_bins", "occlude_prob", "seed")
SPES_KEYS = (
    "n_masks",
    "n_segments",
    "reference_frames",
    "threshold_frames",
    "p",
    "compactness",
    "sigma",
    "batch_size",
    "seed",
)
APPROXIMATION = (
    "approximation: padding trim feeds the encoder only the valid frames, not the 30 s "
    "input the model was trained on"
)


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config key saliency.{key}: {message}")


def check_settings(settings: Mapping) -> dict:
    """The ``saliency`` settings over the config schema's defaults, checked; returns a copy.

    Raises :class:`~speechlens.config.ConfigError` naming the key.
    """
    s = merge(dict(settings), "saliency")
    if s.get("padding") not in (None, "pad30", "trim"):
        raise _fail("padding", f"must be pad30, trim or null, got {s['padding']!r}")
    if s["transcript"] not in TRANSCRIPTS:
        raise _fail("transcript", f"must be one of {TRANSCRIPTS}, got {s['transcript']!r}")
    if not s["methods"] or any(m not in METHODS for m in s["methods"]):
        raise _fail("methods", f"must be a non-empty subset of {METHODS}, got {s['methods']!r}")
    if s["gradient_sign"] not in SIGNS:
        raise _fail("gradient_sign", f"must be one of {SIGNS}, got {s['gradient_sign']!r}")
    if s["encoder_saliency"] not in ENCODER_MODES:
        raise _fail("encoder_saliency", f"must be one of {ENCODER_MODES}")
    if s["languages"] is not None and (
        not isinstance(s["languages"], list | tuple) or not s["languages"]
    ):
        raise _fail("languages", "must be null or a non-empty list of patterns, e.g. ['en*']")
    if s["max_utterances"] is not None and int(s["max_utterances"]) < 1:
        raise _fail("max_utterances", "must be >= 1 or null")
    if int(s["grad_batch"]) < 1:
        raise _fail("grad_batch", "must be >= 1")
    r = dict(s["rise_grid"])
    for key in ("budget", "batch_size", "patch_frames", "patch_bins"):
        if int(r[key]) < 1:
            raise _fail(f"rise_grid.{key}", f"must be >= 1, got {r[key]}")
    if not 0 < float(r["occlude_prob"]) < 1:
        raise _fail("rise_grid.occlude_prob", f"must be in (0, 1), got {r['occlude_prob']}")
    p = dict(s["spes"])
    if not 0 <= float(p["p"]) < 1:
        raise _fail("spes.p", f"must be in [0, 1), got {p['p']}")
    if not p["n_segments"] or any(int(n) < 1 for n in p["n_segments"]):
        raise _fail("spes.n_segments", f"must be positive integers, got {p['n_segments']}")
    if p["max_utterances"] is not None and int(p["max_utterances"]) < 1:
        raise _fail("spes.max_utterances", f"must be >= 1 or null, got {p['max_utterances']}")
    if int(p["n_masks"]) < len(p["n_segments"]):
        raise _fail("spes.n_masks", f"must be >= the number of levels, got {p['n_masks']}")
    for key in ("batch_size", "reference_frames"):
        if int(p[key]) < 1:
            raise _fail(f"spes.{key}", f"must be >= 1, got {p[key]}")
    s["rise_grid"], s["spes"] = r, p
    return s


def select_utterances(
    utterances_tsv: str | Path, languages, max_utterances: int | None, knows=None
) -> pd.DataFrame:
    """Utterances whose ``language`` matches a pattern (``fnmatch``, e.g. ``en*``), or with
    ``languages`` None those the model knows (``knows(code)``, see
    :func:`~speechlens.saliency.prompt.language_filter`); at most ``max_utterances``, taken
    in turn from each language (file order within a language), so every language is
    explained. Fails naming the file when columns or matches are missing."""
    table = pd.read_csv(utterances_tsv, sep="\t", keep_default_na=False, dtype=str)
    missing = {"utterance_id", "audio", "language", "text"} - set(table.columns)
    if missing:
        raise ValueError(f"{utterances_tsv}: missing column(s) {sorted(missing)}")
    if languages is None:
        keep = table["language"].map(knows)
    else:
        keep = table["language"].map(lambda lang: any(fnmatch.fnmatch(lang, p) for p in languages))
    chosen = table[keep]
    if chosen.empty:
        found = sorted(table["language"].unique())
        raise ValueError(
            f"{utterances_tsv}: no utterance matches config key saliency.languages "
            f"{languages} (languages found: {found})"
        )
    if max_utterances is not None:  # round robin over languages, file order within each
        turn = chosen.groupby("language", sort=False).cumcount()
        order = pd.DataFrame({"turn": turn, "row": range(len(chosen))}, index=chosen.index)
        chosen = chosen.loc[order.sort_values(["turn", "row"]).index[: int(max_utterances)]]
    return chosen.reset_index(drop=True)


def transcript_for(
    model: WhisperForSaliency, mel, text: str, kind: str, prompt=None
) -> ForcedTranscript:
    """The reference text's tokens, or the model's own greedy hypothesis, after ``prompt``
    (default: the tokenizer's ``prefix_tokens``)."""
    prompt = tuple(model.tokenizer.prefix_tokens if prompt is None else prompt)
    if kind == "reference":
        return reference_transcript(model.tokenizer, text, prompt)
    limit = model.model.config.max_target_positions - len(prompt) - 1
    ids = model.greedy_ids(mel, prompt, max_new_tokens=min(limit, 200))
    return from_ids(model.tokenizer, ids, prompt)


def explain(
    model: WhisperForSaliency,
    wave: np.ndarray,
    forced: ForcedTranscript,
    s: Mapping,
    *,
    spes: bool = True,
):
    """All configured saliency maps and the cross-attention of one utterance.

    Returns ``(maps, cross, n_frames, extra)``: ``maps`` method -> ``(token, frame)``,
    ``cross`` ``(layer, head, token, frame)``, ``n_frames`` the valid encoder frames, and
    ``extra`` (mel, un-pooled maps, timings) for the example store. ``spes=False`` skips
    SPES (past ``saliency.spes.max_utterances``).
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
    if "spes" in s["methods"] and spes:
        start = time.perf_counter()
        spes = spes_saliency(
            model, mel, ids, positions, targets, n_mel, SpesSettings.from_mapping(s["spes"])
        )
        timings["spes"] = time.perf_counter() - start
        maps["spes"] = spes.saliency
        extra["spes_map"] = spes.cell_map
        extra["spes_segments"] = spes.segments
    if "rise_grid" in s["methods"]:
        start = time.perf_counter()
        r = s["rise_grid"]
        rise = rise_grid_saliency(
            model, mel, ids, positions, targets, n_mel, **{k: r[k] for k in RISE_GRID_KEYS}
        )
        timings["rise_grid"] = time.perf_counter() - start
        maps["rise_grid"] = rise.saliency
        extra["rise_grid_map"] = rise.patch_map
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
    for name in ("spes_map", "rise_grid_map"):
        if name in extra:
            data[name] = (("token", "mel_bin", "mel_frame"), extra[name].astype(f16))
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
            "units": (
                "saliency of log p (gradient methods), KL divergence normalised per token to "
                "[0, 1] (spes), drop of p (rise_grid); attention weights"
            ),
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
    sidecar: str | Path | None = None,
    revision: str | None = None,
    padding: str = "pad30",
    threads: int = 1,
) -> pd.DataFrame:
    """Explain every selected utterance's tokens with ``source``'s Whisper; write the outputs
    (the tables, the example store and, when ``sidecar`` is given, the settings and
    provenance as JSON there).

    ``padding``: ``pad30`` (Whisper's own input) or ``trim`` (an approximation, recorded as
    such), see :class:`~speechlens.saliency.whisper.WhisperForSaliency`. Each utterance's
    decoder prompt comes from :func:`~speechlens.saliency.prompt.prompts` (fails before any
    computation when a multilingual model lacks an utterance's language).

    Returns the tidy table.
    """
    s = check_settings(settings)
    model = WhisperForSaliency(
        source, revision=revision, device=s.get("device", "auto"), threads=threads, padding=padding
    )
    knows = language_filter(
        model.tokenizer, model.model.generation_config, model.model.config.vocab_size
    )
    chosen = select_utterances(utterances_tsv, s["languages"], s["max_utterances"], knows)
    corpus_dir = Path(utterances_tsv).parent
    example_id = s.get("example_utterance")  # None: the first utterance explained
    if example_id is not None and example_id not in set(chosen["utterance_id"]):
        raise _fail("example_utterance", f"{example_id!r} is not among the selected utterances")
    prompt_of = prompts(
        model.tokenizer,
        model.model.generation_config,
        model.model.config.vocab_size,
        list(zip(chosen["utterance_id"], chosen["language"], strict=True)),
    )
    saved = False
    attrs = {
        "model_source": str(source),
        "model_revision": str(revision),
        "settings": json.dumps(s, sort_keys=True, default=str),
        "transcript": s["transcript"],
        "padding": padding,
        "approximation": APPROXIMATION if padding == "trim" else "",
    }
    tables, explained = [], 0
    for row in chosen.to_dict("records"):
        wave, _ = audio.load(corpus_dir / row["audio"], sample_rate=model.sample_rate)
        mel = model.log_mel(wave)
        prompt = prompt_of[row["utterance_id"]]
        forced = transcript_for(model, mel, row["text"], s["transcript"], prompt)
        if not forced.content:
            log.warning("%s: no content tokens to explain; skipped", row["utterance_id"])
            continue
        spes_limit = s["spes"]["max_utterances"]
        run_spes = spes_limit is None or explained < int(spes_limit)
        maps, cross, n_frames, extra = explain(model, wave, forced, s, spes=run_spes)
        explained += 1
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
    table = pd.concat(tables, ignore_index=True) if tables else TABLE.frame()
    write_table(TABLE, table, table_path)
    write_table(SUMMARY, summarise(table), summary_path)
    if sidecar is not None:
        write_text(sidecar, json.dumps(attrs, indent=1, sort_keys=True) + "\n")
    return table
