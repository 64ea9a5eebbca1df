"""Corpus figure: audio per language, utterance durations and label inventories."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import pandas as pd
from matplotlib.figure import Figure

from speechlens.plotting.style import MIN_FONT_PT, OKABE_ITO, TEXT_WIDTH, styled


@styled
def plot_corpus_summary(utterances: pd.DataFrame, segments: pd.DataFrame) -> Figure:
    """Three panels per language: audio minutes by gender, utterance durations (s), and the
    number of distinct phone and word labels (silence excluded).

    ``utterances`` and ``segments`` follow the corpus contract (DESIGN.md).
    """
    languages = sorted(utterances["language"].unique())
    fig, (ax_min, ax_dur, ax_inv) = plt.subplots(
        1, 3, figsize=(TEXT_WIDTH, 2.6), layout="constrained"
    )

    minutes = (
        utterances.pivot_table(
            index="language", columns="gender", values="duration_s", aggfunc="sum", fill_value=0.0
        ).reindex(languages)
        / 60.0
    )
    bottom = pd.Series(0.0, index=languages)
    for colour, gender in zip(OKABE_ITO, minutes.columns, strict=False):
        ax_min.bar(languages, minutes[gender], bottom=bottom, color=colour, label=gender)
        bottom += minutes[gender]
    ax_min.set_ylim(0, 1.3 * float(bottom.max()))  # room for the legend above the bars
    ax_min.set_ylabel("audio (min)")
    ax_min.set_title("Audio per language")
    ax_min.legend(fontsize=MIN_FONT_PT, frameon=False, ncols=2, loc="upper left")

    durations = [utterances.loc[utterances["language"] == lang, "duration_s"] for lang in languages]
    ax_dur.boxplot(durations, tick_labels=languages)
    ax_dur.set_ylabel("utterance duration (s)")
    ax_dur.set_title("Durations")

    speech = segments[segments["label"] != "sil"].merge(
        utterances[["utterance_id", "language"]], on="utterance_id"
    )
    inventory = speech.groupby(["language", "tier"])["label"].nunique().unstack(fill_value=0)
    inventory = inventory.reindex(index=languages, fill_value=0)
    width = 0.8 / max(len(inventory.columns), 1)
    for i, tier in enumerate(inventory.columns):
        xs = [j + (i - (len(inventory.columns) - 1) / 2) * width for j in range(len(languages))]
        ax_inv.bar(xs, inventory[tier], width=width, color=OKABE_ITO[4 + i % 4], label=tier)
    ax_inv.set_xticks(range(len(languages)), languages)
    ax_inv.set_yscale("log")
    ax_inv.yaxis.set_major_formatter(ticker.ScalarFormatter())
    ax_inv.set_ylim(top=4 * float(inventory.to_numpy().max(initial=1)))
    ax_inv.set_ylabel("distinct labels")
    ax_inv.set_title("Inventory")
    ax_inv.legend(fontsize=MIN_FONT_PT, frameon=False, ncols=2, loc="upper left")
    for ax in (ax_min, ax_dur, ax_inv):
        ax.tick_params(axis="x", labelrotation=45, labelsize=MIN_FONT_PT)
    return fig
