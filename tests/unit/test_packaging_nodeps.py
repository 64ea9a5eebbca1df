"""Packages installed without their dependencies (resemblyzer: GE2E's weights) are pinned
the same way by `make install` (Makefile NO_DEPS) and by the conda env's post-deploy script,
and are kept out of pyproject.toml (pip would install their dependencies from there)."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO


def test_no_deps_pins_agree_and_stay_out_of_pyproject():
    make = (REPO / "Makefile").read_text()
    pins = re.search(r"^NO_DEPS\s*:=\s*(.+)$", make, flags=re.M).group(1).split()
    assert pins == ["resemblyzer==0.1.4"]
    assert "pip install --quiet --no-deps $(NO_DEPS)" in make
    script = (REPO / "workflow" / "envs" / "speechlens.post-deploy.sh").read_text()
    assert re.findall(r"pip install --no-deps (.+)", script) == [" ".join(pins)]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith("resemblyzer")]


def test_the_running_environment_has_the_no_deps_pins():
    from importlib.metadata import version

    assert version("resemblyzer") == "0.1.4"
