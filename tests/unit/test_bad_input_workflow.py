"""Config errors stop the real workflow at start-up (``snakemake -n``), naming the key,
before any job runs. Few and small: each one starts snakemake."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO, run_snakemake

TINY = yaml.safe_load((REPO / "tests" / "workflow" / "tiny.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["models"]["logmel"].update(family="hubert_xl"),
            "config key models.logmel.family: 'hubert_xl' is not one of",
        ),
        (
            lambda c: c["cka"].update(pairs=[["logmel", "logmel"]]),
            "config key cka.pairs[0]: compares 'logmel' with itself",
        ),
        (
            lambda c: c["cka"].update(pairs=[["logmel", "whisper_tiny_en"], ["logmel", "mfcc"]]),
            "config key cka.pairs[1]: model 'mfcc' is not in `models`",
        ),
    ],
)
def test_config_error_stops_snakemake_naming_the_key(tmp_path, mutate, expected):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    mutate(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "-n", "--cores", "1", configfile=bad, check=False)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()
