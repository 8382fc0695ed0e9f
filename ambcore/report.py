"""Tables from run folders (thesis 6.3.2-6.3.3: tables 6.1 and 6.2, figure 6.2).

Nothing here is typed by hand: our numbers are read from run folders (``metrics.json``,
``config.json``, ``env.json``, ``sweep.json``), the thesis' numbers and the literature rows it
cites from ``results/thesis_tables.csv`` and ``results/literature.csv`` (checked against the
thesis text by their own tests).

- ``collect_runs(runs_dir)``: one row per finished run (DONE), tidy, with the identity of the
  run (cell, model, variant, adaptation, seed, preset, data, PLM, trainable parameters) and
  every validation and test metric.
- ``summarize(runs)``: mean and standard deviation over seeds per cell, with the number of seeds.
- ``table_6_1(summary)`` / ``table_6_2(summary)``: the thesis tables with our rows beside the
  thesis' rows and the cited literature rows; a ``Source`` column says which is which and every
  row names the data and the language model that produced it. ``format_table`` renders
  ``mean ± std``; ``write_report`` writes everything as CSV.
- ``acc7_vs_params(summary)``: the points of figure 6.2 (Acc-7 against trainable parameters).

Units: accuracies and F1 are fractions in ``collect_runs``/``summarize`` (as
``ambcore.metrics`` returns them) and percentages in the thesis tables, whose headers say so.
The thesis reports one Acc-2/F1 without naming the convention; our rows use the convention
given by ``acc2`` (``"non0"`` by default, the one MISA's and MAG-BERT's code report) and the
table names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ambcore import runs
from ambcore.errors import AmbError
from ambcore.metrics import METRIC_NAMES
from ambcore.paths import PROJECT_ROOT

__all__ = [
    "IDENTITY_COLUMNS",
    "row_name",
    "plm_label",
    "data_label",
    "collect_runs",
    "summarize",
    "thesis_rows",
    "cited_rows",
    "table_6_1",
    "table_6_2",
    "format_table",
    "acc7_vs_params",
    "write_report",
]

# What identifies a cell; constant over its seeds.
IDENTITY_COLUMNS = (
    "cell", "row_name", "model", "variant", "text_adaptation", "finetune_layers", "preset",
    "data", "is_synthetic", "plm",
)  # fmt: skip
METRIC_COLUMNS = tuple(f"{split}_{m}" for split in ("valid", "test") for m in METRIC_NAMES)
RUN_COLUMNS = ("run", *IDENTITY_COLUMNS, "seed", "n_trainable_params", "trainable_params_m",
               "best_epoch", "epochs_run", *METRIC_COLUMNS)  # fmt: skip

_MODEL_NAMES = {"amb": "AMB", "misa": "MISA", "mag-bert": "MAG-BERT"}
THESIS_PLM = "bert-base-uncased"


def row_name(model: str, text_adaptation: str, variant: str = "full") -> str:
    """The thesis' name for a configuration: "AMB", "AMB-FT", "AMB text-only", "MISA (FT)",
    "MISA-Adapters", "MAG-BERT (FT)", ... (tables 6.1 and 6.2)."""
    base = _MODEL_NAMES.get(model, model)
    if model == "amb":
        name = {"adapters": "AMB", "finetune": "AMB-FT"}.get(text_adaptation, "AMB (frozen PLM)")
    else:  # the baselines fine-tune in the literature; adapters are the thesis' variant
        name = {"finetune": f"{base} (FT)", "adapters": f"{base}-Adapters"}.get(
            text_adaptation, f"{base} (frozen PLM)"
        )
    return name if variant == "full" else f"{name} {variant}"


def plm_label(plm: str, random_init: bool = False) -> str:
    """A short name of a config's PLM for table cells."""
    label = {"embedded": "all-MiniLM-L6-v2", "tiny-random": "tiny random BERT"}.get(plm, plm)
    if random_init and plm != "tiny-random":
        label += " (random init)"
    return label


def data_label(name: str, is_synthetic: bool) -> str:
    """The dataset's name, marked SYNTHETIC where it is."""
    if is_synthetic and "synthetic" not in name.lower():
        return f"SYNTHETIC: {name}"
    return name


# ---- our runs --------------------------------------------------------------------------------


def collect_runs(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per finished run folder under ``runs_dir`` (searched recursively).

    Folders without DONE (unfinished or killed runs) are left out. The ``cell`` is the sweep
    cell (``sweep.json``) or, for runs trained outside a sweep, the folder's path.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise AmbError(f"runs folder {runs_dir} does not exist")
    rows = []
    for metrics_path in sorted(runs_dir.rglob("metrics.json")):
        run_dir = metrics_path.parent
        if not runs.is_done(run_dir):
            continue
        rows.append(_run_row(run_dir, runs_dir))
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))


def _run_row(run_dir: Path, runs_dir: Path) -> dict:
    cfg = runs.read_config(run_dir)
    metrics = runs.read_metrics(run_dir)
    paths = runs.RunPaths(run_dir)
    env = runs.read_json(paths.env) if paths.env.exists() else {}
    sweep_file = run_dir / "sweep.json"
    cell = runs.read_json(sweep_file)["cell"] if sweep_file.exists() else None
    relative = run_dir.relative_to(runs_dir).as_posix()
    missing = [k for k in ("valid", "test", "data", "is_synthetic") if k not in metrics]
    if missing:
        raise AmbError(f"{paths.metrics}: missing key(s) {missing}")
    random_init = bool((env.get("plm") or {}).get("random_init", cfg.plm_random_init))
    n_params = metrics.get("n_trainable_params")
    row = {
        "run": relative,
        "cell": cell or relative,
        "row_name": row_name(cfg.model, cfg.text_adaptation, cfg.variant),
        "model": cfg.model,
        "variant": cfg.variant,
        "text_adaptation": cfg.text_adaptation,
        "finetune_layers": cfg.finetune_layers if cfg.text_adaptation == "finetune" else "",
        "preset": cfg.preset,
        "data": data_label(metrics["data"], bool(metrics["is_synthetic"])),
        "is_synthetic": bool(metrics["is_synthetic"]),
        "plm": plm_label(cfg.plm, random_init),
        "seed": cfg.seed,
        "n_trainable_params": n_params,
        "trainable_params_m": None if n_params is None else n_params / 1e6,
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
    }
    for split in ("valid", "test"):
        for name in METRIC_NAMES:
            value = metrics[split].get(name)
            row[f"{split}_{name}"] = np.nan if value is None else float(value)  # null = NaN
    return row


def summarize(runs_frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1; NaN for one seed) over seeds, one row per cell.

    Columns: the identity columns, ``n_seeds``, ``seeds``, ``trainable_params_m`` and
    ``<metric>_mean`` / ``<metric>_std`` for every valid/test metric.
    """
    columns = [*IDENTITY_COLUMNS, "n_seeds", "seeds", "trainable_params_m"]
    columns += [f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "std")]
    if runs_frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in runs_frame.groupby(list(IDENTITY_COLUMNS), sort=False, dropna=False):
        params = group["trainable_params_m"].dropna().unique()
        if len(params) > 1:
            raise AmbError(
                f"cell {key[0]!r}: runs {list(group['run'])} have different trainable parameter "
                f"counts {sorted(params)}; they are not seeds of one configuration"
            )
        row = dict(zip(IDENTITY_COLUMNS, key))
        row["n_seeds"] = len(group)
        row["seeds"] = ",".join(str(s) for s in sorted(group["seed"]))
        row["trainable_params_m"] = params[0] if len(params) else np.nan
        for metric in METRIC_COLUMNS:
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


# ---- the thesis' numbers ---------------------------------------------------------------------

REFERENCE_DIR = PROJECT_ROOT / "results"  # thesis_tables.csv, literature.csv (see its README)
_TEXT_FEATURES = {"G": "GloVe", "B": "frozen BERT features"}


def _read_reference(name: str) -> pd.DataFrame:
    path = REFERENCE_DIR / name
    if not path.exists():
        raise AmbError(f"{path} is missing: the thesis' numbers are read from it")
    return pd.read_csv(path, dtype={"table": str, "thesis_table": str})


def thesis_rows(table: str | None = None) -> pd.DataFrame:
    """Rows of thesis table ``"6.1"``/``"6.2"`` (both if None) for the models this project
    reruns, from ``results/thesis_tables.csv`` (``origin`` says who produced each number)."""
    frame = _read_reference("thesis_tables.csv")
    if table is not None:
        frame = frame[frame["table"] == table]
    return frame.reset_index(drop=True)


def cited_rows(table: str = "6.1") -> pd.DataFrame:
    """The literature rows the thesis cites in ``table`` and nobody here reruns, from
    ``results/literature.csv`` (``numbers_from`` and ``citation`` give the sources)."""
    frame = _read_reference("literature.csv")
    return frame[frame["thesis_table"] == table].reset_index(drop=True)


def thesis_display_name(model: str, text_adaptation: str) -> str:
    """The thesis' row named as ``row_name`` names ours ("MISA" fine-tuned -> "MISA (FT)")."""
    if text_adaptation == "finetune" and not model.endswith("-FT"):
        return f"{model} (FT)"
    return model


# ---- tables 6.1 and 6.2 ----------------------------------------------------------------------

# (column header, our summary metric, reference CSV column, percent?)
_TABLE_METRICS = (
    ("MAE", "test_mae", "mae", False),
    ("Corr", "test_corr", "corr", False),
    ("Acc-7 (%)", "test_acc7", "acc7", True),
    ("Acc-2 (%)", "test_acc2_{acc2}", "acc2", True),
    ("F1 (%)", "test_f1_{acc2}", "f1", True),
)
TABLE_COLUMNS = (
    "Model", "Source", "Data", "PLM / text features", "n seeds",
    *(h for head, *_ in _TABLE_METRICS for h in (head, f"{head} std")),
    "Trainable params (M)", "Acc-2/F1 convention", "Reference",
)  # fmt: skip
_ADAPTATION = {"adapters": "adapters", "finetune": "fine-tuned", "frozen": "frozen"}


def _reference_row(ref: pd.Series, model: str, source: str, text: str) -> dict:
    row = {
        "Model": model,
        "Source": source,
        "Data": ref["dataset"],
        "PLM / text features": text,
        "n seeds": np.nan,
        "Trainable params (M)": ref["trainable_params_m"],
        "Acc-2/F1 convention": "not stated",
        "Reference": "" if pd.isna(ref["citation"]) else ref["citation"],
    }
    for head, _, column, _ in _TABLE_METRICS:
        row[head], row[f"{head} std"] = float(ref[column]), np.nan
    return row


def _our_row(s: pd.Series, acc2: str) -> dict:
    adaptation = _ADAPTATION.get(s["text_adaptation"], s["text_adaptation"])
    row = {
        "Model": s["row_name"],
        "Source": f"this book (cell {s['cell']}, preset {s['preset']})",
        "Data": s["data"],
        "PLM / text features": f"{s['plm']} + {adaptation}",
        "n seeds": s["n_seeds"],
        "Trainable params (M)": s["trainable_params_m"],
        "Acc-2/F1 convention": {"non0": "non-0 (label != 0)", "has0": "has-0 (>= 0)"}[acc2],
        "Reference": "",
    }
    for head, metric, _, percent in _TABLE_METRICS:
        metric = metric.format(acc2=acc2)
        scale = 100.0 if percent else 1.0
        row[head] = s[f"{metric}_mean"] * scale
        row[f"{head} std"] = s[f"{metric}_std"] * scale
    return row


def _thesis_table(table: str, summary: pd.DataFrame, acc2: str) -> pd.DataFrame:
    if acc2 not in ("non0", "has0"):
        raise ValueError(f"acc2 must be 'non0' or 'has0', got {acc2!r}")
    rows = [
        _reference_row(ref, f"{ref['model']} ({ref['text_features']})",
                       f"cited in thesis table {table} from {ref['numbers_from']}",
                       _TEXT_FEATURES.get(ref["text_features"], ref["text_features"]))
        for _, ref in cited_rows(table).iterrows()
    ]  # fmt: skip
    for _, ref in thesis_rows(table).iterrows():
        name = thesis_display_name(ref["model"], ref["text_adaptation"])
        text = f"{THESIS_PLM} + {_ADAPTATION.get(ref['text_adaptation'], ref['text_adaptation'])}"
        rows.append(_reference_row(ref, name, f"thesis table {table} ({ref['origin']})", text))
        ours = summary[summary["row_name"] == name]
        rows.extend(_our_row(s, acc2) for _, s in ours.iterrows())
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def table_6_1(summary: pd.DataFrame, acc2: str = "non0") -> pd.DataFrame:
    """Thesis table 6.1 (CMU-MOSEI results): the cited literature rows, then for each model the
    thesis reports and this project reruns, the thesis' row followed by ours (mean and std over
    seeds, test split). The ``Source`` column says which row is which."""
    return _thesis_table("6.1", summary, acc2)


def table_6_2(summary: pd.DataFrame, acc2: str = "non0") -> pd.DataFrame:
    """Thesis table 6.2 (adapters vs fine-tuning, missing modalities), thesis rows beside ours."""
    return _thesis_table("6.2", summary, acc2)


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``mean ± std`` strings (3 decimals for MAE/Corr, 1 for percentages)."""
    out = table[["Model", "Source", "Data", "PLM / text features"]].copy()
    out["n seeds"] = table["n seeds"].map(lambda n: "" if pd.isna(n) else str(int(n)))
    for head, _, _, percent in _TABLE_METRICS:
        digits = 1 if percent else 3
        out[head] = [
            _pm(mean, std, digits) for mean, std in zip(table[head], table[f"{head} std"])
        ]
    out["Trainable params (M)"] = table["Trainable params (M)"].map(
        lambda v: "–" if pd.isna(v) else f"{v:.3g}"
    )
    out["Acc-2/F1 convention"] = table["Acc-2/F1 convention"]
    out["Reference"] = table["Reference"]
    return out


def _pm(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def acc7_vs_params(summary: pd.DataFrame) -> pd.DataFrame:
    """The points of figure 6.2: Acc-7 (%) against trainable parameters (millions).

    ``source`` is ``"this book"``, ``"thesis"`` (table 6.1's rows for the models rerun here) or
    ``"cited"`` (its literature rows); a model without a parameter count (ICCN) has NaN.
    """
    rows = []
    for _, ref in cited_rows("6.1").iterrows():
        rows.append({
            "model": f"{ref['model']} ({ref['text_features']})", "source": "cited",
            "acc7_pct": ref["acc7"], "acc7_pct_std": np.nan,
            "trainable_params_m": ref["trainable_params_m"], "data": ref["dataset"],
            "plm": _TEXT_FEATURES.get(ref["text_features"], ref["text_features"]),
            "n_seeds": np.nan,
        })  # fmt: skip
    for _, ref in thesis_rows("6.1").iterrows():
        rows.append({
            "model": thesis_display_name(ref["model"], ref["text_adaptation"]), "source": "thesis",
            "acc7_pct": ref["acc7"], "acc7_pct_std": np.nan,
            "trainable_params_m": ref["trainable_params_m"], "data": ref["dataset"],
            "plm": THESIS_PLM, "n_seeds": np.nan,
        })  # fmt: skip
    for _, s in summary.iterrows():
        rows.append({
            "model": s["row_name"], "source": "this book",
            "acc7_pct": 100 * s["test_acc7_mean"], "acc7_pct_std": 100 * s["test_acc7_std"],
            "trainable_params_m": s["trainable_params_m"], "data": s["data"], "plm": s["plm"],
            "n_seeds": s["n_seeds"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def write_report(
    runs_dir: str | os.PathLike, out_dir: str | os.PathLike, acc2: str = "non0"
) -> dict[str, Path]:
    """Collect ``runs_dir`` and write runs.csv, summary.csv, table_6_1.csv, table_6_2.csv and
    figure_6_2_points.csv into ``out_dir`` (atomically). Returns the written paths by name."""
    frame = collect_runs(runs_dir)
    summary = summarize(frame)
    tables = {
        "runs": frame,
        "summary": summary,
        "table_6_1": table_6_1(summary, acc2),
        "table_6_2": table_6_2(summary, acc2),
        "figure_6_2_points": acc7_vs_params(summary),
    }
    out_dir = Path(out_dir)
    return {name: _write_csv(out_dir / f"{name}.csv", df) for name, df in tables.items()}


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return runs.atomic_write_text(path, frame.to_csv(index=False))
