"""Rule figure_ablation: score change per ablated group of heads, random controls beside."""

from speechlens.atomic import save_figure
from speechlens.logs import log_to
from speechlens.plotting.attention import plot_ablation, read_ablation

with log_to(snakemake.log[0]):
    p = snakemake.params
    fig = plot_ablation(
        read_ablation(snakemake.input.table), metric=p.metric, model=snakemake.wildcards.model
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=p.dpi)
