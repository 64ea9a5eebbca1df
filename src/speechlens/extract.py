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

from speechlens import __version__, audio, store
from speechlens.atomic import atomic_path

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
) -> None:
    """Extract the given blocks of ``items`` into ``group`` (rows shifted by ``row_offset``).

    A single background thread writes block ``k`` (cast, compression, I/O) while block
    ``k + 1`` is computed; at most one write is pending, so memory stays at two blocks.
    """
    max_samples = int(batch_seconds * adapter.sample_rate)
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
                    means[j] = np.asarray(h, np.float32).mean(axis=1)
                    outputs[j] = np.asarray(h).astype(dtype, copy=False)
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
) -> None:
    """Extract ``items`` (or shard ``shard`` of ``shards`` of them) into a store at ``out_path``.

    The store is written under a temporary name and renamed when complete. ``attrs`` are
    provenance attributes (adapter, model, config hash, ...) stored with it.
    """
    bound_heap_growth()
    counts = [adapter.frame_count(it.n_samples) for it in items]
    blocks = shard_blocks(plan_blocks(counts, block_frames), shard, shards)
    rows = range(blocks[0].start, blocks[-1].stop) if blocks else range(0)
    with atomic_path(out_path, is_dir=True) as tmp:
        group = store.create(
            tmp,
            num_layers=adapter.num_layers,
            hidden_size=adapter.hidden_size,
            utterance_ids=[items[i].utterance_id for i in rows],
            frame_counts=[counts[i] for i in rows],
            frame_times=[adapter.frame_times(counts[i]) for i in rows],
            attrs={**attrs, "shard": shard, "shards": shards, "block_frames": block_frames},
            dtype=dtype,
            chunk_frames=chunk_frames,
        )
        run_blocks(
            adapter,
            items,
            blocks,
            group,
            row_offset=rows.start,
            batch_seconds=batch_seconds,
            dtype=dtype,
        )
        store.finish(group)


def gather(
    shard_paths: Sequence[str | Path], out_path: str | Path, *, chunk_frames: int = 4096
) -> None:
    """Concatenate shard stores (in order) into one store equal to the unsharded extraction."""
    shards = [store.open_store(p) for p in shard_paths]
    for path, ds in zip(shard_paths, shards, strict=True):
        store.validate(ds, str(path))
    first = shards[0]
    attrs = {
        k: v
        for k, v in first.attrs.items()
        if k not in ("shard", "complete", "store_version", "dtype")
    }
    attrs.update(shard=0, shards=1)
    times = [
        ds["time_s"].values[start : start + count]
        for ds in shards
        for start, count in zip(ds["frame_start"].values, ds["frame_count"].values, strict=True)
    ]
    with atomic_path(out_path, is_dir=True) as tmp:
        group = store.create(
            tmp,
            num_layers=first.sizes["layer"],
            hidden_size=first.sizes["feature"],
            utterance_ids=np.concatenate([ds["utterance_id"].values for ds in shards]).tolist(),
            frame_counts=np.concatenate([ds["frame_count"].values for ds in shards]).tolist(),
            frame_times=times,
            attrs=attrs,
            dtype=first.attrs["dtype"],
            chunk_frames=chunk_frames,
        )
        frame0, row0 = 0, 0
        for ds in shards:
            n_frames, n_rows = ds.sizes["frame"], ds.sizes["utterance"]
            for layer in range(ds.sizes["layer"]):
                for lo in range(0, n_frames, chunk_frames):
                    hi = min(lo + chunk_frames, n_frames)
                    group["hidden"][layer, frame0 + lo : frame0 + hi] = ds["hidden"][
                        layer, lo:hi
                    ].values
            group["pooled"][:, row0 : row0 + n_rows] = ds["pooled"].values
            frame0, row0 = frame0 + n_frames, row0 + n_rows
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
    batch_seconds, shards); ``attrs`` extra provenance (corpus, config hash, ...).
    """
    corpus_dir = Path(utterances_tsv).parent
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
    )


def _jsonable(obj):
    """Zarr attrs must be JSON: convert numpy scalars and tuples recursively."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
