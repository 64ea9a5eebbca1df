"""One run of the real workflow on the tiny config, shared by the workflow test modules."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_snakemake

TINY = REPO / "tests" / "workflow" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(workdir, CompletedProcess) of ``snakemake --cores 2`` on tests/workflow/tiny.yaml,
    every target built (corpus, features, probes, CKA, figures, provenance). Tests may add
    outputs (e.g. the report) but must not modify or delete what the run built."""
    workdir = tmp_path_factory.mktemp("tiny")
    proc = run_snakemake(workdir, "--cores", "2", configfile=TINY)
    return workdir, proc
