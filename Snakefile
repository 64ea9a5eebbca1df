# speechlens: what each layer of a speech model knows, and how its attention heads behave.
# Paths and resources live in rules/*.smk; computation lives in src/speechlens.
from pathlib import Path

from snakemake.utils import min_version, validate

from speechlens.config import check_config

min_version("9.0")


# `--configfile FILE` replaces the embedded default experiment; `--config k=v` tweaks it.
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config/config.yaml"


SCHEMA = Path(workflow.basedir) / "config/schemas/config.schema.yaml"
check_config(config, SCHEMA)  # names every bad key
validate(config, SCHEMA)  # fills the defaults


report: "report/workflow.rst"  # front page of `snakemake --report`


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/models.smk"
include: "rules/training.smk"
include: "rules/features.smk"
include: "rules/probes.smk"
include: "rules/cka.smk"
include: "rules/attention.smk"
include: "rules/saliency.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
        attention_targets(),
        saliency_targets(),
