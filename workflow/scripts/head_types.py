"""Rule head_types: per-head attention statistics and types of one model over a corpus."""

from speechlens.attention.head_types import run_head_types
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
        "config_hash": config_hash([params.model, params.settings, params.corpus]),
    }
    run_head_types(
        adapter,
        snakemake.input.utterances,
        snakemake.output.table,
        snakemake.output.examples,
        out_json=snakemake.output.provenance,
        settings=params.settings,
        attrs=attrs,
    )
