"""The ``attention`` config section: defaults from the schema, value checks.

Defaults live only in the packaged schema (``speechlens.schema``, config key ``attention``);
:func:`resolve` fills them in (:func:`speechlens.schema.merge`) and raises
:class:`AttentionError` naming the config key (``attention.<key>``) of a bad value, so
library callers outside the workflow get the workflow's messages.
"""

from __future__ import annotations

from collections.abc import Mapping

from speechlens import schema

ABLATION_MODES = ("zero", "mean")
ABLATION_PROBES = ("linear", "knn", "mlp", "kmeans")
CLASSIFICATIONS = ("threshold", "yang2020")


class AttentionError(ValueError):
    """Bad attention settings or a model/corpus the analysis cannot run on."""


def has_self_attention(family: str) -> bool:
    """Whether model family ``family`` declares the ``self_attention`` capability
    (:func:`speechlens.models.has_capability`); unknown families raise
    :class:`AttentionError` listing the known ones."""
    from speechlens.models import has_capability

    try:
        return has_capability(family, "self_attention")
    except KeyError as e:
        raise AttentionError(str(e.args[0])) from e


def _unknown(given: Mapping, known: Mapping, where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise AttentionError(f"config key {where}: unknown key(s) {unknown}")
    for key, value in given.items():
        if isinstance(known[key], dict) and isinstance(value, Mapping):
            _unknown(value, known[key], f"{where}.{key}")


def _check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise AttentionError(f"config key attention.{key}: {value!r} {rule}")


def resolve(settings: Mapping | None = None) -> dict:
    """``settings`` (partial ``attention`` section) over the schema's defaults, checked."""
    settings = dict(settings or {})
    _unknown(settings, schema.defaults("attention"), "attention")
    s = schema.merge(settings, "attention")
    w = s["diagonal_ms"]
    _check(w is not None and float(w) > 0, "diagonal_ms", w, "must be > 0 (milliseconds)")
    f = s["vertical_fraction"]
    _check(0 < f <= 1, "vertical_fraction", f, "must be in (0, 1]")
    c = s["classification"]
    _check(c in CLASSIFICATIONS, "classification", c, f"must be one of {CLASSIFICATIONS}")
    for name in ("diagonal", "vertical"):
        t = s["thresholds"][name]
        _check(0 <= t <= 1, f"thresholds.{name}", t, "must be in [0, 1]")
    _check(s["examples"] >= 0, "examples", s["examples"], "must be >= 0")
    _check(s["example_frames"] >= 1, "example_frames", s["example_frames"], "must be >= 1")
    _check(s["batch_seconds"] > 0, "batch_seconds", s["batch_seconds"], "must be > 0")
    v = s["max_utterances"]
    _check(v is None or v >= 1, "max_utterances", v, "must be >= 1 or null")
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
