"""CKA of feature stores: open, choose units, stream, wrap and write the matrix.

The result is an ``xarray.DataArray`` named ``cka`` with dims ``(layer_a, layer_b)`` (layer
indices as coords) and provenance attrs, written as a Zarr group under a temporary name and
renamed (:func:`write_cka`; read it back with :func:`load_cka`).

Settings are the ``cka`` config section's keys (``estimator``, ``max_frames``, ``seed``,
``device``, ``tier``; their defaults come from the schema, :func:`speechlens.schema.defaults`)
plus the technical options of :func:`~speechlens.cka.stream.stream_hsic` (``compute_dtype``,
``batch_frames``, ``max_accumulator_gb``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import xarray as xr

from speechlens import __version__, schema, store
from speechlens.atomic import atomic_path
from speechlens.cka.statistic import ESTIMATORS, cka_from_hsic, resolve_device
from speechlens.cka.stream import stream_hsic
from speechlens.cka.units import (
    CkaError,
    Units,
    frame_units,
    sample_units,
    segment_units,
    time_units,
)
from speechlens.corpora.contract import read_tables

log = logging.getLogger("speechlens.cka")

ALIGNS = ("frame", "time", "segment")
OPTIONS = {"compute_dtype": "float32", "batch_frames": 4096, "max_accumulator_gb": 4.0}
"""Technical options of the computation (not config keys: they do not change the result
beyond rounding)."""
NOT_SETTINGS = ("within", "pairs", "align", "threads")  # cka keys that are not compute's


def _settings(given: dict) -> tuple[dict, dict]:
    """``(settings, options)``: the cka keys over the schema's defaults (an explicit None
    stays None), and the technical options over :data:`OPTIONS`."""
    defaults = {k: v for k, v in schema.defaults("cka").items() if k not in NOT_SETTINGS}
    unknown = sorted(set(given) - set(defaults) - set(OPTIONS))
    if unknown:
        raise CkaError(
            f"unknown CKA option(s) {unknown}; known: {sorted(defaults) + sorted(OPTIONS)}"
        )
    settings = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
    options = {**OPTIONS, **{k: v for k, v in given.items() if k in OPTIONS}}
    return settings, options


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


def _segments(segments_tsv) -> pd.DataFrame:
    if segments_tsv is None:
        raise CkaError("align 'segment' needs segments_tsv (the corpus' segments.tsv)")
    segments_tsv = Path(segments_tsv)
    return read_tables(segments_tsv.with_name("utterances.tsv"), segments_tsv)[1]


def sampled_units(ds_a, ds_b, align, segments_tsv, tier, max_frames, seed) -> tuple[Units, int]:
    """The drawn units (in store order) and how many were available."""
    if align == "frame":  # draw frame indices directly: no per-frame table of the whole store
        n_frames = ds_a.sizes["frame"]
        return frame_units(sample_units(n_frames, max_frames, seed)), n_frames
    if align == "time":
        units = time_units(ds_a, ds_b)
    else:
        units = segment_units(ds_a, ds_b, _segments(segments_tsv), tier)
    return units.take(sample_units(len(units), max_frames, seed)), len(units)


def compute(
    store_a: str | Path,
    store_b: str | Path | None = None,
    *,
    align: str = "frame",
    segments_tsv: str | Path | None = None,
    **given,
) -> xr.DataArray:
    """The CKA DataArray (layer_a, layer_b) of one store (``store_b`` None) or two stores.

    Within a store ``align`` is ``frame`` or ``segment``; across stores ``time`` or
    ``segment`` (:mod:`speechlens.cka.units`). ``given``: settings and options (module
    docstring). Nothing is written; see :func:`within_model`, :func:`across_models`.
    """
    s, options = _settings(given)
    within = store_b is None
    _check(s["estimator"], align, ("frame", "segment") if within else ("time", "segment"))
    ds_a = _open(store_a)
    ds_b = ds_a if within else _open(store_b)
    units, available = sampled_units(
        ds_a, ds_b, align, segments_tsv, s["tier"], s["max_frames"], s["seed"]
    )
    if len(units) < 4:
        raise CkaError(
            f"{_model_name(ds_a, store_a)} vs {_model_name(ds_b, store_b or store_a)} "
            f"(align {align!r}): only {len(units)} units with frames in both stores "
            f"({ds_a.sizes['frame']} and {ds_b.sizes['frame']} frames); CKA needs >= 4"
        )
    dev = resolve_device(s["device"])
    log.info(
        "CKA (%s, align %s) on %d of %d units, device %s",
        s["estimator"],
        align,
        len(units),
        available,
        dev,
    )
    hsic = stream_hsic(
        ds_a,
        None if within else ds_b,
        units,
        debiased=s["estimator"] == "debiased",
        device=dev,
        **options,
    )
    attrs = {
        "estimator": s["estimator"],
        "kernel": "linear",
        "n_frames": len(units),
        "n_frames_available": int(available),
        "max_frames": s["max_frames"],
        "seed": int(s["seed"]),
        "align": align,
        "pooling": "overlap-weighted" if align == "time" else "mean",
        "tier": s["tier"] if align == "segment" else None,
        "model_a": _model_name(ds_a, store_a),
        "model_b": _model_name(ds_b, store_a if within else store_b),
        "config_hash_a": ds_a.attrs.get("config_hash"),
        "config_hash_b": ds_b.attrs.get("config_hash"),
        "frame_rate_hz_a": ds_a.attrs.get("frame_rate_hz"),
        "frame_rate_hz_b": ds_b.attrs.get("frame_rate_hz"),
        "corpus": ds_a.attrs.get("corpus"),
        "compute_dtype": options["compute_dtype"],
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
    align: str = "frame",
    segments_tsv: str | Path | None = None,
    **given,
) -> xr.DataArray:
    """Layer x layer CKA of one store, written to ``out_path`` (``results/{corpus}/{model}/
    cka.zarr``); returns the DataArray. ``given``: settings and options (module docstring)."""
    da = compute(store_path, align=align, segments_tsv=segments_tsv, **given)
    write_cka(da, out_path)
    return da


def across_models(
    store_a: str | Path,
    store_b: str | Path,
    out_path: str | Path,
    *,
    align: str | None = None,
    segments_tsv: str | Path | None = None,
    **given,
) -> xr.DataArray:
    """Layer_a x layer_b CKA of two stores of the same corpus, written to ``out_path``
    (``results/{corpus}/cka/{model_a}--{model_b}.zarr``); returns the DataArray. ``align``
    None: the schema's default (``cka.align``)."""
    align = align or schema.defaults("cka")["align"]
    da = compute(store_a, store_b, align=align, segments_tsv=segments_tsv, **given)
    write_cka(da, out_path)
    return da
