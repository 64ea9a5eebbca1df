"""Rule head_ablation: ablate groups of heads, re-extract the probed layers, re-probe."""

from speechlens.attention.ablation import run_ablation
from speechlens.config import config_hash
from speechlens.logs import log_to
from speechlens.models import make_adapter

with log_to(snakemake.log[0]):
    params = snakemake.params
    adapter = make_adapter(
        params.model,
        params.features,
        checkpoint=snakemake.input.get("checkpoint"),
        threads=snakemake.threads,
    )
    attrs = {
        "corpus": snakemake.wildcards.corpus,
        "model": snakemake.wildcards.model,
        "config_hash": config_hash(
            [params.model, params.features, params.settings, params.task, params.corpus]
        ),
    }
    run_ablation(
        adapter,
        snakemake.input.utterances,
        snakemake.input.segments,
        snakemake.input.head_types,
        snakemake.output.table,
        out_json=snakemake.output.provenance,
        out_summary=snakemake.output.summary,
        settings=params.settings,
        task=params.task,
        task_name=params.task_name,
        probe_settings=params.probe_settings,
        features=params.features,
        attrs=attrs,
        threads=snakemake.threads,
    )
