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
