"""Style gates that a reviewer would otherwise check by hand."""

from __future__ import annotations

import subprocess

from tests.conftest import BIN, REPO


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_snakefmt_check_passes():
    proc = _run(str(BIN / "snakefmt"), "--check", "workflow/Snakefile", "workflow/rules")
    assert proc.returncode == 0, proc.stdout


def test_snakemake_lint_reports_nothing():
    proc = _run(str(BIN / "snakemake"), "--lint", "--configfile", "tests/workflow/tiny.yaml")
    assert proc.returncode == 0, proc.stdout
    assert "Congratulations, your workflow is in a good condition" in proc.stdout, proc.stdout


def test_ruff_check_passes():
    proc = _run(str(BIN / "ruff"), "check", "src", "tests", "workflow", "benchmarks")
    assert proc.returncode == 0, proc.stdout
