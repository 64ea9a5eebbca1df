"""TERA's alterations of the input (Liu et al. 2021, section III), on normalised log-mel.

Applied to one utterance ``x`` of shape ``(frame, channel)`` (normalised: 0 is the
channel's mean), in this order, with a NumPy generator:

- **time**: ``k = round(proportion * n / span)`` non-overlapping spans of ``span``
  consecutive frames (uniformly placed) are selected, so ``proportion`` of the frames
  (15 %, spans of 7 frames by default). Each span is, independently, zeroed with
  probability ``zero`` (80 %), replaced by another random span of the same utterance with
  probability ``replace`` (10 %), and left unchanged otherwise (10 %) -- BERT's recipe,
  drawn per span;
- **frequency**: a block of ``w`` consecutive channels, ``w`` uniform in
  ``0 .. round(max_width * channels)`` (20 % of the channels at most), starting uniformly,
  is zeroed in every frame;
- **magnitude**: with probability ``probability`` (10 %) Gaussian noise of standard
  deviation ``std`` (0.2, in normalised units) is added to every frame.

The loss mask marks the altered positions: every channel of the selected frames (kept
spans included), every frame of the masked channels, and every position when noise was
added. The reconstruction target is the clean input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The published proportions (the defaults of the workflow's ``training.alteration``).
DEFAULTS: dict = {
    "time": {"proportion": 0.15, "span": 7, "zero": 0.8, "replace": 0.1},
    "frequency": {"max_width": 0.2},
    "magnitude": {"probability": 0.1, "std": 0.2},
}


@dataclass(frozen=True)
class Alteration:
    """Alteration settings (see the module docstring); :meth:`from_dict` fills defaults."""

    time_proportion: float = 0.15
    time_span: int = 7
    time_zero: float = 0.8
    time_replace: float = 0.1
    frequency_max_width: float = 0.2
    magnitude_probability: float = 0.1
    magnitude_std: float = 0.2

    @classmethod
    def from_dict(cls, spec: dict | None) -> Alteration:
        """From the nested config form ``{time: {...}, frequency: {...}, magnitude: {...}}``."""
        spec = spec or {}
        unknown = set(spec) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"alteration: unknown sections {sorted(unknown)}")
        kwargs = {}
        for section, defaults in DEFAULTS.items():
            given = spec.get(section) or {}
            bad = set(given) - set(defaults)
            if bad:
                raise ValueError(f"alteration.{section}: unknown keys {sorted(bad)}")
            for key, value in {**defaults, **given}.items():
                kwargs[f"{section}_{key}"] = value
        out = cls(**kwargs)
        if not 0 <= out.time_proportion < 1 or out.time_span < 1:
            raise ValueError("alteration.time: proportion in [0, 1), span >= 1")
        if out.time_zero < 0 or out.time_replace < 0 or out.time_zero + out.time_replace > 1:
            raise ValueError("alteration.time: zero + replace must be a probability split <= 1")
        return out


def time_spans(n: int, settings: Alteration, rng: np.random.Generator) -> np.ndarray:
    """Start frames of ``round(proportion * n / span)`` non-overlapping spans in ``0..n-1``.

    Uniform over placements: choose ``k`` of ``n - k * (span - 1)`` slots, then shift the
    ``i``-th (sorted) by ``i * (span - 1)``.
    """
    w = settings.time_span
    k = int(round(settings.time_proportion * n / w))
    k = min(k, n // w)
    if k == 0:
        return np.zeros(0, np.int64)
    slots = np.sort(rng.choice(n - k * (w - 1), size=k, replace=False))
    return slots + np.arange(k) * (w - 1)


def alter(
    x: np.ndarray, settings: Alteration, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Altered copy of ``x`` ``(frame, channel)``, its loss mask (bool, same shape) and a
    record of what was done (span starts and actions, channel block, noise flag)."""
    x = np.asarray(x, np.float32)
    n, c = x.shape
    out = x.copy()
    mask = np.zeros((n, c), bool)
    w = settings.time_span
    starts = time_spans(n, settings, rng)
    draws = rng.random(len(starts))
    actions = np.where(
        draws < settings.time_zero,
        "zero",
        np.where(draws < settings.time_zero + settings.time_replace, "replace", "keep"),
    )
    for s, action in zip(starts, actions, strict=True):
        if action == "zero":
            out[s : s + w] = 0.0
        elif action == "replace":
            src = int(rng.integers(0, n - w + 1))
            out[s : s + w] = x[src : src + w]
        mask[s : s + w] = True
    max_width = int(round(settings.frequency_max_width * c))
    width = int(rng.integers(0, max_width + 1))
    low = int(rng.integers(0, c - width + 1))
    if width:
        out[:, low : low + width] = 0.0
        mask[:, low : low + width] = True
    noise = bool(rng.random() < settings.magnitude_probability)
    if noise:
        out += rng.normal(0.0, settings.magnitude_std, size=out.shape).astype(np.float32)
        mask[:] = True
    record = {"starts": starts, "actions": actions, "channels": (low, width), "noise": noise}
    return out, mask, record
