"""A torch backend for the linear probe: scikit-learn's multinomial logistic regression, on
CPU or CUDA.

The probing ``linear`` probe is ``make_pipeline(StandardScaler(), LogisticRegression(C,
max_iter))`` (scikit-learn, lbfgs, multinomial, no class weights). :class:`TorchLogisticRegression`
minimises the *same* objective with the same optimiser family, so on the same data it reaches
the same solution (up to the stopping tolerance):

- inputs standardised with the training data's mean and population standard deviation
  (``StandardScaler``: zero-variance features get scale 1);
- multinomial (softmax) cross-entropy with one weight row per class and an unpenalised
  intercept; sample weights ``s_i`` = ``sample_weight`` x the class weight of ``y_i``
  (``class_weight`` None, ``"balanced"`` = ``n / (n_classes * count_c)`` with weighted counts,
  or a dict), exactly as scikit-learn's ``_logistic_regression_path``;
- objective ``sum_i s_i CE_i / sum_i s_i + ||W||^2 / (2 C sum_i s_i)``: scikit-learn's
  ``C sum_i s_i CE_i + ||W||^2 / 2`` divided by ``C sum_i s_i`` (same minimiser);
- full-batch L-BFGS (``torch.optim.LBFGS``: strong-Wolfe line search, history 10 like
  SciPy's L-BFGS-B default) from zero weights, at most ``max_iter`` iterations, stopping when
  the largest gradient entry is at most ``tol`` (scikit-learn's ``gtol``). ``converged_``
  says whether it did; ``n_iter_`` counts the iterations.

Reference: scikit-learn ``sklearn/linear_model/_logistic.py`` (``_logistic_regression_path``,
lbfgs branch) and ``sklearn/linear_model/_linear_loss.py`` (``LinearModelLoss``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def class_sample_weights(
    target: np.ndarray,
    n_classes: int,
    class_weight: str | Mapping | None,
    sample_weight: np.ndarray | None,
    classes: np.ndarray,
) -> np.ndarray:
    """Per-sample weights (n,) float64: ``sample_weight`` (default 1) x the class weight of
    each sample's class (``target``: class indices 0..n_classes-1), as scikit-learn's
    ``compute_class_weight`` (balanced: ``sum(sw) / (n_classes * weighted count)``)."""
    sw = np.ones(len(target)) if sample_weight is None else np.asarray(sample_weight, float)
    if len(sw) != len(target):
        raise ValueError(f"sample_weight has {len(sw)} entries for {len(target)} samples")
    if class_weight is None:
        return sw
    if class_weight == "balanced":
        counts = np.bincount(target, weights=sw, minlength=n_classes)
        per_class = sw.sum() / (n_classes * counts)
    elif isinstance(class_weight, Mapping):
        per_class = np.array([float(class_weight.get(c, 1.0)) for c in classes])
    else:
        raise ValueError(f"class_weight {class_weight!r}: use None, 'balanced' or a dict")
    return sw * per_class[target]


class TorchLogisticRegression(ClassifierMixin, BaseEstimator):
    """Standardisation + multinomial logistic regression fitted by full-batch L-BFGS in torch.

    Equals ``make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter,
    tol=tol, class_weight=class_weight))`` (see the module docstring). ``fit(X, y,
    sample_weight=None)`` takes ``X`` (n, feature) and labels ``y`` (n,); ``predict`` and
    ``predict_proba`` take raw (unstandardised) ``X``.

    Parameters: ``C`` inverse L2 strength; ``max_iter`` L-BFGS iterations; ``tol`` gradient
    tolerance; ``class_weight`` None, ``"balanced"`` or {label: weight}; ``device``
    ``"cpu"``, ``"cuda"`` or ``"auto"``; ``dtype`` ``"float32"`` (default) or ``"float64"``;
    ``threads`` torch CPU threads during fit (None: unchanged).

    Fitted attributes: ``classes_``; ``coef_`` (n_classes, feature) and ``intercept_``
    (n_classes,) in the *standardised* space (as the pipeline's ``LogisticRegression``);
    ``mean_``, ``scale_`` (feature,); ``n_iter_`` (int); ``converged_`` (bool: the largest
    gradient entry reached ``tol`` within ``max_iter`` iterations); ``loss_`` (the final
    objective).
    """

    def __init__(
        self,
        C=1.0,
        max_iter=100,
        tol=1e-4,
        class_weight=None,
        device="cpu",
        dtype="float32",
        threads=None,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.device = device
        self.dtype = dtype
        self.threads = threads

    def _tensor(self, X) -> torch.Tensor:
        dtype = getattr(torch, self.dtype)
        return torch.as_tensor(np.asarray(X), device=self._device).to(dtype)

    def fit(self, X, y, sample_weight=None):
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("fit needs at least 2 classes")
        X = np.asarray(X)
        if X.ndim != 2 or len(X) != len(target):
            raise ValueError(f"X must be (n, feature) with n = len(y); got {X.shape}")
        weights = class_sample_weights(
            target, len(self.classes_), self.class_weight, sample_weight, self.classes_
        )
        self._device = resolve_device(self.device)
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        try:
            self._fit(X, target, weights)
        finally:
            torch.set_num_threads(before)
        return self

    def _fit(self, X: np.ndarray, target: np.ndarray, weights: np.ndarray) -> None:
        x64 = torch.as_tensor(X, device=self._device).to(torch.float64)
        mean = x64.mean(dim=0)
        scale = x64.std(dim=0, correction=0)
        scale = torch.where(scale < 10 * torch.finfo(torch.float64).eps, 1.0, scale)
        del x64
        self.mean_, self.scale_ = mean.cpu().numpy(), scale.cpu().numpy()
        dtype = getattr(torch, self.dtype)
        xs = (self._tensor(X) - mean.to(dtype)) / scale.to(dtype)
        t = torch.as_tensor(target, device=self._device, dtype=torch.long)
        sw = torch.as_tensor(weights, device=self._device).to(dtype)
        sw_sum = float(weights.sum())
        k, d = len(self.classes_), X.shape[1]
        coef = torch.zeros(k, d, device=self._device, dtype=dtype, requires_grad=True)
        bias = torch.zeros(k, device=self._device, dtype=dtype, requires_grad=True)
        l2 = 1.0 / (float(self.C) * sw_sum)

        def objective():
            ce = torch.nn.functional.cross_entropy(xs @ coef.T + bias, t, reduction="none")
            return (sw * ce).sum() / sw_sum + 0.5 * l2 * (coef * coef).sum()

        opt = torch.optim.LBFGS(
            [coef, bias],
            lr=1.0,
            max_iter=int(self.max_iter),
            max_eval=int(self.max_iter) * 5 // 4 + 50,
            tolerance_grad=float(self.tol),
            tolerance_change=64 * float(np.finfo(np.float64).eps),
            history_size=10,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        loss = closure()  # gradient at the final point
        grad = torch.cat([coef.grad.flatten(), bias.grad.flatten()])
        self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", 0))
        self.converged_ = bool(grad.abs().max() <= self.tol)
        self.loss_ = float(loss.detach())
        self.coef_ = coef.detach().cpu().numpy().astype(np.float64)
        self.intercept_ = bias.detach().cpu().numpy().astype(np.float64)
        self._coef, self._bias = coef.detach(), bias.detach()
        self._mean, self._scale = mean.to(dtype), scale.to(dtype)

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n, n_classes) of raw ``X``."""
        with torch.no_grad():
            xs = (self._tensor(X) - self._mean) / self._scale
            return (xs @ self._coef.T + self._bias).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Softmax class probabilities (n, n_classes), columns in ``classes_`` order."""
        scores = torch.as_tensor(self.decision_function(X), dtype=torch.float64)
        return torch.softmax(scores, dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row of raw ``X``."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
