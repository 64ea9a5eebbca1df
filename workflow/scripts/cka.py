"""Rules cka_within and cka_across: CKA matrices of one model, or of a model pair."""

from speechlens import cka
from speechlens.logs import log_to

with log_to(snakemake.log[0]):
    s = snakemake.params.settings
    common = dict(
        estimator=s["estimator"], max_frames=s["max_frames"], seed=s["seed"], device=s["device"]
    )
    if snakemake.rule == "cka_within":
        cka.within_model(snakemake.input.store, snakemake.output[0], **common)
    else:
        cka.across_models(
            snakemake.input.store_a,
            snakemake.input.store_b,
            snakemake.output[0],
            align=s["align"],
            segments_tsv=snakemake.input.segments,
            tier=s["tier"],
            **common,
        )
