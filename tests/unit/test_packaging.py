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
    env = yaml.safe_load((REPO / "workflow" / "envs" / "speechlens.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = _pins(pip)
    assert wanted, "pyproject.toml pins nothing"
    for name, version in wanted.items():
        assert pinned.get(name) == version, f"workflow/envs/speechlens.yaml: {name} != {version}"
    assert set(pinned) - set(wanted) == {"torch"}
    assert "torch==2.13.0" in pip and "-e .." in pip


def test_every_rule_names_the_conda_env_and_a_log():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        blocks = re.split(r"\n(?=rule )", "\n" + text)  # a file's first rule too
        for block in (b for b in blocks if b.startswith("rule ")):
            name = block.split(":")[0]
            assert "conda:" in block, f"{smk.name}: {name} has no conda env"
            assert "log:" in block, f"{smk.name}: {name} has no log"


def test_every_conda_env_a_rule_names_exists_and_is_pinned_like_pyproject():
    """Rules name their env through `ENV` (rules/common.smk) or a path; each must exist under
    envs/, use the Python that pyproject.toml requires, and carry its pins (checked above
    for speechlens.yaml; here for every env file)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"])
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    default = re.search(r'^ENV = "([^"]+)"', common, flags=re.M).group(1)
    named = set()
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for value in re.findall(r"^\s+conda:\s*\n\s+(\S+)", smk.read_text(), flags=re.M):
            named.add(default if value == "ENV" else value.strip("\"'"))
    assert named, "no rule names a conda env"
    envs = {(REPO / "workflow" / "rules" / path).resolve() for path in named}
    assert envs <= set((REPO / "workflow" / "envs").glob("*.yaml")), f"missing env files: {envs}"
    minor = re.search(r">=3\.(\d+)", project["requires-python"]).group(1)
    for path in sorted((REPO / "workflow" / "envs").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        assert f"python=3.{minor}" in env["dependencies"], f"{path.name}: python 3.{minor}"
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        pinned = _pins(pip)
        for name, version in pinned.items():
            if name in wanted:
                assert version == wanted[name], f"{path.name}: {name}=={version} != {wanted[name]}"


def test_the_running_environment_has_the_pinned_versions():
    """What the tests run on is what pyproject.toml (and so the conda env) pins."""
    from importlib.metadata import PackageNotFoundError, version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wrong = {}
    for name, pinned in _pins(project["dependencies"]).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"installed versions differ from the pins (pinned, installed): {wrong}"
