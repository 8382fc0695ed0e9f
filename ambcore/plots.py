"""Figures and tables of training results, built from run-folder files (thesis 6.3.1-6.3.2).

Every function takes what a run folder holds (``history.csv`` as a DataFrame, predictions as
arrays, ``metrics.json`` dicts) and returns a matplotlib ``Figure`` or a pandas ``DataFrame``;
nothing is computed that ``ambcore.metrics`` does not define. Callers put the data/PLM banner
(``ambcore.book.banner``) beside them; ``subtitle`` arguments carry the same provenance into
the figure itself so that a figure copied out of the book still says where it came from.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ambcore.metrics import SENTIMENT_CLASSES, confusion_7

__all__ = [
    "METRIC_COLUMNS",
    "metrics_table",
    "learning_curves",
    "prediction_scatter",
    "confusion_matrix_figure",
    "provenance_line",
]

# metric key -> (column title, scale); accuracies and F1 are shown in percent as in the thesis.
METRIC_COLUMNS: dict[str, tuple[str, float]] = {
    "mae": ("MAE", 1.0),
    "corr": ("Corr", 1.0),
    "acc7": ("Acc-7 (%)", 100.0),
    "acc5": ("Acc-5 (%)", 100.0),
    "acc2_has0": ("Acc-2 has-0 (%)", 100.0),
    "f1_has0": ("F1 has-0 (%)", 100.0),
    "acc2_non0": ("Acc-2 non-0 (%)", 100.0),
    "f1_non0": ("F1 non-0 (%)", 100.0),
}


def provenance_line(data_name: str, is_synthetic: bool, plm: str) -> str:
    """'SYNTHETIC data (...) · PLM embedded' -- for figure subtitles and captions."""
    kind = "SYNTHETIC data" if is_synthetic else "data"
    return f"{kind}: {data_name} · PLM: {plm}"


def metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per entry of ``rows`` (e.g. ``{"valid": m, "test": m}``), columns with units.

    Missing or undefined metrics (``None``/NaN, e.g. the correlation of a constant predictor)
    stay NaN; the tables of the book print them as a dash.
    """
    records = []
    for name, metrics in rows.items():
        record: dict[str, Any] = {"": name}
        for key, (title, scale) in METRIC_COLUMNS.items():
            value = metrics.get(key)
            record[title] = np.nan if value is None else float(value) * scale
        record["N"] = metrics.get("n")
        records.append(record)
    return pd.DataFrame.from_records(records)


def learning_curves(history: pd.DataFrame, best_epoch: int | None = None, subtitle: str = ""):
    """Train/valid loss, valid MAE and valid Acc-7 per epoch (``history.csv``)."""
    import matplotlib.pyplot as plt

    epochs = history["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    ax = axes[0]
    ax.plot(epochs, history["train_loss"], marker="o", label="train")
    ax.plot(epochs, history["valid_loss"], marker="o", label="valid")
    if "train_aux_loss" in history and (history["train_aux_loss"].fillna(0) != 0).any():
        ax.plot(epochs, history["train_aux_loss"], marker=".", ls=":", label="train auxiliary")
    ax.set(title="loss", xlabel="epoch", ylabel="loss (task loss)")
    ax.legend()
    axes[1].plot(epochs, history["valid_mae"], marker="o", color="C1")
    axes[1].set(title="validation MAE", xlabel="epoch", ylabel="MAE (sentiment units)")
    axes[2].plot(epochs, 100 * history["valid_acc7"], marker="o", color="C2")
    axes[2].set(title="validation Acc-7", xlabel="epoch", ylabel="Acc-7 (%)")
    if best_epoch:
        for ax in axes:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
        axes[1].annotate("best", (best_epoch, axes[1].get_ylim()[1]), ha="left", va="top",
                         color="grey", xytext=(3, -3), textcoords="offset points")  # fmt: skip
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return fig


def prediction_scatter(y_true, y_pred, subtitle: str = "", split: str = "test"):
    """Predicted against true sentiment, with the identity line and the [-3, 3] range."""
    import matplotlib.pyplot as plt

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    fig, ax = plt.subplots(figsize=(4.6, 4.4), constrained_layout=True)
    # MOSEI-style labels sit on a 1/3 grid: a little horizontal jitter shows the density.
    jitter = np.random.default_rng(0).uniform(-0.06, 0.06, size=y_true.shape)
    ax.scatter(y_true + jitter, y_pred, s=8, alpha=0.45, edgecolor="none")
    lim = (-3.3, 3.3)
    ax.plot(lim, lim, color="grey", lw=1, ls="--", label="y = x")
    ax.set(xlim=lim, ylim=(min(lim[0], y_pred.min() - 0.1), max(lim[1], y_pred.max() + 0.1)),
           xlabel="true sentiment", ylabel="predicted sentiment",
           title=f"{split}: predicted vs true (N={len(y_true)})")  # fmt: skip
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper left")
    if subtitle:
        fig.suptitle(subtitle, fontsize=8)
    return fig


def confusion_matrix_figure(y_true, y_pred, subtitle: str = "", split: str = "test"):
    """The 7-class confusion matrix (rows: true class; cells: % of the row, with counts)."""
    import matplotlib.pyplot as plt

    counts = confusion_7(y_pred, y_true)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(5.4, 4.6), constrained_layout=True)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(7):
        for j in range(7):
            if counts[i, j]:
                ax.text(j, i, f"{share[i, j]:.0f}%\n{counts[i, j]}", ha="center", va="center",
                        fontsize=7, color="white" if share[i, j] > 55 else "black")  # fmt: skip
    ticks = range(7)
    labels = [f"{c:+d}" if c else "0" for c in SENTIMENT_CLASSES]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, [f"{lab} (n={int(t)})" for lab, t in zip(labels, totals[:, 0])])
    acc7 = np.trace(counts) / max(counts.sum(), 1)
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"{split}: 7-class confusion (Acc-7 {100 * acc7:.1f}%)")  # fmt: skip
    fig.colorbar(image, ax=ax, label="% of the true class")
    if subtitle:
        fig.suptitle(subtitle, fontsize=8)
    return fig
