"""Per-head statistics of self-attention maps, streamed over a corpus, and head types.

Source: the three head categories (diagonal, vertical, global) of Gopinath & Rodriguez
(2024, arXiv 2409.03115) come from Yang, Liu & Lee (2020), "Understanding Self-Attention
of Self-Supervised Audio Transformers" (arXiv 2006.03265, sect. 4; demo repository
``leo19941227/Self-Attention-on-SATs``). Their metrics of a head ``h`` over a corpus ``U``
of utterances of ``T`` frames, ``A`` the utterance's ``(query, key)`` map, ``H`` entropy:

- globalness ``G(h) = E_u[ 1/T sum_q H(A[q]) ]`` (eq. 1);
- verticality ``V(h) = E_u[ -H( 1/T sum_q A[q] ) ]`` (eq. 2);
- diagonality ``D(h) = E_u[ -1/T^2 sum_q sum_k |q - k| A[q, k] ]`` (eq. 3);

and a head's type is the metric in whose ranking (over all heads of the model) it ranks
highest. Both are here: columns ``yang_global``, ``yang_vertical``, ``yang_diagonal`` and
``classification: yang2020``.

**Time, not frames.** Every metric is computed on the time axis, so the same attention
pattern gets the same values at 50 Hz (20 ms frames) and at 100 Hz (10 ms frames): frame
``i`` stands for the span ``[t_i - P/2, t_i + P/2)`` of one frame period ``P`` (ms), and a
map at 100 Hz that repeats each 50 Hz query and halves each key's mass over its two 10 ms
frames is the same pattern. Hence two named deviations from eqs. 1-3, neither of which
changes a ranking within one model (all its heads share ``P``): the entropies of ``G`` and
``V`` are differential entropies on the time axis (the discrete entropy plus ``ln(P / 1
s)``: nats relative to one second; ``exp(G)`` is an effective attention width in seconds);
the distance ``|q - k|`` is the mean time between a point of the query frame's span and a
point of the key frame's span (``|q - k| P`` for distinct frames, ``P / 3`` within one
frame), divided by the utterance's duration ``T P`` (eq. 3's ``1/T^2``).

**The default types (``classification: threshold``) are a deviation, named so.** Yang et
al.'s rule is relative: it labels some heads of every model diagonal, even a randomly
initialised model's, so type counts could not be compared across models (English vs
Turkish TERA). speechlens's rule is absolute, with ``A`` renormalised over valid keys, ``w``
= ``diagonal_ms``, ``f`` = ``vertical_fraction``:

- ``diagonality``: mass within ``w`` ms of the query, ``sum_k A[q, k] o(q, k)`` with
  ``o`` the fraction of key frame ``k``'s span inside ``[t_q - w, t_q + w]``, averaged
  over queries: 1 for a band narrower than ``w``, about ``2 w / duration`` for uniform
  attention;
- ``verticality``: mass on a few key columns shared across queries: the query-averaged
  map ``c[k] = mean_q A[q, k]`` (sums to 1), summed over its largest entries covering the
  fraction ``f`` of the utterance's duration (the ``m = f n`` largest, the last one
  fractionally: :func:`top_mass`), per utterance: 1 when every query attends to the same
  keys, spanning at most ``f`` of the utterance; ``f`` for uniform attention and about
  ``f`` for a diagonal band;
- type ``diagonal`` if diagonality >= ``thresholds.diagonal``; else ``vertical`` if
  verticality >= ``thresholds.vertical``; else ``global``.

Also reported: ``entropy`` (``mean_q H(A[q])`` in nats of this model's frames, eq. 1's
inner term), ``entropy_norm`` (``mean_q H(A[q]) / ln n``, ``n`` the valid keys: 1 for
uniform attention, 0 for one-hot rows; both entropy columns depend on the frame rate by
nature, about ``ln 2`` more at 100 Hz), ``distance_ms`` (the span distance above, in ms)
and ``padding_mass``.

Input maps are one utterance's attention weights ``(layer, head, query, key)`` (as returned
by ``adapter.forward(..., output_attentions=True)``; entry ``[l - 1]`` is block ``l``).
Only real frames count: queries and keys past ``n_valid`` are cropped, and each query's row
is renormalised over the remaining keys. The mass a row loses that way (attention paid to
padding: Whisper ``pad30`` maps arrive cropped with rows summing to less than 1) is
``padding_mass``. Rows with (almost) no mass on valid keys (sum <= :data:`EMPTY_ROW`) are
left out of every metric except ``padding_mass``. Corpus values of the threshold metrics,
``entropy``, ``entropy_norm`` and ``distance_ms`` weigh every valid query equally
(verticality, an utterance-level quantity, weighs each utterance by its queries); the
``yang_*`` metrics weigh every utterance equally (``E_u``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import entr
from scipy.stats import rankdata

TYPES = ("diagonal", "vertical", "global")
QUERY_METRICS = ("diagonality", "verticality", "entropy", "entropy_norm", "distance_ms")
YANG_METRICS = ("yang_global", "yang_vertical", "yang_diagonal")
METRICS = (*QUERY_METRICS, *YANG_METRICS, "padding_mass")
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


def band_overlap(d: np.ndarray, half_width: float) -> np.ndarray:
    """Fraction of the span of a key frame ``d`` frames from the query (spans of one frame)
    inside the band ``[-half_width, +half_width]`` frames around the query's centre."""
    d = np.asarray(d, dtype=np.float64)
    return np.clip(np.minimum(d + 0.5, half_width) - np.maximum(d - 0.5, -half_width), 0.0, 1.0)


def top_mass(column: np.ndarray, m: float) -> np.ndarray:
    """Sum of the ``m`` largest entries of each row of ``column`` ``(..., key)``, ``m`` real:
    the ``floor(m)`` largest, plus the next one times ``m - floor(m)``."""
    ranked = -np.sort(-column, axis=-1)
    whole = min(int(math.floor(m)), ranked.shape[-1])
    out = ranked[..., :whole].sum(axis=-1)
    if whole < ranked.shape[-1]:
        out = out + ranked[..., whole] * (m - math.floor(m))
    return out


def span_distance(n: int) -> np.ndarray:
    """``(n, n)`` mean distance, in frames, between a point of query frame ``q``'s span and a
    point of key frame ``k``'s span (uniform): ``|q - k|``, or ``1/3`` on the diagonal."""
    i = np.arange(n)
    dist = np.abs(i[:, None] - i[None, :]).astype(np.float64)
    dist[i, i] = 1.0 / 3.0
    return dist


def utterance_metrics(
    attn: np.ndarray,
    *,
    diagonal_ms: float,
    vertical_fraction: float,
    frame_ms: float,
    n_valid: int | None = None,
) -> dict[str, np.ndarray]:
    """Sums over one utterance's valid queries, per head, of each metric.

    ``attn``: ``(head, query, key)`` (one layer); ``frame_ms``: the frame period. Returns
    arrays of shape ``(head,)``: ``queries`` (rows with a distribution), ``all_queries``
    (valid query rows), ``utterances`` (1 where a row had a distribution), sums over the
    counted queries of ``diagonality``, ``entropy``, ``entropy_norm``, ``distance_ms``,
    ``padding_mass`` over all valid queries, ``verticality`` (the utterance's value) times
    ``queries``, and the utterance's ``yang_*`` values (0 where no query counted). Divide
    by the counts for means (see :class:`HeadStats`).
    """
    a, mass = renormalise(attn, n_valid)
    heads, n = a.shape[0], a.shape[-1]
    ok = mass > EMPTY_ROW  # (head, query)
    count = ok.sum(axis=-1).astype(np.float64)
    seen = count > 0
    if n == 0:
        zero = np.zeros(heads)
        keys = ("queries", "all_queries", "utterances", *METRICS)
        return {k: zero.copy() for k in keys}
    idx = np.arange(n)
    band = band_overlap(idx[:, None] - idx[None, :], float(diagonal_ms) / float(frame_ms))
    dist = span_distance(n)
    diag = (a * band).sum(axis=-1)
    ent = entr(a).sum(axis=-1)  # (head, query), 0 for empty rows
    ent_norm = ent / math.log(n) if n > 1 else np.zeros_like(ent)
    distance = (a * dist).sum(axis=-1)  # frames
    column = a.sum(axis=-2) / np.maximum(count, 1.0)[:, None]  # (head, key), rows sum to 1
    vert = top_mass(column, vertical_fraction * n)
    log_period = math.log(float(frame_ms) / 1000.0)  # ln(P / 1 s)
    safe = np.maximum(count, 1.0)
    yang_g = ent.sum(axis=-1) / safe + log_period
    yang_v = -(entr(column).sum(axis=-1) + log_period)
    yang_d = -(distance.sum(axis=-1) / safe) / n
    return {
        "queries": count,
        "all_queries": np.full(heads, float(n)),
        "utterances": seen.astype(np.float64),
        "diagonality": diag.sum(axis=-1),
        "entropy": ent.sum(axis=-1),
        "entropy_norm": ent_norm.sum(axis=-1),
        "distance_ms": distance.sum(axis=-1) * float(frame_ms),
        "padding_mass": (1.0 - np.minimum(mass, 1.0)).sum(axis=-1),
        "verticality": vert * count,
        "yang_global": np.where(seen, yang_g, 0.0),
        "yang_vertical": np.where(seen, yang_v, 0.0),
        "yang_diagonal": np.where(seen, yang_d, 0.0),
    }


class HeadStats:
    """Streaming per-(layer, head) metrics over a corpus (see the module docstring).

    Holds only ``(layer, head)`` float64 sums: feed one utterance's maps at a time with
    :meth:`update`, read the table with :meth:`table`.

    Args:
        num_blocks: attention blocks (the adapter's ``num_layers - 1``).
        num_heads: heads per block.
        diagonal_ms: ``w`` of diagonality (ms).
        vertical_fraction: ``f`` of verticality.
        frame_rate_hz: the model's frame rate (frames are spans of ``1000 / rate`` ms).
    """

    def __init__(
        self,
        num_blocks: int,
        num_heads: int,
        *,
        diagonal_ms: float,
        vertical_fraction: float,
        frame_rate_hz: float,
    ):
        self.shape = (int(num_blocks), int(num_heads))
        self.diagonal_ms = float(diagonal_ms)
        self.vertical_fraction = float(vertical_fraction)
        self.frame_ms = 1000.0 / float(frame_rate_hz)
        keys = ("queries", "all_queries", "utterances", *METRICS)
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
                diagonal_ms=self.diagonal_ms,
                vertical_fraction=self.vertical_fraction,
                frame_ms=self.frame_ms,
                n_valid=n_valid,
            )
            for key, value in sums.items():
                self.sums[key][layer] += value
        self.utterances += 1

    def means(self) -> dict[str, np.ndarray]:
        """Corpus means ``(layer, head)`` of every metric (NaN where no query was seen)."""
        q, all_q, utt = self.sums["queries"], self.sums["all_queries"], self.sums["utterances"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {k: self.sums[k] / q for k in QUERY_METRICS}
            out |= {k: np.where(utt > 0, self.sums[k] / utt, np.nan) for k in YANG_METRICS}
            out["padding_mass"] = self.sums["padding_mass"] / all_q
        return out

    def table(self, thresholds: dict, classification: str = "threshold") -> pd.DataFrame:
        """Tidy table: ``layer`` (block, 1-based), ``head``, ``type``, ``classification``,
        the metrics, ``queries``."""
        means = self.means()
        layer, head = np.meshgrid(
            np.arange(1, self.shape[0] + 1), np.arange(self.shape[1]), indexing="ij"
        )
        frame = pd.DataFrame(
            {"layer": layer.ravel(), "head": head.ravel()}
            | {k: means[k].ravel() for k in METRICS}
            | {"queries": self.sums["queries"].ravel().astype(np.int64)}
        )
        if classification == "threshold":
            types = classify(frame["diagonality"], frame["verticality"], thresholds)
        elif classification == "yang2020":
            types = classify_yang(
                frame["yang_global"], frame["yang_vertical"], frame["yang_diagonal"]
            )
        else:
            raise ValueError(f"classification {classification!r}: use threshold or yang2020")
        frame.insert(2, "type", types)
        frame.insert(3, "classification", classification)
        return frame


def classify(diagonality, verticality, thresholds: dict) -> np.ndarray:
    """Threshold types (see the module docstring) for arrays of diagonality and verticality."""
    d = np.asarray(diagonality, dtype=np.float64)
    v = np.asarray(verticality, dtype=np.float64)
    out = np.full(d.shape, "global", dtype=object)
    out[v >= thresholds["vertical"]] = "vertical"
    out[d >= thresholds["diagonal"]] = "diagonal"
    return out.astype(str)


def classify_yang(globalness, verticality, diagonality) -> np.ndarray:
    """Yang et al. (2020) types: rank all heads by each of G, V, D (rank 1 = largest;
    ties share the best rank, NaN ranks last); a head's type is the metric where its rank
    is best. Equal ranks go to diagonal, then vertical, then global (the paper is silent)."""
    columns = {
        "diagonal": np.asarray(diagonality, dtype=np.float64),
        "vertical": np.asarray(verticality, dtype=np.float64),
        "global": np.asarray(globalness, dtype=np.float64),
    }
    ranks = np.stack(
        [rankdata(np.where(np.isnan(c), np.inf, -c), method="min") for c in columns.values()]
    )  # (type, head); argmin takes the first of equal ranks: diagonal, vertical, global
    return np.asarray(list(columns))[np.argmin(ranks, axis=0)].astype(str)
