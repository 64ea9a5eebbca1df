"""The conda environments that rules name pin the versions of pyproject.toml, install
nothing by relative path, and hold what their rules' scripts import."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from speechlens.codeversion import ROOT, imported_modules, module_closure
from tests.conftest import REPO

RULES = REPO / "workflow" / "rules"
ENVS = REPO / "workflow" / "envs"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins(specs) -> dict[str, str]:
    pins = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", spec.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def _env_variables() -> dict[str, str]:
    """`NAME = "../envs/x.yaml"` assignments of rules/common.smk: {NAME: path}."""
    common = (RULES / "common.smk").read_text()
    return dict(re.findall(r'^(\w+) = "(\.\./envs/[^"]+)"', common, flags=re.M))


def _rules() -> dict[str, dict]:
    """{rule: {"file", "env" (resolved path), "script" (resolved path or None)}}."""
    variables = _env_variables()
    rules = {}
    for smk in sorted(RULES.glob("*.smk")):
        for block in re.split(r"\n(?=rule )", "\n" + smk.read_text()):
            if not block.startswith("rule "):
                continue
            name = block.split(":")[0].removeprefix("rule ")
            conda = re.search(r"^\s+conda:\s*\n\s+(\S+)", block, flags=re.M)
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
            env = None
            if conda:
                value = conda.group(1)
                env = (RULES / variables.get(value, value.strip("\"'"))).resolve()
            rules[name] = {
                "file": smk.name,
                "block": block,
                "env": env,
                "script": (RULES / script.group(1)).resolve() if script else None,
            }
    return rules


def test_every_rule_names_a_conda_env_and_a_log():
    rules = _rules()
    assert len(rules) >= 15
    for name, rule in rules.items():
        assert rule["env"] is not None, f"{rule['file']}: {name} has no conda env"
        assert "log:" in rule["block"], f"{rule['file']}: {name} has no log"


def test_every_env_a_rule_names_exists():
    named = {rule["env"] for rule in _rules().values()}
    assert named <= set(ENVS.glob("*.yaml")), f"missing env files: {named}"
    assert len(named) >= 2  # the figures have their own, lighter environment


@pytest.mark.parametrize("path", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_equal_pyproject_and_nothing_is_installed_by_path(path):
    """Same versions as pyproject.toml, the Python it requires, and no editable or relative
    install (`-e ..` would point into .snakemake/conda/ once Snakemake copies the file)."""
    wanted = _pins(PROJECT["dependencies"])
    minor = re.search(r">=3\.(\d+)", PROJECT["requires-python"]).group(1)
    env = yaml.safe_load(path.read_text())
    assert f"python=3.{minor}" in env["dependencies"], f"{path.name}: python 3.{minor}"
    pip = _pip(path)
    for spec in pip:
        assert not re.match(r"(-e|--editable)\b|\.|/|file:|git\+", spec.strip()), (
            f"{path.name}: {spec!r} installs from a path"
        )
        assert "==" in spec, f"{path.name}: {spec!r} is not pinned"
    pinned = _pins(pip)
    assert pinned, f"{path.name} pins nothing"
    torch_range = next(
        SpecifierSet(Requirement(d).specifier.__str__())
        for d in PROJECT["dependencies"]
        if canonicalize_name(Requirement(d).name) == "torch"
    )
    for name, version in pinned.items():
        if name == "torch":  # pyproject.toml allows a range; the env picks one in it
            assert version in torch_range, f"{path.name}: torch=={version} not in {torch_range}"
        else:
            assert name in wanted, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert version == wanted[name], f"{path.name}: {name}=={version} != {wanted[name]}"


def test_the_models_env_holds_every_dependency():
    """speechlens.yaml, the environment of every rule that runs a model, is the whole
    dependency list of pyproject.toml (torch pinned to one version)."""
    pinned = _pins(_pip(ENVS / "speechlens.yaml"))
    wanted = {canonicalize_name(Requirement(d).name) for d in PROJECT["dependencies"]}
    assert set(pinned) == wanted


# --- each environment holds what its rules' scripts import -------------------------------


def _third_party(module: str) -> set[str]:
    """Top-level names that speechlens module ``module`` imports (anywhere in the file)."""
    parts = module.split(".")
    base = ROOT.joinpath(*parts[1:])
    path = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"speechlens", "__future__"}


def _closure(modules: list[str]) -> set[str]:
    """``modules``, what they import, and the packages Python imports on the way."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        new = set(module_closure(*todo)) - seen
        seen |= new
        parents = {".".join(m.split(".")[:i]) for m in new for i in range(2, m.count(".") + 1)}
        todo = sorted(parents - seen)
    return seen


@cache
def _requirements(dist: str) -> frozenset[str]:
    """``dist`` and every distribution it requires, transitively (no extras)."""
    out = {canonicalize_name(dist)}
    try:
        reqs = requires(dist) or []
    except PackageNotFoundError:
        return frozenset(out)
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out |= _requirements(req.name)
    return frozenset(out)


@pytest.mark.parametrize("env", sorted(ENVS.glob("*.yaml")), ids=lambda p: p.name)
def test_each_env_holds_what_its_rules_scripts_import(env):
    """Every third-party module that the scripts of the rules naming ``env`` import, through
    speechlens, comes from a distribution the env pins or one that those require."""
    provided = set().union(*(_requirements(name) for name in _pins(_pip(env))))
    dists = packages_distributions()
    rules = {n: r for n, r in _rules().items() if r["env"] == env.resolve() and r["script"]}
    missing = {}
    for name, rule in rules.items():
        for module in sorted(_closure(imported_modules(rule["script"]))):
            for top in _third_party(module):
                owners = {canonicalize_name(d) for d in dists.get(top, [top])}
                if not owners & provided:
                    missing.setdefault(name, set()).add(f"{top} (in {module})")
    assert not missing, f"{env.name} lacks what these rules import: {missing}"


def test_the_figures_env_has_no_torch():
    provided = set().union(*(_requirements(n) for n in _pins(_pip(ENVS / "figures.yaml"))))
    assert "torch" not in provided and "transformers" not in provided


def test_the_running_environment_has_the_pinned_versions():
    """What the tests run on is what pyproject.toml (and so the conda envs) pins."""
    from importlib.metadata import version

    wrong = {}
    for name, pinned in _pins(PROJECT["dependencies"]).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"installed versions differ from the pins (pinned, installed): {wrong}"
