"""CKA of feature stores: open, choose units, stream, wrap and write the matrix.

The result is an ``xarray.DataArray`` named ``cka`` with dims ``(layer_a, layer_b)`` (the
stores' layer numbers as coords: a ``layers`` subset keeps its numbers) and provenance
attrs, written as a Zarr group under a temporary name and renamed (:func:`write_cka`; read
it back with :func:`load_cka`).

Every kind of store (:func:`speechlens.store.mode`) is compared: a frame store by its
frames; a ``segment:<tier>`` store by its segments (:func:`speechlens.store.unit_view`):
within the model each stored segment is a unit, across models the alignment must be
``segment`` on the store's tier (:func:`check_alignment`); an utterance store
(``pool: utterance``) within the model by its utterance means (``pooled``, each utterance a
unit, :func:`unit_store`), and never across models (no frames or segments to pair).

Settings are the ``cka`` config section's keys (``estimator``, ``max_frames``, ``seed``,
``device``, ``tier``; their defaults come from the schema, :func:`speechlens.schema.defaults`)
plus the technical options of :func:`~speechlens.cka.stream.stream_hsic` (``compute_dtype``,
``batch_frames``, ``max_accumulator_gb``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
import xarray as xr

from speechlens import __version__, reduce, schema, store
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


def unit_store(ds: xr.Dataset, where: str = "store") -> xr.Dataset:
    """The store as CKA units, ``hidden(layer, frame, feature)``: a frame store as it is; a
    segment store's segments as frames (:func:`speechlens.store.unit_view`); an utterance
    store's ``pooled`` as ``hidden``, one "frame" per utterance (no frame coords: only
    ``align: frame`` within the model reads it)."""
    if store.mode(ds) != "utterance":
        return store.unit_view(ds, where)
    view = ds[["pooled"]].rename({"pooled": "hidden", "utterance": "frame"})
    view.attrs = {k: v for k, v in ds.attrs.items() if k != "frame_rate_hz"}
    view.attrs["unit"] = "utterance"
    return view


def _store_kind(ds: xr.Dataset) -> tuple[str, str | None]:
    """(mode, pooled tier) of an opened store."""
    return store.mode(ds), store.reduction(ds).get("tier")


def check_alignment(
    stores: Sequence[tuple[str, str, str | None]], align: str, tier: str | None
) -> None:
    """Can stores of these kinds be compared with ``align`` (and ``tier``)?

    ``stores``: ``(model, mode, pooled tier)`` of each store, one (within a model) or two
    (across models); ``mode`` as :func:`speechlens.store.mode`. Raises :class:`CkaError`
    naming the model and the config key to change:

    - an utterance store has no frames or segments: within the model only ``align: frame``
      (its utterances are the units), never across models;
    - a ``segment:<tier>`` store holds one mean per segment of its tier: across models only
      ``align: segment`` with ``cka.tier`` that tier pairs samples (time alignment needs
      frames, and another tier's segments are not unions of its segments' frames); within
      the model ``align: frame`` (its segments) or ``segment`` on its tier.
    """
    across = len(stores) > 1
    for model, mode, pooled in stores:
        if mode == "utterance" and (across or align != "frame"):
            what = "across models" if across else f"with align {align!r}"
            raise CkaError(
                f"model {model!r} stores utterance means only (features.pool utterance): CKA "
                f"{what} needs frames or segments; use pool frame or segment:<tier> for this "
                "model, or leave it out of cka.pairs"
            )
        if mode != "segment" or (not across and align == "frame"):
            continue
        if align != "segment":
            raise CkaError(
                f"cka.align {align!r}: model {model!r} stores segment:{pooled} "
                f"means, which pair with another model only by segment: set cka.align "
                f"segment and cka.tier {pooled}"
            )
        if tier != pooled:
            raise CkaError(
                f"cka.tier {tier!r}: model {model!r} stores segment:{pooled} "
                f"means; segment alignment needs cka.tier {pooled}"
            )


def check_pairs(
    pairs: Sequence[Sequence[str]], features: Mapping[str, Mapping], align: str, tier: str
) -> None:
    """Start-up check of ``cka.pairs`` against the models' store settings (``features``:
    model name -> merged ``features`` settings): :func:`check_alignment` of every pair,
    the message prefixed with the pair's config key ``cka.pairs[i]``."""
    for i, pair in enumerate(pairs):
        kinds = []
        for model in pair:
            red = reduce.Reduction.from_settings(features[model], f"models.{model}.features")
            kinds.append((model, red.mode, red.tier))
        try:
            check_alignment(kinds, align, tier)
        except CkaError as err:
            raise CkaError(f"config key cka.pairs[{i}] {list(pair)}: {err}") from err


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
    """The drawn units (in store order) and how many were available; ``ds_a``, ``ds_b`` are
    :func:`unit_store` views."""
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
    ``segment`` (:mod:`speechlens.cka.units`); reduced stores as in the module docstring
    (:func:`check_alignment`). ``given``: settings and options (module docstring). Nothing
    is written; see :func:`within_model`, :func:`across_models`.
    """
    s, options = _settings(given)
    within = store_b is None
    _check(s["estimator"], align, ("frame", "segment") if within else ("time", "segment"))
    raw_a = _open(store_a)
    raw_b = raw_a if within else _open(store_b)
    names = (_model_name(raw_a, store_a), _model_name(raw_b, store_b or store_a))
    kinds = [(names[0], *_store_kind(raw_a))]
    if not within:
        kinds.append((names[1], *_store_kind(raw_b)))
    check_alignment(kinds, align, s["tier"])
    ds_a = unit_store(raw_a, str(store_a))
    ds_b = ds_a if within else unit_store(raw_b, str(store_b))
    units, available = sampled_units(
        ds_a, ds_b, align, segments_tsv, s["tier"], s["max_frames"], s["seed"]
    )
    if len(units) < 4:
        raise CkaError(
            f"{names[0]} vs {names[1]} (align {align!r}): only {len(units)} units with frames "
            f"in both stores ({ds_a.sizes['frame']} and {ds_b.sizes['frame']} stored units); "
            "CKA needs >= 4"
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
        "units": {"time": "frame", "segment": "segment"}.get(align, store.mode(raw_a)),
        "pooling": "overlap-weighted" if align == "time" else "mean",
        "tier": s["tier"] if align == "segment" else None,
        "model_a": names[0],
        "model_b": names[1],
        "pool_a": store.reduction(raw_a)["pool"],
        "pool_b": store.reduction(raw_b)["pool"],
        "frame_stride_a": int(store.reduction(raw_a)["frame_stride"]),
        "frame_stride_b": int(store.reduction(raw_b)["frame_stride"]),
        "config_hash_a": raw_a.attrs.get("config_hash"),
        "config_hash_b": raw_b.attrs.get("config_hash"),
        "frame_rate_hz_a": raw_a.attrs.get("frame_rate_hz"),
        "frame_rate_hz_b": raw_b.attrs.get("frame_rate_hz"),
        "corpus": raw_a.attrs.get("corpus"),
        "compute_dtype": options["compute_dtype"],
        "device": str(dev),
        "speechlens_version": __version__,
        "torch_version": torch.__version__,
    }
    return xr.DataArray(
        cka_from_hsic(*hsic),
        dims=("layer_a", "layer_b"),
        coords={"layer_a": store.layer_numbers(raw_a), "layer_b": store.layer_numbers(raw_b)},
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
