"""The probe grid of the default experiment: time per (layer, probe) and the honesty checks.

Runs :func:`speechlens.probing.run_task` for every model store of a corpus x every default
task (:func:`speechlens.probing.default_tasks`), the way the workflow's probe jobs do, and
prints

- wall seconds per (model, task) and for the whole grid (target: under 10 minutes on 2 cores);
- seconds per (layer, probe) summed over folds (wall within the worker; CPU in brackets) and
  the share of the grid's probe time spent in each probe;
- the honesty checks on the default corpus: the logmel baseline beats chance for phone and
  language, and Whisper tiny.en's middle or late encoder layers beat logmel for phone.

Usage (after `make run` built the default corpus and stores)::

    python benchmarks/probe_grid.py --workdir . --threads 2 [--check]

``--workdir`` is the workflow's working directory (it holds ``results/`` and
``resources/``); tables go to ``--out`` (a temporary folder by default), never into
``results/``. ``--check`` exits non-zero when an honesty check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from speechlens import probing


def _run_grid(workdir: Path, corpus: str, models, tasks, out: Path, threads: int) -> pd.DataFrame:
    """Run every (model, task); returns one row per job with its wall seconds."""
    corpus_dir = workdir / "resources" / "corpora" / corpus
    jobs = []
    for model in models:
        for name, task in tasks.items():
            tsv = out / model / f"{name}.tsv"
            start = time.perf_counter()
            probing.run_task(
                workdir / "results" / corpus / model / "features.zarr",
                corpus_dir / "utterances.tsv",
                corpus_dir / "segments.tsv",
                task,
                {},
                tsv,
                sidecar=tsv.with_suffix(".json"),
                threads=threads,
            )
            wall = time.perf_counter() - start
            meta = json.loads(tsv.with_suffix(".json").read_text())
            cpu = sum(meta["cpu_seconds"].values())
            jobs.append({"model": model, "task": name, "wall_s": wall, "probe_cpu_s": cpu})
            print(
                f"  {model:>24} {name:<15} {wall:7.1f} s wall  {cpu:7.1f} s probe CPU", flush=True
            )
    return pd.DataFrame(jobs)


def _timing(out: Path) -> pd.DataFrame:
    """Seconds per (model, task, probe, layer) from the sidecars."""
    rows = []
    for meta_path in sorted(out.glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        for key, wall in meta["seconds"].items():
            probe, layer = key.rsplit("/", 1)
            cpu = meta["cpu_seconds"][key]
            model = meta_path.parent.name
            rows.append((model, meta["task"], probe, layer, wall, cpu))
    return pd.DataFrame(rows, columns=["model", "task", "probe", "layer", "wall_s", "cpu_s"])


def _mean(out: Path, model: str, task: str, probe: str, metric="accuracy") -> pd.Series:
    """Fold-mean scores of one probe per layer (index: layer as str)."""
    table = pd.read_csv(out / model / f"{task}.tsv", sep="\t", dtype={"layer": str, "fold": str})
    sel = table[(table.probe == probe) & (table.metric == metric) & (table.fold == "mean")]
    return sel.set_index("layer")["value"]


def _honesty(out: Path, models) -> list[tuple[str, bool | None]]:
    """The issue's honesty checks: (description, passed; None = for information)."""
    checks: list[tuple[str, bool | None]] = []
    if "logmel" in models:
        for task in ("phone", "language", "language_frame"):
            chance = _mean(out, "logmel", task, "chance")["all"]
            for probe in ("linear", "mlp", "knn"):
                score = _mean(out, "logmel", task, probe)["0"]
                ok = score > chance if probe == "linear" and task != "language_frame" else None
                checks.append((f"logmel {task} {probe} {score:.3f} vs chance {chance:.3f}", ok))
    if "logmel" in models and "whisper_tiny_en" in models:
        base = _mean(out, "logmel", "phone", "linear")["0"]
        for model in ("whisper_tiny_en", "whisper_tiny_en_random"):
            if model not in models:
                continue
            scores = _mean(out, model, "phone", "linear")
            layers = ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
            later = scores.iloc[len(scores) // 2 :]  # the middle and late layers
            text = f"{model} phone linear by layer ({layers}) vs logmel {base:.3f}"
            checks.append((text, bool(later.max() > base) if model == "whisper_tiny_en" else None))
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--corpus", default="synth")
    parser.add_argument("--models", nargs="*", help="default: every store of the corpus")
    parser.add_argument("--tasks", nargs="*", help="default: every default task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="where the tables go (default: a temp dir)")
    parser.add_argument("--check", action="store_true", help="fail when a honesty check fails")
    args = parser.parse_args(argv)

    stores = sorted((args.workdir / "results" / args.corpus).glob("*/features.zarr"))
    models = args.models or [p.parent.name for p in stores]
    tasks = {k: v for k, v in probing.default_tasks().items() if not args.tasks or k in args.tasks}
    out = args.out or Path(tempfile.mkdtemp(prefix="probe_grid-"))
    print(
        f"probe grid: {len(models)} models x {len(tasks)} tasks, threads={args.threads}, out={out}"
    )
    start = time.perf_counter()
    jobs = _run_grid(args.workdir, args.corpus, models, tasks, out, args.threads)
    total = time.perf_counter() - start
    print(
        f"\nwhole grid: {total:.1f} s wall ({total / 60:.2f} min; target < 10 min on 2 cores); "
        f"probe CPU {jobs.probe_cpu_s.sum():.1f} s"
    )

    timing = _timing(out)
    per_task = jobs.groupby("task")[["wall_s", "probe_cpu_s"]].sum().round(1)
    print("\nper task (all models):\n" + per_task.to_string())
    probe = timing.assign(probe=timing.probe.str.removesuffix("_control"))
    share = probe.groupby("probe")[["wall_s", "cpu_s"]].sum()
    share["share_%"] = (100 * share.cpu_s / share.cpu_s.sum()).round(1)
    print("\nshare of probe CPU time per probe (control fits counted with their probe):")
    print(share.round(1).to_string())
    per_layer = timing.pivot_table(
        index=["model", "task", "layer"], columns="probe", values="wall_s", aggfunc="sum"
    )
    print("\nwall seconds per (layer, probe), summed over the 5 folds:")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(per_layer.round(2).fillna("").to_string())

    checks = _honesty(out, models)
    print("\nhonesty checks:")
    for text, ok in checks:
        print(f"  [{ {True: 'ok', False: 'FAIL', None: 'info'}[ok] }] {text}")
    return 1 if args.check and any(ok is False for _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
