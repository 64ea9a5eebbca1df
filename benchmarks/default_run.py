"""The default experiment from scratch, timed per rule, then an immediate no-op rerun.

Runs ``snakemake`` as ``make run`` does (the jobs, then the HTML report) on the checkout's
workflow (the embedded default config, or ``--configfile``) in a fresh temporary folder,
reads every job's benchmark file
(``logs/**/*.benchmark.tsv``: wall ``s`` and ``cpu_time``) and prints, per rule, the jobs,
wall and CPU seconds, sorted by wall time, plus the total wall time of the run. Then it
reruns snakemake at once and prints how long the no-op run takes (target: 5 s or less).

    .venv/bin/python benchmarks/default_run.py [--cores 2] [--configfile FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, cores: int, configfile: str | None, *extra: str) -> float:
    """Run snakemake in ``workdir``; its wall time in seconds (raises on failure)."""
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", str(cores), "--workflow-profile", str(REPO / "profiles" / "default")]
    if configfile:
        cmd += ["--configfile", str(Path(configfile).resolve())]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return seconds


def benchmark_patterns() -> dict[str, re.Pattern]:
    """Rule name -> regex of its ``benchmark:`` path, read from the workflow's rule files."""
    patterns = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            name = re.match(r"rule (\w+):", block)
            bench = re.search(r"benchmark:\s*\n\s*\"([^\"]+)\"", block)
            if name and bench:
                regex = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(bench.group(1)))
                patterns[name.group(1)] = re.compile(regex + "$")
    return patterns


def per_rule(workdir: Path) -> pd.DataFrame:
    """Jobs, wall and CPU seconds per rule, from the jobs' benchmark files."""
    patterns = benchmark_patterns()
    rows = []
    for path in workdir.glob("logs/**/*.benchmark.tsv"):
        relative = path.relative_to(workdir).as_posix()
        rules = [r for r, regex in patterns.items() if regex.fullmatch(relative)]
        # several patterns match (logs/models/{checkpoint} vs logs/models/tera_{language}):
        # the one with the most literal text is the job's rule
        rules = sorted(rules, key=lambda r: -len(re.sub(r"\[\^/\]\+", "", patterns[r].pattern)))[:1]
        bench = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "rule": rules[0] if len(rules) == 1 else "/".join(rules) or relative,
                "wall_s": float(bench["s"].iloc[0]),
                "cpu_s": float(bench["cpu_time"].iloc[0]),
            }
        )
    table = pd.DataFrame(rows, columns=["rule", "wall_s", "cpu_s"])
    summary = table.groupby("rule").agg(
        jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum")
    )
    return summary.sort_values("wall_s", ascending=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="run here and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="speechlens-default-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = ("--report", "results/report.html", "--report-after-run")
    try:
        total = snakemake(workdir, args.cores, args.configfile, *report)
        table = per_rule(workdir)
        noop = snakemake(workdir, args.cores, args.configfile)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print(table.round(1).to_string())
    print(
        f"\njobs {int(table['jobs'].sum())}; sum of job wall {table['wall_s'].sum():.0f} s, "
        f"CPU {table['cpu_s'].sum():.0f} s"
    )
    print(
        f"run wall time on {args.cores} cores: {total:.0f} s ({total / 60:.1f} min; target 600 s)"
    )
    print(f"no-op rerun: {noop:.1f} s (target 5 s)")


if __name__ == "__main__":
    main()
