"""Rules figure_cka_within and figure_cka_across: CKA heatmaps on one 0-1 colour scale."""

from speechlens.atomic import save_figure
from speechlens.cka import load_cka
from speechlens.logs import log_to
from speechlens.plotting import plot_cka_across, plot_cka_within

with log_to(snakemake.log[0]):
    p = snakemake.params
    if snakemake.rule == "figure_cka_within":
        fig = plot_cka_within(dict(zip(p.models, map(load_cka, snakemake.input), strict=True)))
    else:
        pairs = [tuple(pair) for pair in p.pairs]
        fig = plot_cka_across(dict(zip(pairs, map(load_cka, snakemake.input), strict=True)))
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=p.dpi)
