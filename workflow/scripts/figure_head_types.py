"""Rule figure_head_types: a model's head types (grid, scatter, example maps)."""

from speechlens.atomic import save_figure
from speechlens.logs import log_to
from speechlens.plotting.attention import plot_head_types, read_examples, read_head_types

with log_to(snakemake.log[0]):
    p = snakemake.params
    fig = plot_head_types(
        read_head_types(snakemake.input.table),
        p.thresholds,
        read_examples(snakemake.input.examples),
        model=snakemake.wildcards.model,
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=p.dpi)
