"""The workflow through profiles/slurm on a real single-node SLURM cluster (root only).

The cluster (tests/slurm_cluster.py) is brought up for this module and taken down after;
where it cannot run (not root, no apt-get to install SLURM, a SLURM configuration of the
machine in place) the test is skipped and says why.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from speechlens import store
from tests import slurm_cluster
from tests import snakemake_cli as cli

REPO = cli.REPO
CONFIG = REPO / "tests" / "workflow" / "slurm.yaml"
PROBE = "results/tiny/whisper_tiny_en/probes/phone.tsv"
SUMMARY = "results/figures/tiny/corpus_summary.png"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """The workflow and the speechlens package copied now (the runs use the copies, so edits
    to the checkout meanwhile change nothing): keyword arguments of ``cli.run``."""
    root = tmp_path_factory.mktemp("source")
    snakefile = cli.copy_workflow(REPO, root / "workflow")
    lib = cli.copy_library(REPO / "src" / "speechlens", root / "lib")
    return {"snakefile": snakefile, "env": cli.environment(PYTHONPATH=str(lib))}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.Unavailable as why:
        pytest.skip(f"no SLURM test cluster here: {why}")
    yield cluster
    cluster.stop()


def _planned_resources(workdir, configfile, source) -> dict[str, dict[str, str]]:
    """{rule: resources} of the jobs a dry run through profiles/slurm plans (no SLURM needed)."""
    profile = source["snakefile"].parents[1] / "profiles" / "slurm"
    out = cli.run(
        workdir, "-n", configfile=configfile, profile=profile, timeout=300, **source
    ).stdout
    planned = {}
    for block in out.split("\n\n"):
        rule = re.search(r"^rule (\w+):", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if rule and resources:
            pairs = (kv.split("=", 1) for kv in resources.group(1).split(", "))
            planned[rule.group(1)] = dict(pairs)
    return planned


def test_slurm_profile_asks_for_what_the_config_says(tmp_path, source):
    """GPU rules ask for a GPU (none with device: cpu); memory comes from the config."""
    config = yaml.safe_load(CONFIG.read_text())
    config["features"]["mem_mb"] = 2345
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = _planned_resources(tmp_path, changed, source)
    assert set(jobs) >= {"corpus", "convert_pypi_model", "features", "probe"}
    assert jobs["features"]["gpu"] == "1"
    assert jobs["features"]["mem_mb"] == "2345"
    assert jobs["features"]["runtime"] == "480"  # the profile's longer limit for extraction
    assert jobs["probe"].get("gpu", "0") == "0" and jobs["probe"]["mem_mb"] == "4000"

    config["features"]["device"] = "cpu"
    changed.write_text(yaml.safe_dump(config))
    assert _planned_resources(tmp_path, changed, source)["features"].get("gpu", "0") == "0"


def _slurm_args(cluster) -> list[str]:
    """The test cluster's overrides of profiles/slurm (everything else is the profile's).

    No slurmdbd: `sacct` never sees jobs finish, so poll with `squeue` (MinJobAge=600 keeps
    finished jobs listed) and submit without an account; poll every second or two.
    """
    return [
        "--slurm-status-command=squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks=1",
        "--seconds-between-status-checks=2",
        f"--max-threads={cluster.cpus}",  # rule corpus asks for 8 threads; the node has fewer
        "--retries=0",
    ]


def test_tiny_workflow_on_slurm_equals_the_local_run(cluster, source, tmp_path, record_property):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    remote.mkdir()
    began = time.perf_counter()
    cli.run(local, "--cores", "2", PROBE, SUMMARY, configfile=CONFIG, timeout=600, **source)
    local_s = time.perf_counter() - began

    began = time.perf_counter()
    proc = cli.run(
        remote,
        *_slurm_args(cluster),
        PROBE,
        SUMMARY,
        configfile=CONFIG,
        profile=source["snakefile"].parents[1] / "profiles" / "slurm",
        timeout=600,
        **source,
    )
    slurm_s = time.perf_counter() - began
    seconds = {"cluster_start": cluster.startup_s, "local": local_s, "slurm": slurm_s}
    record_property("seconds", seconds)
    print("seconds:", {k: round(v, 1) for k, v in seconds.items()})
    assert "Nothing to be done" not in proc.stdout

    # every job went through sbatch, GPU rules to the gpu partition with --gpus=1
    jobs = {j["Comment"].split("_wildcards")[0].removeprefix("rule_"): j for j in cluster.jobs()}
    assert set(jobs) == {"corpus", "corpus_summary", "convert_pypi_model", "features", "probe"}
    assert {j["JobState"] for j in jobs.values()} == {"COMPLETED"}
    assert jobs["features"]["Partition"] == "gpu"
    assert "gpu:1" in jobs["features"]["TresPerJob"]
    assert jobs["probe"]["Partition"] == "cpu" and "gpu" not in jobs["probe"].get("TresPerJob", "")
    assert jobs["corpus"]["NumCPUs"] == str(cluster.cpus)  # threads capped by --max-threads
    assert jobs["features"]["NumCPUs"] == str(min(2, cluster.cpus))  # features.threads

    # the same outputs as the local run
    for name in ("utterances.tsv", "segments.tsv"):
        path = f"resources/corpora/tiny/{name}"
        assert (remote / path).read_bytes() == (local / path).read_bytes()
    for wav in sorted((local / "resources/corpora/tiny/audio").glob("*.wav")):
        assert (remote / "resources/corpora/tiny/audio" / wav.name).read_bytes() == wav.read_bytes()
    a = store.open_store(local / "results/tiny/whisper_tiny_en/features.zarr")
    b = store.open_store(remote / "results/tiny/whisper_tiny_en/features.zarr")
    store.validate(b)
    np.testing.assert_array_equal(a["hidden"].values, b["hidden"].values)
    np.testing.assert_array_equal(a["pooled"].values, b["pooled"].values)
    pd.testing.assert_frame_equal(
        pd.read_csv(local / PROBE, sep="\t"), pd.read_csv(remote / PROBE, sep="\t")
    )
    assert (remote / SUMMARY).stat().st_size > 10_000

    # and a second run through SLURM has nothing to submit
    again = cli.run(
        remote,
        *_slurm_args(cluster),
        PROBE,
        SUMMARY,
        configfile=CONFIG,
        profile=source["snakefile"].parents[1] / "profiles" / "slurm",
        timeout=300,
        **source,
    )
    assert "Nothing to be done" in again.stdout
