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
- ``add_statistics(summary, predictions)``: 95 % bootstrap intervals per cell and AMB's paired
  test against every other row of each table, Holm-adjusted per table (``ambcore.stats``);
  ``compact_table`` / ``table_caption``: the tables as the book shows them (provenance once, in
  the caption); ``table_verdicts`` / ``verdicts_from_table`` / ``ablation_verdicts``: the
  sentences the chapters print, computed from the tests.
- ``learns`` / ``non_learners``: a cell whose best validation MAE is not below the mean-label
  predictor's (``NON_LEARNER_MARGIN``) is marked † in every table and named in the text.

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

from ambcore import runs, stats
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
    "compact_table",
    "table_caption",
    "learns",
    "non_learners",
    "add_statistics",
    "table_verdicts",
    "ablation_verdicts",
    "ablation_family",
    "ABLATION_FAMILY",
    "PLANTED",
    "CONTROLS",
    "pair_sentence",
    "control_outcomes",
    "verdicts_from_table",
    "headline_mae",
    "non_learner_sentence",
    "budget_sentence",
    "acc7_vs_params",
    "write_report",
]

# What identifies a cell; constant over its seeds.
IDENTITY_COLUMNS = (
    "cell",
    "row_name",
    "model",
    "variant",
    "text_adaptation",
    "finetune_layers",
    "preset",
    "data",
    "is_synthetic",
    "plm",
)
METRIC_COLUMNS = tuple(f"{split}_{m}" for split in ("valid", "test") for m in METRIC_NAMES)
RUN_COLUMNS = (
    "run",
    *IDENTITY_COLUMNS,
    "seed",
    "n_trainable_params",
    "trainable_params_m",
    "best_epoch",
    "epochs_run",
    *METRIC_COLUMNS,
    "valid_baseline_mae",
)
# A cell "learns" when its best validation MAE (mean over seeds) is at least this fraction below
# the MAE of the mean-label predictor (mean of the training labels, evaluated on valid). The
# margin is there because for MAE a constant near the median beats the mean by a little: a
# model that only learnt such a constant has not learnt anything from its inputs.
NON_LEARNER_MARGIN = 0.01

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

    Folders without DONE (unfinished or killed runs) and tuning trials (``valid_only``: trained
    and selected without the test split) are left out. The ``cell`` is the sweep
    cell (``sweep.json``) or, for runs trained outside a sweep, the folder's path.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise AmbError(f"runs folder {runs_dir} does not exist")
    rows = []
    for metrics_path in sorted(runs_dir.rglob("metrics.json")):
        run_dir = metrics_path.parent
        if not runs.is_done(run_dir) or runs.read_metrics(run_dir).get("valid_only"):
            continue  # unfinished, or a tuning trial (ambcore.tune: never evaluated on test)
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
        "row_name": row_name(cfg.model, cfg.text_adaptation, cfg.variant)
        + (", audio-visual shuffled (control)" if cfg.av_shuffle else ""),
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
    baseline = (metrics.get("valid_baseline_train_mean") or {}).get("mae")
    row["valid_baseline_mae"] = np.nan if baseline is None else float(baseline)  # older runs: NaN
    return row


def summarize(runs_frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1; NaN for one seed) over seeds, one row per cell.

    Columns: the identity columns, ``n_seeds``, ``seeds``, ``trainable_params_m``,
    ``<metric>_mean`` / ``<metric>_std`` for every valid/test metric, the mean-label
    predictor's validation MAE ``valid_baseline_mae_mean`` and ``learns`` (``learns``: True,
    False, or None where the runs did not record the predictor).
    """
    columns = [*IDENTITY_COLUMNS, "n_seeds", "seeds", "trainable_params_m"]
    columns += [f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "std")]
    columns += ["valid_baseline_mae_mean", "learns"]
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
        row["valid_baseline_mae_mean"] = group["valid_baseline_mae"].astype(float).mean()
        row["learns"] = learns(row["valid_mae_mean"], row["valid_baseline_mae_mean"])
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def learns(
    valid_mae: float, baseline_mae: float, margin: float = NON_LEARNER_MARGIN
) -> bool | None:
    """Whether a best validation MAE beats the mean-label predictor's by ``margin`` (relative);
    None when either is unknown (NaN)."""
    if pd.isna(valid_mae) or pd.isna(baseline_mae):
        return None
    return bool(valid_mae < (1.0 - margin) * baseline_mae)


def non_learners(summary: pd.DataFrame) -> list[str]:
    """The row names of the cells that do not beat the mean-label predictor on valid."""
    return [str(s["row_name"]) for _, s in summary.iterrows() if _is_false(s.get("learns"))]


def _is_false(value) -> bool:
    """False, but not None/NaN (an unknown ``learns``)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and not value


# ---- intervals and paired tests (ambcore.stats) ----------------------------------------------

REFERENCE_ROW = "AMB"  # every other row of a table is tested against this one
_TABLE_KEYS = {"6.1": "6_1", "6.2": "6_2"}


def add_statistics(
    summary: pd.DataFrame,
    predictions: dict,
    n_boot: int = 1000,
    seed: int = 0,
    family: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``summary`` with 95 % intervals per cell and, per thesis table, AMB against each other
    row of ours (``ambcore.stats``), taken from the chapter's ``family`` (``ablation_family``,
    computed here when not given) so that a pair shows the same numbers in every table.

    ``predictions``: cell -> {seed: test predictions} (``stats.available_predictions``); a
    cell without them gets NaN. New columns: ``test_<m>_lo`` / ``test_<m>_hi`` for
    ``stats.CI_METRICS``, and for table ``6_1``/``6_2``: ``mae_diff_<t>`` (AMB minus the row),
    ``mae_diff_lo_<t>``, ``mae_diff_hi_<t>``, ``p_<t>``, ``p_holm_<t>`` (Holm across the
    family).
    """
    out = summary.copy()
    have = {c: predictions[c] for c in out["cell"] if c in predictions}
    intervals = stats.cell_intervals(have, n_boot=n_boot, seed=seed).set_index("cell")
    for metric in stats.CI_METRICS:
        for end in ("lo", "hi"):
            out[f"test_{metric}_{end}"] = out["cell"].map(intervals[f"{metric}_{end}"])
    if family is None:
        family = ablation_family(predictions, n_boot=n_boot, seed=seed)
    reference = family[(family["a"] == REFERENCE_CELL) & (family["metric"] == "mae")].set_index("b")
    for table, key in _TABLE_KEYS.items():
        in_table = out["row_name"].isin(_table_row_names(table))
        for column, source in (
            ("mae_diff", "diff"),
            ("mae_diff_lo", "lo"),
            ("mae_diff_hi", "hi"),
            ("p", "p"),
            ("p_holm", "p_holm"),
        ):
            out[f"{column}_{key}"] = out["cell"].map(reference[source]).where(in_table)
    return out


def _table_row_names(table: str) -> set[str]:
    rows = thesis_rows(table)
    return {thesis_display_name(m, a) for m, a in zip(rows["model"], rows["text_adaptation"])}


def table_verdicts(summary: pd.DataFrame, table: str, alpha: float = 0.05) -> list[str]:
    """One computed sentence per row of ours in thesis table ``table``: AMB against it on MAE
    (``stats.verdict``), from the columns ``add_statistics`` adds."""
    key = _TABLE_KEYS[table]
    if f"p_holm_{key}" not in summary:
        return []
    sentences = []
    for _, s in summary.dropna(subset=[f"mae_diff_{key}"]).iterrows():
        row = {
            k: s[f"{c}_{key}"]
            for k, c in (
                ("diff", "mae_diff"),
                ("lo", "mae_diff_lo"),
                ("hi", "mae_diff_hi"),
                ("p_holm", "p_holm"),
            )
        }
        row["note"] = "a cell has a single run: its seed variance cannot be estimated"
        sentences.append(stats.verdict(row, REFERENCE_ROW, str(s["row_name"]), alpha=alpha))
    return sentences


# ---- the chapter's families of comparisons (ambcore.stats.family) ----------------------------

REFERENCE_CELL = "amb"
# Family 1 of the Ablation chapter: every comparison of tables 6.1 and 6.2 and of the ablation's
# reading (thesis 6.3.2-6.3.3), each on every metric of stats.METRICS, Holm-adjusted together.
# (key, cell A, cell B): the difference is A minus B.
ABLATION_FAMILY = (
    ("misa", "amb", "misa"),  # table 6.1 and 6.2
    ("mag-bert", "amb", "mag-bert"),  # table 6.1
    ("ft", "amb", "amb-ft"),  # table 6.2: adapters against fine-tuning, AMB
    ("misa-adapters", "amb", "misa-adapters"),  # table 6.2
    ("tav", "amb", "amb-text-only"),  # table 6.2: audio-visual information
    ("notext", "amb", "amb-no-text"),  # table 6.2: text
    ("misa-ft", "misa-adapters", "misa"),  # adapters against fine-tuning, MISA
)
# What the synthetic data plants (ambcore.data.synthetic): a verdict on any other comparison
# says that it is no evidence about CMU-MOSEI.
PLANTED = {"tav": "the audio-visual cues are planted", "notext": "the text signal is planted"}
# The controls of the test, on real runs, each tested alone at alpha (not part of a family):
# (key, cell A, cell B, expected: True = must be called different, False = must not).
CONTROLS = (
    ("negative", "amb-shuffled-av", "amb-text-only", False),
    ("positive", "amb-no-text", "amb", True),
)


def ablation_family(
    predictions: dict, runs_frame: pd.DataFrame | None = None, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """``stats.family`` of ``ABLATION_FAMILY``: the one place the chapter's comparisons are
    computed."""
    return stats.family(
        predictions, ABLATION_FAMILY, runs_frame=runs_frame, n_boot=n_boot, seed=seed
    )


def pair_sentence(
    family: pd.DataFrame, key: str, names: dict, synthetic: bool, alpha: float = 0.05
) -> str:
    """The chapter's sentence for one pair of a family: the MAE verdict, every other metric's
    difference and adjusted p, the per-seed numbers, the share of seed pairs won, the
    validation difference; on synthetic data, whether the comparison was planted."""
    rows = family[family["key"] == key]
    if rows.empty:
        raise AmbError(f"pair_sentence: no comparison {key!r} in the family")
    first = rows.iloc[0]
    a, b = names.get(first["a"], first["a"]), names.get(first["b"], first["b"])
    by_metric = {r["metric"]: r for _, r in rows.iterrows()}
    text = stats.verdict(by_metric["mae"], a, b, alpha=alpha)
    others = []
    for metric, r in by_metric.items():
        if metric == "mae" or pd.isna(r["p_holm"]):
            continue
        word = (
            "not distinguishable"
            if r["p_holm"] >= alpha
            else ("higher" if r["diff"] > 0 else "lower")
        )
        others.append(
            f"{stats.METRIC_LABELS[metric]} {word} ({r['diff']:+.3f} [{r['lo']:+.3f}, "
            f"{r['hi']:+.3f}], p = {stats._p(r['p_holm'])})"
        )
    if others:
        text += "; " + ", ".join(others)
    details = stats.verdict_details(by_metric["mae"], a, b)
    if details:
        text += f" ({details})"
    if synthetic:
        text += (
            f" [planted: {PLANTED[key]}]"
            if key in PLANTED
            else " [not planted: no evidence about CMU-MOSEI]"
        )
    return text


def control_outcomes(
    predictions: dict, names: dict, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """The controls (``CONTROLS``) on MAE, each alone at ``alpha``: columns control, a, b,
    expected, diff, lo, hi, p, called different, outcome ("pass", "FAIL" or "not run")."""
    rows = []
    for key, a, b, expected in CONTROLS:
        row = {
            "control": key,
            "a": names.get(a, a),
            "b": names.get(b, b),
            "expected": "different" if expected else "not distinguishable",
        }
        if a not in predictions or b not in predictions:
            rows.append({**row, "outcome": "not run"})
            continue
        r = stats.paired_test(predictions[a], predictions[b], n_boot=n_boot, seed=seed)
        called = bool(r.p_value < alpha) if np.isfinite(r.p_value) else None
        outcome = (
            "not testable (single run)"
            if called is None
            else ("pass" if called == expected else "FAIL")
        )
        rows.append(
            {
                **row,
                "diff": r.diff,
                "lo": r.lo,
                "hi": r.hi,
                "p": r.p_value,
                "called different": called,
                "outcome": outcome,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "control",
            "a",
            "b",
            "expected",
            "diff",
            "lo",
            "hi",
            "p",
            "called different",
            "outcome",
        ],
    )


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
# The paired test of AMB against the row (MAE of AMB minus MAE of the row; see ambcore.stats).
TEST_COLUMNS = ("ΔMAE vs AMB", "ΔMAE lo", "ΔMAE hi", "p vs AMB", "p vs AMB (Holm)")
TABLE_COLUMNS = (
    "Model",
    "Source",
    "Data",
    "PLM / text features",
    "n seeds",
    *(h for head, *_ in _TABLE_METRICS for h in (head, f"{head} std", f"{head} lo", f"{head} hi")),
    *TEST_COLUMNS,
    "Learns",
    "Trainable params (M)",
    "Acc-2/F1 convention",
    "Reference",
)
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
        row[f"{head} lo"] = row[f"{head} hi"] = np.nan
    row.update({column: np.nan for column in TEST_COLUMNS})
    row["Learns"] = None
    return row


def _our_row(s: pd.Series, acc2: str, table: str) -> dict:
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
        for end in ("lo", "hi"):
            row[f"{head} {end}"] = s.get(f"{metric}_{end}", np.nan) * scale
    key = _TABLE_KEYS[table]
    for column, name in zip(
        TEST_COLUMNS, ("mae_diff", "mae_diff_lo", "mae_diff_hi", "p", "p_holm")
    ):
        row[column] = s.get(f"{name}_{key}", np.nan)
    row["Learns"] = s.get("learns")
    return row


def _thesis_table(table: str, summary: pd.DataFrame, acc2: str) -> pd.DataFrame:
    if acc2 not in ("non0", "has0"):
        raise ValueError(f"acc2 must be 'non0' or 'has0', got {acc2!r}")
    rows = [
        _reference_row(
            ref,
            f"{ref['model']} ({ref['text_features']})",
            f"cited in thesis table {table} from {ref['numbers_from']}",
            _TEXT_FEATURES.get(ref["text_features"], ref["text_features"]),
        )
        for _, ref in cited_rows(table).iterrows()
    ]
    for _, ref in thesis_rows(table).iterrows():
        name = thesis_display_name(ref["model"], ref["text_adaptation"])
        text = f"{THESIS_PLM} + {_ADAPTATION.get(ref['text_adaptation'], ref['text_adaptation'])}"
        rows.append(_reference_row(ref, name, f"thesis table {table} ({ref['origin']})", text))
        ours = summary[summary["row_name"] == name]
        rows.extend(_our_row(s, acc2, table) for _, s in ours.iterrows())
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
        out[head] = [_pm(mean, std, digits) for mean, std in zip(table[head], table[f"{head} std"])]
    out["Trainable params (M)"] = table["Trainable params (M)"].map(
        lambda v: "–" if pd.isna(v) else f"{v:.3g}"
    )
    out["Acc-2/F1 convention"] = table["Acc-2/F1 convention"]
    out["Reference"] = table["Reference"]
    return out


NON_LEARNER_MARK = "†"
COMPACT_COLUMNS = (
    "Model",
    "Source",
    "Seeds",
    "MAE",
    "Corr",
    "Acc-7 (%)",
    "Acc-2 (%)",
    "F1 (%)",
    "Params (M)",
    "ΔMAE vs AMB [95 % CI]",
    "p (Holm)",
)


def compact_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the book shows it (fits a 1300 px page): per model the thesis' row then
    ours; ``mean ± std [95 % CI]`` per metric; the paired test against AMB; a row whose cell
    does not beat the mean-label predictor is marked ``†``. Data, language model and Acc-2
    convention are not repeated per row: ``table_caption`` says them once.

    Reads a table of ``table_6_1``/``table_6_2`` or its CSV (older CSVs without the interval
    columns are shown without intervals)."""
    rows = []
    for _, r in table.iterrows():
        ours = str(r["Source"]).startswith("this book")
        mark = f" {NON_LEARNER_MARK}" if ours and _is_false(_as_flag(r.get("Learns"))) else ""
        row = {
            "Model": f"{r['Model']}{mark}",
            "Source": _short_source(str(r["Source"])),
            "Seeds": "" if pd.isna(r["n seeds"]) else str(int(r["n seeds"])),
        }
        for head, _, _, percent in _TABLE_METRICS:
            digits = 1 if percent else 3
            text = _pm(r[head], r[f"{head} std"], digits)
            lo, hi = r.get(f"{head} lo", np.nan), r.get(f"{head} hi", np.nan)
            row[head] = text if pd.isna(lo) else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"
        params = r["Trainable params (M)"]
        row["Params (M)"] = "–" if pd.isna(params) else f"{params:.3g}"
        diff = r.get("ΔMAE vs AMB", np.nan)
        row["ΔMAE vs AMB [95 % CI]"] = (
            "" if pd.isna(diff) else f"{diff:+.3f} [{r['ΔMAE lo']:+.3f}, {r['ΔMAE hi']:+.3f}]"
        )
        p = r.get("p vs AMB (Holm)", np.nan)
        row["p (Holm)"] = "" if pd.isna(p) else (f"{p:.2g}" if p >= 0.001 else f"{p:.1e}")
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPACT_COLUMNS))


def thesis_table_page(
    summary: pd.DataFrame, table: str
) -> tuple[pd.DataFrame, str, pd.DataFrame, str, str]:
    """What the Ablation chapter shows for thesis table ``table`` ("6.1" or "6.2"): our rows
    and the thesis' (and cited) rows as two tables, each titled with its own data, and the
    verdicts of AMB against each of our rows as one sentence ("no test" without any).
    Returns (ours, its caption, thesis, its caption, verdicts)."""
    builders = {"6.1": table_6_1, "6.2": table_6_2}
    if table not in builders:
        raise ValueError(f"no thesis table {table!r}; tables: {', '.join(builders)}")
    full = builders[table](summary)
    is_ours = full["Source"].astype(str).str.startswith("this book")
    ours, theirs = full[is_ours].reset_index(drop=True), full[~is_ours].reset_index(drop=True)
    ours_caption = table_caption(ours, f"Our runs of the rows of thesis table {table}")
    theirs_caption = (
        f"Thesis table {table} as published: CMU-MOSEI, {THESIS_PLM} (cited rows: "
        "their own text features); numbers from the thesis, not rerun here."
    )
    shown_theirs = compact_table(theirs).drop(
        columns=["Seeds", "ΔMAE vs AMB [95 % CI]", "p (Holm)"]
    )
    verdicts = "; ".join(table_verdicts(summary, table)) or "no test"
    return compact_table(ours), ours_caption, shown_theirs, theirs_caption, verdicts


def table_caption(table: pd.DataFrame, title: str) -> str:
    """``title`` plus, once, where the numbers come from: our rows' data and language model, the
    thesis' and cited rows' data, the Acc-2/F1 convention, the interval scheme and the mark."""
    ours = table[table["Source"].astype(str).str.startswith("this book")]
    plms = ours["PLM / text features"].astype(str).str.split(" + ", regex=False).str[0]
    provenance = "; ".join(
        f"{data}, PLM {', '.join(sorted(set(plms[ours['Data'].astype(str) == data])))}"
        for data in sorted(set(ours["Data"].astype(str)))
    )
    convention = "; ".join(sorted(set(ours["Acc-2/F1 convention"].astype(str)))) or "–"
    parts = [
        title,
        f"ours: {provenance or 'no runs yet'}",
        f"our Acc-2/F1: {convention}",
        "ours: mean ± std over seeds [95 % interval over seeds and test videos]; ΔMAE = AMB's MAE "
        "minus the row's (runs of each cell independent, test videos resampled as clusters; its "
        "interval is not adjusted), p: Welch-Satterthwaite t, Holm-adjusted across the chapter's "
        "family (ambcore.stats)",
        f"{NON_LEARNER_MARK}: best validation MAE not below the mean-label predictor's",
    ]
    if not ours.empty and set(ours["Source"].astype(str)) != set(table["Source"].astype(str)):
        parts.insert(
            2, f"thesis and cited rows: CMU-MOSEI, {THESIS_PLM} (cited: their own text features)"
        )
    return ". ".join(parts) + "."


def _short_source(source: str) -> str:
    if source.startswith("this book"):
        return "ours"
    if source.startswith("thesis"):
        return "thesis"
    return "cited"


def _as_flag(value):
    """``Learns`` as written to a CSV and read back ("True"/"False"/NaN) or as built."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return value


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
        rows.append(
            {
                "model": f"{ref['model']} ({ref['text_features']})",
                "source": "cited",
                "acc7_pct": ref["acc7"],
                "acc7_pct_std": np.nan,
                "trainable_params_m": ref["trainable_params_m"],
                "data": ref["dataset"],
                "plm": _TEXT_FEATURES.get(ref["text_features"], ref["text_features"]),
                "n_seeds": np.nan,
            }
        )
    for _, ref in thesis_rows("6.1").iterrows():
        rows.append(
            {
                "model": thesis_display_name(ref["model"], ref["text_adaptation"]),
                "source": "thesis",
                "acc7_pct": ref["acc7"],
                "acc7_pct_std": np.nan,
                "trainable_params_m": ref["trainable_params_m"],
                "data": ref["dataset"],
                "plm": THESIS_PLM,
                "n_seeds": np.nan,
            }
        )
    for _, s in summary.iterrows():
        rows.append(
            {
                "model": s["row_name"],
                "source": "this book",
                "acc7_pct": 100 * s["test_acc7_mean"],
                "acc7_pct_std": 100 * s["test_acc7_std"],
                "trainable_params_m": s["trainable_params_m"],
                "data": s["data"],
                "plm": s["plm"],
                "n_seeds": s["n_seeds"],
            }
        )
    return pd.DataFrame(rows)


def write_report(
    runs_dir: str | os.PathLike, out_dir: str | os.PathLike, acc2: str = "non0"
) -> dict[str, Path]:
    """Collect ``runs_dir`` and write runs.csv, summary.csv, table_6_1.csv, table_6_2.csv and
    figure_6_2_points.csv into ``out_dir`` (atomically). Returns the written paths by name."""
    frame = collect_runs(runs_dir)
    summary = add_statistics(summarize(frame), stats.available_predictions(frame, runs_dir))
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


# ---- the computed reading of the ablation chapter (thesis 6.3.3) -----------------------------


def ablation_verdicts(
    summary: pd.DataFrame, family: pd.DataFrame, synthetic: bool, alpha: float = 0.05
) -> dict[str, str]:
    """``{key: sentence}`` for every pair of the chapter's family (``pair_sentence``); a pair
    whose cells did not run says so instead of judging."""
    names = dict(zip(summary["cell"], summary["row_name"]))
    return {
        key: pair_sentence(family, key, names, synthetic, alpha)
        for key in dict.fromkeys(family["key"])
    }


def non_learner_sentence(summary: pd.DataFrame) -> str:
    """Names the cells that do not beat the mean-label predictor on valid (or says none)."""
    names = non_learners(summary)
    unknown = [str(n) for n, flag in zip(summary["row_name"], summary["learns"]) if pd.isna(flag)]
    if names:
        text = (
            f"{', '.join(names)} did not beat the mean-label predictor on validation "
            f"(best validation MAE not {100 * NON_LEARNER_MARGIN:.0f} % below it): "
            "these rows (marked † in the tables) have not learnt from their inputs"
        )
    else:
        text = "every cell beats the mean-label predictor on validation"
    if unknown:
        text += f"; not recorded for {', '.join(unknown)} (runs older than the check)"
    return text


def budget_sentence(runs_frame: pd.DataFrame, max_epochs: int) -> str:
    """Which cells' runs were still improving when the epoch budget ran out (best epoch = last
    epoch of a run that used all ``max_epochs``)."""
    still = (runs_frame["best_epoch"] == runs_frame["epochs_run"]) & (
        runs_frame["epochs_run"] >= max_epochs
    )
    counts = (
        runs_frame.assign(still=still)
        .groupby("row_name", sort=False)["still"]
        .agg(["sum", "count"])
    )
    counts = counts[counts["sum"] > 0]
    if counts.empty:
        return "none, every run had passed its best epoch"
    listed = ", ".join(
        f"{name} {int(r['sum'])} of {int(r['count'])} runs" for name, r in counts.iterrows()
    )
    return (
        listed + "; read these cells as lower bounds of what their recipes reach with more epochs"
    )


def verdicts_from_table(table: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """``table_verdicts`` from a written table (``table_6_1.csv``/``table_6_2.csv``): one
    sentence per row of ours that was tested against AMB, and one naming the rows marked †."""
    ours = table[table["Source"].astype(str).str.startswith("this book")]
    sentences = []
    if "p vs AMB" in ours:
        for _, r in ours.dropna(subset=["p vs AMB"]).iterrows():
            row = {
                "diff": r["ΔMAE vs AMB"],
                "lo": r["ΔMAE lo"],
                "hi": r["ΔMAE hi"],
                "p_holm": r["p vs AMB (Holm)"],
            }
            sentences.append(stats.verdict(row, REFERENCE_ROW, str(r["Model"]), alpha=alpha))
    if "Learns" in ours:
        marked = [str(m) for m, f in zip(ours["Model"], ours["Learns"]) if _is_false(_as_flag(f))]
        if marked:
            sentences.append(
                f"{', '.join(marked)} did not beat the mean-label predictor on "
                f"validation ({NON_LEARNER_MARK})"
            )
    return sentences


def headline_mae(table: pd.DataFrame, model: str = REFERENCE_ROW) -> str:
    """Our test MAE of ``model`` (mean ± std over seeds, 95 % interval where the table has it)
    against the thesis' row of the same model, from a written table."""
    rows = table[table["Model"] == model]
    mine = rows["Source"].astype(str).str.startswith("this book")
    if not mine.any() or mine.all():
        return f"no {model} row of ours beside the thesis' in the table"
    o, t = rows[mine].iloc[0], rows[~mine].iloc[0]
    text = f"{o['MAE']:.3f}"
    if pd.notna(o["MAE std"]):
        text += f" ± {o['MAE std']:.3f} over {int(o['n seeds'])} seeds"
    else:
        text += " (one seed)"
    if pd.notna(o.get("MAE lo", np.nan)):
        text += f", 95 % interval [{o['MAE lo']:.3f}, {o['MAE hi']:.3f}]"
    text = f"{text} on {o['Data']} with {o['PLM / text features']}"
    if "SYNTHETIC" in str(o["Data"]).upper():
        return text  # no CMU-MOSEI number beside a synthetic one
    return f"{text} (thesis: {t['MAE']:.3f} on CMU-MOSEI)"
