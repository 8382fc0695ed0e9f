"""What the training chapter says about one run (thesis 6.3.1), read from its run folder.

The configuration that was run, a one-line account of the training, the folder's files, the
metrics of the best checkpoint beside the mean-label baseline, the values the page's prose
refers to, and where the run came from (``env.json``). Paths are shown relative to the runs
folder, so a page never carries the temporary path of the machine that built it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ambcore.config import Config
from ambcore.paths import runs_dir
from ambcore.plots import METRIC_COLUMNS, metrics_table

__all__ = [
    "CONFIG_SHOWN",
    "config_table",
    "shown_path",
    "training_summary",
    "run_files",
    "metrics_overview",
    "METRIC_DIGITS",
    "glue_values",
    "provenance_table",
]

# The fields of a run's config that the training chapter shows (all of them: config.json).
CONFIG_SHOWN = (
    "preset",
    "model",
    "plm",
    "variant",
    "text_adaptation",
    "adapter_dim",
    "fusion_hidden",
    "dropout",
    "loss",
    "lr",
    "batch_size",
    "max_epochs",
    "patience",
    "seed",
)


def config_table(cfg: Config, keys: Iterable[str] = CONFIG_SHOWN) -> pd.DataFrame:
    """``keys`` of ``cfg`` and their values, one row each."""
    return pd.DataFrame(
        {"value": [str(getattr(cfg, key)) for key in keys]},
        index=pd.Index(list(keys), name="setting"),
    )


def shown_path(path: str | Path) -> str:
    """``path`` as a page shows it: under the runs folder as ``runs/...`` (``$AMB_RUNS/...``
    when AMB_RUNS names the runs folder), else its name only."""
    path, root = Path(path).resolve(), runs_dir().resolve()
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path.name
    label = "$AMB_RUNS" if os.environ.get("AMB_RUNS") else "runs"
    return f"{label}/{relative.as_posix()}" if relative.parts else label


def training_summary(result: Any) -> str:
    """Where the run is, whether it was trained now or reused, its epochs and its size.

    ``result``: an ``ambcore.train.TrainResult``."""
    state = "reused (already finished)" if result.reused else f"trained in {result.seconds:.0f} s"
    early = " (stopped early)" if result.stopped_early else ""
    return (
        f"run folder: {shown_path(result.run_dir)}\n"
        f"{state}; {result.epochs_run} epochs, best epoch {result.best_epoch}{early}; "
        f"{result.n_trainable_params:,} trainable parameters"
    )


def run_files(run_dir: str | Path, leave_out: Iterable[str] = ()) -> list[str]:
    """The names in a run folder, sorted, without hidden files and ``leave_out``."""
    skip = set(leave_out)
    return sorted(
        p.name for p in Path(run_dir).iterdir() if not p.name.startswith(".") and p.name not in skip
    )


def metrics_overview(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The best checkpoint on valid and test, and the test baseline that predicts the mean
    training label (``metrics.json``), as ``ambcore.plots.metrics_table`` rows."""
    return metrics_table(
        {
            "valid (best checkpoint)": metrics["valid"],
            "test (best checkpoint)": metrics["test"],
            "test: predict the training mean": metrics["test_baseline_train_mean"],
        }
    )


# Decimals of a metrics table: MAE and correlation 3, percentages 1 (as in the thesis' tables).
METRIC_DIGITS = {title: 3 if scale == 1.0 else 1 for title, scale in METRIC_COLUMNS.values()}


def glue_values(result: Any, metrics: Mapping[str, Any]) -> dict[str, str]:
    """The values the training chapter's prose refers to (``{glue:text}`train_...```)."""
    test, baseline = metrics["test"], metrics["test_baseline_train_mean"]
    return {
        "train_data": result.data_name,
        "train_plm": result.plm,
        "train_test_mae": f"{test['mae']:.3f}",
        "train_test_corr": "n/a" if test["corr"] is None else f"{test['corr']:.3f}",
        "train_test_acc7": f"{100 * test['acc7']:.1f}",
        "train_test_acc2_non0": f"{100 * test['acc2_non0']:.1f}",
        "train_test_f1_non0": f"{100 * test['f1_non0']:.1f}",
        "train_baseline_mae": f"{baseline['mae']:.3f}",
        "train_best_epoch": str(result.best_epoch),
        "train_epochs": str(result.epochs_run),
        "train_n_trainable": f"{result.n_trainable_params:,}",
    }


def provenance_table(env: Mapping[str, Any]) -> pd.DataFrame:
    """Device, versions, code revision, data fingerprint and host of a run's ``env.json``."""
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    rows = {
        "device": env["device"],
        "torch": env["versions"]["torch"],
        "transformers": env["versions"]["transformers"],
        "git revision": f"{env['git_revision']}{dirty}",
        "data fingerprint": env["data_fingerprint"],
        "host / CPUs": f"{env['hostname']} / {env['cpu_count']}",
    }
    return pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="record"))
