"""Sentiment metrics for CMU-MOSEI-style regression (thesis section 6.3.1, "Data").

The definitions follow MMSA's ``MetricsTop.__eval_mosei_regression`` exactly, so numbers here
are comparable with the literature that uses that code:

- ``mae``: mean absolute error ``mean(|p - y|)`` over all samples.
- ``corr``: Pearson correlation of ``p`` and ``y`` over all samples.
- ``acc7``: clip both to [-3, 3], round with ``np.round`` (half to even: 0.5 -> 0, 1.5 -> 2,
  -2.5 -> -2), fraction equal.
- ``acc5``: the same after clipping to [-2, 2].
- ``acc2_has0`` / ``f1_has0``: classes ``>= 0`` vs ``< 0`` over all samples (label 0 counts
  as positive); F1 is sklearn's ``f1_score(y_true, y_pred, average="weighted")``.
- ``acc2_non0`` / ``f1_non0``: ``> 0`` vs ``< 0`` over the samples whose label is not 0.

Two deliberate differences from MMSA, neither of which changes a value: accuracies are
fractions in [0, 1] at full precision (MMSA rounds to 4 decimals; tables format them), and
undefined values are NaN with an explanation in ``notes`` instead of a numpy warning or an
exception (a constant prediction has no correlation; all-zero labels leave nothing for the
non-zero convention).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

__all__ = [
    "METRIC_NAMES",
    "SENTIMENT_CLASSES",
    "sentiment_metrics",
    "multiclass_acc",
    "confusion_7",
]

# The metric keys, in the order tables show them.
METRIC_NAMES = ("mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0")


# The 7 classes of Acc-7: sentiment clipped to [-3, 3] and rounded (half to even).
SENTIMENT_CLASSES = (-3, -2, -1, 0, 1, 2, 3)


def confusion_7(y_pred: Any, y_true: Any) -> np.ndarray:
    """(7, 7) counts of the Acc-7 classes: row = true class, column = predicted (-3 ... 3).

    The diagonal sum divided by N is exactly ``sentiment_metrics(...)["acc7"]``.
    """
    p = np.round(np.clip(_as_1d(y_pred, "y_pred"), -3.0, 3.0)).astype(int) + 3
    y = np.round(np.clip(_as_1d(y_true, "y_true"), -3.0, 3.0)).astype(int) + 3
    if p.shape != y.shape:
        raise ValueError(f"confusion_7: y_pred has shape {p.shape}, y_true has {y.shape}")
    counts = np.zeros((7, 7), dtype=np.int64)
    np.add.at(counts, (y, p), 1)
    return counts


def multiclass_acc(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """Fraction of samples whose rounded (half to even) prediction equals the rounded label."""
    return float(np.mean(np.round(y_pred) == np.round(y_true)))


def _as_1d(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor: float64 as it is, others widened exactly
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(f"sentiment_metrics: {name} has {bad} non-finite value(s) of {arr.size}")
    return arr


def sentiment_metrics(y_pred: Any, y_true: Any) -> dict[str, Any]:
    """All MOSEI regression metrics of predictions ``y_pred`` against labels ``y_true``.

    Both are sequences of sentiment scores (numpy arrays, lists or tensors of shape (N,)).
    Returns a dict with the keys of ``METRIC_NAMES`` (floats; NaN where undefined), plus
    ``n`` (number of samples), ``n_non0`` (samples with a non-zero label) and ``notes``
    (a list of strings explaining every NaN; empty when all metrics are defined).
    """
    p = _as_1d(y_pred, "y_pred")
    y = _as_1d(y_true, "y_true")
    if p.shape != y.shape:
        raise ValueError(f"sentiment_metrics: y_pred has shape {p.shape}, y_true has {y.shape}")
    if p.size == 0:
        raise ValueError("sentiment_metrics: no samples")
    notes: list[str] = []

    mae = float(np.mean(np.abs(p - y)))

    if np.all(p == p[0]) or np.all(y == y[0]):
        which = "predictions" if np.all(p == p[0]) else "labels"
        corr = float("nan")
        notes.append(f"corr is undefined: the {which} are constant (zero variance)")
    else:
        corr = float(np.corrcoef(p, y)[0, 1])

    acc7 = multiclass_acc(np.clip(p, -3.0, 3.0), np.clip(y, -3.0, 3.0))
    acc5 = multiclass_acc(np.clip(p, -2.0, 2.0), np.clip(y, -2.0, 2.0))

    # Has-0 convention: label 0 belongs to the positive class.
    true_has0 = y >= 0
    pred_has0 = p >= 0
    acc2_has0 = float(accuracy_score(true_has0, pred_has0))
    f1_has0 = _weighted_f1(true_has0, pred_has0)

    # Non-0 convention: drop samples labelled exactly 0.
    non0 = y != 0
    n_non0 = int(non0.sum())
    if n_non0 == 0:
        acc2_non0 = f1_non0 = float("nan")
        notes.append("acc2_non0/f1_non0 are undefined: every label is 0")
    else:
        true_non0 = y[non0] > 0
        pred_non0 = p[non0] > 0
        acc2_non0 = float(accuracy_score(true_non0, pred_non0))
        f1_non0 = _weighted_f1(true_non0, pred_non0)

    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return {
        "mae": mae,
        "corr": corr,
        "acc7": acc7,
        "acc5": acc5,
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "n": int(p.size),
        "n_non0": n_non0,
        "notes": notes,
    }


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """sklearn's weighted F1 with the labels first (the order MISA and MMLatch got wrong)."""
    with warnings.catch_warnings():
        # A class never predicted has F1 0 (sklearn's zero_division default); that is the
        # value MMSA reports, so the warning adds nothing.
        warnings.simplefilter("ignore", category=UserWarning)
        return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))
