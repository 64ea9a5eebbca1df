"""Rule figure_probes: score vs layer of one probe, a panel per task, a line per model."""

from speechlens.atomic import save_figure
from speechlens.logs import log_to
from speechlens.plotting import plot_probe_curves, read_probe_tables

with log_to(snakemake.log[0]):
    p = snakemake.params
    fig = plot_probe_curves(
        read_probe_tables(snakemake.input),
        snakemake.wildcards.probe,
        p.metric,
        spread=p.spread,
        models=p.models,
        tasks=p.tasks,
    )
    save_figure(fig, snakemake.output.png, snakemake.output.pdf, dpi=p.dpi)
