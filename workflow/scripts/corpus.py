"""Rule corpus: build one corpus folder from its config entry."""

from pathlib import Path

from speechlens.corpora import build_corpus
from speechlens.logs import log_to

with log_to(snakemake.log[0]):
    out_dir = Path(snakemake.output.utterances).parent
    build_corpus(snakemake.params.spec, out_dir, threads=snakemake.threads)
