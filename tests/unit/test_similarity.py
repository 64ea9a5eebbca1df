"""Linear CKA estimators: properties, naive n x n reference, published implementation, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlens.cka.statistic import (
    CkaAccumulator,
    cka_from_hsic,
    cka_matrix,
    hsic_from_stats,
    linear_cka,
    resolve_device,
)

ckatorch = pytest.importorskip("ckatorch")  # the published implementation (test-only dependency)


def naive_hsic(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """HSIC from the n x n Gram matrices (the textbook formulas), float64."""
    n = len(x)
    k, ll = x @ x.T, y @ y.T
    if not debiased:
        hkh = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()  # H K H
        return float(np.sum(hkh * ll)) / (n - 1) ** 2  # tr(KHLH)
    k, ll = k - np.diag(np.diag(k)), ll - np.diag(np.diag(ll))
    one = np.ones(n)
    terms = np.sum(k * ll) + (one @ k @ one) * (one @ ll @ one) / ((n - 1) * (n - 2))
    terms -= 2.0 / (n - 2) * ((k @ one) @ (ll @ one))
    return float(terms) / (n * (n - 3))


def naive_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    xy, xx, yy = (naive_hsic(a, b, debiased) for a, b in ((x, y), (x, x), (y, y)))
    return xy / np.sqrt(xx * yy)


def related(rng, n=400, p=12, q=20, offset=3.0):
    """x (n, p) and a noisy nonlinear function of it y (n, q), both with large mean offsets."""
    x = rng.standard_normal((n, p)) * rng.uniform(0.5, 3, p) + offset
    y = np.tanh(x @ rng.standard_normal((p, q)) / 3) + 0.5 * rng.standard_normal((n, q)) - offset
    return x, y


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("debiased", [False, True])
def test_identity_symmetry_and_invariances(rng, debiased):
    x, y = related(rng)
    cka = lambda a, b: linear_cka(a, b, debiased=debiased)  # noqa: E731
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)
    value = cka(x, y)
    assert 0.05 < value < 0.95
    assert cka(y, x) == pytest.approx(value, abs=1e-12)
    q_x = np.linalg.qr(rng.standard_normal((x.shape[1], x.shape[1])))[0]
    q_y = np.linalg.qr(rng.standard_normal((y.shape[1], y.shape[1])))[0]
    assert cka(x @ q_x, y) == pytest.approx(value, abs=1e-10)
    assert cka(x, y @ q_y) == pytest.approx(value, abs=1e-10)
    assert cka(7.5 * x, 0.01 * y) == pytest.approx(value, abs=1e-10)
    assert cka(x + 100.0, y - 3.0) == pytest.approx(value, abs=1e-9)  # centring
    generic = rng.standard_normal((x.shape[1], x.shape[1])) * rng.uniform(0.1, 10, x.shape[1])
    assert np.linalg.cond(generic) < 1e6  # invertible
    assert abs(cka(x @ generic, y) - value) > 0.01


def test_debiased_is_near_zero_for_independent_data_where_biased_is_not(rng):
    x, y = rng.standard_normal((2000, 32)), rng.standard_normal((2000, 48))
    assert abs(linear_cka(x, y, debiased=True)) < 0.02
    small_x, small_y = x[:50], y[:50]
    assert linear_cka(small_x, small_y, debiased=False) > 0.4
    assert abs(linear_cka(small_x, small_y, debiased=True)) < 0.15


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(9, 3, 5), (60, 25, 7), (200, 4, 40)])
def test_equals_naive_gram_implementation(rng, debiased, shape):
    n, p, q = shape
    x, y = related(rng, n, p, q)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(naive_cka(x, y, debiased), abs=1e-8)
    acc = CkaAccumulator([p], [q])
    acc.update([x], [y])
    hsic_ab, hsic_a, hsic_b = acc.hsic(debiased=debiased)
    assert hsic_ab[0, 0] == pytest.approx(naive_hsic(x, y, debiased), rel=1e-8)
    assert hsic_a[0] == pytest.approx(naive_hsic(x, x, debiased), rel=1e-8)
    assert hsic_b[0] == pytest.approx(naive_hsic(y, y, debiased), rel=1e-8)


@pytest.mark.parametrize("debiased", [False, True])
def test_agrees_with_published_ckatorch(rng, debiased):
    """ckatorch.cka_base: Kornblith et al.'s Gram-matrix CKA (unbiased centring when asked)."""
    for n, p, q in ((50, 8, 30), (500, 64, 16)):
        x, y = related(rng, n, p, q)
        theirs = float(
            ckatorch.cka_base(torch.from_numpy(x), torch.from_numpy(y), unbiased=debiased)
        )
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(theirs, abs=1e-10)


def test_debiased_hsic_agrees_with_published_hsic1(rng):
    """ckatorch.hsic1 (the unbiased HSIC of Nguyen et al.) on one minibatch, value for value."""
    x, y = related(rng, 300, 10, 14)
    gx, gy = (torch.from_numpy(a @ a.T)[None] for a in (x, y))
    acc = CkaAccumulator([10], [14])
    acc.update([x], [y])
    hsic_ab, hsic_a, hsic_b = acc.hsic(debiased=True)
    assert hsic_ab[0, 0] == pytest.approx(float(ckatorch.hsic1(gx, gy)[0]), rel=1e-9)
    assert hsic_a[0] == pytest.approx(float(ckatorch.hsic1(gx, gx)[0]), rel=1e-9)
    assert hsic_b[0] == pytest.approx(float(ckatorch.hsic1(gy, gy)[0]), rel=1e-9)


def shifting_stream(rng, n=400):
    """Three layers whose statistics drift along the stream (so a partial stream is wrong)."""
    x, y = related(rng, n, 12, 20)
    drift = np.linspace(0, 4, n)[:, None]
    z = np.concatenate([x[:, :6] * (1 + drift), y[:, :5] ** 2], axis=1)
    return [x + drift, y, z]


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_full_data(rng, debiased):
    layers = shifting_stream(rng)
    full = np.array([[naive_cka(a, b, debiased) for b in layers] for a in layers])
    bounds = [0, 1, 8, 150, 163, 300, 399, 400]  # uneven minibatches, one of a single row
    for dtype, tol in (("float64", 1e-10), ("float32", 2e-5)):
        acc = CkaAccumulator([x.shape[1] for x in layers], compute_dtype=dtype)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            acc.update([x[lo:hi] for x in layers])
        assert acc.n == 400
        np.testing.assert_allclose(acc.result(debiased=debiased), full, atol=tol)
    last = CkaAccumulator([x.shape[1] for x in layers])  # the known library bug: last batch only
    last.update([x[300:] for x in layers])
    assert np.abs(last.result(debiased=debiased) - full).max() > 0.05


@pytest.mark.parametrize("debiased", [False, True])
def test_all_pairs_matrix_within_and_across(rng, debiased):
    layers = shifting_stream(rng)
    within = cka_matrix(layers, debiased=debiased, batch_frames=128)
    assert within.shape == (3, 3)
    np.testing.assert_allclose(within, within.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-12)
    across = cka_matrix(layers[:2], layers, debiased=debiased, batch_frames=100)
    assert across.shape == (2, 3)
    np.testing.assert_allclose(across, within[:2], atol=1e-10)
    assert across[1, 0] == pytest.approx(linear_cka(layers[1], layers[0], debiased=debiased))


@pytest.mark.parametrize("within", [True, False])
def test_rows_split_into_passes_give_the_same_matrix(rng, within):
    layers = shifting_stream(rng)
    dims = [x.shape[1] for x in layers]
    ys = None if within else layers[::-1]
    dims_b = None if within else dims[::-1]
    full = CkaAccumulator(dims, dims_b)
    full.update(layers, ys)
    expected = full.hsic(debiased=True)
    got = [np.full_like(e, np.nan) for e in expected]
    for i, rows in enumerate([[0], [1, 2]]):
        part = CkaAccumulator(dims, dims_b, rows=rows, b_self=i == 0)
        assert part.nbytes < full.nbytes
        xs = [x if j in part.needed_a else None for j, x in enumerate(layers)]
        ys_part = None if within else [y if j in part.needed_b else None for j, y in enumerate(ys)]
        part.update(xs, ys_part)
        for g, p in zip(got, part.hsic(debiased=True), strict=True):
            np.copyto(g, p, where=~np.isnan(p))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12)
    np.testing.assert_allclose(cka_from_hsic(*got), full.result(debiased=True), atol=1e-12)


def test_errors_and_device():
    with pytest.raises(ValueError, match="at least 4 samples"):
        z = torch.zeros(2, dtype=torch.float64)
        hsic_from_stats(
            3, torch.zeros(2, 2, dtype=torch.float64), z, z, 0, 0, z, z, 0, debiased=True
        )
    acc = CkaAccumulator([3, 4])
    with pytest.raises(ValueError, match="shape"):
        acc.update([np.zeros((5, 3)), np.zeros((6, 4))])
    with pytest.raises(ValueError, match="no samples"):
        acc.result(debiased=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_equals_cpu(rng):
    layers = shifting_stream(rng)
    for dtype in ("float64", "float32"):
        cpu = cka_matrix(layers, debiased=True, device="cpu", compute_dtype=dtype)
        gpu = cka_matrix(layers, debiased=True, device="cuda", compute_dtype=dtype)
        np.testing.assert_allclose(gpu, cpu, atol=1e-5)
