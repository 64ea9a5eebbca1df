"""Streaming the units' pooled features from the stores into the HSIC sums.

The chosen units (:mod:`speechlens.cka.units`) are read in store order, batch by batch
(never the whole ``hidden`` array), pooled with their weights, and fed to a
:class:`~speechlens.cka.statistic.CkaAccumulator`. When all layer pairs would not fit in
``max_accumulator_gb``, the rows of the matrix are split into several passes over the data
(:func:`plan_passes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import xarray as xr

from speechlens.cka.statistic import CkaAccumulator
from speechlens.cka.units import Pooling, Units

log = logging.getLogger("speechlens.cka")


# -- reading -------------------------------------------------------------------------------
def _read_rows(ds: xr.Dataset, layer: int, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` (sorted, unique) of one layer, (len(index), feature) in store dtype."""
    hidden = ds["hidden"].variable
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return hidden[layer, int(index[0]) : int(index[-1]) + 1].values
    return hidden[layer, index].values


def read_units(ds: xr.Dataset, layers: Sequence[int], pooling: Pooling) -> list[np.ndarray]:
    """Weighted mean of each unit's frames for each layer: float32 (n_units, d) each.

    Only the frames the units use are read, each once (chunk by chunk, by Zarr), however many
    units share it. Every unit must pool at least one frame.
    """
    frames, inverse = np.unique(pooling.index, return_inverse=True)
    single = np.all(pooling.counts == 1)
    out = []
    for layer in layers:
        rows = np.asarray(_read_rows(ds, layer, frames), np.float32)[inverse]
        if single:
            out.append(rows)
            continue
        weighted = rows * pooling.weight[:, None].astype(np.float32)
        out.append(np.add.reduceat(weighted, pooling.ptr[:-1], axis=0))
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
    hsic_b (Lb,)); feed them to :func:`~speechlens.cka.statistic.cka_from_hsic`.
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
            xs = _sparse(read_units(ds_a, acc.needed_a, batch.a), acc.needed_a, len(dims_a))
            ys = None
            if ds_b is not None:
                ys = _sparse(read_units(ds_b, acc.needed_b, batch.b), acc.needed_b, num_b)
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
