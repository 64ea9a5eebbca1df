"""CKA layer similarity from feature stores: sample, align, stream, write.

A CKA matrix compares representations of the *same samples*. The samples ("units") are

- ``frame`` (within one model): single frames of the store;
- ``time`` (across models): the frames of the model with the coarser frame rate; each is
  paired with the mean of the finer model's frames whose centres fall in its span
  (``[t - hop/2, t + hop/2)``, cut at the midpoints between neighbouring centres), so a 10 ms
  and a 20 ms model are compared on the same moments of audio;
- ``segment``: the segments of one tier (e.g. ``phone``) of the corpus' ``segments.tsv``;
  each model contributes the mean of its frames whose centre lies in ``[start_s, end_s)``.

Each unit is a range of frames ``[start, stop)`` per store. Units without frames in either
store are dropped; then at most ``max_frames`` units are drawn with a seeded RNG, uniformly
across all utterances (adjacent frames are near-duplicates, so a sample spread over the corpus
is worth more than a contiguous block). The chosen units are read in store order, batch by
batch (never the whole ``hidden`` array), pooled, and fed to a
:class:`~speechlens.similarity.CkaAccumulator`. When all layer pairs would not fit in
``max_accumulator_gb``, the rows of the matrix are split into several passes over the data.

The result is an ``xarray.DataArray`` named ``cka`` with dims ``(layer_a, layer_b)`` (layer
indices as coords) and provenance attrs, written as a Zarr group under a temporary name and
renamed (:func:`write_cka`; read it back with :func:`load_cka`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from speechlens import __version__, store
from speechlens.atomic import atomic_path
from speechlens.corpora.contract import read_tables
from speechlens.similarity import ESTIMATORS, CkaAccumulator, cka_from_hsic, resolve_device

log = logging.getLogger("speechlens.cka")

ALIGNS = ("frame", "time", "segment")


class CkaError(ValueError):
    """The stores or options cannot be compared (different utterances, bad option, ...)."""


@dataclass(frozen=True)
class Units:
    """Analysis units as frame ranges: unit k pools frames ``[start_a[k], stop_a[k])`` of store
    A and ``[start_b[k], stop_b[k])`` of store B (global frame indices, int64 arrays (n,))."""

    start_a: np.ndarray
    stop_a: np.ndarray
    start_b: np.ndarray
    stop_b: np.ndarray

    def __len__(self) -> int:
        return len(self.start_a)

    def take(self, index: np.ndarray) -> Units:
        """The units at ``index`` (in that order)."""
        return Units(
            self.start_a[index], self.stop_a[index], self.start_b[index], self.stop_b[index]
        )


# -- units ---------------------------------------------------------------------------------
def match_utterances(ds_a: xr.Dataset, ds_b: xr.Dataset) -> np.ndarray:
    """Row in store B of each utterance of store A, shape (n_utterances,); both must hold the
    same utterance ids (in any order), else :class:`CkaError` names the difference."""
    ids_a = [str(u) for u in ds_a["utterance_id"].values]
    ids_b = [str(u) for u in ds_b["utterance_id"].values]
    if ids_a == ids_b:
        return np.arange(len(ids_a))
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b or len(ids_a) != len(ids_b):
        raise CkaError(
            f"the stores hold different utterances: {len(only_a)} only in A "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in B (e.g. {only_b[:3]}), "
            f"{len(ids_a)} vs {len(ids_b)} rows; extract both models from the same corpus"
        )
    row = {u: i for i, u in enumerate(ids_b)}
    return np.array([row[u] for u in ids_a], dtype=np.int64)


def frame_hop(ds: xr.Dataset) -> float:
    """Seconds between frame centres: ``1 / frame_rate_hz`` from the attrs, else the median
    spacing of ``time_s`` within the first utterance that has two frames."""
    rate = ds.attrs.get("frame_rate_hz")
    if rate:
        return 1.0 / float(rate)
    starts, counts = ds["frame_start"].values, ds["frame_count"].values
    for start, count in zip(starts, counts, strict=True):
        if count >= 2:
            return float(np.median(np.diff(ds["time_s"].values[start : start + count])))
    raise CkaError(
        "cannot tell the frame rate: no frame_rate_hz attr and no utterance with 2 frames"
    )


def _spans(times: np.ndarray, hop: float) -> np.ndarray:
    """Edges (n+1,) of the spans of frames centred at ``times``: midpoints, +-hop/2 at the ends."""
    if len(times) == 0:
        return np.zeros(1)
    inner = (times[1:] + times[:-1]) / 2
    return np.concatenate([[times[0] - hop / 2], inner, [times[-1] + hop / 2]])


def _pool_ranges(edges: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each span ``[edges[k], edges[k+1])``: the range [lo, hi) of sorted ``times`` inside."""
    return np.searchsorted(times, edges[:-1], "left"), np.searchsorted(times, edges[1:], "left")


def _utterance_frames(ds: xr.Dataset):
    """Per-utterance (frame_start, time_s slice) of a store, in store order."""
    times = ds["time_s"].values
    for start, count in zip(ds["frame_start"].values, ds["frame_count"].values, strict=True):
        yield int(start), times[start : start + count]


def _units_from_parts(parts: list[tuple[np.ndarray, ...]]) -> Units:
    """Concatenate per-utterance (start_a, stop_a, start_b, stop_b) and drop empty units."""
    if not parts:
        return Units(*(np.zeros(0, np.int64) for _ in range(4)))
    sa, ea, sb, eb = (np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True))
    keep = (ea > sa) & (eb > sb)
    return Units(sa[keep], ea[keep], sb[keep], eb[keep])


def time_units(ds_a: xr.Dataset, ds_b: xr.Dataset) -> Units:
    """Units on the coarser store's frames (A's on a tie); the finer store's frames are pooled
    by centre time into each coarse frame's span. Utterances are paired by id."""
    rows_b = match_utterances(ds_a, ds_b)
    hop_a, hop_b = frame_hop(ds_a), frame_hop(ds_b)
    frames_a, frames_b = list(_utterance_frames(ds_a)), list(_utterance_frames(ds_b))
    parts = []
    for row_a, row_b in enumerate(rows_b):
        (off_a, t_a), (off_b, t_b) = frames_a[row_a], frames_b[row_b]
        if hop_b > hop_a:  # B is coarser: its frames are the units
            lo, hi = _pool_ranges(_spans(t_b, hop_b), t_a)
            coarse = off_b + np.arange(len(t_b))
            parts.append((off_a + lo, off_a + hi, coarse, coarse + 1))
        else:
            lo, hi = _pool_ranges(_spans(t_a, hop_a), t_b)
            coarse = off_a + np.arange(len(t_a))
            parts.append((coarse, coarse + 1, off_b + lo, off_b + hi))
    return _units_from_parts(parts)


def segment_units(ds_a: xr.Dataset, ds_b: xr.Dataset, segments: pd.DataFrame, tier: str) -> Units:
    """One unit per segment of ``tier`` (columns utterance_id, tier, start_s, end_s): the frames
    of each store whose centre lies in ``[start_s, end_s)``. Utterances are paired by id."""
    rows_b = match_utterances(ds_a, ds_b)
    table = segments[segments["tier"] == tier]
    if table.empty:
        raise CkaError(
            f"align 'segment': no segments of tier {tier!r} (config key cka.tier); "
            f"the corpus has tiers {sorted(set(segments['tier']))}"
        )
    by_utt = {u: g.sort_values("start_s") for u, g in table.groupby("utterance_id", sort=False)}
    frames_a, frames_b = list(_utterance_frames(ds_a)), list(_utterance_frames(ds_b))
    parts = []
    for row_a, uid in enumerate(ds_a["utterance_id"].values):
        seg = by_utt.get(str(uid))
        if seg is None:
            continue
        edges = (seg["start_s"].to_numpy(float), seg["end_s"].to_numpy(float))
        (off_a, t_a), (off_b, t_b) = frames_a[row_a], frames_b[rows_b[row_a]]
        lo_a, hi_a = (np.searchsorted(t_a, e, "left") for e in edges)
        lo_b, hi_b = (np.searchsorted(t_b, e, "left") for e in edges)
        parts.append((off_a + lo_a, off_a + hi_a, off_b + lo_b, off_b + hi_b))
    return _units_from_parts(parts)


def sample_units(n_units: int, max_frames: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_frames`` of ``n_units`` units, drawn uniformly without
    replacement with ``numpy.random.default_rng(seed)`` (all units when None or enough)."""
    if max_frames is None or max_frames >= n_units:
        return np.arange(n_units)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_units, size=int(max_frames), replace=False))


# -- reading -------------------------------------------------------------------------------
def _read_rows(ds: xr.Dataset, layer: int, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` (sorted, unique) of one layer, (len(index), feature) in store dtype."""
    hidden = ds["hidden"].variable
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return hidden[layer, int(index[0]) : int(index[-1]) + 1].values
    return hidden[layer, index].values


def read_units(
    ds: xr.Dataset, layers: Sequence[int], start: np.ndarray, stop: np.ndarray
) -> list[np.ndarray]:
    """Mean of frames ``[start[k], stop[k])`` for each unit k and layer: float32 (n_units, d) each.

    Ranges must not overlap; only the frames they cover are read (chunk by chunk, by Zarr).
    """
    counts = stop - start
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    index = np.repeat(start - offsets, counts) + np.arange(int(counts.sum()))
    order = None if np.all(np.diff(index) > 0) else np.argsort(index, kind="stable")
    out = []
    for layer in layers:
        rows = _read_rows(ds, layer, index if order is None else index[order])
        rows = np.asarray(rows, np.float32)
        if order is not None:
            unsorted = np.empty_like(rows)
            unsorted[order] = rows
            rows = unsorted
        if np.all(counts == 1):
            out.append(rows)
        else:
            out.append(np.add.reduceat(rows, offsets, axis=0) / counts[:, None].astype(np.float32))
    return out


# -- accumulation --------------------------------------------------------------------------
def plan_passes(
    dims_a: Sequence[int], dims_b: Sequence[int] | None, max_bytes: float
) -> list[list[int]]:
    """Split A's layers (matrix rows) into passes whose pair sums fit in ``max_bytes`` (float64).

    Within a model row u holds pairs (u, v >= u); across models row u holds (u, u) and (u, every
    B layer), and the first pass also B's self-pairs. A row never splits (one row per pass at
    least).
    """
    passes: list[list[int]] = [[]]
    used = 0.0 if dims_b is None else 8.0 * sum(d * d for d in dims_b)
    for u, d in enumerate(dims_a):
        partners = sum(dims_a[u:]) if dims_b is None else d + sum(dims_b)
        cost = 8.0 * d * partners
        if passes[-1] and used + cost > max_bytes:
            passes.append([])
            used = 0.0
        passes[-1].append(u)
        used += cost
    return passes


def stream_hsic(
    ds_a: xr.Dataset,
    ds_b: xr.Dataset | None,
    units: Units,
    *,
    debiased: bool,
    device: str = "auto",
    compute_dtype: str = "float32",
    batch_frames: int = 4096,
    max_accumulator_gb: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSIC of every layer pair over ``units``, read batch by batch from the stores.

    ``ds_b`` None: within store A (symmetric matrix). Returns (hsic_ab (La, Lb), hsic_a (La,),
    hsic_b (Lb,)); feed them to :func:`~speechlens.similarity.cka_from_hsic`.
    """
    dims_a = [ds_a.sizes["feature"]] * ds_a.sizes["layer"]
    dims_b = None if ds_b is None else [ds_b.sizes["feature"]] * ds_b.sizes["layer"]
    passes = plan_passes(dims_a, dims_b, max_accumulator_gb * 2**30)
    num_b = len(dims_a) if dims_b is None else len(dims_b)
    ab, self_a, self_b = (
        np.full((len(dims_a), num_b), np.nan),
        np.full(len(dims_a), np.nan),
        np.full(num_b, np.nan),
    )
    for i, rows in enumerate(passes):
        acc = CkaAccumulator(
            dims_a, dims_b, rows=rows, b_self=i == 0, device=device, compute_dtype=compute_dtype
        )
        start = time.perf_counter()
        for lo in range(0, len(units), batch_frames):
            batch = units.take(np.arange(lo, min(lo + batch_frames, len(units))))
            xs = _sparse(
                read_units(ds_a, acc.needed_a, batch.start_a, batch.stop_a),
                acc.needed_a,
                len(dims_a),
            )
            ys = None
            if ds_b is not None:
                ys = _sparse(
                    read_units(ds_b, acc.needed_b, batch.start_b, batch.stop_b), acc.needed_b, num_b
                )
            acc.update(xs, ys)
        log.info(
            "pass %d/%d (rows %s): %d units in %.1f s",
            i + 1,
            len(passes),
            rows,
            acc.n,
            time.perf_counter() - start,
        )
        part_ab, part_a, part_b = acc.hsic(debiased=debiased)
        for full, part in ((ab, part_ab), (self_a, part_a), (self_b, part_b)):
            np.copyto(full, part, where=~np.isnan(part))
    return ab, self_a, self_b


def _sparse(arrays: list[np.ndarray], layers: list[int], num: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = [None] * num
    for layer, x in zip(layers, arrays, strict=True):
        out[layer] = x
    return out


# -- drivers -------------------------------------------------------------------------------
def _open(path: str | Path) -> xr.Dataset:
    ds = store.open_store(path)
    store.validate(ds, str(path))
    return ds


def _model_name(ds: xr.Dataset, path: str | Path) -> str:
    """The store's ``model`` attr, else the name of its folder (results/{corpus}/{model}/)."""
    return str(ds.attrs.get("model") or Path(path).resolve().parent.name)


def _check(estimator: str, align: str, allowed: Sequence[str]) -> None:
    if estimator not in ESTIMATORS:
        raise CkaError(f"estimator {estimator!r} unknown; use one of {list(ESTIMATORS)}")
    if align not in allowed:
        raise CkaError(f"align {align!r} unknown here; use one of {list(allowed)}")


def _sampled_units(ds_a, ds_b, align, segments_tsv, tier, max_frames, seed) -> tuple[Units, int]:
    """The drawn units (in store order) and how many were available."""
    if align == "frame":  # draw frame indices directly: no per-frame table of the whole store
        n_frames = ds_a.sizes["frame"]
        chosen = sample_units(n_frames, max_frames, seed)
        return Units(chosen, chosen + 1, chosen, chosen + 1), n_frames
    if align == "time":
        units = time_units(ds_a, ds_b)
    elif segments_tsv is None:
        raise CkaError("align 'segment' needs segments_tsv (the corpus' segments.tsv)")
    else:
        segments_tsv = Path(segments_tsv)
        _, segments = read_tables(segments_tsv.with_name("utterances.tsv"), segments_tsv)
        units = segment_units(ds_a, ds_b, segments, tier)
    return units.take(sample_units(len(units), max_frames, seed)), len(units)


def compute(
    store_a: str | Path,
    store_b: str | Path | None = None,
    *,
    estimator: str = "debiased",
    align: str = "frame",
    segments_tsv: str | Path | None = None,
    tier: str = "phone",
    max_frames: int | None = 100_000,
    seed: int = 0,
    device: str = "auto",
    compute_dtype: str = "float32",
    batch_frames: int = 4096,
    max_accumulator_gb: float = 4.0,
) -> xr.DataArray:
    """The CKA DataArray (layer_a, layer_b) of one store (``store_b`` None) or two stores.

    Within a store ``align`` is ``frame`` or ``segment``; across stores ``time`` or ``segment``
    (see the module docstring). Nothing is written; see :func:`within_model`,
    :func:`across_models`.
    """
    within = store_b is None
    _check(estimator, align, ("frame", "segment") if within else ("time", "segment"))
    ds_a = _open(store_a)
    ds_b = ds_a if within else _open(store_b)
    units, available = _sampled_units(ds_a, ds_b, align, segments_tsv, tier, max_frames, seed)
    if len(units) < 4:
        raise CkaError(
            f"{_model_name(ds_a, store_a)} vs {_model_name(ds_b, store_b or store_a)} "
            f"(align {align!r}): only {len(units)} units with frames in both stores "
            f"({ds_a.sizes['frame']} and {ds_b.sizes['frame']} frames); CKA needs >= 4"
        )
    dev = resolve_device(device)
    log.info(
        "CKA (%s, align %s) on %d of %d units, device %s",
        estimator,
        align,
        len(units),
        available,
        dev,
    )
    hsic = stream_hsic(
        ds_a,
        None if within else ds_b,
        units,
        debiased=estimator == "debiased",
        device=dev,
        compute_dtype=compute_dtype,
        batch_frames=batch_frames,
        max_accumulator_gb=max_accumulator_gb,
    )
    attrs = {
        "estimator": estimator,
        "kernel": "linear",
        "n_frames": len(units),
        "n_frames_available": int(available),
        "max_frames": max_frames,
        "seed": int(seed),
        "align": align,
        "tier": tier if align == "segment" else None,
        "model_a": _model_name(ds_a, store_a),
        "model_b": _model_name(ds_b, store_a if within else store_b),
        "config_hash_a": ds_a.attrs.get("config_hash"),
        "config_hash_b": ds_b.attrs.get("config_hash"),
        "frame_rate_hz_a": ds_a.attrs.get("frame_rate_hz"),
        "frame_rate_hz_b": ds_b.attrs.get("frame_rate_hz"),
        "corpus": ds_a.attrs.get("corpus"),
        "compute_dtype": compute_dtype,
        "device": str(dev),
        "speechlens_version": __version__,
        "torch_version": torch.__version__,
    }
    return xr.DataArray(
        cka_from_hsic(*hsic),
        dims=("layer_a", "layer_b"),
        coords={"layer_a": ds_a["layer"].values, "layer_b": ds_b["layer"].values},
        name="cka",
        attrs=attrs,
    )


def write_cka(da: xr.DataArray, out_path: str | Path) -> None:
    """Write ``da`` as a Zarr (v3) group holding the variable ``cka``, atomically."""
    with atomic_path(out_path, is_dir=True) as tmp:
        da.to_dataset(name="cka").to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)


def load_cka(path: str | Path) -> xr.DataArray:
    """Read a CKA matrix written by :func:`write_cka` (loaded into memory)."""
    with store.open_zarr(path) as ds:
        return ds["cka"].load()


def within_model(
    store_path: str | Path,
    out_path: str | Path,
    *,
    estimator: str = "debiased",
    max_frames: int | None = 100_000,
    seed: int = 0,
    device: str = "auto",
    align: str = "frame",
    segments_tsv: str | Path | None = None,
    tier: str = "phone",
    **options,
) -> xr.DataArray:
    """Layer x layer CKA of one store, written to ``out_path`` (``results/{corpus}/{model}/
    cka.zarr``); returns the DataArray. ``options``: compute_dtype, batch_frames,
    max_accumulator_gb (see :func:`stream_hsic`)."""
    da = compute(
        store_path,
        estimator=estimator,
        align=align,
        segments_tsv=segments_tsv,
        tier=tier,
        max_frames=max_frames,
        seed=seed,
        device=device,
        **options,
    )
    write_cka(da, out_path)
    return da


def across_models(
    store_a: str | Path,
    store_b: str | Path,
    out_path: str | Path,
    *,
    align: str = "time",
    segments_tsv: str | Path | None = None,
    tier: str = "phone",
    estimator: str = "debiased",
    max_frames: int | None = 100_000,
    seed: int = 0,
    device: str = "auto",
    **options,
) -> xr.DataArray:
    """Layer_a x layer_b CKA of two stores of the same corpus, written to ``out_path``
    (``results/{corpus}/cka/{model_a}--{model_b}.zarr``); returns the DataArray."""
    da = compute(
        store_a,
        store_b,
        estimator=estimator,
        align=align,
        segments_tsv=segments_tsv,
        tier=tier,
        max_frames=max_frames,
        seed=seed,
        device=device,
        **options,
    )
    write_cka(da, out_path)
    return da
