"""Where the SLURM test cluster cannot run it says why, and leaves the machine alone."""

from __future__ import annotations

import pytest

from tests import slurm_cluster


def test_not_root_is_a_clear_reason_to_skip(monkeypatch):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    with pytest.raises(slurm_cluster.Unavailable, match="needs root"):
        slurm_cluster.ensure_installed()


def test_a_slurm_configuration_it_did_not_write_is_left_untouched(monkeypatch, tmp_path):
    etc = tmp_path / "etc-slurm"
    etc.mkdir()
    theirs = "ClusterName=production\n"
    (etc / "slurm.conf").write_text(theirs)
    monkeypatch.setattr(slurm_cluster, "ETC", etc)
    monkeypatch.setattr(slurm_cluster, "ensure_installed", lambda: 0.0)
    with pytest.raises(slurm_cluster.Unavailable, match="not written by this test"):
        slurm_cluster.start(tmp_path / "state")
    assert (etc / "slurm.conf").read_text() == theirs
    assert not (tmp_path / "state").exists()


def test_no_apt_and_no_slurm_is_a_clear_reason_to_skip(monkeypatch):
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)
    monkeypatch.setattr(slurm_cluster, "_which", lambda name: None)
    with pytest.raises(slurm_cluster.Unavailable, match="missing and no apt-get"):
        slurm_cluster.ensure_installed()
