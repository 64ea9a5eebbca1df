"""Rule cross_attention_saliency: cross-attention vs input saliency of a Whisper model."""

from speechlens.logs import log_to
from speechlens.saliency import run_corpus

with log_to(snakemake.log[0]):
    model = snakemake.params.model
    run_corpus(
        snakemake.input.get("checkpoint", model["source"]),
        snakemake.input.utterances,
        snakemake.params.settings,
        snakemake.output.table,
        snakemake.output.summary,
        snakemake.output.example,
        sidecar=snakemake.output.meta,
        revision=model["revision"],
        padding=snakemake.params.settings["padding"] or model["padding"],
        threads=snakemake.threads,
    )
