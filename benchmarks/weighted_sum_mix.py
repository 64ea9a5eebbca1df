"""Benchmark: the weighted-sum probe's layer mix, layer-major matvec vs an einsum.

:class:`speechlens.probes.weighted_sum.WeightedSumClassifier` keeps the standardised
features layer-major, (layer, n, feature), so that each training step's weighted sum over
layers is one matrix-vector product (:func:`speechlens.probes.weighted_sum._mix`). The
obvious alternative keeps the (n, layer, feature) layout and mixes with
``einsum("nld,l->nd")``. This script times one training step (minibatch gather, softmax
mix, linear classifier, cross-entropy, backward) both ways on the same random features and
minibatches, in one run, and prints milliseconds per step, the ratio and the largest
difference between the two mixes (float rounding only). It then times one full fit of the
classifier with its default settings, for scale.

    .venv/bin/python benchmarks/weighted_sum_mix.py [--n 1400] [--layers 7] [--dim 512]
        [--classes 40] [--steps 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from speechlens.probes.weighted_sum import WeightedSumClassifier, _mix, _normalise


def step_seconds(h, target, batches, mix, gather_dim, n_classes) -> tuple[float, torch.Tensor]:
    """Mean seconds of one training step over ``batches``, and the last step's mix.

    ``h``: standardised features, either (layer, n, feature) (``gather_dim`` 1) or
    (n, layer, feature) (``gather_dim`` 0); ``mix(h_batch, weights)`` -> (batch, feature).
    """
    dim = h.shape[-1]
    logits = torch.zeros(h.shape[1 - gather_dim], requires_grad=True)
    weight = torch.zeros(n_classes, dim, requires_grad=True)
    start = time.perf_counter()
    for idx in batches:
        mixed = mix(h.index_select(gather_dim, idx), torch.softmax(logits, 0))
        loss = torch.nn.functional.cross_entropy(mixed @ weight.T, target[idx])
        loss.backward()
    return (time.perf_counter() - start) / len(batches), mixed.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1400, help="samples (default run: ~1400 frames)")
    parser.add_argument(
        "--layers", type=int, default=7, help="Whisper base encoder: 6 + embeddings"
    )
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.1, 10.0, size=(args.layers, 1))  # unequal layer scales
    X = (rng.standard_normal((args.n, args.layers, args.dim)) * scales).astype(np.float32)
    y = rng.integers(0, args.classes, size=args.n)
    mean, scale = X.mean(axis=0), X.std(axis=0) + 1e-6
    layer_major = _normalise(X, mean, scale)  # (layer, n, feature)
    sample_major = layer_major.permute(1, 0, 2).contiguous()  # (n, layer, feature)
    target = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randperm(args.n, generator=gen)[: args.batch] for _ in range(args.steps)]

    def einsum_mix(h, w):
        return torch.einsum("nld,l->nd", h, w)

    # warm-up both paths, then time them on the same minibatches
    step_seconds(layer_major, target, batches[:5], _mix, 1, args.classes)
    step_seconds(sample_major, target, batches[:5], einsum_mix, 0, args.classes)
    matvec, mixed_a = step_seconds(layer_major, target, batches, _mix, 1, args.classes)
    einsum, mixed_b = step_seconds(sample_major, target, batches, einsum_mix, 0, args.classes)
    diff = float((mixed_a - mixed_b).abs().max() / mixed_b.abs().max())
    print(
        f"features (n, layer, feature) = ({args.n}, {args.layers}, {args.dim}), "
        f"batch {args.batch}, {args.steps} steps, {args.threads} thread(s)"
    )
    print(f"einsum over (n, layer, feature): {einsum * 1e3:7.2f} ms a step")
    print(f"matvec over (layer, n, feature): {matvec * 1e3:7.2f} ms a step")
    print(
        f"ratio einsum / matvec: {einsum / matvec:.2f}x; "
        f"largest mix difference {diff:.1e} of the maximum"
    )
    start = time.perf_counter()
    WeightedSumClassifier(threads=args.threads).fit(X, y)
    print(f"one fit (class defaults, matvec): {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
