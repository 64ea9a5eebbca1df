"""Figures: ``plot_*(data, ...) -> Figure``, one module per figure family. Never saves;
rules save via :func:`speechlens.atomic.save_figure`.

Every figure shares :mod:`speechlens.plotting.style`: Okabe-Ito line colours and ``viridis``
heatmaps (colour-blind safe), fonts >= 7 pt, widths of a paper column (3.3 in) or page (7 in).
"""

from speechlens.plotting.attention import plot_ablation, plot_head_types
from speechlens.plotting.cka import plot_cka_across, plot_cka_within
from speechlens.plotting.corpus import plot_corpus_summary
from speechlens.plotting.probes import plot_layer_weights, plot_probe_curves, read_probe_tables
from speechlens.plotting.saliency import plot_cross_attention_saliency
from speechlens.plotting.style import OKABE_ITO

__all__ = [
    "OKABE_ITO",
    "plot_ablation",
    "plot_cka_across",
    "plot_cka_within",
    "plot_corpus_summary",
    "plot_cross_attention_saliency",
    "plot_head_types",
    "plot_layer_weights",
    "plot_probe_curves",
    "read_probe_tables",
]
