"""Run a model adapter over a corpus and stream every layer into a feature store.

Memory is bounded by ``block_frames`` (not by corpus size): utterances are taken in store
order in blocks of at most ``block_frames`` output frames; inside a block they are sorted by
length and batched (at most ``batch_seconds`` of padded audio per forward pass); the block's
outputs are then written as one contiguous slice. Block boundaries depend only on the
utterance lengths, so a sharded extraction (whole blocks per shard) batches exactly like the
unsharded one and the gathered store is identical.
"""

from __future__ import annotations

import ctypes
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from speechlens import __version__, audio, reduce, store
from speechlens.atomic import atomic_path
from speechlens.corpora.contract import read_tables
from speechlens.gather import gather  # noqa: F401  (re-exported: speechlens.extract.gather)

log = logging.getLogger("speechlens.extract")


@dataclass(frozen=True)
class Item:
    """One utterance to extract: id, audio path and its length in samples at the model rate."""

    utterance_id: str
    path: Path
    n_samples: int


def plan_items(utterance_ids: Sequence[str], paths: Sequence[Path], sample_rate: int) -> list[Item]:
    """Lengths in samples at ``sample_rate`` (read from headers; resampled only if rates differ)."""
    items = []
    for uid, path in zip(utterance_ids, paths, strict=True):
        info = sf.info(str(path))
        if info.samplerate == sample_rate:
            n = info.frames
        else:
            n = len(audio.load(path, sample_rate=sample_rate)[0])
        items.append(Item(str(uid), Path(path), int(n)))
    return items


def check_lengths(
    items: Sequence[Item],
    frame_counts: Sequence[int],
    max_samples: int | None,
    sample_rate: int,
    where,
) -> None:
    """Raise :class:`store.StoreError` naming ``where`` (the corpus table) and every utterance
    the model cannot take, before any extraction work: longer than ``max_samples`` samples at
    ``sample_rate`` Hz (the model's input limit; None: no limit), or so short that the model
    gives no frame for it (``frame_counts[i] == 0``; its pooled mean would be undefined)."""
    long = [] if max_samples is None else [it for it in items if it.n_samples > max_samples]
    if long:
        raise store.StoreError(
            f"{where}: {len(long)} utterance(s) longer than the model accepts "
            f"({max_samples / sample_rate:g} s): {_show(long, sample_rate)}. "
            f"Split them, or give the corpus `max_duration_s: {max_samples / sample_rate:g}` "
            "with `on_bad_audio: skip` to drop them when the corpus is built."
        )
    short = [it for it, count in zip(items, frame_counts, strict=True) if count == 0]
    if short:
        raise store.StoreError(
            f"{where}: {len(short)} utterance(s) too short to give the model a single frame: "
            f"{_show(short, sample_rate)}. Remove them from the corpus."
        )


def _show(items: Sequence[Item], sample_rate: int, limit: int = 5) -> str:
    """``'id' (1.23 s), ...`` for the first ``limit`` items, then how many more."""
    shown = ", ".join(
        f"{i.utterance_id!r} ({i.n_samples / sample_rate:.3f} s)" for i in items[:limit]
    )
    return shown + (f", and {len(items) - limit} more" if len(items) > limit else "")


def plan_blocks(frame_counts: Sequence[int], block_frames: int) -> list[range]:
    """Split store rows into consecutive blocks of at most ``block_frames`` frames (>= 1 row)."""
    blocks, start, total = [], 0, 0
    for i, count in enumerate(frame_counts):
        if i > start and total + count > block_frames:
            blocks.append(range(start, i))
            start, total = i, 0
        total += count
    if start < len(frame_counts):
        blocks.append(range(start, len(frame_counts)))
    return blocks


def shard_blocks(blocks: list[range], shard: int, shards: int) -> list[range]:
    """The blocks of shard ``shard`` (0-based) of ``shards``: a contiguous, balanced run."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    lo, hi = len(blocks) * shard // shards, len(blocks) * (shard + 1) // shards
    return blocks[lo:hi]


def plan_batches(lengths: Sequence[int], max_samples: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size stays <= max_samples."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current = [], []
    for i in order:
        longest = lengths[i]  # ascending order: the newest item is the longest
        if current and longest * (len(current) + 1) > max_samples:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


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
    """
    max_samples = int(batch_seconds * adapter.sample_rate)
    numbers = group["layer"][:].tolist()
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
            for batch in plan_batches([len(w) for w in waves], max_samples):
                hidden = adapter.forward([waves[j] for j in batch])
                for j, h in zip(batch, hidden, strict=True):
                    h = np.asarray(h, np.float32)
                    if layer_index is not None and len(layer_index) != h.shape[0]:
                        h = h[layer_index]
                    means[j] = h.mean(axis=1)
                    row = block.start + j - row_offset
                    units = h if layout is None else layout.reduce(row, h)
                    uid = items[block.start + j].utterance_id
                    store.check_values(means[j], dtype, numbers, uid)
                    if units is not None:
                        store.check_values(units, dtype, numbers, uid)
                        outputs[j] = units.astype(dtype, copy=False)
            if pending is not None:
                pending.result()  # re-raises a failed write
            pooled = np.stack(means, axis=1)
            pending = writer.submit(
                store.write_block, group, block.start - row_offset, outputs, pooled
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
