"""Linear CKA between layers: biased and debiased estimators, streamed over minibatches.

Notation: ``x`` is an ``(n, p)`` matrix of ``n`` samples (frames) by ``p`` features, ``y`` is
``(n, q)`` on the same samples; ``K = x x^T`` and ``L = y y^T`` are their linear-kernel Gram
matrices (never formed here: memory is O(p q), not O(n^2)).

- **Biased** linear CKA (Kornblith et al. 2019) on centred features,
  ``||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F)``, i.e. HSIC with the V-statistic
  ``tr(K H L H) / (n - 1)^2``.
- **Debiased** CKA uses the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021)
  ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))`` with ``K~ = K -
  diag(K)``. Every term reduces to feature-space sums: ``tr(K~L~) = ||x^T y||^2 - sum a_i b_i``,
  ``1'K~1 = ||s_x||^2 - sum a_i`` and ``1'K~L~1 = s_x^T x^T y s_y - s_x^T h_x - s_y^T h_y +
  sum a_i b_i``, where ``a_i = ||x_i||^2``, ``b_i = ||y_i||^2``, ``s_x = sum x_i``,
  ``h_x = sum b_i x_i`` and ``h_y = sum a_i y_i``. Biased CKA of independent data is far from 0
  at small ``n``; the debiased one is ~0.

:class:`CkaAccumulator` adds these sums over minibatches (``update``), so the statistic of a
stream equals the full-data value exactly (up to rounding), whatever the batch sizes: no
batch is dropped or overwritten. Products run in torch (``compute_dtype``, on GPU when asked)
and are accumulated in float64. Both estimators are invariant to a per-feature shift of the
data, so the accumulator subtracts the first batch's mean from every batch, which keeps the
float32 products well conditioned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ESTIMATORS = ("debiased", "biased")


def resolve_device(device: str | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hsic_from_stats(
    n: int,
    g: torch.Tensor,
    s_x: torch.Tensor,
    s_y: torch.Tensor,
    sum_a: float,
    sum_b: float,
    h_x: torch.Tensor,
    h_y: torch.Tensor,
    t: float,
    *,
    debiased: bool,
) -> float:
    """HSIC of two linear kernels from feature-space sums over ``n`` samples (float64).

    ``g = sum x_i y_i^T`` (p, q); ``s_x = sum x_i`` (p,), ``s_y`` (q,); ``sum_a = sum ||x_i||^2``,
    ``sum_b = sum ||y_i||^2``; ``h_x = sum ||y_i||^2 x_i`` (p,), ``h_y = sum ||x_i||^2 y_i`` (q,);
    ``t = sum ||x_i||^2 ||y_i||^2``. Biased: ``tr(KHLH) / (n-1)^2``; debiased: the unbiased
    estimator of the module docstring (needs ``n >= 4``).
    """
    if not debiased:
        centred = g - torch.outer(s_x, s_y) / n
        return float(centred.square().sum()) / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {n}")
    tr_kl = float(g.square().sum()) - t
    sum_k = float(s_x @ s_x) - sum_a
    sum_l = float(s_y @ s_y) - sum_b
    kl1 = float(s_x @ g @ s_y) - float(s_x @ h_x) - float(s_y @ h_y) + t
    return (tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def cka_from_hsic(hsic_ab: np.ndarray, hsic_a: np.ndarray, hsic_b: np.ndarray) -> np.ndarray:
    """CKA matrix ``hsic_ab[i, j] / sqrt(hsic_a[i] hsic_b[j])``; shapes (La, Lb), (La,), (Lb,).

    A non-positive self-HSIC (possible for the debiased estimator on degenerate data) gives NaN.
    """
    norm = np.sqrt(np.outer(hsic_a, hsic_b).clip(min=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, np.asarray(hsic_ab) / norm, np.nan)


class CkaAccumulator:
    """Streaming sums for linear CKA between every layer of A and every layer of B.

    ``dims_a`` are the feature sizes of model A's layers; ``dims_b`` those of model B, or None
    to compare A's layers with each other (the symmetric within-model matrix). ``rows``
    restricts the accumulated pairs to A-layers in ``rows`` (all by default): memory is
    ``8 * sum_{pairs} d_u d_v`` bytes for the pair blocks, so a caller can split a large
    all-pairs matrix into passes of rows; per-layer sums cost only O(L d + L^2).
    ``b_self=False`` skips B's self-pairs (needed once for the normalisation).

    ``update(xs, ys)`` takes one minibatch: ``xs[l]`` of shape (n_batch, dims_a[l]) for A's
    layers (entries of layers not needed by ``rows`` may be None, see :attr:`needed_a`), and
    ``ys`` likewise for B (omit it within a model). Rows of all arrays are the same samples.
    """

    def __init__(
        self,
        dims_a: Sequence[int],
        dims_b: Sequence[int] | None = None,
        *,
        rows: Sequence[int] | None = None,
        b_self: bool = True,
        device: str | torch.device = "cpu",
        compute_dtype: str | torch.dtype = "float64",
    ):
        self.within = dims_b is None
        self.dims_a = [int(d) for d in dims_a]
        self.dims_b = self.dims_a if self.within else [int(d) for d in dims_b]
        self.num_a, self.num_b = len(self.dims_a), len(self.dims_b)
        self.rows = sorted(range(self.num_a) if rows is None else {int(r) for r in rows})
        self.device = resolve_device(device)
        self.dtype = (
            getattr(torch, compute_dtype) if isinstance(compute_dtype, str) else compute_dtype
        )
        self.runs = self._plan_runs(b_self)
        self.active = sorted(
            {u for u, lo, hi in self.runs} | {v for _, lo, hi in self.runs for v in range(lo, hi)}
        )
        dims = [self._dim(v) for v in self.active]
        self.offsets = dict(
            zip(self.active, np.concatenate([[0], np.cumsum(dims)]).tolist(), strict=False)
        )
        self.width = int(sum(dims))
        f64 = {"dtype": torch.float64, "device": self.device}
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.s = torch.zeros(self.width, **f64)
        self.sum_a = torch.zeros(len(self.active), **f64)
        self.t = torch.zeros(len(self.active), len(self.active), **f64)
        self.h = torch.zeros(self.width, len(self.active), **f64)
        self.g = [torch.zeros(self._dim(u), self._span(lo, hi), **f64) for u, lo, hi in self.runs]

    # -- layout ---------------------------------------------------------------------------
    def _dim(self, view: int) -> int:
        return self.dims_a[view] if view < self.num_a else self.dims_b[view - self.num_a]

    def _plan_runs(self, b_self: bool) -> list[tuple[int, int, int]]:
        """Pair blocks as (u, v_lo, v_hi): view u against the contiguous views v_lo..v_hi-1.

        Views are A's layers 0..La-1, then (across models) B's layers La..La+Lb-1.
        """
        if self.within:
            return [(u, u, self.num_a) for u in self.rows]
        a, b = self.num_a, self.num_b
        runs = [(u, u, u + 1) for u in self.rows] + [(u, a, a + b) for u in self.rows]
        if b_self:
            runs += [(a + j, a + j, a + j + 1) for j in range(b)]
        return runs

    def _span(self, lo: int, hi: int) -> int:
        return sum(self._dim(v) for v in range(lo, hi))

    def _cols(self, view: int) -> slice:
        start = self.offsets[view]
        return slice(start, start + self._dim(view))

    @property
    def needed_a(self) -> list[int]:
        """A-layers whose data :meth:`update` needs."""
        return [v for v in self.active if v < self.num_a]

    @property
    def needed_b(self) -> list[int]:
        """B-layers whose data :meth:`update` needs (empty within a model)."""
        return [] if self.within else [v - self.num_a for v in self.active if v >= self.num_a]

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulated sums (float64)."""
        return 8 * (sum(g.numel() for g in self.g) + self.h.numel() + self.t.numel() + self.width)

    # -- accumulation ---------------------------------------------------------------------
    def update(self, xs: Sequence, ys: Sequence | None = None) -> None:
        """Add one minibatch of samples (arrays or tensors, any float dtype; see class doc)."""
        views = list(xs) if self.within else list(xs) + list(ys)
        parts = [torch.as_tensor(views[v]) for v in self.active]
        n = parts[0].shape[0]
        for v, part in zip(self.active, parts, strict=True):
            if part.shape != (n, self._dim(v)):
                raise ValueError(
                    f"view {v}: shape {tuple(part.shape)}, expected ({n}, {self._dim(v)})"
                )
        if n == 0:
            return
        x = torch.cat([p.to(self.device, self.dtype) for p in parts], dim=1)
        if self.shift is None:
            self.shift = x.mean(dim=0, dtype=torch.float64).to(self.dtype)
        x -= self.shift
        norms = torch.stack(
            [x[:, self._cols(v)].to(torch.float64).square().sum(dim=1) for v in self.active], dim=1
        )
        self.n += n
        self.s += x.sum(dim=0).to(torch.float64)
        self.sum_a += norms.sum(dim=0)
        self.t += norms.T @ norms
        self.h += (x.T @ norms.to(self.dtype)).to(torch.float64)
        for g, (u, lo, hi) in zip(self.g, self.runs, strict=True):
            end = self.offsets[hi - 1] + self._dim(hi - 1)
            g += x[:, self._cols(u)].T @ x[:, self.offsets[lo] : end]

    # -- results --------------------------------------------------------------------------
    def _pair_hsic(self, u: int, v: int, g: torch.Tensor, debiased: bool) -> float:
        iu, iv = self.active.index(u), self.active.index(v)
        cu, cv = self._cols(u), self._cols(v)
        return hsic_from_stats(
            self.n,
            g,
            self.s[cu],
            self.s[cv],
            float(self.sum_a[iu]),
            float(self.sum_a[iv]),
            self.h[cu, iv],
            self.h[cv, iu],
            float(self.t[iu, iv]),
            debiased=debiased,
        )

    def hsic(self, *, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """HSIC estimates (hsic_ab (La, Lb), hsic_a (La,), hsic_b (Lb,)); NaN where not summed.

        Within a model ``hsic_ab`` is the symmetric (La, La) matrix and ``hsic_b == hsic_a``.
        """
        ab = np.full((self.num_a, self.num_b), np.nan)
        self_a, self_b = np.full(self.num_a, np.nan), np.full(self.num_b, np.nan)
        for g, (u, lo, hi) in zip(self.g, self.runs, strict=True):
            col = 0
            for v in range(lo, hi):
                value = self._pair_hsic(u, v, g[:, col : col + self._dim(v)], debiased)
                col += self._dim(v)
                if self.within:
                    ab[u, v] = ab[v, u] = value
                    if u == v:
                        self_a[u] = self_b[u] = value
                elif u == v and u < self.num_a:
                    self_a[u] = value
                elif u == v:
                    self_b[u - self.num_a] = value
                else:
                    ab[u, v - self.num_a] = value
        return ab, self_a, self_b

    def result(self, *, debiased: bool) -> np.ndarray:
        """CKA matrix (La, Lb) from everything accumulated (float64)."""
        if self.n == 0:
            raise ValueError("no samples accumulated")
        return cka_from_hsic(*self.hsic(debiased=debiased))


def cka_matrix(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray] | None = None,
    *,
    debiased: bool = False,
    batch_frames: int = 4096,
    device: str = "cpu",
    compute_dtype: str = "float64",
) -> np.ndarray:
    """CKA between every layer of A and every layer of B (or of A, when ``layers_b`` is None).

    ``layers_a[l]`` has shape (n, d_l), rows are the same samples for all layers; the rows are
    streamed through a :class:`CkaAccumulator` in batches of ``batch_frames``. Returns (La, Lb).
    """
    dims_b = None if layers_b is None else [x.shape[1] for x in layers_b]
    acc = CkaAccumulator(
        [x.shape[1] for x in layers_a], dims_b, device=device, compute_dtype=compute_dtype
    )
    n = len(layers_a[0])
    for lo in range(0, n, batch_frames):
        hi = min(n, lo + batch_frames)
        ys = None if layers_b is None else [y[lo:hi] for y in layers_b]
        acc.update([x[lo:hi] for x in layers_a], ys)
    return acc.result(debiased=debiased)


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA of ``x`` (n, p) and ``y`` (n, q), computed in float64 on the CPU."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples, y has {y.shape[0]}")
    return float(cka_matrix([x], [y], debiased=debiased, batch_frames=max(1, len(x)))[0, 0])
