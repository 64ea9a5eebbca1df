"""Figures: ``plot_*(data, ...) -> Figure``, one module per figure family. Never saves;
rules save via :func:`speechlens.atomic.save_figure`.

Every figure shares :mod:`speechlens.plotting.style`: Okabe-Ito line colours and ``viridis``
heatmaps (colour-blind safe), fonts >= 7 pt, widths of a paper column (3.3 in) or page (7 in).
"""

from speechlens.lazy import lazy_getattr
from speechlens.plotting.style import OKABE_ITO

# Imported on first use (PEP 562): a figure job loads only its figure's module (the
# attention figures read tables whose modules import torch). speechlens.codeversion counts
# these module names as imports.
_LAZY = {
    "speechlens.plotting.attention": ("plot_ablation", "plot_head_types"),
    "speechlens.plotting.cka": ("plot_cka_across", "plot_cka_within"),
    "speechlens.plotting.corpus": ("plot_corpus_summary",),
    "speechlens.plotting.probes": ("plot_layer_weights", "plot_probe_curves", "read_probe_tables"),
    "speechlens.plotting.saliency": ("plot_cross_attention_saliency",),
}
__getattr__ = lazy_getattr(__name__, globals(), _LAZY)


__all__ = [  # OKABE_ITO and the lazy names of _LAZY
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
