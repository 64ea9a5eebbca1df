"""Run a model adapter over a corpus and stream every layer into a feature store.

Memory is bounded by ``block_frames`` (not by corpus size): utterances are taken in store
order in blocks of at most ``block_frames`` output frames; inside a block they are sorted by
length and batched (at most ``batch_seconds`` of padded audio per forward pass); the block's
outputs are then written as one contiguous slice. Block boundaries depend only on the
utterance lengths, so a sharded extraction (whole blocks per shard) batches exactly like the
unsharded one and the gathered store is identical.

Models with utterance-level outputs (the ``utterance_level`` capability: an adapter with
``embedding_names``, ``embedding_size`` and ``forward_with_embeddings``) give their
embeddings from the same forward pass as the frame-level layers; they are stored in every
store mode (the ``embedding`` variable, see :mod:`speechlens.store`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from speechlens import __version__, audio, reduce, store
from speechlens.atomic import atomic_path
from speechlens.batching import (  # noqa: F401  (re-exported: speechlens.extract.*)
    Item,
    check_lengths,
    plan_batches,
    plan_blocks,
    plan_items,
    shard_blocks,
)
from speechlens.corpora.contract import read_tables
from speechlens.gather import gather  # noqa: F401  (re-exported: speechlens.extract.gather)
from speechlens.models.base import AdapterError

log = logging.getLogger("speechlens.extract")


def embedding_names(adapter) -> tuple[str, ...]:
    """The adapter's utterance-level embedding names, ``()`` unless it declares the
    ``utterance_level`` capability (then it must name at least one)."""
    if "utterance_level" not in getattr(adapter, "capabilities", ()):
        return ()
    names = tuple(str(n) for n in getattr(adapter, "embedding_names", ()))
    if not names:
        raise AdapterError(f"{adapter.family}: utterance_level declared, no embedding_names")
    return names


def run_batch(
    adapter, waves: list[np.ndarray], names: Sequence[str], ids: Sequence[str]
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """One forward pass over ``waves``: float32 hidden states ``(layer, frame, feature)`` per
    utterance and, when ``names`` (the adapter's embedding names) is not empty, float32
    embeddings ``(len(names), embedding_size)`` (else None). Shapes are checked; errors
    name the utterance (``ids[i]``)."""
    try:
        if names:
            hidden, vectors = adapter.forward_with_embeddings(waves)
        else:
            hidden, vectors = adapter.forward(waves), [None] * len(waves)
    except AdapterError as err:  # its "utterance i" is a position in this batch
        raise AdapterError(f"batch of utterances {list(ids)}: {err}") from err
    if len(hidden) != len(waves) or len(vectors) != len(waves):
        raise AdapterError(
            f"{adapter.family}: {len(waves)} waveforms gave {len(hidden)} hidden states and "
            f"{len(vectors)} embeddings"
        )
    hidden = [np.asarray(h, np.float32) for h in hidden]
    if names:
        expected = (len(names), int(adapter.embedding_size))
        vectors = [np.asarray(v, np.float32) for v in vectors]
        for uid, v in zip(ids, vectors, strict=True):
            if v.shape != expected:
                raise store.StoreError(
                    f"utterance {uid!r}: {adapter.family} embeddings {v.shape}, expected "
                    f"{expected} (embedding_names {list(names)}, embedding_size)"
                )
    return hidden, vectors


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def bound_heap_growth(threshold: int = 64 * 1024) -> bool:
    """Stop glibc's heap from growing with the number of blocks extracted.

    glibc raises its mmap threshold each time a large buffer is freed, after which block-sized
    arrays come from the fragmenting heap and peak RSS creeps up with corpus size (measured:
    +39 % for 4x the utterances). A fixed threshold keeps large arrays in mmap, returned to
    the OS when freed. Returns whether it applied (glibc only; elsewhere a no-op).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, threshold)
        )
    except (OSError, AttributeError):
        return False


class _LogStream:
    """A file-like object that turns tqdm's refreshes into log lines."""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            log.info(text)

    def flush(self) -> None:
        pass


def run_blocks(
    adapter,
    items: list[Item],
    blocks: list[range],
    group,
    *,
    row_offset: int,
    batch_seconds: float,
    dtype: str,
    layout: reduce.Layout | None = None,
    layer_index: np.ndarray | None = None,
) -> None:
    """Extract the given blocks of ``items`` into ``group`` (rows shifted by ``row_offset``).

    Each utterance's float32 hidden states are cut to ``layer_index`` (None: all layers),
    reduced by ``layout`` (None: every frame; its rows are store rows, i.e. shifted) and
    checked against the store dtype (:func:`speechlens.store.check_values`: a float16
    overflow raises :class:`~speechlens.store.Float16OverflowError`) before the cast.
    A single background thread writes block ``k`` (cast, compression, I/O) while block
    ``k + 1`` is computed; at most one write is pending, so memory stays at two blocks.
    Embeddings (adapters with ``utterance_level``) come from the same forward pass
    (:func:`run_batch`), checked like the layers (labels ``embedding:<name>``).
    """
    max_samples = int(batch_seconds * adapter.sample_rate)
    numbers = group["layer"][:].tolist()
    names = embedding_names(adapter)
    labels = [f"embedding:{n}" for n in names]
    n_utts = sum(len(b) for b in blocks)
    seconds = 0.0
    bar = tqdm(total=n_utts, unit="utt", file=_LogStream(), mininterval=5.0, ascii=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as writer:
        pending = None
        for block in blocks:
            waves = [_load(adapter, items[i]) for i in block]
            outputs: list[np.ndarray | None] = [None] * len(waves)
            means: list[np.ndarray | None] = [None] * len(waves)
            vectors: list[np.ndarray | None] = [None] * len(waves)
            for batch in plan_batches([len(w) for w in waves], max_samples):
                ids = [items[block.start + j].utterance_id for j in batch]
                hidden, embedded = run_batch(adapter, [waves[j] for j in batch], names, ids)
                for j, h, e in zip(batch, hidden, embedded, strict=True):
                    if layer_index is not None and len(layer_index) != h.shape[0]:
                        h = h[layer_index]
                    means[j] = h.mean(axis=1)
                    row = block.start + j - row_offset
                    units = h if layout is None else layout.reduce(row, h)
                    uid = items[block.start + j].utterance_id
                    store.check_values(means[j], dtype, numbers, uid)
                    if e is not None:
                        store.check_values(e, dtype, labels, uid)
                        vectors[j] = e
                    if units is not None:
                        store.check_values(units, dtype, numbers, uid)
                        outputs[j] = units.astype(dtype, copy=False)
            if pending is not None:
                pending.result()  # re-raises a failed write
            pooled = np.stack(means, axis=1)
            emb = np.stack(vectors, axis=1) if names else None
            pending = writer.submit(
                store.write_block, group, block.start - row_offset, outputs, pooled, emb
            )
            seconds += sum(len(w) for w in waves) / adapter.sample_rate
            bar.update(len(block))
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{seconds / elapsed:.1f} audio-s/s", refresh=False)
        if pending is not None:
            pending.result()
    bar.close()
    elapsed = max(time.perf_counter() - start, 1e-9)
    log.info(
        "extracted %d utterances, %.1f s of audio in %.1f s: %.2f utt/s, %.1f audio-s/s",
        n_utts,
        seconds,
        elapsed,
        n_utts / elapsed,
        seconds / elapsed,
    )


def _load(adapter, item: Item) -> np.ndarray:
    wave, _ = audio.load(item.path, sample_rate=adapter.sample_rate)
    if len(wave) != item.n_samples:
        raise store.StoreError(f"{item.path}: {len(wave)} samples, planned {item.n_samples}")
    return wave


def extract(
    adapter,
    items: list[Item],
    out_path: str | Path,
    *,
    attrs: dict,
    dtype: str = "float16",
    chunk_frames: int = 4096,
    block_frames: int = 20000,
    batch_seconds: float = 60.0,
    shard: int = 0,
    shards: int = 1,
    reduction: reduce.Reduction | None = None,
    segments: pd.DataFrame | None = None,
    where: str = "features",
) -> None:
    """Extract ``items`` (or shard ``shard`` of ``shards`` of them) into a store at ``out_path``.

    The store is written under a temporary name and renamed when complete. ``attrs`` are
    provenance attributes (adapter, model, config hash, ...) stored with it. ``reduction``
    (default: the full store) says which layers and units are stored; ``segments`` is the
    corpus' segments table (segment pooling only); ``where`` the config key named in errors.

    An adapter with the ``utterance_level`` capability also fills the store's ``embedding``
    variable (every mode), from the same forward pass.

    A float16 store whose values would exceed float16's range (|x| > 65504) is written in
    float32 instead: the extraction restarts, the attrs record ``dtype: float32``,
    ``dtype_requested: float16`` and ``float16_overflow`` (layer, peak, utterance), and the
    log says so. Non-finite model outputs are an error naming the layer and utterance.
    """
    bound_heap_growth()
    reduction = reduction or reduce.Reduction.from_settings({}, where)
    counts = [adapter.frame_count(it.n_samples) for it in items]
    blocks = shard_blocks(plan_blocks(counts, block_frames), shard, shards)
    rows = range(blocks[0].start, blocks[-1].stop) if blocks else range(0)
    layer_index = reduction.layer_index(adapter.num_layers, where)
    layout = reduce.plan(
        reduction,
        [items[i].utterance_id for i in rows],
        [adapter.frame_times(counts[i]) for i in rows],
        segments,
        where,
    )
    attrs = {
        **attrs,
        "shard": shard,
        "shards": shards,
        "block_frames": block_frames,
        "reduction": {**reduction.attrs(), "segments_without_frames": layout.dropped_segments},
    }
    run = dict(
        adapter=adapter,
        items=items,
        blocks=blocks,
        rows=rows,
        layout=layout,
        layer_index=layer_index,
        chunk_frames=chunk_frames,
        batch_seconds=batch_seconds,
    )
    try:
        _extract_store(out_path, attrs=attrs, dtype=dtype, **run)
    except store.Float16OverflowError as err:
        model = attrs.get("model") or adapter.family
        log.warning("model %s: %s; storing this model in float32 (restarting)", model, err)
        overflow = {"layer": err.layer, "peak": err.peak, "utterance": err.utterance}
        attrs = {**attrs, "dtype_requested": dtype, "float16_overflow": overflow}
        _extract_store(out_path, attrs=attrs, dtype="float32", **run)


def _extract_store(
    out_path, *, adapter, items, blocks, rows, layout, layer_index, attrs, dtype, **options
) -> None:
    """One atomic attempt of :func:`extract` in ``dtype``."""
    full = layout.reduction.mode == "frame" and layout.reduction.frame_stride == 1
    names = embedding_names(adapter)
    with atomic_path(out_path, is_dir=True) as tmp:
        group = store.create(
            tmp,
            num_layers=len(layer_index),
            hidden_size=adapter.hidden_size,
            utterance_ids=[items[i].utterance_id for i in rows],
            frame_counts=[adapter.frame_count(items[i].n_samples) for i in rows]
            if layout.reduction.mode == "utterance"
            else layout.unit_counts,
            frame_times=layout.unit_times,
            attrs=attrs,
            dtype=dtype,
            chunk_frames=options["chunk_frames"],
            layers=layer_index,
            segments=layout.segments,
            pooled_only=layout.reduction.mode == "utterance",
            embedding_names=names,
            embedding_size=int(adapter.embedding_size) if names else 0,
        )
        run_blocks(
            adapter,
            items,
            blocks,
            group,
            row_offset=rows.start,
            batch_seconds=options["batch_seconds"],
            dtype=dtype,
            layout=None if full else layout,
            layer_index=layer_index,
        )
        store.finish(group)


def extract_corpus(
    adapter,
    utterances_tsv: str | Path,
    out_path: str | Path,
    *,
    settings: dict,
    attrs: dict,
    shard: int = 0,
) -> None:
    """Load ``adapter`` and extract every utterance of a corpus table into ``out_path``.

    ``settings`` are the merged ``features`` settings (dtype, chunk_frames, block_frames,
    batch_seconds, shards, and the reduction: layers, pool, frame_stride); ``attrs`` extra
    provenance (corpus, model, config hash, ...). Segment pooling reads the corpus'
    ``segments.tsv`` beside ``utterances_tsv``.
    """
    corpus_dir = Path(utterances_tsv).parent
    where = f"models.{attrs['model']}.features" if attrs.get("model") else "features"
    reduction = reduce.Reduction.from_settings(settings, where)
    segments = None
    if reduction.mode == "segment":
        _, segments = read_tables(utterances_tsv, corpus_dir / "segments.tsv")
    table = pd.read_csv(
        utterances_tsv, sep="\t", dtype={"utterance_id": str}, keep_default_na=False
    )
    if not adapter.loaded:
        adapter.load()
    items = plan_items(
        table["utterance_id"].tolist(),
        [corpus_dir / a for a in table["audio"]],
        adapter.sample_rate,
    )
    counts = [adapter.frame_count(it.n_samples) for it in items]
    check_lengths(items, counts, adapter.max_samples, adapter.sample_rate, utterances_tsv)
    provenance = {
        **adapter.provenance(),
        "frame_rate_hz": adapter.frame_rate_hz,
        "sample_rate": adapter.sample_rate,
        "num_heads": adapter.num_heads,
        "speechlens_version": __version__,
        **attrs,
    }
    extract(
        adapter,
        items,
        out_path,
        attrs=_jsonable(provenance),
        dtype=settings["dtype"],
        chunk_frames=settings["chunk_frames"],
        block_frames=settings["block_frames"],
        batch_seconds=settings["batch_seconds"],
        shard=shard,
        shards=settings["shards"],
        reduction=reduction,
        segments=segments,
        where=where,
    )


def _jsonable(obj):
    """Zarr attrs must be JSON: convert numpy scalars and tuples recursively."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
