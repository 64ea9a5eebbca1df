"""Rule train_tera: pretrain a TERA model on one language of the training corpus."""

from speechlens.logs import log_to
from speechlens.tera.train import train

with log_to(snakemake.log[0]):
    train(
        snakemake.input.utterances,
        snakemake.wildcards.language,
        snakemake.output[0],
        snakemake.params.settings,
        state_dir=snakemake.params.state_dir,
        threads=snakemake.threads,
    )
