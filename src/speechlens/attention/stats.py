"""Per-head statistics of self-attention maps, streamed over a corpus, and head types.

Input maps are one utterance's attention weights ``(layer, head, query, key)`` (as
returned by ``adapter.forward(..., output_attentions=True)``; entry ``[l - 1]`` is block
``l``). Only real frames count: queries and keys past ``n_valid`` are cropped, and each
query's row is renormalised over the remaining (valid) keys. The mass a row loses that way
(attention paid to padding: Whisper ``pad30`` maps arrive cropped with rows summing to
less than 1) is recorded as ``padding_mass``. Rows with (almost) no mass on valid keys
(sum <= :data:`EMPTY_ROW`) carry no distribution and are left out of every metric except
``padding_mass``.

Metrics of head ``h`` (``A`` the renormalised map, ``n`` valid frames, ``k`` =
``diagonal_frames``, ``f`` = ``vertical_fraction``):

- ``diagonality``: mass within ``k`` frames of the query, ``sum_{|j - q| <= k} A[q, j]``,
  averaged over queries. 1 for a band of width ``2 k + 1``; ``(2 k + 1) / n`` (about) for
  uniform attention.
- ``verticality``: mass concentrated on a few key columns *shared across queries*: the
  query-averaged map ``c[j] = mean_q A[q, j]`` (sums to 1) is the attention each key
  receives; verticality is the sum of its ``m = ceil(f n)`` largest entries, computed per
  utterance. 1 when every query attends to the same ``<= m`` keys; about ``f`` for uniform
  attention and for a diagonal band (each key is attended by about as many queries); low
  too when each query attends to a different single key.
- ``entropy``: ``-sum_j A[q, j] ln A[q, j]`` in nats, averaged over queries (``ln n`` for
  uniform attention, 0 for one-hot rows).
- ``distance_ms``: mean attention distance ``sum_j A[q, j] |j - q|`` in frames, times the
  frame period (``1000 / frame_rate_hz`` ms), averaged over queries.
- ``padding_mass``: ``1 - sum_j A_raw[q, j]`` over valid keys, averaged over valid queries
  (0 when maps need no renormalisation).

Corpus values weigh every valid query of every utterance equally (verticality, an
utterance-level quantity, weighs each utterance by its number of valid queries).

Types (thresholds from the config): ``diagonal`` if diagonality >= ``thresholds.diagonal``;
else ``vertical`` if verticality >= ``thresholds.vertical``; else ``global`` (attention
spread over the utterance without a shared focus).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import entr

TYPES = ("diagonal", "vertical", "global")
METRICS = ("diagonality", "verticality", "entropy", "distance_ms", "padding_mass")
EMPTY_ROW = 1e-6  # rows with at most this much mass on valid keys carry no distribution


def renormalise(attn: np.ndarray, n_valid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``attn`` ``(..., query, key)`` to ``n_valid`` frames and renormalise rows.

    Returns ``(A, row_mass)``: ``A`` float64 with each row divided by its mass on the valid
    keys (rows with mass <= :data:`EMPTY_ROW` are all zero), and ``row_mass`` ``(...,
    query)`` that mass before renormalising (``1 - row_mass`` went to padding).
    """
    attn = np.asarray(attn)
    if n_valid is not None:
        attn = attn[..., :n_valid, :n_valid]
    if attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention maps must be square (query, key), got {attn.shape}")
    a = attn.astype(np.float64)
    mass = a.sum(axis=-1)
    ok = mass > EMPTY_ROW
    a /= np.where(ok, mass, 1.0)[..., None]
    a[~ok] = 0.0
    return a, mass


def utterance_metrics(
    attn: np.ndarray,
    *,
    diagonal_frames: int,
    vertical_fraction: float,
    frame_ms: float,
    n_valid: int | None = None,
) -> dict[str, np.ndarray]:
    """Sums over one utterance's valid queries, per head, of each metric.

    ``attn``: ``(head, query, key)`` (one layer). Returns arrays of shape ``(head,)``:
    ``queries`` (rows with a distribution), ``all_queries`` (valid query rows), sums of
    ``diagonality``, ``entropy``, ``distance_ms`` over the counted queries,
    ``padding_mass`` over all valid queries, and ``verticality`` (the utterance's value)
    times ``queries``. Divide by the counts for means (see :class:`HeadStats`).
    """
    a, mass = renormalise(attn, n_valid)
    n = a.shape[-1]
    ok = mass > EMPTY_ROW  # (head, query)
    count = ok.sum(axis=-1).astype(np.float64)
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])
    band = dist <= int(diagonal_frames)
    diag = (a * band).sum(axis=-1)
    ent = entr(a).sum(axis=-1)
    distance = (a * dist).sum(axis=-1) * frame_ms
    column = a.sum(axis=-2) / np.maximum(count, 1.0)[:, None]  # (head, key), rows sum to 1
    m = max(1, math.ceil(vertical_fraction * n)) if n else 1
    vert = np.sort(column, axis=-1)[:, n - m :].sum(axis=-1) if n else np.zeros(len(count))
    return {
        "queries": count,
        "all_queries": np.full(a.shape[0], float(n)),
        "diagonality": diag.sum(axis=-1),
        "entropy": ent.sum(axis=-1),
        "distance_ms": distance.sum(axis=-1),
        "padding_mass": (1.0 - np.minimum(mass, 1.0)).sum(axis=-1),
        "verticality": vert * count,
    }


class HeadStats:
    """Streaming per-(layer, head) metrics over a corpus (see the module docstring).

    Holds only ``(layer, head)`` float64 sums: feed one utterance's maps at a time with
    :meth:`update`, read the table with :meth:`table`.

    Args:
        num_blocks: attention blocks (the adapter's ``num_layers - 1``).
        num_heads: heads per block.
        diagonal_frames: ``k`` of diagonality (frames).
        vertical_fraction: ``f`` of verticality.
        frame_rate_hz: the model's frame rate (for ``distance_ms``).
    """

    def __init__(
        self,
        num_blocks: int,
        num_heads: int,
        *,
        diagonal_frames: int,
        vertical_fraction: float,
        frame_rate_hz: float,
    ):
        self.shape = (int(num_blocks), int(num_heads))
        self.diagonal_frames = int(diagonal_frames)
        self.vertical_fraction = float(vertical_fraction)
        self.frame_ms = 1000.0 / float(frame_rate_hz)
        keys = ("queries", "all_queries", *METRICS)
        self.sums = {k: np.zeros(self.shape) for k in keys}
        self.utterances = 0

    def update(self, attn: np.ndarray, n_valid: int | None = None) -> None:
        """Add one utterance's maps ``(layer, head, query, key)`` (cropped to ``n_valid``)."""
        attn = np.asarray(attn)
        if attn.shape[:2] != self.shape:
            raise ValueError(f"attention maps {attn.shape}: expected (layer, head) = {self.shape}")
        for layer in range(self.shape[0]):
            sums = utterance_metrics(
                attn[layer],
                diagonal_frames=self.diagonal_frames,
                vertical_fraction=self.vertical_fraction,
                frame_ms=self.frame_ms,
                n_valid=n_valid,
            )
            for key, value in sums.items():
                self.sums[key][layer] += value
        self.utterances += 1

    def means(self) -> dict[str, np.ndarray]:
        """Corpus means ``(layer, head)`` of every metric (NaN where no query was seen)."""
        q, all_q = self.sums["queries"], self.sums["all_queries"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {k: self.sums[k] / q for k in METRICS if k != "padding_mass"}
            out["padding_mass"] = self.sums["padding_mass"] / all_q
        return out

    def table(self, thresholds: dict) -> pd.DataFrame:
        """Tidy table: ``layer`` (block, 1-based), ``head``, ``type``, the metrics, ``queries``."""
        means = self.means()
        layer, head = np.meshgrid(
            np.arange(1, self.shape[0] + 1), np.arange(self.shape[1]), indexing="ij"
        )
        frame = pd.DataFrame(
            {"layer": layer.ravel(), "head": head.ravel()}
            | {k: means[k].ravel() for k in METRICS}
            | {"queries": self.sums["queries"].ravel().astype(np.int64)}
        )
        frame.insert(2, "type", classify(frame["diagonality"], frame["verticality"], thresholds))
        return frame


def classify(diagonality, verticality, thresholds: dict) -> np.ndarray:
    """Head types (see the module docstring) for arrays of diagonality and verticality."""
    d = np.asarray(diagonality, dtype=np.float64)
    v = np.asarray(verticality, dtype=np.float64)
    out = np.full(d.shape, "global", dtype=object)
    out[v >= thresholds["vertical"]] = "vertical"
    out[d >= thresholds["diagonal"]] = "diagonal"
    return out.astype(str)
