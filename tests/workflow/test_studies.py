"""Each seed study is one config (config/studies/): it validates, passes the cross-reference
checks and plans the analyses its study needs (a dry run: nothing is computed, nothing is
downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import snakemake_cli as cli
from tests.conftest import REPO

STUDIES = sorted((REPO / "config" / "studies").glob("*.yaml"))

NEEDS = {
    "attention_heads_en_tr": {"train_tera", "head_types", "head_ablation", "probe", "findings"},
    "cross_attention_saliency": {"cross_attention_saliency", "head_types", "findings"},
    "language_vs_content_layers": {"probe", "cka_across", "findings"},
    "speech_vs_speaker_models": {"probe", "cka_within", "cka_across", "findings"},
    "what_foundation_models_miss": {"probe", "cka_within", "findings"},
}
"""Rules each study must plan (its analyses, and the findings page)."""


def test_every_study_has_a_full_and_an_offline_config():
    names = {p.name.removesuffix(".yaml") for p in STUDIES}
    assert {n for n in names if not n.endswith(".offline")} == set(NEEDS)
    assert {n.removesuffix(".offline") for n in names if n.endswith(".offline")} == set(NEEDS)


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_config_plans_its_analyses(path: Path, tmp_path):
    rules = set(cli.planned(tmp_path, configfile=path).values())
    missing = NEEDS[path.name.removesuffix(".yaml").removesuffix(".offline")] - rules
    assert not missing, f"{path.name} plans no {sorted(missing)}"


def test_make_run_study_writes_its_report_inside_the_study_folder():
    """`make run STUDY=<name>` runs snakemake in runs/<name>/ (--directory): the report path
    is resolved there, so it must be given relative to it (runs/<name>/results/report.html,
    the path the command prints), not runs/<name>/runs/<name>/..."""
    import shlex
    import subprocess

    study = "speech_vs_speaker_models.offline"
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "run", f"STUDY={study}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = next(line for line in out.splitlines() if "snakemake" in line)
    args = shlex.split(command)
    folder = Path(args[args.index("--directory") + 1])
    report = Path(args[args.index("--report") + 1])
    assert folder == Path("runs") / study
    assert not report.is_absolute()
    assert folder / report == Path("runs") / study / "results" / "report.html"
    assert f"runs/{study}/results/report.html" in out  # what the user is told to open
