"""bf16 autocast against fp32, decided by measurement (thesis 6.3.1: the thesis trained in fp32
on a GTX 1080 Ti, which has no bf16; thesis 6.3.2: the comparison of two training procedures).

    python -m ambcore bench --numerics [--preset embedded] [--seeds 0,1,2,3,4] [--parallel N]
                                       [--set k=v ...] [--out results/numerics-<preset>.json]

The same seeds of AMB (the book's AMB cell: ``ambcore.experiments.cell_overrides``) are trained
twice, once per arm of ``ARMS``: ``precision=fp32`` (no autocast) and ``precision=bf16`` (bf16
autocast of every training and evaluation step, on the CPU as on a GPU; ``ambcore.config``).
The runs go through ``ambcore.experiments.run_experiment`` (a sweep: finished runs are reused,
parallel runs take one persistent worker and one thread each) into their own runs folder
(``default_runs_dir``), never the book's.

The two arms are compared with the verdicts' test, ``ambcore.stats.family``: the difference of
the arms' mean test metric (bf16 minus fp32) on every metric of ``stats.METRICS``, the runs of
each arm an independent sample (the seeds are not paired), a cluster bootstrap over the test
videos, Holm-adjusted over the five metrics. A metric's verdict is "not distinguishable" when
its adjusted p is at least ``ALPHA``, else the direction ("bf16 lower" / "bf16 higher").
``decide``: bf16 stays the default on CUDA only if no metric distinguishes the arms.

The record (``run_numerics``) holds the machine block of the other bench records (device,
probe, git revision and dirty flag, load average at start and end), the configs of both arms,
every run's metrics, the predictions' shift between the arms per seed, the comparison rows
with their p-values and intervals, the verdict per metric and the decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ambcore import paths, report, stats
from ambcore.bench.training import _environment
from ambcore.errors import AmbError
from ambcore.experiments import cell_overrides, run_experiment
from ambcore.metrics import METRIC_NAMES
from ambcore.models.inference import autocast_dtype
from ambcore.overrides import from_env
from ambcore.paths import PROJECT_ROOT
from ambcore.runs import read_config
from ambcore.stats import HIGHER_IS_BETTER, METRIC_LABELS, read_predictions
from ambcore.sweep import load_spec, plan
from ambcore.train import resolve_device

__all__ = [
    "ARMS",
    "ALPHA",
    "DEFAULT_SEEDS",
    "numerics_spec",
    "default_runs_dir",
    "default_output",
    "compare_arms",
    "verdict_of",
    "decide",
    "run_numerics",
    "format_numerics",
]

# arm -> the config values that make it; the comparison is the first arm minus the second.
ARMS: dict[str, dict[str, Any]] = {"bf16": {"precision": "bf16"}, "fp32": {"precision": "fp32"}}
ALPHA = 0.05  # family-wise, Holm over the metrics
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
CELL = "amb"  # the experiments cell both arms train


def default_runs_dir(preset: str, overrides: Mapping[str, Any] | None = None) -> Path:
    """``<runs>/numerics/<preset>[-<hash>]``: a hash of the shared overrides (and ``AMB_SET``)
    when there are any, so that two different studies never share run folders."""
    changed = {**dict(overrides or {}), **({"AMB_SET": from_env()} if from_env() else {})}
    name = preset
    if changed:
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode())
        name = f"{preset}-{digest.hexdigest()[:8]}"
    return paths.runs_dir() / "numerics" / name


def default_output(preset: str) -> Path:
    return PROJECT_ROOT / "results" / f"numerics-{preset}.json"


def numerics_spec(
    preset: str,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    overrides: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The sweep spec of the study: one cell per arm, the book's AMB cell with the arm's
    precision (which wins over ``overrides`` and ``AMB_SET``), the same ``seeds`` for both."""
    own = cell_overrides(CELL, preset)
    return {
        "name": f"numerics_{preset}",
        "preset": preset,
        "runs_dir": str(runs_dir or default_runs_dir(preset, overrides)),
        "seeds": [int(s) for s in seeds],
        **({"overrides": dict(overrides)} if overrides else {}),
        "cells": [{"name": arm, "overrides": {**own, **values}} for arm, values in ARMS.items()],
    }


def verdict_of(row: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """ "not distinguishable", "bf16 lower" or "bf16 higher" (better or worse: ``stats``'
    ``HIGHER_IS_BETTER``), or "not compared" when the row has no p-value."""
    p = float(row["p_holm"])
    if not np.isfinite(p):
        return "not compared"
    if p >= alpha:
        return "not distinguishable"
    a, b = row["a"], row["b"]
    higher = float(row["diff"]) > 0
    better = higher == HIGHER_IS_BETTER[str(row["metric"])]
    return f"{a} {'higher' if higher else 'lower'} ({'better' if better else 'worse'} than {b})"


def compare_arms(
    runs_dir: str | os.PathLike, n_boot: int = 1000, alpha: float = ALPHA, seed: int = 0
) -> tuple[Any, Any]:
    """(the family of comparisons, the runs frame) of the finished runs under ``runs_dir``:
    one row per metric of ``stats.METRICS``, the first arm of ``ARMS`` minus the second, with
    ``verdict`` (``verdict_of``) and ``sentence`` (``stats.verdict``)."""
    frame = report.collect_runs(runs_dir)
    predictions = stats.cell_predictions(frame, runs_dir)
    a, b = ARMS
    missing = [arm for arm in ARMS if arm not in predictions]
    if missing:
        raise AmbError(f"{runs_dir}: no finished runs of arm(s) {missing}")
    fam = stats.family(
        predictions, [(f"{a}-{b}", a, b)], stats.METRICS, runs_frame=frame, n_boot=n_boot, seed=seed
    )
    fam["verdict"] = [verdict_of(row, alpha) for _, row in fam.iterrows()]
    fam["sentence"] = [stats.verdict(row, a, b, alpha=alpha) for _, row in fam.iterrows()]
    return fam, frame


def decide(verdicts: Mapping[str, str]) -> dict[str, Any]:
    """The paper preset's precision from the verdict per metric: bf16 autocast on CUDA
    (``precision="auto"``) only if no metric tells the arms apart, else fp32."""
    apart = sorted(m for m, v in verdicts.items() if v != "not distinguishable")
    keep = not apart
    return {
        "distinguishable_on": apart,
        "keep_bf16_default": keep,
        "paper_precision": "auto" if keep else "fp32",
        "rule": "bf16 autocast stays the default on CUDA only if bf16 and fp32 runs of the same "
        "seeds are not distinguishable on any metric (Holm-adjusted over the metrics, "
        f"alpha {ALPHA})",
    }


def _prediction_shift(frame, runs_dir: Path) -> list[dict[str, Any]]:
    """Per seed run by both arms: how far the bf16 run's test predictions are from the fp32
    run's (mean and largest absolute difference, label units)."""
    a, b = ARMS
    by_arm = {arm: dict(zip(g["seed"], g["run"])) for arm, g in frame.groupby("cell")}
    out = []
    for seed in sorted(set(by_arm.get(a, {})) & set(by_arm.get(b, {}))):
        pa = read_predictions(runs_dir / by_arm[a][seed]).set_index("id")["y_pred"]
        pb = read_predictions(runs_dir / by_arm[b][seed]).set_index("id")["y_pred"]
        d = (pa - pb.reindex(pa.index)).abs()
        out.append({"seed": int(seed), "mean_abs": float(d.mean()), "max_abs": float(d.max())})
    return out


def _runs_rows(frame) -> list[dict[str, Any]]:
    rows = []
    for _, r in frame.sort_values(["cell", "seed"]).iterrows():
        rows.append(
            {
                "arm": r["cell"],
                "seed": int(r["seed"]),
                "run": r["run"],
                "epochs_run": None if pd.isna(r["epochs_run"]) else int(r["epochs_run"]),
                "best_epoch": None if pd.isna(r["best_epoch"]) else int(r["best_epoch"]),
                **{
                    split: {m: float(r[f"{split}_{m}"]) for m in METRIC_NAMES}
                    for split in ("test", "valid")
                },
            }
        )
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def run_numerics(
    preset: str = "embedded",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    overrides: Mapping[str, Any] | None = None,
    runs_dir: str | os.PathLike | None = None,
    parallel: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Train both arms of ``ARMS`` on ``seeds`` (``numerics_spec``; ``parallel`` as
    ``experiments.run_experiment``), compare them (``compare_arms``) and return the record."""
    if len(seeds) < 2:
        raise AmbError(f"--seeds: at least 2 per arm (a seed variance is needed), got {seeds}")
    spec = numerics_spec(preset, seeds, overrides, runs_dir)
    cells = plan(load_spec(spec))
    device = resolve_device(cells[0].cfg.device)
    record: dict[str, Any] = {
        "benchmark": "ambcore bench --numerics",
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "preset": preset,
        **_environment(device),
        "autocast_dtype": {
            arm: str(autocast_dtype(c.cfg, device)) for arm, c in _first_cells(cells).items()
        },
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_instructions": sorted(_cpu_flags() & {"avx512_bf16", "amx_bf16"}),
    }
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = run_experiment(spec, parallel=parallel, progress=progress)
    if result.failed:
        raise AmbError("numerics: failed runs:\n" + "\n".join(f.error for f in result.failed))
    record["trained_runs"] = sum(o.outcome != "skipped" for o in result.outcomes)
    record["wall_s"] = round(time.perf_counter() - t0, 1)
    record["cpu_s"] = round(_cpu_seconds() - cpu0, 1)
    record["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    root = Path(spec["runs_dir"])
    fam, frame = compare_arms(root, n_boot=n_boot)
    configs = {arm: read_config(c.run_dir).to_dict() for arm, c in _first_cells(cells).items()}
    verdicts = dict(zip(fam["metric"], fam["verdict"]))
    record.update(
        model=CELL,
        arms=ARMS,
        seeds=[int(s) for s in seeds],
        spec=spec,
        config=configs[next(iter(ARMS))],
        config_differences={
            k: {arm: configs[arm][k] for arm in ARMS}
            for k in sorted(configs[next(iter(ARMS))])
            if len({json.dumps(configs[arm][k]) for arm in ARMS}) > 1
        },
        is_synthetic=bool(frame["is_synthetic"].all()),
        data=sorted(set(frame["data"])),
        plm=sorted(set(frame["plm"])),
        runs=_runs_rows(frame),
        prediction_shift=_prediction_shift(frame, root),
        test=(
            "ambcore.stats.family: difference of the arms' mean test metric (bf16 minus fp32), "
            "runs of each arm independent samples (seeds not paired), cluster bootstrap of the "
            f"test videos ({n_boot} replicates), Student t with Welch-Satterthwaite df, Holm "
            f"over the {len(fam)} metrics, alpha {ALPHA}"
        ),
        comparison=[
            {k: _jsonable(v) for k, v in row.items()} for row in fam.to_dict(orient="records")
        ],
        verdicts=verdicts,
        decision=decide(verdicts),
    )
    return record


def _first_cells(cells) -> dict[str, Any]:
    """arm -> its sweep cell of the first seed."""
    return {c.name: c for c in cells if c.seed == cells[0].seed}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the sweep's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def format_numerics(record: Mapping[str, Any]) -> str:
    """The record as a table: one line per metric (each arm's mean, the difference and its
    interval, p and Holm-adjusted p, the verdict), then the decision."""
    a, b = record["arms"]
    lines = [
        f"bf16 autocast against fp32: {record['model']}, preset {record['preset']}, "
        f"{len(record['seeds'])} seeds per arm, device {record['device']}, "
        f"{'SYNTHETIC data' if record.get('is_synthetic') else ', '.join(record['data'])}, "
        f"PLM {', '.join(record['plm'])}",
        f"{'metric':<7} {a:>8} {b:>8} {'diff':>8} {'95% interval':>19} {'p':>7} {'p_holm':>7}  "
        "verdict",
    ]
    for row in record["comparison"]:

        def num(key: str, spec: str = "8.4f") -> str:
            value = row.get(key)
            return format(value, spec) if value is not None else "nan".rjust(int(spec[0]))

        interval = f"[{row['lo']:+.4f}, {row['hi']:+.4f}]" if row.get("lo") is not None else "–"
        lines.append(
            f"{METRIC_LABELS.get(row['metric'], row['metric']):<7} {num('estimate_a')} "
            f"{num('estimate_b')} {row['diff']:+8.4f} {interval:>19} {num('p', '7.3f')} "
            f"{num('p_holm', '7.3f')}  {row['verdict']}"
        )
    shift = record.get("prediction_shift") or []
    if shift:
        lines.append(
            "test predictions, bf16 run minus fp32 run of the same seed: mean |difference| "
            + ", ".join(f"seed {s['seed']} {s['mean_abs']:.4f}" for s in shift)
        )
    d = record["decision"]
    lines.append(
        "decision: "
        + (
            "not distinguishable on any metric: bf16 autocast stays the default on CUDA"
            if d["keep_bf16_default"]
            else f"distinguishable on {', '.join(d['distinguishable_on'])}: the paper preset "
            "trains in fp32"
        )
    )
    lines.append(
        f"{record.get('cpu_s', '?')} CPU s, {record.get('wall_s', '?')} s wall; load average "
        f"{record.get('load_average_1_5_15min')} at start, {record.get('load_average_end')} at end"
    )
    return "\n".join(lines)
