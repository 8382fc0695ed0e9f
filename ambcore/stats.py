"""Confidence intervals and paired tests for tables 6.1 and 6.2 (thesis 6.3.2-6.3.3).

The thesis, like most of the field, compares means over seeds. Here every claim that one row
of a table is better than another is backed by a test on the per-utterance test predictions
that each finished run folder writes (``test_predictions.csv``: id, y_true, y_pred).

Schemes (stated once here, quoted by the chapters):

- **Confidence interval of a cell** (``cell_intervals``): a percentile bootstrap over test
  utterances. One replicate draws the test utterances with replacement (N out of N); because
  every seed of a cell predicts the same test utterances, the same draw is applied to every
  seed. The metric is computed per seed on the drawn utterances and the seeds are pooled by
  averaging, which is the statistic the tables report (mean over seeds). The 2.5 % and 97.5 %
  quantiles of ``n_boot`` replicates give the 95 % interval. It measures how much the number
  depends on which utterances happen to be in the test split, given these seeds; the spread
  over seeds is reported beside it as the std.
- **Paired test of two cells** (``paired_test``): seeds are matched (seed s of one cell against
  seed s of the other; only seeds both cells finished are used) and utterances are matched by
  id. Per utterance, d_i = mean over seeds of (|error of A| - |error of B|); the difference of
  MAE is mean(d). The p-value is a two-sided sign-flip permutation test (under the null
  hypothesis that the two models are exchangeable, each d_i is as likely to be -d_i):
  p = (1 + #{|T*| >= |T|}) / (1 + n_perm). The interval of the difference is a paired percentile
  bootstrap of mean(d) over utterances.
- **Several comparisons** (``compare_to``): the p-values of one table's rows against the
  reference row are adjusted with Holm's step-down method (``holm``), which controls the
  family-wise error rate without assuming independence.

Everything is seeded (``seed``) and deterministic: the same predictions give the same numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ambcore.errors import AmbError

__all__ = [
    "CI_METRICS",
    "SeedPredictions",
    "read_predictions",
    "cell_predictions",
    "available_predictions",
    "bootstrap_ci",
    "cell_intervals",
    "PairedResult",
    "paired_test",
    "holm",
    "compare_to",
    "verdict",
]

CI_METRICS = ("mae", "corr", "acc7", "acc2_non0")  # the metrics that get an interval
PREDICTIONS_FILE = "test_predictions.csv"

# seed -> frame with columns id, y_true, y_pred (one row per test utterance)
SeedPredictions = Mapping[int, pd.DataFrame]


# ---- reading predictions ---------------------------------------------------------------------


def read_predictions(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The test predictions of one finished run (columns id, y_true, y_pred)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.exists():
        raise AmbError(f"{path} is missing: the run's per-utterance test predictions are needed")
    frame = pd.read_csv(path, dtype={"id": str})
    missing = {"id", "y_true", "y_pred"} - set(frame.columns)
    if missing:
        raise AmbError(f"{path}: missing column(s) {sorted(missing)}; expected id, y_true, y_pred")
    return frame


def cell_predictions(runs_frame: pd.DataFrame, runs_dir: str | os.PathLike) -> dict[str, dict]:
    """cell -> {seed: predictions frame} for every run of ``runs_frame`` (``report.collect_runs``,
    whose ``run`` column is relative to ``runs_dir``)."""
    out: dict[str, dict[int, pd.DataFrame]] = {}
    for _, run in runs_frame.iterrows():
        out.setdefault(run["cell"], {})[int(run["seed"])] = read_predictions(
            Path(runs_dir) / run["run"]
        )
    return out


def available_predictions(runs_frame: pd.DataFrame, runs_dir: str | os.PathLike) -> dict[str, dict]:
    """As ``cell_predictions``, for the cells whose every run wrote its predictions (runs
    finished before the file existed leave their cell out, and the tables show no interval)."""
    if runs_frame.empty:
        return {}
    complete = runs_frame.groupby("cell")["run"].agg(
        lambda r: all((Path(runs_dir) / run / PREDICTIONS_FILE).exists() for run in r)
    )
    return cell_predictions(runs_frame[runs_frame["cell"].map(complete)], runs_dir)


def _stack(preds: SeedPredictions, ids: Sequence[str] | None = None):
    """(seeds, ids, y_true (N,), y_pred (S, N)) with every seed in the order of ``ids``."""
    if not preds:
        raise AmbError("no predictions: a cell needs at least one finished seed")
    seeds = sorted(preds)
    first = preds[seeds[0]]
    ids = list(first["id"].astype(str)) if ids is None else list(ids)
    rows = []
    for seed in seeds:
        frame = preds[seed].assign(id=lambda f: f["id"].astype(str)).set_index("id")
        if frame.index.has_duplicates or set(frame.index) != set(ids):
            raise AmbError(
                f"seed {seed}: its test utterances differ from the other runs' "
                f"({len(frame)} ids, expected the same {len(ids)}); the runs must share a test split"
            )
        rows.append(frame.loc[ids])
    y_true = rows[0]["y_true"].to_numpy(float)
    y_pred = np.stack([r["y_pred"].to_numpy(float) for r in rows])  # (S, N)
    return seeds, ids, y_true, y_pred


# ---- bootstrap intervals of one cell ---------------------------------------------------------


def _weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts: how often each utterance is drawn in each replicate."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _weighted_metrics(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of prediction ``p`` (N,) under replicate weights ``w`` (B, N): each (B,).

    The definitions of ``ambcore.metrics`` (clip and round half to even for Acc-7; Acc-2 over
    the non-zero labels)."""
    total = w.sum(axis=1)  # (B,)
    mae = w @ np.abs(p - y) / total
    mp, my = w @ p / total, w @ y / total
    cov = w @ (p * y) / total - mp * my
    vp = np.maximum(w @ (p * p) / total - mp**2, 0.0)
    vy = np.maximum(w @ (y * y) / total - my**2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(vp * vy)
    acc7 = w @ (np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))) / total
    non0 = y != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc2 = (w @ (non0 & ((p > 0) == (y > 0)))) / (w @ non0)
    return {"mae": mae, "corr": corr, "acc7": acc7, "acc2_non0": acc2}


def bootstrap_ci(
    preds: SeedPredictions, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Point estimate (mean over seeds) and percentile interval of each of ``CI_METRICS``.

    Returns ``{metric: {"estimate", "lo", "hi"}}``; the scheme is the module docstring's.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _, _, y, p = _stack(preds)
    weights = _weights(y.size, n_boot, np.random.default_rng(seed))
    ones = np.ones((1, y.size))
    alpha = (1 - level) / 2
    out = {}
    for metric in CI_METRICS:
        per_seed = [_weighted_metrics(weights, y, p_s)[metric] for p_s in p]  # S x (B,)
        replicates = np.mean(per_seed, axis=0)  # (B,)
        estimate = float(np.mean([_weighted_metrics(ones, y, p_s)[metric][0] for p_s in p]))
        finite = replicates[np.isfinite(replicates)]
        lo, hi = (np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan))
        out[metric] = {"estimate": estimate, "lo": float(lo), "hi": float(hi)}
    return out


def cell_intervals(
    predictions: Mapping[str, SeedPredictions], n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per cell: ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` for ``CI_METRICS``."""
    rows = []
    for cell, preds in predictions.items():
        row: dict = {"cell": cell}
        for metric, ci in bootstrap_ci(preds, n_boot=n_boot, seed=seed).items():
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = ci["estimate"], ci["lo"], ci["hi"]
        rows.append(row)
    columns = ["cell", *(f"{m}{s}" for m in CI_METRICS for s in ("", "_lo", "_hi"))]
    return pd.DataFrame(rows, columns=columns)


# ---- paired test of two cells ----------------------------------------------------------------


@dataclass(frozen=True)
class PairedResult:
    """MAE of A minus MAE of B over matched seeds and utterances (negative: A is better)."""

    diff: float
    lo: float
    hi: float
    p_value: float
    seeds: tuple[int, ...]
    n_utterances: int


def paired_test(
    a: SeedPredictions, b: SeedPredictions, n_perm: int = 5000, n_boot: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> PairedResult:  # fmt: skip
    """Sign-flip permutation test and paired bootstrap interval of MAE(A) - MAE(B).

    Seeds are matched (only the seeds both have); utterances are matched by id.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise AmbError(f"paired test: no common seed (seeds {sorted(a)} against {sorted(b)})")
    _, ids, y_a, p_a = _stack({s: a[s] for s in seeds})
    _, _, y_b, p_b = _stack({s: b[s] for s in seeds}, ids)
    if not np.allclose(y_a, y_b):
        raise AmbError("paired test: the two cells' runs have different labels for the same ids")
    d = (np.abs(p_a - y_a) - np.abs(p_b - y_b)).mean(axis=0)  # (N,)
    rng = np.random.default_rng(seed)
    observed = float(d.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, d.size))
    null = signs @ d / d.size  # (n_perm,)
    p_value = (1 + int(np.sum(np.abs(null) >= abs(observed) - 1e-12))) / (1 + n_perm)
    boot = _weights(d.size, n_boot, rng) @ d / d.size
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return PairedResult(observed, float(lo), float(hi), float(p_value), tuple(seeds), int(d.size))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN, not counted)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def compare_to(
    predictions: Mapping[str, SeedPredictions], reference: str, others: Sequence[str],
    seed: int = 0, n_perm: int = 5000,
) -> pd.DataFrame:  # fmt: skip
    """``reference`` against each of ``others`` (paired test, Holm-adjusted across ``others``).

    Columns: cell, reference, diff (MAE of reference minus MAE of cell), lo, hi, p, p_holm,
    n_seeds, n_utterances. A cell without predictions is left out; one without a seed in
    common with the reference gets NaN (and is not counted by Holm).
    """
    if reference not in predictions:
        raise AmbError(f"compare_to: no predictions of the reference cell {reference!r}")
    rows = []
    for cell in others:
        if cell == reference or cell not in predictions:
            continue
        if not set(predictions[reference]) & set(predictions[cell]):  # no seed to pair
            rows.append({"cell": cell, "reference": reference, "diff": np.nan, "lo": np.nan,
                         "hi": np.nan, "p": np.nan, "n_seeds": 0, "n_utterances": 0})  # fmt: skip
            continue
        r = paired_test(predictions[reference], predictions[cell], n_perm=n_perm, seed=seed)
        rows.append({"cell": cell, "reference": reference, "diff": r.diff, "lo": r.lo,
                     "hi": r.hi, "p": r.p_value, "n_seeds": len(r.seeds),
                     "n_utterances": r.n_utterances})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["cell", "reference", "diff", "lo", "hi", "p", "n_seeds",
                                        "n_utterances"])  # fmt: skip
    frame["p_holm"] = holm(frame["p"].to_numpy()) if len(frame) else []
    return frame


def verdict(row: Mapping, name_a: str, name_b: str, alpha: float = 0.05, digits: int = 3) -> str:
    """The sentence for one row of ``compare_to`` (or any mapping with diff, lo, hi, p_holm).

    "AMB's MAE is lower than X's: difference -0.052 [-0.071, -0.034], Holm-adjusted p = 0.0002"
    when the adjusted p is below ``alpha``, else "... not distinguishable from X's ...".
    """
    diff, lo, hi, p = (float(row[k]) for k in ("diff", "lo", "hi", "p_holm"))
    numbers = f"difference {diff:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], " \
              f"Holm-adjusted p = {_p(p)}"
    if math.isnan(p):
        return f"{name_a} and {name_b} could not be compared (no common seed)"
    a, b = _possessive(name_a), _possessive(name_b)
    if p < alpha:
        way = "lower" if diff < 0 else "higher"
        return f"{a} MAE is {way} than {b}: {numbers}"
    return f"{a} MAE is not distinguishable from {b}: {numbers}"


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"
