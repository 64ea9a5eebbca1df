"""The real snakemake CLI for execution tests: a hard timeout, and the jobs a run would plan.

Unlike ``tests.conftest.run_snakemake`` this runs snakemake in its own process group, so a
timeout (or a test) can SIGKILL it together with every job it started: a snakemake stuck
polling a cluster ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ("workflow", "config", "profiles")
NO_CACHE = shutil.ignore_patterns("__pycache__")


def copy_workflow(src: Path, dest: Path) -> Path:
    """The workflow's files under ``src`` copied to ``dest`` with their mtimes; its Snakefile."""
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, ignore=NO_CACHE)
        elif (src / name).exists():
            shutil.copy2(src / name, dest / name)
    return dest / "workflow" / "Snakefile"


def copy_library(src: Path, dest: Path) -> Path:
    """The speechlens package folder ``src`` copied to ``dest/speechlens``; ``dest`` (to put
    on PYTHONPATH, before the installed package, also inside jobs)."""
    shutil.copytree(src, dest / "speechlens", ignore=NO_CACHE)
    return dest


def command(
    workdir: Path,
    *args: str,
    configfile: Path | None = None,
    profile: Path | None = REPO / "profiles" / "default",
    snakefile: Path = REPO / "workflow" / "Snakefile",
) -> list[str]:
    """The snakemake command line for ``workdir`` (a workflow profile unless ``profile=None``)."""
    cmd = [str(BIN / "snakemake"), "-s", str(snakefile), "-d", str(workdir)]
    if profile is not None:
        cmd += ["--workflow-profile", str(profile)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    return cmd + list(args)


def environment(**extra: str) -> dict[str, str]:
    """This interpreter's environment with its bin folder first on PATH (and ``extra``)."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def start(
    cmd: list[str], workdir: Path, env: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start ``cmd`` in a new process group, stdout and stderr merged into a pipe (text) or,
    for a run that is polled rather than waited for, into the file ``log``."""
    out = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env or environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()  # the child holds its own descriptor


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (snakemake and every job it started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(
    workdir: Path,
    *args: str,
    timeout: float = 600,
    check: bool = True,
    env: dict | None = None,
    **kw,
) -> subprocess.CompletedProcess:
    """Run snakemake to completion, or SIGKILL its process group after ``timeout`` s and fail."""
    cmd = command(workdir, *args, **kw)
    proc = start(cmd, workdir, env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        pytest.fail(f"snakemake ran past {timeout} s and was killed:\n{out[-6000:]}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n{out[-6000:]}")
    return done


def summary(workdir: Path, *args: str, **kw) -> list[dict[str, str]]:
    """The rows of ``snakemake --summary``: every output of the DAG with its rule, status, plan."""
    out = run(workdir, "--summary", *args, timeout=300, **kw).stdout
    header = out.index("output_file\t")
    return list(csv.DictReader(io.StringIO(out[header:]), delimiter="\t"))


def planned(workdir: Path, *args: str, **kw) -> dict[str, str]:
    """Outputs the next run would (re)create, as {output path: rule}.

    Those are the ``--summary`` rows whose plan is ``update pending``: the jobs a run would
    execute (rule ``all`` has no output and is left out).
    """
    rows = summary(workdir, *args, **kw)
    return {r["output_file"]: r["rule"] for r in rows if r["plan"] == "update pending"}
