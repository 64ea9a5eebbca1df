"""Benchmark: the torch linear probe against the scikit-learn probe on the same data.

Both fit StandardScaler + multinomial logistic regression (same C, same iteration limit, no
class weights: the probing ``linear`` probe) on Gaussian classes shaped like a frame-level
phone task (issue 18's anchor: 50k frames x 384 dims x 40 phones), and are scored on a
held-out fifth. Prints each backend's fit seconds, iterations, convergence and held-out
accuracy, then the speed ratio (sklearn seconds / torch seconds) and the accuracy difference.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/linear_probe.py [--n 50000] [--dim 384]
        [--classes 40] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from speechlens.probes.linear_torch import TorchLogisticRegression


def make_data(n: int, dim: int, classes: int, seed: int = 0):
    """Gaussian classes (Zipf-like sizes, overlapping) in float32, as store features are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.12
    p = 1.0 / np.arange(1, classes + 1) ** 0.7
    y = rng.choice(classes, size=n, p=p / p.sum())
    X = centres[y] + rng.normal(size=(n, dim))
    X = (X * rng.uniform(0.1, 10, dim) + rng.normal(size=dim)).astype(np.float32)
    return X, np.array([f"p{c:02d}" for c in y])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000, help="frames (default 50000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--max-iter", type=int, default=100, help="both backends (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both backends")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, auto)")
    args = parser.parse_args()
    X, y = make_data(args.n, args.dim, args.classes)
    cut = len(y) * 4 // 5
    train, test = slice(0, cut), slice(cut, None)
    print(f"data: {args.n} frames x {args.dim} dims x {args.classes} classes, train {cut}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()  # torch.optim imports torch._dynamo once per process (seconds)
    TorchLogisticRegression(max_iter=2, device=args.device).fit(X[:200], y[:200])
    print(f"one-off torch.optim import and warm-up: {time.perf_counter() - t0:.2f} s (not timed)")
    with threadpool_limits(args.threads):
        t0 = time.perf_counter()
        ref = make_pipeline(
            StandardScaler(), LogisticRegression(C=args.C, max_iter=args.max_iter)
        ).fit(X[train], y[train])
        t_ref = time.perf_counter() - t0
        acc_ref = float((ref.predict(X[test]) == y[test]).mean())
        t0 = time.perf_counter()
        ours = TorchLogisticRegression(
            C=args.C, max_iter=args.max_iter, device=args.device, threads=args.threads
        ).fit(X[train], y[train])
        if ours._device.type == "cuda":
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t0
        acc = float((ours.predict(X[test]) == y[test]).mean())
    n_iter_ref = int(np.max(ref[-1].n_iter_))
    print(f"sklearn lbfgs: {t_ref:8.2f} s  iterations {n_iter_ref:4d}  accuracy {acc_ref:.4f}")
    print(
        f"torch  {ours._device.type:5s}: {t_ours:8.2f} s  iterations {ours.n_iter_:4d}  "
        f"accuracy {acc:.4f}  converged {ours.converged_}"
    )
    print(f"speed ratio (sklearn s / torch s): {t_ref / t_ours:.2f}")
    print(f"accuracy difference (torch - sklearn): {acc - acc_ref:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
