"""The data chapter's figures (thesis 6.3.1): labels, sequence lengths, single utterances and
the feature dimensions that follow the label.

Each function takes a loaded ``MultimodalDataset`` and returns a matplotlib Figure; the numbers
they draw come from ``ambcore.data.report``.
"""

from __future__ import annotations

import numpy as np

from ambcore.data import synthetic
from ambcore.data.report import (
    dimension_correlations,
    seven_class_counts,
    train_feature_stats,
)
from ambcore.data.types import SPLITS, MultimodalDataset

__all__ = ["label_figure", "length_figure", "utterance_figure", "correlation_figure"]


def label_figure(dataset: MultimodalDataset):
    """Label histograms per split (bins of 1/3) and the shares of the seven Acc-7 classes."""
    # lazy: matplotlib, pandas and seaborn load only when a figure is drawn
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    frame = pd.concat(pd.DataFrame({"label": dataset[s].labels, "split": s}) for s in SPLITS)
    sns.histplot(
        frame,
        x="label",
        hue="split",
        stat="density",
        common_norm=False,
        bins=np.arange(-3.5, 3.6, 1 / 3),
        element="step",
        ax=axes[0],
    )
    axes[0].set_title("labels (bins of 1/3)")
    classes = pd.DataFrame(
        [
            (s, c, n / max(1, len(dataset[s])))
            for s in SPLITS
            for c, n in seven_class_counts(dataset[s].labels).items()
        ],
        columns=["split", "class", "fraction"],
    )
    sns.barplot(classes, x="class", y="fraction", hue="split", ax=axes[1])
    axes[1].set_title("Acc-7 classes: round(clip(label, -3, 3))")
    fig.suptitle(dataset.name, fontsize=10)  # synthetic names start with SYNTHETIC
    fig.tight_layout()
    return fig


def length_figure(dataset: MultimodalDataset):
    """Histograms of words, visual steps and acoustic steps per utterance, by split."""
    # lazy: matplotlib, pandas and seaborn load only when a figure is drawn
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    lengths = pd.concat(
        pd.DataFrame(
            {
                "split": s,
                "words": [len(t.split()) for t in dataset[s].texts],
                "visual steps": [len(v) for v in dataset[s].visual],
                "acoustic steps": [len(a) for a in dataset[s].acoustic],
            }
        )
        for s in SPLITS
    )
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, column in zip(axes, ("words", "visual steps", "acoustic steps")):
        sns.histplot(
            lengths,
            x=column,
            hue="split",
            stat="density",
            common_norm=False,
            element="step",
            ax=ax,
            legend=ax is axes[0],
        )
    fig.tight_layout()
    return fig


def utterance_figure(dataset: MultimodalDataset, index: int, split: str = "test"):
    """One utterance's visual and acoustic sequences as heatmaps (time along x, dimension along
    y), each dimension standardised with the training split's mean and std; word-aligned
    utterances of up to 30 words get their words as x labels."""
    # lazy: matplotlib and seaborn load only when a figure is drawn
    import matplotlib.pyplot as plt
    import seaborn as sns

    part = dataset[split]
    fig, axes = plt.subplots(1, 2, figsize=(11, 2.8), gridspec_kw={"width_ratios": [1, 1]})
    for ax, sequence, train, title in (
        (axes[0], part.visual[index], dataset["train"].visual, f"visual ({dataset.visual_dim}-d)"),
        (
            axes[1],
            part.acoustic[index],
            dataset["train"].acoustic,
            f"acoustic ({dataset.acoustic_dim}-d)",
        ),
    ):
        mean, std = train_feature_stats(train)
        sns.heatmap(
            ((sequence - mean) / std).T,
            cmap="vlag",
            center=0,
            vmin=-3,
            vmax=3,
            ax=ax,
            cbar=ax is axes[1],
            xticklabels=False,
            yticklabels=False,
        )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("dimension")
    if part.words is not None and len(part.words[index]) <= 30:
        for ax in axes:
            ax.set_xticks(np.arange(len(part.words[index])) + 0.5)
            ax.set_xticklabels(part.words[index], rotation=90, fontsize=7)
    fig.tight_layout()
    return fig


def correlation_figure(dataset: MultimodalDataset):
    """Bars of ``dimension_correlations`` on the training split for both modalities; on
    synthetic data the planted informative dimensions are red."""
    # lazy: matplotlib loads only when a figure is drawn
    import matplotlib.pyplot as plt

    train = dataset["train"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.8), gridspec_kw={"width_ratios": [35, 74]})
    visual_planted, acoustic_planted = synthetic.planted_dims(dataset.kind)
    for ax, sequences, name, planted in (
        (axes[0], train.visual, "visual", visual_planted),
        (axes[1], train.acoustic, "acoustic", acoustic_planted),
    ):
        corr = dimension_correlations(sequences, train.labels)
        colors = [
            "tab:red" if dataset.is_synthetic and d in planted else "tab:gray"
            for d in range(len(corr))
        ]
        ax.bar(np.arange(len(corr)), corr, color=colors)
        ax.set_title(
            f"{name}: correlation with the label"
            + (" (red: planted informative dims)" if dataset.is_synthetic else ""),
            fontsize=9,
        )
        ax.set_xlabel("dimension")
        ax.axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    return fig
