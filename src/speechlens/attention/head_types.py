"""Head types over a corpus: stream attention maps through :class:`~.stats.HeadStats`.

Utterances are loaded and batched as in :mod:`speechlens.extract` (at most
``batch_seconds`` of padded audio per forward pass); each batch's maps are folded into the
per-head sums and dropped, so memory is one batch of maps, never the corpus. The first
``examples`` utterances used keep a crop of their maps for figures.

Outputs (each written atomically):

- the head table (TSV, :data:`TABLE`): ``corpus, model, layer, head, type,
  classification``, the metrics of :data:`.stats.METRICS` and ``queries`` (``layer`` =
  block ``1 .. num_layers - 1``, whose output is store layer ``layer``; metrics and the
  ``threshold`` / ``yang2020`` classifications defined in :mod:`.stats`), with a JSON
  sidecar at the path the caller names (settings, utterances used, model provenance,
  versions);
- example maps (Zarr, read with :func:`load_examples`): ``attention(example, layer, head,
  query, key)`` float16, renormalised over valid keys (padding excluded) and cropped to
  ``example_frames``; NaN past an utterance's own ``frame_count``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from speechlens import __version__, audio, extract
from speechlens.atomic import atomic_path
from speechlens.attention.settings import AttentionError, resolve
from speechlens.attention.stats import METRICS, HeadStats, renormalise
from speechlens.tables import TableSpec, write_table

log = logging.getLogger("speechlens.attention")

TABLE = TableSpec(
    name="head_types",
    columns=("corpus", "model", "layer", "head", "type", "classification", *METRICS, "queries"),
    numeric=("layer", "head", *METRICS, "queries"),
    text=("corpus", "model", "type", "classification"),
    nullable=METRICS,
)
"""The head table (``results/{corpus}/{model}/attention/head_types.tsv``)."""


def select_utterances(table: pd.DataFrame, max_utterances: int | None, seed: int) -> pd.DataFrame:
    """``max_utterances`` rows drawn with ``seed`` (all when null or larger), in table order."""
    if max_utterances is None or max_utterances >= len(table):
        return table.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(table), size=int(max_utterances), replace=False))
    return table.iloc[rows].reset_index(drop=True)


def corpus_items(adapter, utterances_tsv, max_utterances: int | None, seed: int) -> list:
    """The :class:`speechlens.extract.Item` of the corpus utterances used (seeded subset)."""
    corpus_dir = Path(utterances_tsv).parent
    table = pd.read_csv(
        utterances_tsv, sep="\t", dtype={"utterance_id": str}, keep_default_na=False
    )
    table = select_utterances(table, max_utterances, seed)
    return extract.plan_items(
        table["utterance_id"].tolist(),
        [corpus_dir / a for a in table["audio"]],
        adapter.sample_rate,
    )


def require_attention(adapter) -> None:
    """Raise :class:`AttentionError` unless the loaded adapter has self-attention heads."""
    if getattr(adapter, "num_heads", 0) < 1 or adapter.num_layers < 2:
        raise AttentionError(
            f"model family {adapter.family!r} has no self-attention heads "
            "(leave it out of attention.models)"
        )


def head_statistics(adapter, items: list, settings: dict) -> tuple[HeadStats, dict]:
    """Stream every item's attention maps; returns the sums and the example crops.

    ``settings``: a resolved ``attention`` section. Examples: ``{"maps": (example, layer,
    head, query, key) float16, "utterance_id": [...], "frame_count": [...]}``.
    """
    require_attention(adapter)
    acc = HeadStats(
        adapter.num_layers - 1,
        adapter.num_heads,
        diagonal_ms=settings["diagonal_ms"],
        vertical_fraction=settings["vertical_fraction"],
        frame_rate_hz=adapter.frame_rate_hz,
    )
    n_ex, crop = min(settings["examples"], len(items)), settings["example_frames"]
    shape = (n_ex, adapter.num_layers - 1, adapter.num_heads, crop, crop)
    examples = {
        "maps": np.full(shape, np.nan, np.float16),
        "utterance_id": [it.utterance_id for it in items[:n_ex]],
        "frame_count": [0] * n_ex,
    }
    max_samples = int(settings["batch_seconds"] * adapter.sample_rate)
    lengths = [it.n_samples for it in items]
    for b, batch in enumerate(extract.plan_batches(lengths, max_samples)):
        waves = [audio.load(items[i].path, sample_rate=adapter.sample_rate)[0] for i in batch]
        _, maps = adapter.forward(waves, output_attentions=True)
        for i, attn in zip(batch, maps, strict=True):
            n = adapter.frame_count(items[i].n_samples)
            if n == 0:
                continue
            acc.update(attn, n)
            if i < n_ex:
                c = min(n, crop)
                examples["maps"][i, :, :, :c, :c] = renormalise(attn, n)[0][..., :c, :c]
                examples["frame_count"][i] = c
        if b % 20 == 0:
            log.info("attention maps: %d utterances done", acc.utterances)
    return acc, examples


def run_head_types(
    adapter,
    utterances_tsv,
    out_tsv,
    out_examples,
    *,
    out_json,
    settings: dict,
    attrs: dict,
) -> pd.DataFrame:
    """Load ``adapter``, compute head statistics over the corpus, write table, sidecar
    (``out_json``) and examples.

    ``settings``: the ``attention`` config section (schema defaults filled in for missing
    keys); ``attrs``: provenance recorded with the outputs (``corpus``, ``model``, config
    hash, ...). Returns the table.
    """
    settings = resolve(settings)
    if not adapter.loaded:
        adapter.load()
    require_attention(adapter)
    items = corpus_items(adapter, utterances_tsv, settings["max_utterances"], settings["seed"])
    if not items:
        raise AttentionError(f"{utterances_tsv}: no utterances")
    acc, examples = head_statistics(adapter, items, settings)
    table = acc.table(settings["thresholds"], settings["classification"])
    table.insert(0, "model", str(attrs.get("model", "")))
    table.insert(0, "corpus", str(attrs.get("corpus", "")))
    counts = table["type"].value_counts()
    log.info("head types: %s", ", ".join(f"{t} {counts.get(t, 0)}" for t in counts.index))
    provenance = _provenance(adapter, settings, attrs, [it.utterance_id for it in items])
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
    table = write_table(TABLE, table, out_tsv)
    write_examples(examples, out_examples, adapter, attrs)
    return table


def _provenance(adapter, settings: dict, attrs: dict, used: list[str]) -> dict:
    import torch
    import transformers

    return {
        "settings": settings,
        "utterances": len(used),
        "utterance_ids": used,
        "frame_rate_hz": adapter.frame_rate_hz,
        "num_heads": adapter.num_heads,
        **attrs,
        "provenance": adapter.provenance(),
        "versions": {
            "speechlens": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def write_examples(examples: dict, path, adapter, attrs: dict) -> None:
    """Write the example crops as a Zarr group with named dims (see the module docstring)."""
    maps = examples["maps"]
    ds = xr.Dataset(
        {"attention": (("example", "layer", "head", "query", "key"), maps)},
        coords={
            "layer": np.arange(1, maps.shape[1] + 1),
            "head": np.arange(maps.shape[2]),
            "utterance_id": ("example", np.asarray(examples["utterance_id"], dtype=object)),
            "frame_count": ("example", np.asarray(examples["frame_count"], dtype=np.int64)),
        },
        attrs={
            "description": "self-attention maps renormalised over valid keys, cropped",
            "frame_rate_hz": float(adapter.frame_rate_hz),
            "corpus": str(attrs.get("corpus", "")),
            "model": str(attrs.get("model", "")),
        },
    )
    with atomic_path(path, is_dir=True) as tmp:
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)


def load_examples(path) -> xr.DataArray:
    """The example maps ``attention(example, layer, head, query, key)`` (float16), loaded."""
    from speechlens.store import open_zarr

    return open_zarr(path)["attention"].load()
