"""Robustness of trained runs to corrupted inputs (thesis section 6.3.4, figure 6.3).

A high-level use of the trainer: a run's best checkpoint predicts a split whose batches pass
through ``ambcore.noise.apply_noise`` at several rates and draws. The corruption itself (the
building block, with no knowledge of models or runs) lives in ``ambcore.noise``; this module
sits above ``ambcore.train``.

Visual and acoustic noise is evaluated at both granularities of ``ambcore.noise`` (one
Gaussian scalar per selected step, the default, and one per element) on the same runs and the
same selected steps; ``select_granularity`` picks one figure 6.3 out of the curves and
``granularity_figure`` shows the two side by side.

Visual and acoustic noise leaves the text unchanged. For a model whose language model reads
the text alone (AMB and MISA: ``ambcore.models.text_cache``) the text features of every test
batch are computed once, in the first pass whose text is the clean one, and reused by every
visual/acoustic condition and draw: the same numbers, bitwise, for a fraction of the passes
through the PLM. MAG-BERT, whose BERT sees the visual and acoustic features, is predicted in
full every time, as is every text-noise pass. ``reuse_text=False`` predicts every pass in full.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ambcore import runs
from ambcore.data.collate import make_loader
from ambcore.metrics import sentiment_metrics
from ambcore.models.plm import load_tokenizer
from ambcore.models.text_cache import TextCache, reuses_text
from ambcore.noise import (
    AV_KINDS,
    DEFAULT_GRANULARITY,
    DEFAULT_RATES,
    NOISE_GRANULARITIES,
    NOISE_KINDS,
    TEXT_KINDS,
    TokenizerInfo,
    _check_rate,
    apply_noise,
    check_granularity,
    draw_seed,
)
from ambcore.report import data_label, plm_label, row_name
from ambcore.train import _load_data_for_run, _load_run_model, predict_split, resolve_device


class _NoisyLoader:
    """Wraps a loader: every batch corrupted by ``apply_noise``; counts what was corrupted.

    The batches come in the loader's order and composition (an evaluation loader's are fixed);
    visual/acoustic noise replaces that modality's features and keeps the batch's text tensors.
    """

    def __init__(
        self, loader, kind, rate, generator, tokenizer_info, granularity=DEFAULT_GRANULARITY
    ):
        self.loader, self.kind, self.rate, self.granularity = loader, kind, rate, granularity
        self.generator, self.tokenizer_info = generator, tokenizer_info
        self.n_corrupted = self.n_eligible = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            result = apply_noise(
                batch,
                self.kind,
                self.rate,
                self.generator,
                self.tokenizer_info,
                granularity=self.granularity,
            )
            self.n_corrupted += result.n_corrupted
            self.n_eligible += result.n_eligible
            yield result.batch


TEXT_GRANULARITY = "token"  # the granularity column of the text kinds (one token at a time)
METRICS = ("corr", "mae", "acc7")
ROBUSTNESS_PREDICTIONS = "robustness_predictions.csv"  # in a run folder: its noisy predictions


@dataclass
class _Evaluation:
    """What every noise condition of one run needs: the run's model, data and identity."""

    cfg: Any
    device: Any
    dataset: Any
    split: str
    model: Any
    tokenizer: Any
    info: TokenizerInfo
    loader: Any
    identity: dict
    text_cache: TextCache | None = None  # the clean text features, where the model allows reuse


def _prepare(run_dir: Path, split: str) -> _Evaluation:
    """Load a run's best checkpoint, its data split and tokenizer once for all conditions."""
    cfg = runs.read_config(run_dir)
    device = resolve_device(cfg.device)
    dataset = _load_data_for_run(run_dir, cfg, None)
    if split not in dataset.splits:
        raise ValueError(f"{dataset.source}: no split {split!r}; splits: {list(dataset.splits)}")
    tokenizer = load_tokenizer(cfg)
    identity = {
        "run": str(run_dir),
        "row_name": row_name(cfg.model, cfg.text_adaptation, cfg.variant),
        "model": cfg.model,
        "variant": cfg.variant,
        "text_adaptation": cfg.text_adaptation,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "data": data_label(dataset.name, dataset.is_synthetic),
        "is_synthetic": dataset.is_synthetic,
        "plm": plm_label(cfg.plm, cfg.plm_random_init),
        "split": split,
    }
    return _Evaluation(
        cfg,
        device,
        dataset,
        split,
        _load_run_model(run_dir, device),
        tokenizer,
        TokenizerInfo.from_tokenizer(tokenizer),
        make_loader(dataset[split], tokenizer, cfg, shuffle=False),
        identity,
    )


def _conditions(
    kinds: Sequence[str], rates: Sequence[float], granularities: Sequence[str]
) -> list[tuple[str, str, float]]:
    """(kind, granularity, rate) to evaluate: text kinds once, visual/acoustic per granularity."""
    out = []
    for kind in kinds:
        grains = [TEXT_GRANULARITY] if kind in TEXT_KINDS else list(granularities)
        out += [(kind, g, rate) for g in grains for rate in rates]
    return out


def _predict(
    ev: _Evaluation, kind: str, granularity: str, rate: float, seed: int, keep: list | None = None
) -> dict:
    """Metrics of one noise draw (seeded by ``seed``) and its realised corruption rate;
    ``keep``: a list the per-utterance predictions are appended to (a frame)."""
    generator = torch.Generator().manual_seed(seed)
    grain = DEFAULT_GRANULARITY if granularity == TEXT_GRANULARITY else granularity
    noisy = _NoisyLoader(ev.loader, kind, rate, generator, ev.info, grain)
    clean_text = kind in AV_KINDS or rate == 0.0
    pred = predict_split(
        ev.model,
        ev.dataset[ev.split],
        ev.tokenizer,
        ev.cfg,
        ev.device,
        loader=noisy,
        text_cache=ev.text_cache if clean_text else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant predictions
        metrics = sentiment_metrics(pred.y_pred, pred.y_true)
    realised = noisy.n_corrupted / noisy.n_eligible if noisy.n_eligible else np.nan
    if keep is not None:
        keep.append(
            pd.DataFrame(
                {
                    "kind": kind,
                    "granularity": granularity,
                    "rate": rate,
                    "id": pred.ids,
                    "y_true": pred.y_true,
                    "y_pred": pred.y_pred,
                }
            )
        )
    return {**{m: metrics[m] for m in METRICS}, "realised_rate": realised}


def _summarise_draws(draws: list[dict]) -> dict:
    """Mean and standard deviation over draws (NaN std for one draw)."""
    frame = pd.DataFrame(draws)
    row = {}
    for m in METRICS:
        row[m] = frame[m].mean()
        row[f"{m}_std"] = frame[m].std(ddof=1) if len(frame) > 1 else np.nan
    row["realised_rate"] = frame["realised_rate"].mean()
    return row


def robustness_curve(
    run_dir: str | Path,
    kind: str | Sequence[str],
    rates: Sequence[float] = DEFAULT_RATES,
    n_draws: int = 3,
    seed: int = 0,
    split: str = "test",
    progress: bool = False,
    granularities: Sequence[str] = NOISE_GRANULARITIES,
    reuse_text: bool = True,
    predictions_out: str | Path | None = None,
) -> pd.DataFrame:
    """Metrics of a run's best checkpoint on ``split`` with its inputs corrupted (thesis 6.3.4).

    For every kind and rate (and, for visual/acoustic noise, every granularity of
    ``granularities``; text rows have granularity ``"token"``) the split is predicted ``n_draws``
    times with independent noise draws (seeded by ``draw_seed``; the granularities share the
    draws' selection of steps). One row per (kind, granularity, rate) holds the mean over draws
    of ``corr``, ``mae`` and ``acc7`` with their standard deviations (``*_std``), the realised
    corruption rate, and the run's identity (model, variant, adaptation, seed, data, PLM), so
    that curves of several runs can be concatenated and averaged. Rate 0 changes nothing, so
    the clean split is predicted once and shared by every kind.

    ``reuse_text``: the text features of AMB and MISA are computed once per test batch and
    reused by the passes whose text is clean (module doc); ``False`` recomputes them in every
    pass (the same rows, bitwise).

    ``predictions_out``: a CSV file that gets the per-utterance predictions of the first draw at
    the highest rate of every kind and granularity (columns kind, granularity, rate, id, y_true,
    y_pred): what ``ambcore.stats`` compares conditions with (``robustness_predictions``).
    """
    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        if k not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {k!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    granularities = [check_granularity(g) for g in granularities]
    rates = [_check_rate(r) for r in rates]
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    ev = _prepare(Path(run_dir), split)
    if reuse_text and reuses_text(ev.model):
        ev.text_cache = TextCache(ev.model)
    conditions = _conditions(kinds, rates, granularities)
    bar = tqdm(
        total=len(conditions), desc=f"noise {Path(run_dir).name}", disable=not progress, leave=False
    )
    clean, rows, kept = None, [], []
    top = max(rates)
    for k, grain, rate in conditions:
        if rate == 0.0:
            clean = clean or _predict(ev, k, grain, 0.0, draw_seed(seed, k, 0))
            draws = [clean] * n_draws
        else:
            keep = kept if (predictions_out is not None and rate == top) else None
            draws = [
                _predict(ev, k, grain, rate, draw_seed(seed, k, d), keep if d == 0 else None)
                for d in range(n_draws)
            ]
        rows.append(
            {
                **ev.identity,
                "kind": k,
                "granularity": grain,
                "rate": rate,
                "n_draws": n_draws,
                **_summarise_draws(draws),
            }
        )
        bar.update(1)
    bar.close()
    if predictions_out is not None:
        runs.atomic_write_text(
            Path(predictions_out), pd.concat(kept, ignore_index=True).to_csv(index=False)
        )
    return pd.DataFrame(rows)


def robustness_predictions(
    run_dirs: Sequence[str | Path], kind: str, granularity: str = DEFAULT_GRANULARITY
) -> dict[int, pd.DataFrame]:
    """``{seed: frame(id, y_true, y_pred)}`` of the runs' predictions at the highest rate of
    ``kind`` (text kinds: granularity ``"token"``), from the file ``robustness_curve`` wrote
    (``ROBUSTNESS_PREDICTIONS`` in each run folder): a cell for ``ambcore.stats.compare``."""
    grain = TEXT_GRANULARITY if kind in TEXT_KINDS else granularity
    out = {}
    for run_dir in map(Path, run_dirs):
        path = run_dir / ROBUSTNESS_PREDICTIONS
        if not path.exists():
            raise ValueError(f"{path} is missing: the run's noisy predictions are needed")
        frame = pd.read_csv(path, dtype={"id": str})
        part = frame[(frame["kind"] == kind) & (frame["granularity"] == grain)]
        if part.empty:
            raise ValueError(f"{path}: no predictions of kind {kind!r}, granularity {grain!r}")
        out[int(runs.read_config(run_dir).seed)] = part[["id", "y_true", "y_pred"]].reset_index(
            drop=True
        )
    return out


def select_granularity(curves: pd.DataFrame, granularity: str) -> pd.DataFrame:
    """The text rows and the visual/acoustic rows of ``granularity``: one figure 6.3's worth.

    Curves without a granularity column (computed before it existed) are element-wise."""
    check_granularity(granularity)
    if "granularity" not in curves:
        curves = curves.assign(
            granularity=np.where(curves["kind"].isin(TEXT_KINDS), TEXT_GRANULARITY, "element")
        )
    keep = curves["granularity"].isin([TEXT_GRANULARITY, granularity])
    return curves[keep].reset_index(drop=True)


def granularity_figure(summary: pd.DataFrame, subtitle: str = "", metric: str = "corr"):
    """The visual and acoustic panels of figure 6.3 for both granularities side by side
    (rows: visual, acoustic; columns: ``NOISE_GRANULARITIES``); from ``summarize_curves``."""
    # lazy: pyplot loads only for the figure; the processes that compute curves do without
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2, len(NOISE_GRANULARITIES), figsize=(10, 7), sharey=True, constrained_layout=True
    )
    models = list(dict.fromkeys(summary["row_name"]))
    for row, kind in enumerate(AV_KINDS):
        for col, grain in enumerate(NOISE_GRANULARITIES):
            ax, part = (
                axes[row, col],
                summary[(summary["kind"] == kind) & (summary["granularity"] == grain)],
            )
            for i, model in enumerate(models):
                curve = part[part["row_name"] == model].sort_values("rate")
                mean, std = curve[f"{metric}_mean"], curve[f"{metric}_std"].fillna(0.0)
                ax.plot(curve["rate"], mean, marker="o^dsv"[i % 5], color=f"C{i}", label=model)
                ax.fill_between(curve["rate"], mean - std, mean + std, color=f"C{i}", alpha=0.15)
            default = " (default)" if grain == DEFAULT_GRANULARITY else ""
            ax.set(
                title=f"{kind} noise, one draw per {grain}{default}", xlabel="noise insertion rate"
            )
            ax.grid(True, alpha=0.3)
        axes[row, 0].set_ylabel(metric)
    axes[0, 0].legend(fontsize=8)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return fig


CURVE_KEYS = (
    "row_name",
    "model",
    "variant",
    "text_adaptation",
    "preset",
    "data",
    "is_synthetic",
    "plm",
    "split",
    "kind",
    "granularity",
    "rate",
)


def summarize_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Robustness curves of several runs (seeds) averaged per model, kind and rate.

    ``curves`` is ``robustness_curve`` output of several runs concatenated. Returns
    ``corr_mean``/``corr_std``, ``mae_mean``/``mae_std`` and ``acc7_mean``/``acc7_std`` over
    runs (each run already averaged over its noise draws; std with ddof=1, NaN for one run),
    ``n_runs`` and the mean ``realised_rate`` - the band of figure 6.3.
    """
    if "granularity" not in curves:  # curves computed before granularities existed: element-wise
        curves = curves.assign(
            granularity=np.where(curves["kind"].isin(TEXT_KINDS), TEXT_GRANULARITY, "element")
        )
    missing = [k for k in (*CURVE_KEYS, "run", "corr", "mae", "acc7") if k not in curves]
    if missing:
        raise ValueError(
            f"summarize_curves: columns {missing} missing; pass robustness_curve output"
        )
    grouped = curves.groupby(list(CURVE_KEYS), sort=False, dropna=False)
    out = grouped.agg(
        n_runs=("run", "nunique"),
        corr_mean=("corr", "mean"),
        corr_std=("corr", "std"),
        mae_mean=("mae", "mean"),
        mae_std=("mae", "std"),
        acc7_mean=("acc7", "mean"),
        acc7_std=("acc7", "std"),
        realised_rate=("realised_rate", "mean"),
    ).reset_index()
    duplicated = grouped["run"].size() != grouped["run"].nunique()
    if duplicated.any():
        raise ValueError("summarize_curves: a run appears twice for the same kind and rate")
    return out
