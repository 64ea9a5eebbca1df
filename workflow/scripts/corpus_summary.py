"""Rule corpus_summary: plot a corpus' durations, speakers and label inventory."""

from speechlens.atomic import save_figure
from speechlens.corpora.contract import read_tables
from speechlens.logs import log_to
from speechlens.plotting import plot_corpus_summary

with log_to(snakemake.log[0]):
    utterances, segments = read_tables(snakemake.input.utterances, snakemake.input.segments)
    fig = plot_corpus_summary(utterances, segments)
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=snakemake.params.dpi)
