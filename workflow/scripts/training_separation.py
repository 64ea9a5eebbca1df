"""Rule training_separation: an analysed corpus shares nothing with the training audio."""

from speechlens.logs import log_to
from speechlens.tera.data import check_separation

with log_to(snakemake.log[0]):
    check_separation(
        snakemake.input.training,
        snakemake.input.probed,
        snakemake.params.languages,
        training_corpus=snakemake.params.training_corpus,
        probed_corpus=snakemake.wildcards.corpus,
        out=snakemake.output[0],
    )
