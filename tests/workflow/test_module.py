"""The workflow used as a Snakemake `module` (as snakedeploy deploys it): a fresh folder with
its own config and a Snakefile that names this checkout's workflow/Snakefile.

The real run is the smallest branch of the tiny experiment (corpus, the log-mel baseline's
features, one probe task); every other rule of the tiny experiment is planned (dry run), so
each resolves its scripts, environments, captions and schema from the module's location.
Then the checkout and the project are moved: nothing reruns.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests import snakemake_cli as cli

REPO = cli.REPO
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
TARGETS = (
    "resources/corpora/tiny/utterances.tsv",
    "results/tiny/logmel/probes/language.tsv",
)

pytestmark = pytest.mark.slow

DEPLOYED = """\
configfile: "config/config.yaml"


module speechlens:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from speechlens
"""


def deploy(folder: Path, checkout: Path) -> Path:
    """A project folder using ``checkout``'s workflow as a module, with the tiny config."""
    (folder / "workflow").mkdir(parents=True, exist_ok=True)
    (folder / "config").mkdir(exist_ok=True)
    shutil.copy(TINY, folder / "config" / "config.yaml")
    snakefile = checkout / "workflow" / "Snakefile"
    (folder / "workflow" / "Snakefile").write_text(DEPLOYED.format(snakefile=snakefile))
    return folder


def snakemake(folder: Path, *args: str, **kw):
    """Plain `snakemake` in ``folder`` (it finds workflow/Snakefile and config there)."""
    return cli.run(folder, *args, profile=None, snakefile=folder / "workflow" / "Snakefile", **kw)


def recorded_params(folder: Path) -> dict[str, list]:
    """{output: the params Snakemake recorded for the job that made it}."""
    root = folder / ".snakemake" / "metadata"
    out = {}
    for record in (p for p in root.rglob("*") if p.is_file()):
        # the base64 of the output path, split into folders "@part/.../last" when long
        name = "".join(part.removeprefix("@") for part in record.relative_to(root).parts)
        path = base64.urlsafe_b64decode(name.encode()).decode()
        out[path] = json.loads(record.read_text()).get("params", [])
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The deployed folder after the real run of TARGETS."""
    folder = deploy(tmp_path_factory.mktemp("project"), REPO)
    snakemake(folder, "--cores", "2", *TARGETS, timeout=1200)
    return folder


def test_every_rule_of_the_tiny_experiment_resolves_as_a_module(project):
    proc = snakemake(project, "-n", "--cores", "2", "all", timeout=300)
    for rule in ("features", "probe", "cka_within", "head_types", "train_tera", "provenance"):
        assert rule in proc.stdout, f"{rule} not planned:\n{proc.stdout[-3000:]}"


def test_the_module_run_writes_under_the_project_folder(project):
    for target in TARGETS:
        assert (project / target).is_file()
    assert (project / "results/tiny/logmel/features.zarr").is_dir()
    assert (project / "logs/tiny/logmel/features.log").is_file()
    assert (project / "resources/corpora/tiny/audio").is_dir()
    # nothing was written beside the module's Snakefile
    assert not (REPO / "workflow" / "results").exists()
    assert not (REPO / "workflow" / "resources").exists()


def test_no_params_hold_an_absolute_path(project):
    """Params are what a job computes with; a path of the checkout or of the project folder
    there would rerun the job wherever either moves."""
    params = recorded_params(project)
    assert set(TARGETS) <= set(params)
    for output, values in params.items():
        text = json.dumps(values)
        for folder in (REPO, project, Path.home()):
            assert str(folder) not in text, f"{output}: params name {folder}: {text[:500]}"


def test_moving_the_checkout_reruns_nothing(project, tmp_path):
    """The checkout and the project moved elsewhere (file times kept, as `mv` or `cp -a`
    keep them): up to date. (A fresh clone gives the scripts new times, and Snakemake's
    `code` trigger reruns a script rule whose script is newer than its outputs.)"""
    moved = tmp_path / "elsewhere" / "speechlens"
    for name in ("workflow", "config", "src"):
        shutil.copytree(REPO / name, moved / name, ignore=shutil.ignore_patterns("__pycache__"))
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)  # the project moves too
    deploy(copy, moved)
    config = yaml.safe_load((copy / "config" / "config.yaml").read_text())
    assert config == yaml.safe_load(TINY.read_text())
    proc = snakemake(copy, "-n", "--cores", "1", *TARGETS, timeout=300)
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]
