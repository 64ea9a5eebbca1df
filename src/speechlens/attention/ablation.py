"""The head-ablation experiment: ablate groups of heads, re-extract, re-probe.

Groups (from the head-type table, over every block and head of the model):

- ``{type}`` (kind ``type``): all heads of one type (types with at least one head);
- ``all_but_{type}`` (kind ``all_but_type``): all heads except that type's (when both
  sides are non-empty);
- ``random_{size}_{draw}`` (kind ``random``): controls, ``random_draws`` groups of each
  size above drawn uniformly from all heads with ``numpy.random.default_rng([seed, size,
  draw])`` (a size's draws do not change when other sizes come and go).

For the un-ablated model and for each group, the probed layers of a seeded subset of
utterances (``max_utterances``) are extracted with :func:`speechlens.extract.extract` (in
blocks, so memory stays bounded) into a temporary store, with the group ablated by
:func:`speechlens.attention.hooks.ablate` (``mode`` zero or mean; the means are each
head's mean output over the same utterances). The task's samples and CV folds are drawn
once, on the un-ablated store (:func:`speechlens.probing.frame_samples`), and every store
is probed on exactly those samples and folds with :func:`speechlens.probing.probe_arrays`
(the task's one ``probe``; no control task). With ``max_utterances`` null the samples and
folds are those of the workflow's ``probes/{task}.tsv``.

Table (tidy TSV): ``corpus, model, task, probe, mode, group, kind, type, draw, n_heads,
layer, fold, metric, value, baseline, delta`` — one row per (group, probed store layer,
fold, metric) with the ablated score, the un-ablated score on the same fold and their
difference (``delta = value - baseline``), then ``fold = mean`` and ``fold = std`` rows
(over folds, ddof=1) of each of the three: the CV spread. The un-ablated run is group
``none``. A group with the same heads as an earlier one (with two types present,
``all_but_diagonal`` is ``global``) is not re-extracted: it gets that group's scores and
``same_heads_as`` in the sidecar. A JSON sidecar (at the path the caller names) records the
settings, every group's heads, the utterances, sample counts and provenance; the summary
(:mod:`.summary`: each typed group's drop, its rank and empirical p-value among the random
controls of its size) is written beside the table.

Source: Gopinath & Rodriguez (2024, arXiv 2409.03115) ablate heads by type and re-probe
phone classification; the random controls of the same size and the paired folds are
speechlens's, so that "a type matters" is tested against "any heads of that number".
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import __version__, audio, extract, probing, schema, store
from speechlens.atomic import atomic_path
from speechlens.attention import summary
from speechlens.attention.head_types import corpus_items, require_attention
from speechlens.attention.hooks import ablate, head_output_means
from speechlens.attention.settings import AttentionError, probed_layers, resolve
from speechlens.attention.stats import TYPES
from speechlens.corpora.contract import read_tables
from speechlens.tables import TableSpec, write_table

log = logging.getLogger("speechlens.attention")

TABLE = TableSpec(
    name="ablation",
    columns=(
        "corpus",
        "model",
        "task",
        "probe",
        "mode",
        "group",
        "kind",
        "type",
        "draw",
        "n_heads",
        "layer",
        "fold",
        "metric",
        "value",
        "baseline",
        "delta",
    ),
    numeric=("n_heads", "layer", "value", "baseline", "delta"),
    text=("corpus", "model", "task", "probe", "mode", "group", "kind", "type", "draw", "fold"),
    nullable=("value", "baseline", "delta"),
)
"""The head-ablation table (``results/{corpus}/{model}/attention/ablation.tsv``)."""


def read_head_types(path, num_blocks: int, num_heads: int) -> pd.DataFrame:
    """The ``layer, head, type`` columns of a head-type table, checked against the model."""
    table = pd.read_csv(path, sep="\t")
    missing = {"layer", "head", "type"} - set(table.columns)
    if missing:
        raise AttentionError(f"{path}: head-type table lacks columns {sorted(missing)}")
    grid = {(int(r.layer), int(r.head)) for r in table.itertuples()}
    expected = {(layer, h) for layer in range(1, num_blocks + 1) for h in range(num_heads)}
    if grid != expected or len(table) != len(expected):
        raise AttentionError(
            f"{path}: rows do not cover blocks 1..{num_blocks} x heads 0..{num_heads - 1} "
            "once each (table from another model?)"
        )
    bad = sorted(set(table["type"]) - set(TYPES))
    if bad:
        raise AttentionError(f"{path}: unknown head types {bad}; expected {TYPES}")
    return table[["layer", "head", "type"]]


def ablation_groups(types: pd.DataFrame, draws: int, seed: int) -> list[dict]:
    """Groups to ablate (see the module docstring): dicts with ``group, kind, type, draw,
    heads`` (``heads`` a sorted list of ``(block, head)``)."""
    every = sorted((int(r.layer), int(r.head)) for r in types.itertuples())
    groups, sizes = [], []
    for t in TYPES:
        mine = sorted((int(r.layer), int(r.head)) for r in types.itertuples() if r.type == t)
        if not mine:
            continue
        groups.append({"group": t, "kind": "type", "type": t, "draw": "", "heads": mine})
        sizes.append(len(mine))
        rest = sorted(set(every) - set(mine))
        if rest:
            groups.append(
                {
                    "group": f"all_but_{t}",
                    "kind": "all_but_type",
                    "type": t,
                    "draw": "",
                    "heads": rest,
                }
            )
            sizes.append(len(rest))
    for size in sorted(set(sizes)):
        for draw in range(draws):
            rng = np.random.default_rng([seed, size, draw])
            pick = rng.choice(len(every), size=size, replace=False)
            heads = sorted(every[i] for i in pick)
            groups.append(
                {
                    "group": f"random_{size}_{draw}",
                    "kind": "random",
                    "type": "",
                    "draw": str(draw),
                    "heads": heads,
                }
            )
    return groups


def by_block(heads: list) -> dict[int, list[int]]:
    """``[(block, head), ...]`` -> ``{block: [head, ...]}``."""
    out: dict[int, list[int]] = {}
    for block, head in heads:
        out.setdefault(int(block), []).append(int(head))
    return out


class ProbedLayers:
    """An adapter view that yields only some store layers (for :func:`extract.extract`).

    Exposes what extraction uses: ``num_layers`` (the number of kept layers),
    ``hidden_size``, ``sample_rate``, ``frame_count``, ``frame_times`` and ``forward``
    (hidden states ``(kept layer, frame, feature)`` per utterance).
    """

    def __init__(self, adapter, layers: list[int]):
        self.adapter, self.layers = adapter, list(layers)
        self.num_layers = len(self.layers)
        self.hidden_size = adapter.hidden_size
        self.sample_rate = adapter.sample_rate

    def frame_count(self, n_samples: int) -> int:
        return self.adapter.frame_count(n_samples)

    def frame_times(self, n_frames: int) -> np.ndarray:
        return self.adapter.frame_times(n_frames)

    def forward(self, batch):
        return [h[self.layers] for h in self.adapter.forward(batch)]


def _samples(ds, utterances, segments, task: probing.Task) -> probing.Sample:
    if task.level == "frame":
        picked = probing.frame_samples(ds, utterances, segments, task)
    else:
        picked = probing.utterance_samples(ds, utterances, task)
    if len(set(picked.label)) < 2:
        raise AttentionError(f"task source {task.source!r}: fewer than 2 classes to probe")
    return picked


def _probe(path, picked: probing.Sample, task: probing.Task, probe_settings: dict, layers, threads):
    """Per-fold scores of one store on the fixed samples and folds (long table)."""
    ds = store.open_store(path)
    X = probing.read_features(ds, task.level, picked.index)
    data = probing.TaskData.from_sample(picked, X, control=False)
    table, _ = probing.probe_arrays(data, task, probe_settings, threads=threads)
    table = table[(table["probe"] == task.probes[0]) & ~table["fold"].isin(["mean", "std"])]
    table = table[table["metric"] != "not_converged"]  # scores only
    table = table.assign(
        layer=[layers[int(i)] for i in table["layer"]], fold=table["fold"].astype(int)
    )
    return table[["layer", "fold", "metric", "value"]].reset_index(drop=True)


def run_ablation(
    adapter,
    utterances_tsv,
    segments_tsv,
    head_types_tsv,
    out_tsv,
    *,
    out_json,
    out_summary,
    settings: dict,
    task: dict,
    task_name: str,
    probe_settings: dict,
    features: dict,
    attrs: dict,
    threads: int = 1,
) -> pd.DataFrame:
    """Run the head-ablation experiment; write its table (``out_tsv``), sidecar
    (``out_json``) and summary (``out_summary``, :mod:`.summary`), each atomically.

    Args:
        adapter: an adapter with self-attention (loaded here if needed).
        head_types_tsv: the model's head-type table (:mod:`.head_types`).
        settings: the ``attention`` config section (its ``ablation`` part is used).
        task: the probing task's config entry (``probing.tasks[task_name]``).
        probe_settings: ``probing.settings`` (schema defaults filled in for missing keys).
        features: the merged ``features`` settings (dtype, chunk_frames, block_frames,
            batch_seconds) used for the temporary stores.
        attrs: provenance (``corpus``, ``model``, config hash).
    Returns the table.
    """
    settings = resolve(settings)
    ab = settings["ablation"]
    if not adapter.loaded:
        adapter.load()
    require_attention(adapter)
    layers = probed_layers(ab["layers"], adapter.num_layers)
    task = probing.resolve_task({**task, "probes": [ab["probe"]], "control": False})
    probe_settings = schema.merge(probe_settings, "probing.settings")
    types = read_head_types(head_types_tsv, adapter.num_layers - 1, adapter.num_heads)
    groups = ablation_groups(types, ab["random_draws"], ab["seed"])
    items = corpus_items(adapter, utterances_tsv, ab["max_utterances"], ab["seed"])
    utterances, segments = read_tables(utterances_tsv, segments_tsv)
    means = None
    if ab["mode"] == "mean":
        waves = (audio.load(it.path, sample_rate=adapter.sample_rate)[0] for it in items)
        means = head_output_means(adapter, waves)
    view = ProbedLayers(adapter, layers)
    store_attrs = {**attrs, "layers": layers, "speechlens_version": __version__}
    out_tsv = Path(out_tsv)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix=".ablation-", dir=out_tsv.parent) as scratch:

        def extract_with(heads: list, name: str) -> Path:
            path = Path(scratch) / f"{name}.zarr"
            with ablate(adapter, by_block(heads), mode=ab["mode"], means=means):
                extract.extract(
                    view,
                    items,
                    path,
                    attrs={**store_attrs, "ablated": name},
                    dtype=features["dtype"],
                    chunk_frames=features["chunk_frames"],
                    block_frames=features["block_frames"],
                    batch_seconds=features["batch_seconds"],
                )
            return path

        base_path = extract_with([], "none")
        picked = _samples(store.open_store(base_path), utterances, segments, task)
        baseline = _probe(base_path, picked, task, probe_settings, layers, threads)
        results.append(
            ({"group": "none", "kind": "none", "type": "", "draw": "", "heads": []}, baseline)
        )
        done: dict[tuple, tuple[str, pd.DataFrame]] = {}
        for i, group in enumerate(groups):
            key = tuple(group["heads"])
            if key in done:  # e.g. with two types, all_but_diagonal == global
                group["same_heads_as"], scores = done[key]
                log.info("group %s: same heads as %s", group["group"], group["same_heads_as"])
                results.append((group, scores))
                continue
            log.info(
                "group %d/%d %s: %d heads", i + 1, len(groups), group["group"], len(group["heads"])
            )
            path = extract_with(group["heads"], group["group"])
            scores = _probe(path, picked, task, probe_settings, layers, threads)
            done[key] = (group["group"], scores)
            results.append((group, scores))
            shutil.rmtree(path)  # one group store on disk at a time
    table = _table(results, baseline, task_name, ab, attrs)
    sidecar = {
        "settings": settings,
        "task": task_name,
        "task_settings": task.as_dict(),
        "probe_settings": probe_settings,
        "probed_layers": layers,
        "groups": [{**g, "heads": [list(h) for h in g["heads"]]} for g in groups],
        "utterances": len(items),
        "utterance_ids": [it.utterance_id for it in items],
        "samples": int(len(picked.label)),
        "folds": int(task.folds),
        "head_types": str(head_types_tsv),
        **attrs,
        "provenance": adapter.provenance(),
        "speechlens_version": __version__,
    }
    with atomic_path(out_json) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, default=str) + "\n", encoding="utf-8")
    write_table(summary.TABLE, summary.summarise(table), out_summary)
    return write_table(TABLE, table, out_tsv)


def _table(results: list, baseline: pd.DataFrame, task_name: str, ab: dict, attrs: dict):
    """Per-fold rows with baseline and delta, then mean and std rows over folds."""
    keys = ["layer", "fold", "metric"]
    frames = []
    for group, scores in results:
        merged = scores.merge(baseline, on=keys, suffixes=("", "_b"), validate="one_to_one")
        merged = merged.rename(columns={"value_b": "baseline"})
        merged["delta"] = merged["value"] - merged["baseline"]
        merged["fold"] = merged["fold"].astype(str)
        by_key = merged.groupby(["layer", "metric"], sort=True)[["value", "baseline", "delta"]]
        mean = by_key.mean().reset_index().assign(fold="mean")
        std = by_key.std(ddof=1).reset_index().assign(fold="std")
        block = pd.concat([merged, mean, std], ignore_index=True)
        block = block.assign(
            group=group["group"],
            kind=group["kind"],
            type=group["type"],
            draw=group["draw"],
            n_heads=len(group["heads"]),
        )
        frames.append(block)
    table = pd.concat(frames, ignore_index=True).assign(
        corpus=str(attrs.get("corpus", "")),
        model=str(attrs.get("model", "")),
        task=task_name,
        probe=ab["probe"],
        mode=ab["mode"],
    )
    return TABLE.check(table, source="ablation")
