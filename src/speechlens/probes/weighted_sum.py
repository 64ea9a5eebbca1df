"""SUPERB-style weighted-sum probe: softmax weights over all layers + a linear classifier.

Each layer's features are standardised with the training data's statistics (as the other
probes' ``StandardScaler``; without it a few huge dimensions, e.g. of a random-init model,
stall training), each vector is then layer-normalised (no affine parameters) so that the
layers are on one scale, mixed with learnable softmax weights, and classified by one linear
layer; all parameters are trained jointly in torch by minibatch Adam with cross-entropy.
Parameters start at zero (uniform layer weights, a zero classifier) and minibatches are
drawn by a seeded generator, so the same data and seed give the same fit.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin


def _normalise(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """(n, layer, feature) array -> float32 tensor (layer, n, feature): standardised with
    ``mean`` and ``scale`` (layer, feature), then layer-normalised; layer-major, so that
    the weighted sum over layers is one matrix-vector product over contiguous memory
    (:func:`_mix`) rather than an einsum over the (n, layer, feature) layout."""
    h = torch.from_numpy((np.asarray(X, dtype=np.float32) - mean) / scale)
    h = torch.nn.functional.layer_norm(h, h.shape[-1:])
    return h.permute(1, 0, 2).contiguous()


def _mix(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l weights[l] * h[l]``: (layer, n, feature) x (layer,) -> (n, feature)."""
    n_layers, n, dim = h.shape
    return (weights @ h.reshape(n_layers, n * dim)).reshape(n, dim)


class WeightedSumClassifier(ClassifierMixin, BaseEstimator):
    """Learnable softmax-weighted sum of layers + linear classifier (SUPERB).

    ``fit(X, y)`` takes ``X`` of shape (n, layer, feature) and labels ``y`` (n,); after
    fitting, ``layer_weights_`` (layer,) holds the softmax weights (they sum to 1).

    Parameters: ``epochs`` passes of minibatch Adam (``batch_size`` samples, learning rate
    ``lr``, ``weight_decay`` on the classifier weights), more passes when needed to take at
    least ``min_steps`` steps (small data sets, e.g. utterance-level tasks); ``seed`` for the
    minibatch order; ``threads`` torch CPU threads.
    """

    def __init__(
        self,
        epochs=20,
        batch_size=1024,
        lr=0.01,
        weight_decay=1e-4,
        min_steps=200,
        seed=0,
        threads=1,
    ):
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.threads = threads

    def fit(self, X, y):
        self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            X = np.asarray(X, dtype=np.float32)
            self.mean_ = X.mean(axis=0)
            self.scale_ = X.std(axis=0) + 1e-6
            h = _normalise(X, self.mean_, self.scale_)
            n_layers, n, dim = h.shape
            logits = torch.zeros(n_layers, requires_grad=True)
            weight = torch.zeros(len(self.classes_), dim, requires_grad=True)
            bias = torch.zeros(len(self.classes_), requires_grad=True)
            target = torch.from_numpy(target)
            opt = torch.optim.Adam(
                [
                    {"params": [logits, bias], "weight_decay": 0.0},
                    {"params": [weight], "weight_decay": self.weight_decay},
                ],
                lr=self.lr,
            )
            gen = torch.Generator().manual_seed(int(self.seed))
            per_epoch = -(-n // self.batch_size)
            for _ in range(max(self.epochs, -(-self.min_steps // per_epoch))):
                order = torch.randperm(n, generator=gen)
                for start in range(0, n, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    mixed = _mix(h.index_select(1, idx), torch.softmax(logits, 0))
                    loss = torch.nn.functional.cross_entropy(mixed @ weight.T + bias, target[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(before)
        self.layer_weights_ = torch.softmax(logits.detach(), 0).numpy().astype(np.float64)
        self.coef_ = weight.detach().numpy().copy()
        self.intercept_ = bias.detach().numpy().copy()
        return self

    def decision_function(self, X) -> np.ndarray:
        """Class scores (n, class) for ``X`` (n, layer, feature)."""
        with torch.no_grad():
            mix = torch.from_numpy(self.layer_weights_).float()
            h = _normalise(X, self.mean_, self.scale_)
            mixed = _mix(h, mix).numpy()
        return mixed @ self.coef_.T + self.intercept_

    def predict(self, X) -> np.ndarray:
        """Predicted labels (n,) for ``X`` (n, layer, feature)."""
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
