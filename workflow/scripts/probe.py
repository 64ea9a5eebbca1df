"""Rule probe: cross-validated probes of every layer for one task."""

from speechlens.logs import log_to
from speechlens.probing import run_task

with log_to(snakemake.log[0]):
    run_task(
        snakemake.input.store,
        snakemake.input.utterances,
        snakemake.input.segments,
        snakemake.params.task,
        snakemake.params.settings,
        snakemake.output.table,
        sidecar=snakemake.output.provenance,
        threads=snakemake.threads,
    )
