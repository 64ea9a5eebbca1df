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

from speechlens.schema import defaults as schema_defaults

SCHEMA_KEY = "training.alteration"
"""Where the settings and their defaults (the published proportions) live in the config
schema: ``schema_defaults(SCHEMA_KEY)`` gives ``{time: {...}, frequency: {...}, magnitude:
{...}}``."""


@dataclass(frozen=True)
class Alteration:
    """Alteration settings (see the module docstring). Build it with :meth:`from_dict`,
    which fills the schema's defaults (``Alteration.from_dict(None)``: TERA's published
    proportions)."""

    time_proportion: float
    time_span: int
    time_zero: float
    time_replace: float
    frequency_max_width: float
    magnitude_probability: float
    magnitude_std: float

    @classmethod
    def from_dict(cls, spec: dict | None) -> Alteration:
        """From the nested config form ``{time: {...}, frequency: {...}, magnitude: {...}}``;
        missing sections and keys take the defaults of :data:`SCHEMA_KEY`."""
        spec = spec or {}
        known = schema_defaults(SCHEMA_KEY)
        unknown = set(spec) - set(known)
        if unknown:
            raise ValueError(f"alteration: unknown sections {sorted(unknown)}")
        kwargs = {}
        for section, defaults in known.items():
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
    """Start frames of ``round(proportion * n / span)`` non-overlapping spans in ``0..n-1``
    (one utterance of ``n`` frames; :func:`batch_time_spans` with one row)."""
    return batch_time_spans(1, n, settings, rng)[0]


def batch_time_spans(
    rows: int, n: int, settings: Alteration, rng: np.random.Generator
) -> np.ndarray:
    """Sorted start frames ``(rows, k)`` of ``k = round(proportion * n / span)``
    non-overlapping spans in each of ``rows`` utterances of ``n`` frames.

    Uniform over placements: per row, choose ``k`` of ``n - k * (span - 1)`` slots (the
    first ``k`` of a random permutation), then shift the ``i``-th (sorted) by ``i * (span - 1)``.
    """
    w = settings.time_span
    k = int(round(settings.time_proportion * n / w))
    k = min(k, n // w)
    if k == 0:
        return np.zeros((rows, 0), np.int64)
    slots = n - k * (w - 1)
    chosen = np.sort(np.argsort(rng.random((rows, slots)), axis=1)[:, :k], axis=1)
    return chosen + np.arange(k) * (w - 1)


def alter_batch(
    x: np.ndarray, settings: Alteration, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Altered copy of a batch ``x`` ``(utterance, frame, channel)`` of equal-length
    utterances, its loss mask (bool, same shape) and a record of what was done: ``starts``
    and ``actions`` ``(utterance, span)``, ``channels`` ``(utterance, 2)`` (low, width) and
    ``noise`` ``(utterance,)``. Each utterance is altered independently (module docstring);
    no Python loop over utterances or spans."""
    x = np.asarray(x, np.float32)
    b, n, c = x.shape
    out = x.copy()
    mask = np.zeros((b, n, c), bool)
    w = settings.time_span
    rows = np.arange(b)[:, None, None]
    starts = batch_time_spans(b, n, settings, rng)
    k = starts.shape[1]
    draws = rng.random((b, k))
    actions = np.where(
        draws < settings.time_zero,
        "zero",
        np.where(draws < settings.time_zero + settings.time_replace, "replace", "keep"),
    )
    sources = rng.integers(0, n - w + 1, size=(b, k)) if k else np.zeros((b, 0), np.int64)
    frames = starts[:, :, None] + np.arange(w)  # (utterance, span, w)
    source_frames = sources[:, :, None] + np.arange(w)
    replace = np.broadcast_to((actions == "replace")[:, :, None], frames.shape)
    zero = np.broadcast_to((actions == "zero")[:, :, None], frames.shape)
    rr = np.broadcast_to(rows, frames.shape)
    out[rr[replace], frames[replace]] = x[rr[replace], source_frames[replace]]
    out[rr[zero], frames[zero]] = 0.0
    mask[np.broadcast_to(rows, frames.shape), frames] = True
    max_width = int(round(settings.frequency_max_width * c))
    width = rng.integers(0, max_width + 1, size=b)
    low = rng.integers(0, c - width + 1)
    channel = np.arange(c)
    blocked = (channel >= low[:, None]) & (channel < (low + width)[:, None])  # (utterance, c)
    out[np.broadcast_to(blocked[:, None, :], out.shape)] = 0.0
    mask |= blocked[:, None, :]
    noise = rng.random(b) < settings.magnitude_probability
    if noise.any():
        out[noise] += rng.normal(0.0, settings.magnitude_std, size=(int(noise.sum()), n, c)).astype(
            np.float32
        )
        mask[noise] = True
    record = {
        "starts": starts,
        "actions": actions,
        "channels": np.stack([low, width], axis=1),
        "noise": noise,
    }
    return out, mask, record


def alter(
    x: np.ndarray, settings: Alteration, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Altered copy of one utterance ``x`` ``(frame, channel)``, its loss mask (bool, same
    shape) and a record of what was done (span ``starts`` and ``actions``, channel block
    ``(low, width)``, ``noise`` flag): :func:`alter_batch` on a batch of one."""
    out, mask, record = alter_batch(np.asarray(x, np.float32)[None], settings, rng)
    low, width = record["channels"][0]
    one = {
        "starts": record["starts"][0],
        "actions": record["actions"][0],
        "channels": (int(low), int(width)),
        "noise": bool(record["noise"][0]),
    }
    return out[0], mask[0], one
