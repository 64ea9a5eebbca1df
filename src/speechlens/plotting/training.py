"""Training figures: a TERA model's loss curve (its ``training_log.tsv``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from speechlens.plotting.style import BASELINE_COLOUR, COLUMN_WIDTH, LINE_COLOURS, styled


@styled
def plot_training_curve(training_log: pd.DataFrame) -> Figure:
    """Training and held-out L1 reconstruction loss against the step, with the held-out
    loss of predicting the per-channel training mean as the reference line.

    ``training_log`` has columns ``step, train_loss, heldout_loss, heldout_mean_loss``
    (a TERA ``training_log.tsv``; losses in normalised log-mel units).
    """
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.4), layout="constrained")
    rows = training_log.sort_values("step")
    trained = rows.dropna(subset=["train_loss"])
    ax.plot(trained["step"], trained["train_loss"], color=LINE_COLOURS[1], label="train")
    ax.plot(rows["step"], rows["heldout_loss"], color=LINE_COLOURS[0], marker=".", label="held-out")
    ax.axhline(
        float(rows["heldout_mean_loss"].iloc[-1]),
        color=BASELINE_COLOUR,
        linestyle="--",
        linewidth=1,
        label="held-out, mean predictor",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("L1 loss (altered positions)")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    return fig
