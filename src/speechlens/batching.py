"""Which utterances are extracted together: items, length checks, blocks, shards, batches.

Used by :mod:`speechlens.extract` (see its docstring for why block boundaries depend only on
the utterance lengths) and by the attention analyses (batches of similar length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from speechlens import audio, store


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
