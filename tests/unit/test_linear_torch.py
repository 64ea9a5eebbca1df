"""The torch linear probe equals scikit-learn's StandardScaler + LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from speechlens.probes.linear_torch import TorchLogisticRegression, class_sample_weights


def toy(n=900, d=24, k=5, seed=0, spread=0.45):
    """Gaussian classes with unequal sizes and feature scales (standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    sizes = rng.multinomial(n, np.linspace(1, 3, k) / np.linspace(1, 3, k).sum())
    y = np.repeat(np.array([f"c{i}" for i in range(k)]), sizes)
    X = centres[np.repeat(np.arange(k), sizes)] + rng.normal(size=(n, d))
    X = (X * np.geomspace(0.01, 100, d) + 5).astype(np.float32)
    order = rng.permutation(n)
    return X[order], y[order]


def sklearn_probe(C=1.0, max_iter=100, tol=1e-4, class_weight=None):
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, max_iter=max_iter, tol=tol, class_weight=class_weight),
    )


def test_accuracy_equals_sklearn_within_001():
    X, y = toy()
    train, test = slice(0, 600), slice(600, None)
    ref = sklearn_probe().fit(X[train], y[train])
    ours = TorchLogisticRegression().fit(X[train], y[train])
    acc_ref = (ref.predict(X[test]) == y[test]).mean()
    acc = (ours.predict(X[test]) == y[test]).mean()
    assert 0.5 < acc_ref < 0.99  # a toy that is neither trivial nor hopeless
    assert abs(acc - acc_ref) <= 0.01
    assert ours.converged_ and 0 < ours.n_iter_ <= 100
    assert list(ours.classes_) == list(ref.classes_)
    proba = ours.predict_proba(X[test])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(proba, ref.predict_proba(X[test]), atol=2e-3)


@pytest.mark.parametrize("C", [0.01, 1.0])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_weights_approach_sklearns_solution(C, class_weight):
    X, y = toy(n=500, d=12, k=4, seed=1)
    X = X.astype(np.float64)  # scikit-learn solves in the input's precision
    ref = sklearn_probe(C, max_iter=5000, tol=1e-10, class_weight=class_weight).fit(X, y)
    clf = ref[-1]
    ours = TorchLogisticRegression(
        C=C, max_iter=5000, tol=1e-9, class_weight=class_weight, dtype="float64"
    ).fit(X, y)
    np.testing.assert_allclose(ours.mean_, ref[0].mean_, rtol=1e-6)
    np.testing.assert_allclose(ours.scale_, ref[0].scale_, rtol=1e-6)
    scale = np.abs(clf.coef_).max()
    np.testing.assert_allclose(ours.coef_, clf.coef_, atol=1e-4 * scale)
    np.testing.assert_allclose(ours.intercept_, clf.intercept_, atol=1e-4 * max(scale, 1))


def test_the_l2_strength_is_sklearns_not_another():
    """A penalty off by the sample count (a common slip) gives clearly different weights."""
    X, y = toy(n=400, d=10, k=3, seed=2)
    X = X.astype(np.float64)
    ours = TorchLogisticRegression(C=0.05, tol=1e-8, max_iter=2000, dtype="float64").fit(X, y)
    right = sklearn_probe(0.05, 5000, 1e-10).fit(X, y)[-1].coef_
    wrong = sklearn_probe(0.05 * len(y), 5000, 1e-10).fit(X, y)[-1].coef_
    assert np.abs(ours.coef_ - right).max() < 1e-3 * np.abs(right).max()
    assert np.abs(ours.coef_ - wrong).max() > 0.1 * np.abs(right).max()


def test_sample_weight_equals_repetition():
    X, y = toy(n=300, d=8, k=3, seed=3)
    X = X.astype(np.float64)
    w = np.where(np.arange(len(y)) % 3 == 0, 2.0, 1.0)
    kw = {"C": 0.5, "tol": 1e-9, "max_iter": 3000, "dtype": "float64"}
    ours = TorchLogisticRegression(**kw).fit(X, y, sample_weight=w)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    # standardisation uses unweighted statistics (as StandardScaler without weights):
    # compare in the standardised space with the same scaler
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000)
    xs = (X - ours.mean_) / ours.scale_
    ref.fit(xs[rep], y[rep])
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-3 * scale)


def test_class_weights_follow_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 1, 2, 2])
    classes = np.array(["a", "b", "c"])
    got = class_sample_weights(y, 3, "balanced", None, classes)
    want = compute_class_weight("balanced", classes=np.arange(3), y=y)[y]
    np.testing.assert_allclose(got, want)
    got = class_sample_weights(y, 3, {"b": 4.0}, np.full(6, 0.5), classes)
    np.testing.assert_allclose(got, [0.5, 0.5, 0.5, 2.0, 0.5, 0.5])


def test_non_convergence_is_reported():
    X, y = toy()
    ours = TorchLogisticRegression(max_iter=2).fit(X, y)
    assert not ours.converged_ and ours.n_iter_ == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_accuracy_equals_cpu_within_001():
    X, y = toy(n=3000, d=64, k=8, seed=4)
    train, test = slice(0, 2000), slice(2000, None)
    cpu = TorchLogisticRegression(device="cpu").fit(X[train], y[train])
    gpu = TorchLogisticRegression(device="cuda").fit(X[train], y[train])
    acc_cpu = (cpu.predict(X[test]) == y[test]).mean()
    acc_gpu = (gpu.predict(X[test]) == y[test]).mean()
    assert abs(acc_cpu - acc_gpu) <= 0.01
    assert gpu.converged_
