"""The conda env that rules name pins the same versions as pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO


def _pins(specs) -> dict[str, str]:
    pins = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", spec.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_conda_env_matches_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"])
    env = yaml.safe_load((REPO / "envs" / "speechlens.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = _pins(pip)
    assert wanted, "pyproject.toml pins nothing"
    for name, version in wanted.items():
        assert pinned.get(name) == version, f"envs/speechlens.yaml: {name} != {version}"
    assert set(pinned) - set(wanted) == {"torch"}
    assert "torch==2.13.0" in pip and "-e .." in pip


def test_every_rule_names_the_conda_env_and_a_log():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=rule )", text)[1:]:
            name = block.split(":")[0]
            assert "conda:" in block, f"{smk.name}: {name} has no conda env"
            assert "log:" in block, f"{smk.name}: {name} has no log"
