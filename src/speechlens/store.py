"""The feature store: one Zarr (v3) group per (corpus, model), opened as an xarray.Dataset.

A store has one of three *modes* (:func:`mode`; how it was reduced: :func:`reduction`, the
``reduction`` attr, see :mod:`speechlens.reduce`):

- ``frame`` (the full store; possibly a subset of layers or every k-th frame), below;
- ``segment``: ``hidden(layer, segment, feature)``, one mean per segment of a tier; segment
  coords ``utterance_index``, ``tier``, ``label``, ``start_s``, ``end_s`` (s from the
  utterance start), ``time_s`` (the segment's midpoint), ``n_frames`` (frames averaged);
  utterance coords ``utterance_id``, ``segment_start``, ``segment_count``; plus ``pooled``;
- ``utterance``: ``pooled`` only; utterance coords ``utterance_id``, ``n_frames``.

The ``layer`` coord holds the model's layer numbers (a subset when ``layers`` was set).
:func:`unit_view` shows a segment store as a frame store whose frames are the segments.

Schema of a frame store (dims are named; see DESIGN.md):

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

Every mode also holds, for models with utterance-level outputs (adapters declaring the
``utterance_level`` capability, e.g. GE2E's d-vector, an x-vector):

- ``embedding(embedding_name, utterance, embedding_feature)``: the model's own utterance
  embeddings, as the adapter returns them (not a mean of frames; not reduced by ``layers``),
  in the store dtype; coord ``embedding_name`` (e.g. ``["d_vector"]``). Its own feature dim,
  since ``embedding_size`` need not equal ``hidden_size``. Read it with :func:`embeddings`.
- attrs ``embedding_names`` (list, empty for models without embeddings) and ``embedding_size``.

Writers fill a pre-allocated store block by block (:func:`create`, :func:`write_block`);
the caller writes under a temporary name and renames (see :mod:`speechlens.atomic`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
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
    frame_counts: Sequence[int] | None,
    frame_times: Sequence[np.ndarray] | None,
    attrs: Mapping,
    dtype: str = "float16",
    chunk_frames: int = 4096,
    layers: Sequence[int] | None = None,
    segments: pd.DataFrame | None = None,
    pooled_only: bool = False,
    embedding_names: Sequence[str] = (),
    embedding_size: int = 0,
) -> zarr.Group:
    """Create an empty store for the given utterances (in store order).

    Frame store (default): ``frame_counts[i]`` frames belong to utterance ``i``;
    ``frame_times[i]`` holds their centre times in seconds, shape (frame_counts[i],).
    Segment store: ``segments`` has one row per stored segment, in store order, with columns
    ``utterance_index, tier, label, start_s, end_s, n_frames`` (``frame_times`` unused).
    Utterance store (``pooled_only``): ``pooled`` only; ``frame_counts`` (frames averaged per
    utterance) become the ``n_frames`` coord. ``layers``: the model layer numbers of the
    layer axis (default ``0..num_layers-1``). ``embedding_names`` (any mode): the model's
    utterance-level embeddings, each ``embedding_size`` features (the ``embedding`` variable).
    ``hidden``, ``pooled`` and ``embedding`` are filled by :func:`write_block`; unwritten
    values stay NaN.
    """
    if dtype not in ("float16", "float32"):
        raise StoreError(f"store dtype {dtype!r} unsupported; use float16 or float32")
    layers = np.arange(num_layers) if layers is None else np.asarray(layers)
    if len(layers) != num_layers:
        raise StoreError(f"{len(layers)} layer numbers for {num_layers} layers")
    n_utts = len(utterance_ids)
    unit = "segment" if segments is not None else None if pooled_only else "frame"
    if unit == "segment":
        counts = np.bincount(segments["utterance_index"].to_numpy(np.int64), minlength=n_utts)
    elif unit == "frame":
        counts = np.asarray(frame_counts, dtype=np.int64)
        if len(counts) != n_utts or len(frame_times) != n_utts:
            raise StoreError("utterance_ids, frame_counts and frame_times differ in length")
    names = [str(n) for n in embedding_names]
    if len(set(names)) != len(names) or (names and int(embedding_size) < 1):
        raise StoreError(f"embedding names {names} (size {embedding_size}): use distinct names")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    pooled = _array(
        group,
        "pooled",
        (num_layers, n_utts, hidden_size),
        ("layer", "utterance", "feature"),
        dtype=dtype,
        chunks=(1, max(1, n_utts), hidden_size),
        compress=True,
    )
    _array(group, "layer", layers.astype(np.int32), ("layer",), dtype="int32")
    if names:
        _array(
            group,
            "embedding",
            (len(names), n_utts, int(embedding_size)),
            ("embedding_name", "utterance", "embedding_feature"),
            dtype=dtype,
            chunks=(1, max(1, n_utts), int(embedding_size)),
            compress=True,
        ).attrs["coordinates"] = "utterance_id"
        _array(group, "embedding_name", np.asarray(names, str), ("embedding_name",), dtype=str)
    _array(group, "utterance_id", np.asarray(utterance_ids, dtype=str), ("utterance",), dtype=str)
    if unit is None:
        pooled.attrs["coordinates"] = "utterance_id n_frames"
        n = np.zeros(n_utts, np.int64) if frame_counts is None else np.asarray(frame_counts)
        _array(group, "n_frames", n.astype(np.int64), ("utterance",), dtype="int64")
    else:
        pooled.attrs["coordinates"] = f"utterance_id {unit}_start {unit}_count"
        n_units = int(counts.sum())
        hidden = _array(
            group,
            "hidden",
            (num_layers, n_units, hidden_size),
            ("layer", unit, "feature"),
            dtype=dtype,
            chunks=(1, max(1, min(chunk_frames, n_units)), hidden_size),
            compress=True,
        )
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        _array(group, f"{unit}_start", starts, ("utterance",), dtype="int64")
        _array(group, f"{unit}_count", counts, ("utterance",), dtype="int64")
        if unit == "frame":
            index = np.repeat(np.arange(n_utts, dtype=np.int32), counts)
            times = [np.asarray(t, np.float64) for t in frame_times]
            times = np.concatenate(times) if n_units else np.zeros(0)
            coords = {"utterance_index": index, "time_s": times}
        else:
            coords = {
                "utterance_index": segments["utterance_index"].to_numpy(np.int32),
                "tier": segments["tier"].to_numpy(str),
                "label": segments["label"].to_numpy(str),
                "start_s": segments["start_s"].to_numpy(np.float64),
                "end_s": segments["end_s"].to_numpy(np.float64),
                "time_s": ((segments["start_s"] + segments["end_s"]) / 2).to_numpy(np.float64),
                "n_frames": segments["n_frames"].to_numpy(np.int64),
            }
        hidden.attrs["coordinates"] = " ".join(coords)
        for name, values in coords.items():
            kind = str if values.dtype.kind in "UO" else values.dtype
            _array(group, name, np.asarray(values, kind), (unit,), dtype=kind)
    group.attrs.update(
        {
            **dict(attrs),
            "store_version": STORE_VERSION,
            "dtype": dtype,
            "embedding_names": names,
            "embedding_size": int(embedding_size) if names else 0,
        }
    )
    return group


class Float16OverflowError(StoreError):
    """Values beyond float16's range (|x| > 65504) were about to be stored in float16."""

    def __init__(self, layer: int | str, peak: float, utterance: str):
        self.layer = layer if isinstance(layer, str) else int(layer)
        self.peak, self.utterance = float(peak), str(utterance)
        super().__init__(
            f"layer {self.layer}: |value| up to {self.peak:.6g} in utterance {self.utterance!r} "
            f"exceeds float16's range ({FLOAT16_MAX:g})"
        )


FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_values(
    values: np.ndarray, dtype: str, layers: Sequence[int | str], utterance: str
) -> None:
    """Refuse values a store of ``dtype`` cannot hold: raise :class:`Float16OverflowError` when a
    float16 store would turn them into inf, :class:`StoreError` for non-finite values (the
    model's own inf/NaN), naming the layer (``layers[i]`` for row ``i`` of ``values``, shape
    (layer, ...); for embeddings a label such as ``"embedding:d_vector"``) and the
    utterance."""
    values = np.asarray(values)
    if values.size == 0:
        return
    flat = values.reshape(values.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        layer = layers[int(np.argmin(finite))]
        raise StoreError(
            f"layer {layer}: non-finite hidden states (inf or NaN) in utterance {utterance!r}; "
            "the model overflowed (try compute_dtype float32 or bfloat16)"
        )
    if dtype == "float16":
        peak = np.abs(flat).max(axis=1)
        if peak.max() > FLOAT16_MAX:
            i = int(np.argmax(peak))
            raise Float16OverflowError(layers[i], peak[i], utterance)


def write_block(
    group: zarr.Group,
    utterance_start: int,
    hidden: Sequence[np.ndarray | None],
    pooled: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
) -> None:
    """Write consecutive utterances' stored units, starting at store row ``utterance_start``.

    ``hidden[j]`` has shape (layer, units of utterance ``utterance_start + j``, feature)
    (frames or segments; None in an utterance store); the units of the block are written as
    one contiguous slice. ``pooled`` (layer, len(hidden), feature) holds the utterances'
    means; pass it when ``hidden`` was already cast to a lower precision or reduced (means
    taken before), else it is computed here in float32 (frame stores only). ``embeddings``
    (embedding_name, len(hidden), embedding_feature): the utterances' embeddings, required
    exactly when the store has an ``embedding`` variable.
    """
    if not len(hidden):
        return
    rows = slice(utterance_start, utterance_start + len(hidden))
    dtype = group["pooled"].dtype
    if ("embedding" in group) != (embeddings is not None):
        fix = "has embeddings: pass `embeddings`" if embeddings is None else "has no embeddings"
        raise StoreError(f"write_block: the store {fix}")
    if embeddings is not None:
        expected = (group["embedding"].shape[0], len(hidden), group["embedding"].shape[2])
        if np.shape(embeddings) != expected:
            raise StoreError(f"embeddings {np.shape(embeddings)}, expected {expected}")
    if "hidden" in group:
        unit = group["hidden"].metadata.dimension_names[1]
        starts, counts = group[f"{unit}_start"][rows], group[f"{unit}_count"][rows]
        for j, h in enumerate(hidden):
            expected = (group["hidden"].shape[0], int(counts[j]), group["hidden"].shape[2])
            if h is None or h.shape != expected:
                uid = group["utterance_id"][utterance_start + j]
                shape = None if h is None else h.shape
                raise StoreError(f"utterance {uid}: hidden states {shape}, expected {expected}")
        if pooled is None:
            if unit != "frame":
                raise StoreError("write_block: pass `pooled` (means of all frames)")
            pooled = np.stack([np.asarray(h, np.float32).mean(axis=1) for h in hidden], axis=1)
        block = np.concatenate([np.asarray(h, dtype) for h in hidden], axis=1)
        first = int(starts[0])
        group["hidden"][:, first : first + block.shape[1], :] = block
    elif pooled is None:
        raise StoreError("write_block: an utterance store needs `pooled`")
    group["pooled"][:, rows, :] = np.asarray(pooled).astype(dtype)
    if embeddings is not None:
        group["embedding"][:, rows, :] = np.asarray(embeddings).astype(dtype)


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


def mode(ds: xr.Dataset) -> str:
    """The store's mode: ``frame`` (``hidden(layer, frame, feature)``), ``segment``
    (``hidden(layer, segment, feature)``) or ``utterance`` (``pooled`` only)."""
    if "hidden" not in ds:
        return "utterance"
    return "segment" if "segment" in ds["hidden"].dims else "frame"


def reduction(ds: xr.Dataset) -> dict:
    """How the store was reduced (``attrs["reduction"]``, see :meth:`speechlens.reduce.
    Reduction.attrs`): ``layers`` (None: all), ``pool``, ``mode``, ``tier``,
    ``frame_stride``. Stores written before reductions existed are full frame stores."""
    recorded = ds.attrs.get("reduction")
    if recorded:
        return dict(recorded)
    return {"layers": None, "pool": "frame", "mode": "frame", "tier": None, "frame_stride": 1}


def embedding_names(ds: xr.Dataset) -> list[str]:
    """Names of the store's utterance-level embeddings (``[]``: none, e.g. a transformer)."""
    return [str(n) for n in ds["embedding_name"].values] if "embedding" in ds else []


def embeddings(ds: xr.Dataset) -> xr.DataArray | None:
    """The model's utterance-level embeddings, ``(embedding_name, utterance,
    embedding_feature)`` in the store dtype (lazy), or None when the model has none.

    One probing row per name: ``embeddings(ds).sel(embedding_name="d_vector")`` is
    ``(utterance, embedding_feature)``, rows in the order of ``ds["utterance_id"]``.
    """
    return ds.get("embedding")


def layer_numbers(ds: xr.Dataset) -> np.ndarray:
    """The model layer number of each position on the layer axis (int, (layer,))."""
    return np.asarray(ds["layer"].values, dtype=np.int64)


def segment_table(ds: xr.Dataset) -> pd.DataFrame:
    """The segments of a segment store, in store order: ``utterance_id, tier, label,
    start_s, end_s, n_frames`` (row ``k`` = ``hidden[:, k]``)."""
    if mode(ds) != "segment":
        raise StoreError(f"a {mode(ds)} store has no segments")
    ids = np.array([str(u) for u in ds["utterance_id"].values], dtype=object)
    table = {"utterance_id": ids[ds["utterance_index"].values]}
    for col in ("tier", "label"):
        table[col] = [str(v) for v in ds[col].values]
    for col in ("start_s", "end_s", "n_frames"):
        table[col] = ds[col].values
    return pd.DataFrame(table)


def unit_view(ds: xr.Dataset, where: str = "store") -> xr.Dataset:
    """A store as frames: a frame store unchanged; a segment store with its ``segment`` dim
    renamed ``frame`` (``segment_start/count`` -> ``frame_start/count``), each segment a
    "frame" centred at its midpoint (``time_s``), so frame-based readers (the frame-centre
    rule, CKA's frame and segment alignment) see one unit per segment. The frame-rate attr
    is dropped (segments are no grid). An utterance store raises :class:`StoreError`."""
    kind = mode(ds)
    if kind == "frame":
        return ds
    if kind == "utterance":
        raise StoreError(f"{where}: an utterance store (pool utterance) has no frames")
    view = ds.rename(
        {"segment": "frame", "segment_start": "frame_start", "segment_count": "frame_count"}
    )
    view.attrs = {k: v for k, v in ds.attrs.items() if k != "frame_rate_hz"}
    view.attrs["unit"] = "segment"
    return view


_SCHEMA = {
    "frame": ("utterance_index", "time_s", "utterance_id", "frame_start", "frame_count"),
    "segment": (
        *("utterance_index", "time_s", "tier", "label", "start_s", "end_s", "n_frames"),
        *("utterance_id", "segment_start", "segment_count"),
    ),
    "utterance": ("utterance_id", "n_frames"),
}


def validate(ds: xr.Dataset, where: str = "store") -> None:
    """Check the schema and completeness of an opened store; raise :class:`StoreError`."""
    kind = mode(ds)
    expected = {"pooled": ("layer", "utterance", "feature")}
    if kind != "utterance":
        expected["hidden"] = ("layer", kind, "feature")
    for name, dims in expected.items():
        if name not in ds or ds[name].dims != dims:
            raise StoreError(f"{where}: variable {name}{dims} missing or misshapen")
    for coord in _SCHEMA[kind]:
        if coord not in ds.coords:
            raise StoreError(f"{where}: coordinate {coord} missing")
    names = list(ds.attrs.get("embedding_names") or [])
    if "embedding" in ds or names:
        dims = ("embedding_name", "utterance", "embedding_feature")
        if "embedding" not in ds or ds["embedding"].dims != dims:
            raise StoreError(f"{where}: variable embedding{dims} missing or misshapen")
        if embedding_names(ds) != names:
            raise StoreError(
                f"{where}: embedding names {embedding_names(ds)} differ from the attrs' {names}"
            )
    if not ds.attrs.get("complete"):
        raise StoreError(f"{where}: incomplete (no 'complete' attribute): rerun its job")
    if kind != "utterance":
        counts = ds[f"{kind}_count"].values
        if counts.sum() != ds.sizes[kind]:
            raise StoreError(
                f"{where}: {kind} counts sum to {counts.sum()}, store has {ds.sizes[kind]}"
            )


def attrs_json(ds: xr.Dataset) -> str:
    """The store's attrs as pretty JSON (for logs and reports)."""
    return json.dumps(dict(ds.attrs), indent=2, sort_keys=True, default=str)
