"""The ``attention`` config section: defaults (mirroring the schema) and value checks.

The schema (``workflow/schemas/config.schema.yaml``) is the source of defaults for the
workflow; :data:`DEFAULTS` repeats them for library callers and a test keeps both equal.
:func:`resolve` fills defaults and raises :class:`AttentionError` naming the config key
(``attention.<key>``) of a bad value, so library callers get the same messages.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

ABLATION_MODES = ("zero", "mean")
ABLATION_PROBES = ("linear", "knn", "mlp", "kmeans")

#: Defaults of the ``attention`` config section (same as the schema's).
DEFAULTS: dict = {
    "models": None,  # null: every configured model with self-attention
    "diagonal_frames": 3,  # k: diagonality is the mass within +-k frames of the query
    "vertical_fraction": 0.05,  # verticality: mass on the top ceil(f * n) key columns
    "thresholds": {"diagonal": 0.5, "vertical": 0.5},
    "max_utterances": None,  # head types: utterances used (seeded draw); null: all
    "batch_seconds": 30.0,  # padded audio seconds per forward pass with attention weights
    "examples": 3,  # example maps saved (the first utterances of the used set)
    "example_frames": 150,  # example maps cropped to this many query and key frames
    "seed": 0,
    "threads": 2,
    "ablation": {
        "enabled": True,
        "mode": "zero",  # zero | mean: replacement of the ablated heads' outputs
        "task": "phone",  # a probing task (probing.tasks)
        "probe": "linear",
        "layers": [-1],  # probed layers (store layer index; negative counts from the end)
        "random_draws": 3,  # random control groups per ablated group size
        "seed": 0,
        "max_utterances": 200,  # utterances re-extracted per group (seeded draw); null: all
    },
}


class AttentionError(ValueError):
    """Bad attention settings or a model/corpus the analysis cannot run on."""


def has_self_attention(family: str) -> bool:
    """Whether adapters of ``family`` expose self-attention heads (implement
    :meth:`~speechlens.models.base.Adapter.attention_projections`)."""
    from speechlens.models import ADAPTERS
    from speechlens.models.base import Adapter

    if family not in ADAPTERS:
        raise AttentionError(f"model family {family!r} unknown; known: {sorted(ADAPTERS)}")
    return ADAPTERS[family].attention_projections is not Adapter.attention_projections


def _merge(defaults: Mapping, given: Mapping, where: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise AttentionError(f"config key {where}: unknown key(s) {unknown}")
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if isinstance(defaults[key], dict):
            out[key] = _merge(defaults[key], value or {}, f"{where}.{key}")
        else:
            out[key] = value
    return out


def _check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise AttentionError(f"config key attention.{key}: {value!r} {rule}")


def resolve(settings: Mapping | None = None) -> dict:
    """``settings`` (partial ``attention`` section) with defaults filled in and checked."""
    s = _merge(DEFAULTS, settings or {}, "attention")
    _check(int(s["diagonal_frames"]) >= 0, "diagonal_frames", s["diagonal_frames"], "must be >= 0")
    f = s["vertical_fraction"]
    _check(0 < f <= 1, "vertical_fraction", f, "must be in (0, 1]")
    for name in ("diagonal", "vertical"):
        t = s["thresholds"][name]
        _check(0 <= t <= 1, f"thresholds.{name}", t, "must be in [0, 1]")
    _check(s["examples"] >= 0, "examples", s["examples"], "must be >= 0")
    _check(s["example_frames"] >= 1, "example_frames", s["example_frames"], "must be >= 1")
    _check(s["batch_seconds"] > 0, "batch_seconds", s["batch_seconds"], "must be > 0")
    for key in ("max_utterances",):
        v = s[key]
        _check(v is None or v >= 1, key, v, "must be >= 1 or null")
    a = s["ablation"]
    _check(
        a["mode"] in ABLATION_MODES, "ablation.mode", a["mode"], f"must be one of {ABLATION_MODES}"
    )
    _check(
        a["probe"] in ABLATION_PROBES,
        "ablation.probe",
        a["probe"],
        f"must be one of {ABLATION_PROBES}",
    )
    _check(bool(a["layers"]), "ablation.layers", a["layers"], "must name at least one layer")
    _check(a["random_draws"] >= 0, "ablation.random_draws", a["random_draws"], "must be >= 0")
    v = a["max_utterances"]
    _check(v is None or v >= 2, "ablation.max_utterances", v, "must be >= 2 or null")
    return s


def probed_layers(layers, num_layers: int) -> list[int]:
    """Store layer indices (``0 .. num_layers - 1``) of ``layers`` (negative: from the end),
    sorted and unique; raises :class:`AttentionError` naming ``attention.ablation.layers``."""
    out = set()
    for layer in layers:
        index = int(layer) + num_layers if int(layer) < 0 else int(layer)
        if not 0 <= index < num_layers:
            raise AttentionError(
                f"config key attention.ablation.layers: layer {layer} outside the model's "
                f"{num_layers} layers (0 .. {num_layers - 1}, or -1 .. -{num_layers})"
            )
        out.add(index)
    return sorted(out)
