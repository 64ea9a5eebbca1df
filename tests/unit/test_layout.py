"""The repository has the layout the Snakemake ecosystem standardised (the workflow
catalog's "standardized usage" criteria, snakedeploy's module deployment)."""

from __future__ import annotations

import tomllib

import yaml

from tests.conftest import REPO


def test_canonical_layout():
    for path in (
        "workflow/Snakefile",
        "workflow/rules",
        "workflow/scripts",
        "workflow/envs",
        "workflow/schemas/config.schema.yaml",
        "workflow/report/workflow.rst",
        "config/config.yaml",
        "config/README.md",
        "profiles/default/config.yaml",
        "LICENSE",
        ".snakemake-workflow-catalog.yml",
        "docs/architecture.md",
    ):
        assert (REPO / path).exists(), path
    assert list((REPO / "workflow/rules").glob("*.smk")), "the catalog wants .smk rule files"
    for stale in ("Snakefile", "rules", "envs", "report", "config/schemas"):
        assert not (REPO / stale).exists(), f"{stale} belongs under workflow/"
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme  # the catalog's search


def test_the_catalog_settings_parse_and_name_a_deployment():
    settings = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["software-stack-deployment"]["conda"] is True
    assert set(usage["software-stack-deployment"]) <= {
        "conda",
        "apptainer",
        "apptainer+conda",
        "singularity",
        "singularity+conda",
    }
    assert usage["report"] is True


def test_license_is_the_one_pyproject_declares():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_package_ships_the_workflow_schema():
    """The library reads its defaults from the packaged schema: the very file the workflow
    validates against."""
    from speechlens.schema import SCHEMA_PATH

    packaged = REPO / "src/speechlens/schemas/config.schema.yaml"
    assert packaged.resolve() == (REPO / "workflow/schemas/config.schema.yaml").resolve()
    assert SCHEMA_PATH.read_text() == packaged.read_text()
