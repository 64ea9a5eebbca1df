"""Rule figure_saliency: cross-attention vs saliency heatmaps, bars and the example."""

from speechlens.atomic import save_figure
from speechlens.logs import log_to
from speechlens.plotting.saliency import (
    plot_cross_attention_saliency,
    read_saliency_example,
    read_saliency_summary,
    read_saliency_table,
)

with log_to(snakemake.log[0]):
    i = snakemake.input
    fig = plot_cross_attention_saliency(
        read_saliency_table(i.table),
        read_saliency_summary(i.summary),
        read_saliency_example(i.example),
        model=snakemake.wildcards.model,
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=snakemake.params.dpi)
