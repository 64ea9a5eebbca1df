"""Rules features and features_shard: extract a corpus with a model, or gather its shards."""

from speechlens.config import config_hash
from speechlens.extract import extract_corpus, gather
from speechlens.logs import log_to
from speechlens.models import make_adapter

with log_to(snakemake.log[0]):
    out, settings = snakemake.output[0], dict(snakemake.params.settings)
    if snakemake.input.get("shards"):
        gather(snakemake.input.shards, out, chunk_frames=settings["chunk_frames"])
    else:
        adapter = make_adapter(
            snakemake.params.model,
            settings,
            checkpoint=snakemake.input.get("checkpoint"),
            threads=snakemake.threads,
        )
        attrs = {
            "corpus": snakemake.wildcards.corpus,
            "model": snakemake.wildcards.model,
            "config_hash": config_hash([snakemake.params.model, settings, snakemake.params.corpus]),
        }
        shard = int(snakemake.wildcards.get("shard", 0))
        extract_corpus(
            adapter, snakemake.input.utterances, out, settings=settings, attrs=attrs, shard=shard
        )
