"""Intervals and comparisons that generalise over training runs and test videos (thesis
6.3.2-6.3.4: tables 6.1 and 6.2, the design study, the robustness claims).

A verdict such as "AMB's MAE is lower than MISA's" is a claim about *training* AMB against
*training* MISA and about the population of videos the test split samples, not about the runs
we happened to make on the test videos we happened to have. Two sources of variance are not
controlled and both enter the scheme:

- **seeds**: a seed shifts a whole run. Seed s of AMB and seed s of MISA share only an integer,
  so runs are *not* paired: each cell's runs are an independent sample of its training
  procedure (the cells may even have different seed sets).
- **test videos**: the clips of one video share a speaker (MMSA's ids are ``video$_$clip``;
  CMU-MOSEI's folds are split by video; the synthetic data plants a per-video offset). The
  unit of the test sample is the video (``video_of``: the id's part before ``$_$``; an id
  without it is its own cluster), and both cells are scored on the *same* videos.

Scheme (``compare``; ``paired_test`` is its MAE row):

- The estimate is the difference of the cells' mean metric over their runs (each run scored on
  the whole test split): ``D = mean_r m(A_r) - mean_r m(B_r)``.
- Its variance has two components, estimated separately. **Runs**: ``s_A^2/n_A + s_B^2/n_B``
  with ``s^2`` the sample variance (ddof=1) of the cell's per-run metrics; this is the
  unbiased counterpart of resampling each cell's runs independently (a bootstrap of five runs
  would understate it by a fifth). **Videos**: the variance of ``D`` over a cluster bootstrap of
  test videos (videos drawn with replacement, one draw shared by both cells and all their
  runs, every metric recomputed on the drawn utterances).
- ``D / sqrt(V_runs + V_videos)`` is referred to Student's t with Welch-Satterthwaite degrees of
  freedom (``n_A - 1`` and ``n_B - 1`` for the run terms, videos - 1 for the video term):
  the two-sided p-value and the interval ``D ± t * se`` come from ``scipy.stats.t``.

Why this estimator and not a plain hierarchical bootstrap or a mixed model: with 3-5 runs per
cell a percentile bootstrap of runs is too narrow (it divides by n instead of n - 1 and uses
normal tails where t tails are due), and a linear mixed model with crossed run and video
effects does not fit correlation, accuracy or F1, which are not means of per-utterance terms.
Splitting the variance lets each component be estimated the way it can be: runs analytically
with their few degrees of freedom, videos by resampling whatever the metric. The video term
also holds the utterance noise of each run, which the run term holds as well: the test is
conservative by that overlap (measured in ``calibration``: A/A false positives below the
nominal rate, coverage above it). A cell with a single run cannot have its seed variance
estimated: the comparison then gives no p-value and says so.

- **Families** (``family``): every comparison a chapter states (every pair, every metric of
  ``METRICS``) is computed once and Holm-adjusted together (``holm``, family-wise error rate
  without assuming independence); the chapter shows that same row wherever the pair appears.
- **Interval of one cell** (``cell_intervals``): mean over runs ± t * se with the same two
  components (runs: ``s^2/n``; videos: the cluster bootstrap), n - 1 degrees of freedom.
- **Calibration** (``calibration``): simulated A/A pairs of cells with the structure of real
  runs (videos of several clips, a seed shift per run, a per-video error of the model, noise
  per utterance) give the false-positive rate and the interval's coverage; a planted real
  difference gives the power. ``tests/test_stats.py`` checks them; the Ablation chapter prints
  them.

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
from scipy import stats as scipy_stats

from ambcore.data.loaders import ID_SEPARATOR  # MMSA's ids: video$_$clip
from ambcore.errors import AmbError

__all__ = [
    "METRICS",
    "CI_METRICS",
    "METRIC_LABELS",
    "HIGHER_IS_BETTER",
    "SeedPredictions",
    "read_predictions",
    "cell_predictions",
    "available_predictions",
    "video_of",
    "bootstrap_ci",
    "run_interval",
    "cell_intervals",
    "PairedResult",
    "compare",
    "paired_test",
    "holm",
    "family",
    "compare_to",
    "verdict",
    "verdict_details",
    "simulate_cell",
    "calibration",
]

# The metrics every comparison tests (the thesis claims "across all metrics"); Acc-2 and F1 in
# the non-0 convention of MISA's and MAG-BERT's code (ambcore.metrics).
METRICS = ("mae", "corr", "acc7", "acc2_non0", "f1_non0")
CI_METRICS = METRICS  # the metrics that get an interval
METRIC_LABELS = {
    "mae": "MAE",
    "corr": "Corr",
    "acc7": "Acc-7",
    "acc2_non0": "Acc-2",
    "f1_non0": "F1",
}
HIGHER_IS_BETTER = {"mae": False, "corr": True, "acc7": True, "acc2_non0": True, "f1_non0": True}
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


def video_of(ids: Sequence[str]) -> np.ndarray:
    """The video (cluster) of each utterance id: the part before ``$_$``; an id without it is
    its own cluster."""
    return np.array(
        [i.split(ID_SEPARATOR, 1)[0] if ID_SEPARATOR in i else i for i in map(str, ids)],
        dtype=object,
    )


def _stack(preds: SeedPredictions, ids: Sequence[str] | None = None):
    """(seeds, ids, y_true (N,), y_pred (S, N)) with every seed in the order of ``ids``."""
    if not preds:
        raise AmbError("no predictions: a cell needs at least one finished seed")
    seeds = sorted(preds)
    first = preds[seeds[0]]
    ids = list(first["id"].astype(str)) if ids is None else list(ids)
    order = np.asarray(ids, dtype=object)
    y_true, y_pred = None, []
    for seed in seeds:
        frame = preds[seed]
        own = frame["id"].astype(str).to_numpy(dtype=object)
        if len(own) != len(order) or not np.array_equal(own, order):  # another order: align by id
            indexed = frame.assign(id=own).set_index("id")
            if indexed.index.has_duplicates or set(indexed.index) != set(ids):
                raise AmbError(
                    f"seed {seed}: its test utterances differ from the other runs' "
                    f"({len(frame)} ids, expected the same {len(ids)}); the runs must share a "
                    "test split"
                )
            frame = indexed.loc[ids]
        y_true = frame["y_true"].to_numpy(float) if y_true is None else y_true
        y_pred.append(frame["y_pred"].to_numpy(float))
    return seeds, ids, y_true, np.stack(y_pred)  # y_pred: (S, N)


# ---- metrics under bootstrap weights ---------------------------------------------------------


def _video_weights(
    ids: Sequence[str], n_boot: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """(n_boot, N) weights of a cluster bootstrap: each replicate draws the test videos with
    replacement (as many as there are) and every utterance weighs as often as its video was
    drawn. Returns the weights and the number of videos."""
    _, codes = np.unique(video_of(ids), return_inverse=True)
    n_videos = int(codes.max()) + 1 if len(codes) else 0
    counts = rng.multinomial(n_videos, np.full(n_videos, 1.0 / n_videos), size=n_boot)  # (B, G)
    return counts[:, codes].astype(np.float64), n_videos


def _weighted_metrics(w: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of predictions ``p`` ((N,) or (S, N): one row per run) under replicate weights
    ``w`` (B, N): each (B,) or (S, B).

    The definitions of ``ambcore.metrics`` (clip and round half to even for Acc-7; Acc-2 and
    sklearn's weighted F1 over the non-zero labels, positive = ``> 0``). One matrix product
    per call: the per-utterance terms of every run are weighted at once."""
    runs = np.atleast_2d(np.asarray(p, dtype=np.float64))  # (S, N)
    pos, neg = (y > 0), (y < 0)
    shape = runs.shape
    terms = np.stack(
        [
            np.ones(shape),
            np.abs(runs - y),
            runs,
            runs * y,
            runs * runs,
            np.broadcast_to(y, shape),
            np.broadcast_to(y * y, shape),
            np.round(np.clip(runs, -3, 3)) == np.round(np.clip(y, -3, 3)),
            pos & (runs > 0),
            pos & (runs <= 0),
            neg & (runs > 0),
            neg & (runs <= 0),
        ],
        axis=1,
    ).astype(np.float64)  # (S, 12, N)
    sums = terms @ w.T  # (S, 12, B)
    total, abs_err, sp, spy, spp, sy, syy, hit7, tp, fn, fp, tn = np.moveaxis(sums, 1, 0)
    mp, my = sp / total, sy / total
    cov = spy / total - mp * my
    vp = np.maximum(spp / total - mp**2, 0.0)
    vy = np.maximum(syy / total - my**2, 0.0)
    n_pos, n_neg = tp + fn, fp + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(vp * vy)
        acc2 = (tp + tn) / (n_pos + n_neg)
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
        f1 = (n_pos * f1_pos + n_neg * f1_neg) / (n_pos + n_neg)
    out = {
        "mae": abs_err / total,
        "corr": corr,
        "acc7": hit7 / total,
        "acc2_non0": acc2,
        "f1_non0": f1,
    }
    return out if np.ndim(p) == 2 else {k: v[0] for k, v in out.items()}


def _run_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[dict, dict]:
    """Per run (rows of ``p``): each metric on the whole test split, (S,), and under every
    replicate of ``w``, (S, B)."""
    full = _weighted_metrics(np.ones((1, y.size)), y, p)
    return {m: v[:, 0] for m, v in full.items()}, _weighted_metrics(w, y, p)


def _shared_variance(boot_a: np.ndarray, boot_b: np.ndarray | None = None) -> float:
    """The part of the video bootstrap's variance that the runs of a cell share: the mean
    covariance of two different runs' replicates (``boot_a``: (S, B)); with ``boot_b``, that of
    the difference of the two cells' means, C_AA + C_BB - 2 C_AB. What each run adds on its
    own is in the run term already (module docstring); NaN with fewer than two runs a cell."""
    cells = [boot_a] if boot_b is None else [boot_a, boot_b]
    if any(c.shape[0] < 2 for c in cells):
        return float("nan")
    keep = np.all(np.isfinite(np.concatenate(cells)), axis=0)
    if keep.sum() < 3:
        return float("nan")
    centred = [c[:, keep] - c[:, keep].mean(axis=1, keepdims=True) for c in cells]
    n_rep = int(keep.sum()) - 1

    def within(x: np.ndarray) -> float:
        cov = x @ x.T / n_rep
        n = cov.shape[0]
        return float((cov.sum() - np.trace(cov)) / (n * (n - 1)))

    if boot_b is None:
        return max(within(centred[0]), 0.0)
    cross = float(np.mean(centred[0] @ centred[1].T / n_rep))
    return max(within(centred[0]) + within(centred[1]) - 2 * cross, 0.0)


def _var(values: np.ndarray) -> float:
    """Sample variance (ddof=1) of finite values; NaN with fewer than two."""
    values = values[np.isfinite(values)]
    return float(np.var(values, ddof=1)) if values.size > 1 else float("nan")


def _t_interval(estimate: float, parts: Sequence[tuple[float, float]], level: float):
    """(se, df, lo, hi, p) for ``estimate`` whose variance is the sum of ``parts``
    ((variance, degrees of freedom) each), Welch-Satterthwaite degrees of freedom."""
    total = sum(v for v, _ in parts)
    if not all(np.isfinite(v) and d > 0 for v, d in parts) or not np.isfinite(estimate):
        return (float("nan"),) * 5
    if total <= 0:
        return 0.0, float("inf"), estimate, estimate, (1.0 if estimate == 0 else 0.0)
    df = total**2 / sum(v**2 / d for v, d in parts if v > 0)
    se = math.sqrt(total)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * scipy_stats.t.sf(abs(estimate) / se, df))
    return se, float(df), estimate - half, estimate + half, p


# ---- the interval of one cell ------------------------------------------------------------------


def bootstrap_ci(
    preds: SeedPredictions, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Mean over runs and its interval for each of ``CI_METRICS`` (module docstring: run
    variance / n plus the cluster bootstrap's video variance, t with Satterthwaite df).

    Returns ``{metric: {"estimate", "lo", "hi"}}``; lo and hi are NaN with a single run (its
    seed variance is unknown)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _, ids, y, p = _stack(preds)
    weights, n_videos = _video_weights(ids, n_boot, np.random.default_rng(seed))
    full, boot = _run_metrics(y, p, weights)
    n = p.shape[0]
    out = {}
    for metric in CI_METRICS:
        estimate = float(np.mean(full[metric]))
        parts = [(_var(full[metric]) / n, n - 1), (_shared_variance(boot[metric]), n_videos - 1)]
        _, _, lo, hi, _ = _t_interval(estimate, parts, level)
        out[metric] = {"estimate": estimate, "lo": lo, "hi": hi}
    return out


def run_interval(
    predictions: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """One run's metrics and their percentile intervals over a cluster bootstrap of the test
    videos: how much the numbers of *this* run depend on which videos are in the test split
    (a single run says nothing of the seed-to-seed variance; a cell's ``bootstrap_ci`` does).
    ``predictions``: a frame with id, y_true, y_pred. Returns ``{metric: {"estimate", "lo",
    "hi"}}`` for ``CI_METRICS``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    _, ids, y, p = _stack({0: predictions})
    weights, _ = _video_weights(ids, n_boot, np.random.default_rng(seed))
    full, boot = _run_metrics(y, p, weights)
    alpha = (1 - level) / 2
    out = {}
    for metric in CI_METRICS:
        finite = boot[metric][0][np.isfinite(boot[metric][0])]
        lo, hi = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan)
        out[metric] = {"estimate": float(full[metric][0]), "lo": float(lo), "hi": float(hi)}
    return out


def cell_intervals(
    predictions: Mapping[str, SeedPredictions], n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per cell: ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` for ``CI_METRICS``."""
    rows = []
    for cell, preds in predictions.items():
        row: dict = {"cell": cell}
        for metric, ci in bootstrap_ci(preds, n_boot=n_boot, seed=seed).items():
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = (
                ci["estimate"],
                ci["lo"],
                ci["hi"],
            )
        rows.append(row)
    columns = ["cell", *(f"{m}{s}" for m in CI_METRICS for s in ("", "_lo", "_hi"))]
    return pd.DataFrame(rows, columns=columns)


# ---- comparing two cells -----------------------------------------------------------------------


@dataclass(frozen=True)
class PairedResult:
    """Metric of A minus metric of B, each the mean over the cell's runs (for MAE, negative:
    A is better). ``lo``/``hi``/``p_value`` are NaN when a cell has a single run."""

    diff: float
    lo: float
    hi: float
    p_value: float
    metric: str
    estimate_a: float
    estimate_b: float
    se: float
    df: float
    se_runs: float  # the run (seed) component of the standard error
    se_videos: float  # the test-video component
    seeds_a: tuple[int, ...]
    seeds_b: tuple[int, ...]
    per_seed_a: tuple[float, ...]  # the metric of each run of A, in the order of seeds_a
    per_seed_b: tuple[float, ...]
    win_share: float  # share of (run of A, run of B) pairs in which A is better (ties: half)
    n_utterances: int
    n_videos: int

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed either cell ran (the runs are not paired by seed)."""
        return tuple(sorted(set(self.seeds_a) | set(self.seeds_b)))


def _win_share(a: np.ndarray, b: np.ndarray, higher_is_better: bool) -> float:
    d = a[:, None] - b[None, :]
    d = d if higher_is_better else -d
    return float(np.mean((d > 0) + 0.5 * (d == 0)))


def compare(
    a: SeedPredictions,
    b: SeedPredictions,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedResult]:
    """Cell A against cell B on each of ``metrics`` (module docstring): the runs of each cell
    are independent samples (any seed sets), the test videos one shared cluster bootstrap.
    Both cells must have predicted the same test utterances (matched by id)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise AmbError(f"compare: unknown metric(s) {unknown}; metrics: {list(METRICS)}")
    seeds_a, ids, y, p_a = _stack(a)
    seeds_b, _, y_b, p_b = _stack(b, ids)
    if not np.allclose(y, y_b):
        raise AmbError("compare: the two cells' runs have different labels for the same ids")
    weights, n_videos = _video_weights(ids, n_boot, np.random.default_rng(seed))
    full_a, boot_a = _run_metrics(y, p_a, weights)
    full_b, boot_b = _run_metrics(y, p_b, weights)
    n_a, n_b = len(seeds_a), len(seeds_b)
    out = {}
    for m in metrics:
        diff = float(np.mean(full_a[m]) - np.mean(full_b[m]))
        v_a, v_b = _var(full_a[m]) / n_a, _var(full_b[m]) / n_b
        v_videos = _shared_variance(boot_a[m], boot_b[m])
        se, df, lo, hi, p = _t_interval(
            diff, [(v_a, n_a - 1), (v_b, n_b - 1), (v_videos, n_videos - 1)], level
        )
        out[m] = PairedResult(
            diff=diff,
            lo=lo,
            hi=hi,
            p_value=p,
            metric=m,
            estimate_a=float(np.mean(full_a[m])),
            estimate_b=float(np.mean(full_b[m])),
            se=se,
            df=df,
            se_runs=math.sqrt(v_a + v_b) if np.isfinite(v_a + v_b) else float("nan"),
            se_videos=math.sqrt(v_videos) if np.isfinite(v_videos) else float("nan"),
            seeds_a=tuple(seeds_a),
            seeds_b=tuple(seeds_b),
            per_seed_a=tuple(map(float, full_a[m])),
            per_seed_b=tuple(map(float, full_b[m])),
            win_share=_win_share(full_a[m], full_b[m], HIGHER_IS_BETTER[m]),
            n_utterances=int(y.size),
            n_videos=n_videos,
        )
    return out


def paired_test(
    a: SeedPredictions,
    b: SeedPredictions,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    metric: str = "mae",
) -> PairedResult:
    """``compare``'s result for one metric (MAE by default): MAE(A) - MAE(B) over runs and test
    videos, with its interval and two-sided p-value."""
    return compare(a, b, metrics=(metric,), n_boot=n_boot, level=level, seed=seed)[metric]


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


# ---- a chapter's family of comparisons ---------------------------------------------------------

FAMILY_COLUMNS = (
    "key",
    "a",
    "b",
    "metric",
    "estimate_a",
    "estimate_b",
    "diff",
    "lo",
    "hi",
    "p",
    "p_holm",
    "se",
    "df",
    "se_runs",
    "se_videos",
    "n_a",
    "n_b",
    "n_videos",
    "n_utterances",
    "win_share",
    "per_seed_a",
    "per_seed_b",
    "valid_diff",
    "note",
)


def family(
    predictions: Mapping[str, SeedPredictions],
    pairs: Sequence[tuple[str, str, str]],
    metrics: Sequence[str] = METRICS,
    runs_frame: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every comparison of a chapter, once: one row per (pair, metric) of ``pairs`` ((key,
    cell A, cell B) each) with ``compare``'s numbers, Holm-adjusted across the whole family
    (``p_holm``). A pair that cannot be compared (a cell without predictions, a single run)
    keeps its row with NaN and a ``note``. ``runs_frame`` (``report.collect_runs``) adds the
    validation difference of the same metric (``valid_diff``, mean over runs)."""
    rows = []
    for key, a, b in pairs:
        missing = [c for c in (a, b) if c not in predictions]
        results = (
            {} if missing else compare(predictions[a], predictions[b], metrics, n_boot, seed=seed)
        )
        for m in metrics:
            row = {"key": key, "a": a, "b": b, "metric": m}
            if missing:
                row["note"] = f"cell(s) {', '.join(missing)} have no finished runs with predictions"
            else:
                r = results[m]
                row.update(
                    estimate_a=r.estimate_a,
                    estimate_b=r.estimate_b,
                    diff=r.diff,
                    lo=r.lo,
                    hi=r.hi,
                    p=r.p_value,
                    se=r.se,
                    df=r.df,
                    se_runs=r.se_runs,
                    se_videos=r.se_videos,
                    n_a=len(r.seeds_a),
                    n_b=len(r.seeds_b),
                    n_videos=r.n_videos,
                    n_utterances=r.n_utterances,
                    win_share=r.win_share,
                    per_seed_a=_joined(r.per_seed_a),
                    per_seed_b=_joined(r.per_seed_b),
                    note=""
                    if np.isfinite(r.p_value)
                    else "a cell has a single run: its seed variance cannot be estimated",
                )
            row["valid_diff"] = _valid_diff(runs_frame, a, b, m)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(FAMILY_COLUMNS))
    frame["p_holm"] = holm(frame["p"].to_numpy(float)) if len(frame) else []
    frame["note"] = frame["note"].fillna("")
    return frame


def _joined(values: Sequence[float]) -> str:
    return " ".join(f"{v:.4g}" for v in values)


def _valid_diff(runs_frame: pd.DataFrame | None, a: str, b: str, metric: str) -> float:
    column = f"valid_{metric}"
    if runs_frame is None or column not in runs_frame:
        return float("nan")
    mean = runs_frame.groupby("cell")[column].mean()
    return float(mean.get(a, np.nan) - mean.get(b, np.nan))


def compare_to(
    predictions: Mapping[str, SeedPredictions],
    reference: str,
    others: Sequence[str],
    seed: int = 0,
    metric: str = "mae",
    n_boot: int = 1000,
) -> pd.DataFrame:
    """``reference`` against each of ``others`` on one metric, Holm-adjusted across ``others``
    (a family of its own: ``family`` for a chapter's). Columns: cell, reference, diff
    (reference minus cell), lo, hi, p, p_holm, n_seeds (the reference's runs), n_utterances."""
    if reference not in predictions:
        raise AmbError(f"compare_to: no predictions of the reference cell {reference!r}")
    pairs = [(c, reference, c) for c in others if c != reference and c in predictions]
    frame = family(predictions, pairs, metrics=(metric,), n_boot=n_boot, seed=seed)
    return pd.DataFrame(
        {
            "cell": frame["b"],
            "reference": frame["a"],
            "diff": frame["diff"],
            "lo": frame["lo"],
            "hi": frame["hi"],
            "p": frame["p"],
            "p_holm": frame["p_holm"],
            "n_seeds": frame["n_a"],
            "n_utterances": frame["n_utterances"],
        }
    )


# ---- sentences ---------------------------------------------------------------------------------


def verdict(row: Mapping, name_a: str, name_b: str, alpha: float = 0.05, digits: int = 3) -> str:
    """The sentence for one row of ``family`` (or any mapping with diff, lo, hi, p_holm and
    optionally metric and note).

    "AMB's MAE is lower than X's: difference -0.052 [-0.071, -0.034], Holm-adjusted p = 0.0002"
    when the adjusted p is below ``alpha``, else "... is not distinguishable from X's ...".
    """
    metric = str(row.get("metric", "mae") or "mae")
    label = METRIC_LABELS.get(metric, metric)
    diff, lo, hi, p = (float(row[k]) for k in ("diff", "lo", "hi", "p_holm"))
    a, b = _possessive(name_a), _possessive(name_b)
    if math.isnan(p):
        note = str(row.get("note", "") or "no p-value")
        return f"{a} and {b} {label} cannot be compared ({note})"
    numbers = (
        f"difference {diff:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], "
        f"Holm-adjusted p = {_p(p)}"
    )
    if p < alpha:
        way = "lower" if diff < 0 else "higher"
        return f"{a} {label} is {way} than {b}: {numbers}"
    return f"{a} {label} is not distinguishable from {b}: {numbers}"


def verdict_details(row: Mapping, name_a: str, name_b: str) -> str:
    """What stands beside a verdict: the per-seed numbers, the share of seed pairs in which A is
    better, and the validation difference next to the test difference."""
    per_seed = row.get("per_seed_a", "")
    if not isinstance(per_seed, str) or not per_seed:
        return ""
    label = METRIC_LABELS.get(str(row.get("metric", "mae")), str(row.get("metric")))
    n_pairs = int(row["n_a"]) * int(row["n_b"])
    wins = float(row["win_share"]) * n_pairs
    text = (
        f"{label} per seed: {name_a} {row['per_seed_a']}; {name_b} {row['per_seed_b']}; "
        f"{name_a} better in {wins:g} of {n_pairs} seed pairs"
    )
    valid = row.get("valid_diff", float("nan"))
    if valid is not None and np.isfinite(float(valid)):
        text += f"; validation difference {float(valid):+.3f} (test {float(row['diff']):+.3f})"
    return text


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


# ---- calibration: the test tested ---------------------------------------------------------------

# Simulated runs with the structure of real ones (standard deviations, label scale -3..3):
SIM_CLIPS_PER_VIDEO = 5
SIM_NOISE = 0.6  # per utterance and run
SIM_VIDEO_ERROR = 0.4  # per video, the model's own (shared by every run of the model)
SIM_RUN_VIDEO_ERROR = 0.15  # per video and run (what a seed learns differently)
SIM_SEED_SHIFT = 0.15  # per run, on every prediction


def simulate_cell(
    y: np.ndarray,
    ids: Sequence[str],
    video_error: np.ndarray,
    n_runs: int,
    rng: np.random.Generator,
    shift: float = 0.0,
) -> dict[int, pd.DataFrame]:
    """``n_runs`` runs of one model on test labels ``y``: each prediction is the label plus the
    model's per-video error (``video_error``, one value per video of ``ids``), a per-run shift,
    a per-run per-video error, utterance noise and ``shift`` (a planted difference)."""
    _, codes = np.unique(video_of(ids), return_inverse=True)
    n_videos = int(codes.max()) + 1
    runs = {}
    for r in range(n_runs):
        pred = (
            y
            + shift
            + video_error[codes]
            + rng.normal(0, SIM_SEED_SHIFT)
            + rng.normal(0, SIM_RUN_VIDEO_ERROR, n_videos)[codes]
            + rng.normal(0, SIM_NOISE, y.size)
        )
        runs[r] = pd.DataFrame({"id": list(ids), "y_true": y, "y_pred": pred})
    return runs


def _simulated_test_split(n_videos: int, rng: np.random.Generator):
    ids = [f"v{v:04d}$_${c}" for v in range(n_videos) for c in range(SIM_CLIPS_PER_VIDEO)]
    video_mood = rng.normal(0, 1.2, n_videos)  # clips of a video share a sentiment
    y = np.repeat(video_mood, SIM_CLIPS_PER_VIDEO) + rng.normal(0, 0.8, len(ids))
    y = np.round(np.clip(y, -3, 3) * 3) / 3  # MOSEI's averaged ratings: thirds, some exactly 0
    return ids, y


def calibration(
    sizes: Sequence[tuple[int, int]] = ((3, 50), (5, 50), (5, 100)),
    n_sims: int = 200,
    planted: float = 0.25,
    n_boot: int = 300,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """The comparison's error rates on simulated experiments: for each (runs per cell, test
    videos) of ``sizes``, ``n_sims`` experiments draw a new test split and new runs.

    A/A: two cells of the same model (its per-video error shared, every run's seed its own):
    the false-positive rate at ``alpha`` (unadjusted, per metric) and the coverage of the 95 %
    interval of the true difference, 0. A/B: the second cell's predictions shifted by
    ``planted``: the power on MAE. ``mc_se``: the Monte-Carlo standard error of a rate of 5 %.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for n_runs, n_videos in sizes:
        rejected = {m: 0 for m in METRICS}
        covered = {m: 0 for m in METRICS}
        found = 0
        for i in range(n_sims):
            ids, y = _simulated_test_split(n_videos, rng)
            video_error = rng.normal(0, SIM_VIDEO_ERROR, n_videos)
            a = simulate_cell(y, ids, video_error, n_runs, rng)
            b = simulate_cell(y, ids, video_error, n_runs, rng)
            aa = compare(a, b, n_boot=n_boot, seed=i)
            for m, r in aa.items():
                rejected[m] += bool(r.p_value < alpha)
                covered[m] += bool(r.lo <= 0 <= r.hi)
            shifted = simulate_cell(y, ids, video_error, n_runs, rng, shift=planted)
            found += bool(
                compare(a, shifted, metrics=("mae",), n_boot=n_boot, seed=i)["mae"].p_value < alpha
            )
        row = {"runs per cell": n_runs, "test videos": n_videos, "simulations": n_sims}
        for m in METRICS:
            row[f"false positives {METRIC_LABELS[m]}"] = rejected[m] / n_sims
        for m in METRICS:
            row[f"coverage {METRIC_LABELS[m]}"] = covered[m] / n_sims
        row[f"power MAE (shift {planted:g})"] = found / n_sims
        row["mc_se"] = math.sqrt(alpha * (1 - alpha) / n_sims)
        rows.append(row)
    return pd.DataFrame(rows)
