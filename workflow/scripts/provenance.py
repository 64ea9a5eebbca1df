"""Rule provenance: models, checksums, versions, code commit and config of a corpus' results."""

from pathlib import Path

from speechlens.logs import log_to
from speechlens.provenance import write_provenance

with log_to(snakemake.log[0]):
    p = snakemake.params
    write_provenance(
        dict(zip(p.models, snakemake.input.stores, strict=True)),
        p.config,
        snakemake.output.table,
        snakemake.output.html,
        repo=Path(snakemake.scriptdir),  # the checkout the workflow runs from
    )
