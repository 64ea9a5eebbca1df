"""sklearn vs torch linear probe on a finished run: per-layer accuracy difference and speed.

Runs :func:`speechlens.probing.run_task` twice on one feature store of a run folder (e.g.
the default run kept by ``benchmarks/default_run.py --keep DIR``), with
``probing.settings.linear_backend`` sklearn and torch, the same samples and folds, and
prints each layer's mean accuracy under both, the largest difference (issue 18: <= 0.01)
and the wall-time ratio.

    .venv/bin/python benchmarks/probe_backends.py DIR [--corpus synth] [--model whisper_tiny_en]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from speechlens import probing, schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--corpus", default="synth")
    parser.add_argument("--model", default="whisper_tiny_en")
    parser.add_argument("--max-per-class", type=int, default=100)
    args = parser.parse_args()
    corpus = args.run / "resources" / "corpora" / args.corpus
    task = {
        "level": "frame",
        "source": "phone",
        "group_by": "speaker",
        "probes": ["linear"],
        "max_per_class": args.max_per_class,
    }
    scores, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sklearn", "torch"):
            settings = {
                **schema.defaults("probing.settings"),
                "linear_backend": backend,
                "linear_device": "cpu",
            }
            out = Path(tmp) / f"{backend}.tsv"
            start = time.perf_counter()
            probing.run_task(
                args.run / "results" / args.corpus / args.model / "features.zarr",
                corpus / "utterances.tsv",
                corpus / "segments.tsv",
                task,
                settings,
                out,
                sidecar=Path(tmp) / f"{backend}.json",
                threads=1,
            )
            seconds[backend] = time.perf_counter() - start
            t = pd.read_csv(out, sep="\t", dtype={"layer": str, "fold": str})
            t = t[(t.probe == "linear") & (t.metric == "accuracy") & (t.fold == "mean")]
            scores[backend] = t.set_index("layer")["value"]
    table = pd.DataFrame(scores)
    table["difference"] = table["torch"] - table["sklearn"]
    print(table.round(4).to_string())
    print(f"largest |difference| {table['difference'].abs().max():.4f} (target <= 0.01)")
    print(
        f"wall: sklearn {seconds['sklearn']:.1f} s, torch {seconds['torch']:.1f} s, "
        f"speed ratio {seconds['sklearn'] / seconds['torch']:.2f}"
    )


if __name__ == "__main__":
    main()
