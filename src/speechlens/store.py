"""The feature store: one Zarr (v3) group per (corpus, model), opened as an xarray.Dataset.

Schema (dims are named; see DESIGN.md):

- ``hidden(layer, frame, feature)``: every layer's hidden states, frames of all utterances
  concatenated in store order; layer 0 is the input to the first transformer block.
  Chunks: one layer x ``chunk_frames`` frames x all features, zstd-compressed.
- ``pooled(layer, utterance, feature)``: per-utterance mean over its frames (computed in
  float32 before the cast to the store dtype).
- frame coords: ``utterance_index`` (int, row of the utterance in the ``utterance`` dim),
  ``time_s`` (frame centre, seconds from the start of its utterance).
- utterance coords: ``utterance_id``, ``frame_start``, ``frame_count``.
- ``layer`` coord: 0..L-1.
- attrs: provenance (adapter, model source and checksum, frame_rate_hz, sample_rate, dtype, ...).

Writers fill a pre-allocated store block by block (:func:`create`, :func:`write_block`);
the caller writes under a temporary name and renames (see :mod:`speechlens.atomic`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

STORE_VERSION = 1
DTYPES = ("float16", "float32", "bfloat16")


class StoreError(ValueError):
    """A feature store is missing, incomplete or does not follow the schema."""


def _array(group, name, data_or_shape, dims, *, dtype, chunks=None, compress=False):
    shape = data_or_shape if isinstance(data_or_shape, tuple) else np.shape(data_or_shape)
    arr = group.create_array(
        name,
        shape=shape,
        chunks=chunks or shape,
        dtype=dtype,
        dimension_names=dims,
        compressors=zarr.codecs.ZstdCodec(level=3) if compress else None,
        fill_value=np.nan if np.dtype(dtype).kind == "f" else 0,
    )
    if not isinstance(data_or_shape, tuple):
        arr[...] = np.asarray(data_or_shape)
    return arr


def create(
    path: str | Path,
    *,
    num_layers: int,
    hidden_size: int,
    utterance_ids: Sequence[str],
    frame_counts: Sequence[int],
    frame_times: Sequence[np.ndarray],
    attrs: Mapping,
    dtype: str = "float16",
    chunk_frames: int = 4096,
) -> zarr.Group:
    """Create an empty store for the given utterances (in store order).

    ``frame_counts[i]`` frames belong to utterance ``i``; ``frame_times[i]`` holds their centre
    times in seconds, shape (frame_counts[i],). ``hidden`` and ``pooled`` are filled by
    :func:`write_block`; unwritten values stay NaN, which :func:`validate` detects.
    """
    if dtype not in ("float16", "float32"):
        raise StoreError(f"store dtype {dtype!r} unsupported; use float16 or float32")
    counts = np.asarray(frame_counts, dtype=np.int64)
    if len(counts) != len(utterance_ids) or len(frame_times) != len(counts):
        raise StoreError("utterance_ids, frame_counts and frame_times differ in length")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_frames = int(counts.sum())
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    hidden = _array(
        group,
        "hidden",
        (num_layers, n_frames, hidden_size),
        ("layer", "frame", "feature"),
        dtype=dtype,
        chunks=(1, max(1, min(chunk_frames, n_frames)), hidden_size),
        compress=True,
    )
    hidden.attrs["coordinates"] = "utterance_index time_s"
    pooled = _array(
        group,
        "pooled",
        (num_layers, len(counts), hidden_size),
        ("layer", "utterance", "feature"),
        dtype=dtype,
        chunks=(1, max(1, len(counts)), hidden_size),
        compress=True,
    )
    pooled.attrs["coordinates"] = "utterance_id frame_start frame_count"
    _array(group, "layer", np.arange(num_layers, dtype=np.int32), ("layer",), dtype="int32")
    index = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    _array(group, "utterance_index", index, ("frame",), dtype="int32")
    times = np.concatenate([np.asarray(t, np.float64) for t in frame_times]) if n_frames else []
    _array(group, "time_s", np.asarray(times, np.float64), ("frame",), dtype="float64")
    _array(group, "utterance_id", np.asarray(utterance_ids, dtype=str), ("utterance",), dtype=str)
    _array(group, "frame_start", starts, ("utterance",), dtype="int64")
    _array(group, "frame_count", counts, ("utterance",), dtype="int64")
    group.attrs.update({**dict(attrs), "store_version": STORE_VERSION, "dtype": dtype})
    return group


def write_block(
    group: zarr.Group,
    utterance_start: int,
    hidden: Sequence[np.ndarray],
    pooled: np.ndarray | None = None,
) -> None:
    """Write consecutive utterances' hidden states, starting at store row ``utterance_start``.

    ``hidden[j]`` has shape (layer, frame_counts[utterance_start + j], feature); the frames of
    the block are written as one contiguous slice. ``pooled`` (layer, len(hidden), feature)
    holds their means; pass it when ``hidden`` was already cast to a lower precision (means
    taken before the cast), else it is computed here in float32.
    """
    if not hidden:
        return
    starts = group["frame_start"][utterance_start : utterance_start + len(hidden)]
    counts = group["frame_count"][utterance_start : utterance_start + len(hidden)]
    for j, h in enumerate(hidden):
        expected = (group["hidden"].shape[0], int(counts[j]), group["hidden"].shape[2])
        if h.shape != expected:
            uid = group["utterance_id"][utterance_start + j]
            raise StoreError(f"utterance {uid}: hidden states {h.shape}, expected {expected}")
    dtype = group["hidden"].dtype
    if pooled is None:
        pooled = np.stack([np.asarray(h, np.float32).mean(axis=1) for h in hidden], axis=1)
    block = np.concatenate([np.asarray(h, dtype) for h in hidden], axis=1)
    first = int(starts[0])
    group["hidden"][:, first : first + block.shape[1], :] = block
    group["pooled"][:, utterance_start : utterance_start + len(hidden), :] = pooled.astype(dtype)


def finish(group: zarr.Group, **attrs) -> None:
    """Mark a store complete (``complete: true`` plus any final attrs)."""
    group.attrs.update({**attrs, "complete": True})


def open_zarr(path: str | Path) -> xr.Dataset:
    """``xarray.open_zarr`` of a Zarr v3 group written by this package, lazily, quietly.

    Snakemake marks directory outputs with a ``.snakemake_timestamp`` file, which zarr warns
    about; that warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")
        return xr.open_zarr(path, consolidated=False, chunks=None)


def open_store(path: str | Path) -> xr.Dataset:
    """Open a feature store lazily as an ``xarray.Dataset`` (no array data is read)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise StoreError(f"{path}: not a feature store (no zarr.json)")
    return open_zarr(path)


def validate(ds: xr.Dataset, where: str = "store") -> None:
    """Check the schema and completeness of an opened store; raise :class:`StoreError`."""
    expected = {
        "hidden": ("layer", "frame", "feature"),
        "pooled": ("layer", "utterance", "feature"),
    }
    for name, dims in expected.items():
        if name not in ds or ds[name].dims != dims:
            raise StoreError(f"{where}: variable {name}{dims} missing or misshapen")
    for coord in ("utterance_index", "time_s", "utterance_id", "frame_start", "frame_count"):
        if coord not in ds.coords:
            raise StoreError(f"{where}: coordinate {coord} missing")
    if not ds.attrs.get("complete"):
        raise StoreError(f"{where}: incomplete (no 'complete' attribute): rerun its job")
    counts = ds["frame_count"].values
    if counts.sum() != ds.sizes["frame"]:
        raise StoreError(
            f"{where}: frame counts sum to {counts.sum()}, store has {ds.sizes['frame']}"
        )


def attrs_json(ds: xr.Dataset) -> str:
    """The store's attrs as pretty JSON (for logs and reports)."""
    return json.dumps(dict(ds.attrs), indent=2, sort_keys=True, default=str)
