"""Figures and tables of training results, built from run-folder files (thesis 6.3.1-6.3.2).

Every function takes what a run folder holds (``history.csv`` as a DataFrame, predictions as
arrays, ``metrics.json`` dicts) and returns a matplotlib ``Figure`` or a pandas ``DataFrame``;
nothing is computed that ``ambcore.metrics`` does not define. Callers put the data/PLM banner
(``ambcore.pages.banner``) beside them; ``subtitle`` arguments carry the same provenance into
the figure itself so that a figure copied out of the book still says where it came from.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

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
    "acc7_params_figure",
    "robustness_figure",
    "calibration_figure",
    "differences_figure",
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
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
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
        axes[1].annotate(
            "best",
            (best_epoch, axes[1].get_ylim()[1]),
            ha="left",
            va="top",
            color="grey",
            xytext=(3, -3),
            textcoords="offset points",
        )
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return fig


def prediction_scatter(y_true, y_pred, subtitle: str = "", split: str = "test"):
    """Predicted against true sentiment, with the identity line and the [-3, 3] range."""
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    fig, ax = plt.subplots(figsize=(4.6, 4.4), constrained_layout=True)
    # MOSEI-style labels sit on a 1/3 grid: a little horizontal jitter shows the density.
    jitter = np.random.default_rng(0).uniform(-0.06, 0.06, size=y_true.shape)
    ax.scatter(y_true + jitter, y_pred, s=8, alpha=0.45, edgecolor="none")
    lim = (-3.3, 3.3)
    ax.plot(lim, lim, color="grey", lw=1, ls="--", label="y = x")
    ax.set(
        xlim=lim,
        ylim=(min(lim[0], y_pred.min() - 0.1), max(lim[1], y_pred.max() + 0.1)),
        xlabel="true sentiment",
        ylabel="predicted sentiment",
        title=f"{split}: predicted vs true (N={len(y_true)})",
    )
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="upper left")
    if subtitle:
        fig.suptitle(textwrap.fill(subtitle, 62), fontsize=7)
    return fig


def confusion_matrix_figure(y_true, y_pred, subtitle: str = "", split: str = "test"):
    """The 7-class confusion matrix (rows: true class; cells: % of the row, with counts)."""
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    counts = confusion_7(y_pred, y_true)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(5.4, 4.6), constrained_layout=True)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    for i in range(7):
        for j in range(7):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.0f}%\n{counts[i, j]}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 55 else "black",
                )
    ticks = range(7)
    labels = [f"{c:+d}" if c else "0" for c in SENTIMENT_CLASSES]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, [f"{lab} (n={int(t)})" for lab, t in zip(labels, totals[:, 0])])
    acc7 = np.trace(counts) / max(counts.sum(), 1)
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{split}: 7-class confusion (Acc-7 {100 * acc7:.1f}%)",
    )
    fig.colorbar(image, ax=ax, label="% of the true class")
    if subtitle:
        fig.suptitle(textwrap.fill(subtitle, 72), fontsize=7)
    return fig


# ---- chapter 6.3 figures (ablation and robustness) ---------------------------------------------

_SOURCE_STYLE = {  # figure 6.2: our runs, the thesis' rows, the literature it cites
    "this book": dict(marker="o", color="tab:blue", s=60, zorder=3),
    "thesis": dict(marker="^", color="tab:red", s=60, zorder=2),
    "cited": dict(marker="s", color="tab:grey", s=40, zorder=1),
}


def acc7_params_figure(points: pd.DataFrame, subtitle: str = ""):
    """Figure 6.2: Acc-7 (%) against trainable parameters (millions, log scale).

    ``points`` is ``ambcore.report.acc7_vs_params`` output (``source`` in this book / thesis /
    cited); our points carry their std over seeds as error bars. Points without a parameter
    count (ICCN) cannot be placed and are left out (the caption should say so).
    """
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6), constrained_layout=True)
    placed = points.dropna(subset=["trainable_params_m", "acc7_pct"])
    for source, style in _SOURCE_STYLE.items():
        part = placed[placed["source"] == source]
        if part.empty:
            continue
        label = {
            "this book": "this book (mean ± std over seeds)",
            "thesis": "thesis (CMU-MOSEI, bert-base)",
            "cited": "cited in the thesis (CMU-MOSEI)",
        }[source]
        ax.scatter(part["trainable_params_m"], part["acc7_pct"], label=label, **style)
        if source == "this book":
            ax.errorbar(
                part["trainable_params_m"],
                part["acc7_pct"],
                yerr=part["acc7_pct_std"].fillna(0.0),
                fmt="none",
                ecolor=style["color"],
                alpha=0.6,
            )
        for _, row in part.iterrows():
            ax.annotate(
                row["model"],
                (row["trainable_params_m"], row["acc7_pct"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
                color=style["color"],
            )
    ax.set_xscale("log")
    ax.set(
        xlabel="trainable parameters (millions, log scale)",
        ylabel="Acc-7 (%)",
        title="Acc-7 against trainable parameters",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return fig


_PANELS = (
    ("deletion", "(a) deleting words ([UNK])", "deletion rate"),
    ("replacement", "(b) replacing words (random tokens)", "replacement rate"),
    ("visual", "(c) noise on the visual modality", "noise insertion rate"),
    ("acoustic", "(d) noise on the acoustic modality", "noise insertion rate"),
)
_CURVE_STYLE = ("o", "^", "D", "s", "v", "P")


def robustness_figure(summary: pd.DataFrame, subtitle: str = "", metric: str = "corr"):
    """Figure 6.3: ``metric`` against corruption rate, one panel per kind of noise, one curve
    per model (mean over runs, band = ± one std over runs).

    ``summary`` is ``ambcore.robustness.summarize_curves`` output.
    """
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey=True, constrained_layout=True)
    models = list(dict.fromkeys(summary["row_name"]))
    for ax, (kind, title, xlabel) in zip(axes.flat, _PANELS):
        part = summary[summary["kind"] == kind]
        for i, model in enumerate(models):
            curve = part[part["row_name"] == model].sort_values("rate")
            if curve.empty:
                continue
            mean, std = curve[f"{metric}_mean"], curve[f"{metric}_std"].fillna(0.0)
            n_runs = int(curve["n_runs"].min())
            ax.plot(
                curve["rate"],
                mean,
                marker=_CURVE_STYLE[i % len(_CURVE_STYLE)],
                color=f"C{i}",
                label=f"{model} ({n_runs} run{'s' if n_runs != 1 else ''})",
            )
            ax.fill_between(curve["rate"], mean - std, mean + std, color=f"C{i}", alpha=0.15)
        ax.set(title=title, xlabel=xlabel, xlim=(-0.02, 1.02))
        ax.grid(True, alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(
            {"corr": "Pearson correlation", "mae": "MAE", "acc7": "Acc-7"}.get(metric, metric)
        )
    axes[0, 0].legend(fontsize=8)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return fig


def calibration_figure(calibration: pd.DataFrame, alpha: float = 0.05):
    """The comparison's measured calibration (``ambcore.stats.calibration``): A/A false-positive
    rate per metric against the nominal ``alpha`` (left) and the interval's coverage of the true
    zero against 95 % (right), one bar group per simulated size, Monte-Carlo error bars."""
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    fp_cols = [c for c in calibration.columns if c.startswith("false positives ")]
    cov_cols = [c for c in calibration.columns if c.startswith("coverage ")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    width = 0.8 / max(len(calibration), 1)
    for i, (_, row) in enumerate(calibration.iterrows()):
        label = f"{int(row['runs per cell'])} runs, {int(row['test videos'])} videos"
        x = np.arange(len(fp_cols)) + i * width
        axes[0].bar(x, [row[c] for c in fp_cols], width, yerr=row["mc_se"], label=label)
        axes[1].bar(x, [row[c] for c in cov_cols], width, yerr=row["mc_se"], label=label)
    axes[0].axhline(alpha, color="k", ls="--", lw=1, label=f"nominal {alpha:g}")
    axes[1].axhline(1 - alpha, color="k", ls="--", lw=1, label=f"nominal {1 - alpha:g}")
    for ax, cols, title in (
        (axes[0], fp_cols, "A/A false-positive rate"),
        (axes[1], cov_cols, "coverage of the true difference 0"),
    ):
        ax.set_xticks(np.arange(len(cols)) + width * (len(calibration) - 1) / 2)
        ax.set_xticklabels(
            [c.split(" ", 1)[1] if c.startswith("coverage") else c.split(" ", 2)[2] for c in cols]
        )
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[1].set_ylim(0.8, 1.01)
    fig.suptitle("Calibration of ambcore.stats.compare on simulated runs", fontsize=10)
    fig.tight_layout()
    return fig


def differences_figure(family: pd.DataFrame, names: Mapping[str, str], subtitle: str = ""):
    """One panel per metric of ``family`` (``ambcore.stats.family``): each pair's difference
    (cell A minus cell B) with its 95 % interval, the zero line, and the Holm-adjusted p beside
    it; ``names`` labels the pairs' keys. Pairs without an interval (a single run) are left out
    of their panel and named in its title."""
    # lazy: pyplot loads only for a figure; the tables (ambcore.run_report) do without
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(family["metric"]))
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(2.6 * len(metrics) + 1.5, 0.5 + 0.6 * family["key"].nunique()),
        squeeze=False,
    )
    for ax, metric in zip(axes[0], metrics):
        rows = family[family["metric"] == metric].reset_index(drop=True)
        shown = rows[np.isfinite(rows["lo"].astype(float))]
        y = np.arange(len(shown))
        err = np.vstack([shown["diff"] - shown["lo"], shown["hi"] - shown["diff"]]).astype(float)
        ax.errorbar(shown["diff"], y, xerr=err, fmt="o", capsize=3)
        for yi, (_, r) in zip(y, shown.iterrows()):
            ax.annotate(
                f"p={r['p_holm']:.2g}",
                (r["hi"], yi),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.axvline(0.0, color="k", lw=1, ls="--")
        ax.set_yticks(y)
        ax.set_yticklabels([names.get(k, k) for k in shown["key"]] if ax is axes[0][0] else [])
        title = METRIC_COLUMNS.get(metric, (metric, 1.0))[0]
        left_out = sorted(set(rows["key"]) - set(shown["key"]))
        ax.set_title(
            title + (f"\n(no interval: {', '.join(left_out)})" if left_out else ""), fontsize=9
        )
        ax.set_ylim(-0.6, max(len(shown), 1) - 0.4)
    fig.suptitle(
        "difference to AMB with 95 % interval (runs and test videos; Holm-adjusted p)"
        + (f"\n{subtitle}" if subtitle else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig
