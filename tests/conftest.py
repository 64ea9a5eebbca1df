"""Shared fixtures: the repository root and a runner for the real snakemake CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_snakemake(workdir: Path, *args: str, configfile: Path | None = None, check=True):
    """Run ``snakemake`` (the CLI of this environment) on the repo's Snakefile in ``workdir``.

    Returns the CompletedProcess with stdout and stderr merged into ``.stdout``.
    """
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "workflow" / "Snakefile"), "-d", str(workdir)]
    cmd += ["--workflow-profile", str(REPO / "profiles" / "default")]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += list(args)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tests use tiny models and matrices: torch's thread pool only adds overhead there, and
    stalls when the CPUs are busy. The workflow's own jobs set their threads themselves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
