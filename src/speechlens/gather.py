"""Gather the shard stores of a sharded extraction into one store, in every store mode.

The gathered store equals the unsharded extraction (same values, coords and attrs); see
:func:`speechlens.extract.extract` for how shards are cut (whole blocks of utterances).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from speechlens import store
from speechlens.atomic import atomic_path


def gather(
    shard_paths: Sequence[str | Path], out_path: str | Path, *, chunk_frames: int = 4096
) -> None:
    """Concatenate shard stores (in order) into one store equal to the unsharded extraction.

    Every mode is gathered, with the model's utterance embeddings; if a shard fell back to
    float32 (float16 overflow), the gathered store is float32 (the float16 shards upcast
    exactly) and records each shard's overflow.
    """
    shards = [store.open_store(p) for p in shard_paths]
    for path, ds in zip(shard_paths, shards, strict=True):
        store.validate(ds, str(path))
    kinds = {store.mode(ds) for ds in shards}
    if len(kinds) > 1:
        raise store.StoreError(f"shards {list(map(str, shard_paths))} differ in mode: {kinds}")
    kind = kinds.pop()
    first = shards[0]
    names = store.embedding_names(first)
    for path, ds in zip(shard_paths, shards, strict=True):
        if store.embedding_names(ds) != names:
            raise store.StoreError(
                f"shard {path}: embeddings {store.embedding_names(ds)}, shard "
                f"{shard_paths[0]} has {names}"
            )
    drop = ("shard", "complete", "store_version", "dtype", "dtype_requested", "float16_overflow")
    attrs = {k: v for k, v in first.attrs.items() if k not in drop}
    attrs.update(shard=0, shards=1)
    dtypes = [ds.attrs["dtype"] for ds in shards]
    dtype = "float32" if "float32" in dtypes else dtypes[0]
    overflow = {
        str(i): ds.attrs["float16_overflow"]
        for i, ds in enumerate(shards)
        if "float16_overflow" in ds.attrs
    }
    if overflow:
        attrs.update(dtype_requested=first.attrs.get("dtype_requested", "float16"))
        attrs.update(float16_overflow=overflow)
    if "reduction" in attrs:
        attrs["reduction"] = {
            **attrs["reduction"],
            "segments_without_frames": sum(
                ds.attrs["reduction"].get("segments_without_frames", 0) for ds in shards
            ),
        }
    layout = _gathered_layout(shards, kind)
    with atomic_path(out_path, is_dir=True) as tmp:
        group = store.create(
            tmp,
            num_layers=first.sizes["layer"],
            hidden_size=first.sizes["feature"],
            utterance_ids=np.concatenate([ds["utterance_id"].values for ds in shards]).tolist(),
            attrs=attrs,
            dtype=dtype,
            chunk_frames=chunk_frames,
            layers=store.layer_numbers(first),
            embedding_names=names,
            embedding_size=first.sizes["embedding_feature"] if names else 0,
            **layout,
        )
        unit0, row0 = 0, 0
        for ds in shards:
            n_rows = ds.sizes["utterance"]
            if kind != "utterance":
                n_units = ds.sizes[kind]
                for layer in range(ds.sizes["layer"]):
                    for lo in range(0, n_units, chunk_frames):
                        hi = min(lo + chunk_frames, n_units)
                        group["hidden"][layer, unit0 + lo : unit0 + hi] = ds["hidden"][
                            layer, lo:hi
                        ].values.astype(dtype)
                unit0 += n_units
            group["pooled"][:, row0 : row0 + n_rows] = ds["pooled"].values.astype(dtype)
            if names:
                group["embedding"][:, row0 : row0 + n_rows] = ds["embedding"].values.astype(dtype)
            row0 += n_rows
        store.finish(group)


def _gathered_layout(shards: Sequence, kind: str) -> dict:
    """The unit arguments of :func:`speechlens.store.create` for the concatenated shards."""
    if kind == "utterance":
        counts = np.concatenate([ds["n_frames"].values for ds in shards])
        return {"frame_counts": counts.tolist(), "frame_times": None, "pooled_only": True}
    if kind == "segment":
        parts, row0 = [], 0
        for ds in shards:
            part = store.segment_table(ds).drop(columns="utterance_id")
            parts.append(part.assign(utterance_index=ds["utterance_index"].values + row0))
            row0 += ds.sizes["utterance"]
        table = pd.concat(parts, ignore_index=True)
        return {"frame_counts": None, "frame_times": None, "segments": table}
    times = [
        ds["time_s"].values[start : start + count]
        for ds in shards
        for start, count in zip(ds["frame_start"].values, ds["frame_count"].values, strict=True)
    ]
    counts = np.concatenate([ds["frame_count"].values for ds in shards]).tolist()
    return {"frame_counts": counts, "frame_times": times}
