"""The execution profiles: local defaults, and SLURM partitions picked by what a job asks."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import yaml
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

from tests.conftest import REPO

PROFILES = REPO / "profiles"


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


class _Resources(dict):
    __getattr__ = dict.get


def _job(name: str, threads: int = 1, **resources):
    """What the plugin reads of a job when it picks a partition."""
    return SimpleNamespace(name=name, threads=threads, resources=_Resources(resources))


def test_local_profile_uses_every_core_and_redoes_cut_off_jobs():
    local = _profile("default")
    assert local["cores"] == "all"
    assert local["rerun-incomplete"] is True and local["keep-going"] is True


def test_slurm_profile_submits_through_the_plugin_and_names_partitions_once():
    slurm = _profile("slurm")
    assert slurm["executor"] == "slurm"
    assert slurm["rerun-incomplete"] is True
    assert (PROFILES / "slurm" / slurm["slurm-partition-config"]).is_file()
    # partitions are named in partitions.yaml only, never per rule
    assert "slurm_partition" not in str(slurm.get("default-resources", ""))
    assert "slurm_partition" not in str(slurm.get("set-resources", ""))


def test_gpu_jobs_go_to_a_gpu_partition_and_cpu_jobs_do_not():
    partitions = read_partition_file(PROFILES / "slurm" / "partitions.yaml")
    log = logging.getLogger("test")
    gpu = _job("features", threads=2, gpu=1, mem_mb=8000, runtime=480)
    cpu = _job("probe", threads=2, gpu=0, mem_mb=4000, runtime=120)
    spectral = _job("features", threads=2, mem_mb=8000, runtime=480)  # no gpu resource
    assert get_best_partition(partitions, gpu, log) == "gpu"
    assert get_best_partition(partitions, cpu, log) == "cpu"
    assert get_best_partition(partitions, spectral, log) == "cpu"
