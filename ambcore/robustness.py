"""Robustness of trained runs to corrupted inputs (thesis section 6.3.4, figure 6.3).

A high-level use of the trainer: a run's best checkpoint predicts a split whose batches pass
through ``ambcore.noise.apply_noise`` at several rates and draws. The corruption itself (the
building block, with no knowledge of models or runs) lives in ``ambcore.noise``; this module
sits above ``ambcore.train``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ambcore import runs
from ambcore.data.collate import make_loader
from ambcore.metrics import sentiment_metrics
from ambcore.models.plm import load_tokenizer
from ambcore.noise import DEFAULT_RATES, NOISE_KINDS, TokenizerInfo, _check_rate, apply_noise, draw_seed
from ambcore.report import data_label, plm_label, row_name
from ambcore.train import _load_data_for_run, _load_run_model, predict_split, resolve_device


class _NoisyLoader:
    """Wraps a loader: every batch corrupted by ``apply_noise``; counts what was corrupted."""

    def __init__(self, loader, kind, rate, generator, tokenizer_info):
        self.loader, self.kind, self.rate = loader, kind, rate
        self.generator, self.tokenizer_info = generator, tokenizer_info
        self.n_corrupted = self.n_eligible = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            result = apply_noise(batch, self.kind, self.rate, self.generator, self.tokenizer_info)
            self.n_corrupted += result.n_corrupted
            self.n_eligible += result.n_eligible
            yield result.batch


def robustness_curve(
    run_dir: str | Path,
    kind: str | Sequence[str],
    rates: Sequence[float] = DEFAULT_RATES,
    n_draws: int = 3,
    seed: int = 0,
    split: str = "test",
    progress: bool = False,
) -> pd.DataFrame:
    """Metrics of a run's best checkpoint on ``split`` with its inputs corrupted (thesis 6.3.4).

    For every kind and rate the split is predicted ``n_draws`` times with independent noise
    draws (seeded by ``draw_seed``); one row per (kind, rate) holds the mean over draws of
    ``corr``, ``mae`` and ``acc7`` with their standard deviations over draws (``*_std``), the
    realised corruption rate, and the run's identity (model, variant, adaptation, seed, data,
    PLM) so that curves of several runs can be concatenated and averaged.
    """

    kinds = [kind] if isinstance(kind, str) else list(kind)
    for k in kinds:
        if k not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {k!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    rates = [_check_rate(r) for r in rates]
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    run_dir = Path(run_dir)
    cfg = runs.read_config(run_dir)
    device = resolve_device(cfg.device)
    dataset = _load_data_for_run(run_dir, cfg, None)
    if split not in dataset.splits:
        raise ValueError(f"{dataset.source}: no split {split!r}; splits: {list(dataset.splits)}")
    model = _load_run_model(run_dir, device)
    tokenizer = load_tokenizer(cfg)
    info = TokenizerInfo.from_tokenizer(tokenizer)
    loader = make_loader(dataset[split], tokenizer, cfg, shuffle=False)
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
    total = len(kinds) * len(rates) * n_draws
    bar = tqdm(total=total, desc=f"noise {run_dir.name}", disable=not progress, leave=False)
    rows = []
    for k in kinds:
        for rate in rates:
            draws = []
            for draw in range(n_draws):
                generator = torch.Generator().manual_seed(draw_seed(seed, k, draw))
                noisy = _NoisyLoader(loader, k, rate, generator, info)
                pred = predict_split(model, dataset[split], tokenizer, cfg, device, loader=noisy)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # constant predictions
                    metrics = sentiment_metrics(pred.y_pred, pred.y_true)
                realised = noisy.n_corrupted / noisy.n_eligible if noisy.n_eligible else np.nan
                draws.append({**{m: metrics[m] for m in ("corr", "mae", "acc7")},
                              "realised_rate": realised})  # fmt: skip
                bar.update(1)
            frame = pd.DataFrame(draws)
            row = {**identity, "kind": k, "rate": rate, "n_draws": n_draws}
            for m in ("corr", "mae", "acc7"):
                row[m] = frame[m].mean()
                row[f"{m}_std"] = frame[m].std(ddof=1) if n_draws > 1 else np.nan
            row["realised_rate"] = frame["realised_rate"].mean()
            rows.append(row)
    bar.close()
    return pd.DataFrame(rows)


CURVE_KEYS = ("row_name", "model", "variant", "text_adaptation", "preset", "data",
              "is_synthetic", "plm", "split", "kind", "rate")  # fmt: skip


def summarize_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Robustness curves of several runs (seeds) averaged per model, kind and rate.

    ``curves`` is ``robustness_curve`` output of several runs concatenated. Returns
    ``corr_mean``/``corr_std``, ``mae_mean``/``mae_std`` and ``acc7_mean``/``acc7_std`` over
    runs (each run already averaged over its noise draws; std with ddof=1, NaN for one run),
    ``n_runs`` and the mean ``realised_rate`` - the band of figure 6.3.
    """
    missing = [k for k in (*CURVE_KEYS, "run", "corr", "mae", "acc7") if k not in curves]
    if missing:
        raise ValueError(f"summarize_curves: columns {missing} missing; pass robustness_curve output")
    grouped = curves.groupby(list(CURVE_KEYS), sort=False, dropna=False)
    out = grouped.agg(
        n_runs=("run", "nunique"),
        corr_mean=("corr", "mean"), corr_std=("corr", "std"),
        mae_mean=("mae", "mean"), mae_std=("mae", "std"),
        acc7_mean=("acc7", "mean"), acc7_std=("acc7", "std"),
        realised_rate=("realised_rate", "mean"),
    ).reset_index()  # fmt: skip
    duplicated = grouped["run"].size() != grouped["run"].nunique()
    if duplicated.any():
        raise ValueError("summarize_curves: a run appears twice for the same kind and rate")
    return out
