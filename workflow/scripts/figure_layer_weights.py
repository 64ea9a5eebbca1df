"""Rule figure_layer_weights: the weighted-sum probe's layer weights per task and model."""

from speechlens.atomic import save_figure
from speechlens.logs import log_to
from speechlens.plotting import plot_layer_weights, read_probe_tables

with log_to(snakemake.log[0]):
    p = snakemake.params
    fig = plot_layer_weights(
        read_probe_tables(snakemake.input), metric=p.metric, models=p.models, tasks=p.tasks
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=p.dpi)
