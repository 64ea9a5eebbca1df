"""Figures: ``plot_*(data, ...) -> Figure``, one module per figure family. Never saves;
rules save via :func:`speechlens.atomic.save_figure`.

Every figure shares :mod:`speechlens.plotting.style`: Okabe-Ito line colours and ``viridis``
heatmaps (colour-blind safe), fonts >= 7 pt, widths of a paper column (3.3 in) or page (7 in).
"""

from speechlens.plotting.cka import plot_cka_across, plot_cka_within
from speechlens.plotting.corpus import plot_corpus_summary
from speechlens.plotting.probes import plot_layer_weights, plot_probe_curves, read_probe_tables
from speechlens.plotting.style import OKABE_ITO

__all__ = [
    "OKABE_ITO",
    "plot_cka_across",
    "plot_cka_within",
    "plot_corpus_summary",
    "plot_layer_weights",
    "plot_probe_curves",
    "read_probe_tables",
]
