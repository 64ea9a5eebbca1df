"""Figures plot the table's values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens.plotting import plot_corpus_summary


def test_corpus_summary_plots_the_table_values():
    utts = pd.DataFrame(
        {
            "utterance_id": ["a", "b", "c"],
            "language": ["en", "en", "tr"],
            "gender": ["female", "male", "female"],
            "duration_s": [60.0, 120.0, 30.0],
        }
    )
    segs = pd.DataFrame(
        {
            "utterance_id": ["a", "a", "a", "b", "c", "c"],
            "tier": ["phone", "phone", "word", "phone", "phone", "word"],
            "label": ["p", "sil", "w", "q", "p", "v"],
        }
    )
    fig = plot_corpus_summary(utts, segs)
    ax_min, ax_dur, ax_inv = fig.axes
    tops = sorted(round(b.get_y() + b.get_height(), 6) for b in ax_min.patches)
    # en: female 1 min + male 2 min stacked = 3; tr: 0.5 (and a zero-height male bar)
    assert tops[-1] == pytest.approx(3.0) and 0.5 in tops
    heights = [b.get_height() for b in ax_inv.patches]
    # phones per language (sil excluded): en {p, q} = 2, tr {p} = 1; words: en 1, tr 1
    assert sorted(heights) == [1, 1, 1, 2]
    assert ax_min.get_ylabel() == "audio (min)"
    canvas = fig.canvas
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())
    assert pixels.std() > 10  # not blank
