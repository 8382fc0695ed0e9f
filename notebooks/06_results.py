# %% [markdown]
# # Results beside the thesis
#
# This chapter puts the runs of the {doc}`04_ablation` chapter beside the thesis' tables 6.1
# and 6.2 (CMU-MOSEI, bert-base-uncased) {cite}`chlapanis2022amb`. It reads the tables that the
# ablation chapter writes with `ambcore.report.write_report` (`results/table_6_1.csv`,
# `results/table_6_2.csv`: for every model the thesis' row followed by ours, mean ± std over
# seeds, each row naming its data and language model) and the thesis' own numbers from
# `results/thesis_tables.csv` and `results/literature.csv`. Nothing on this page is typed by
# hand.
#
# Our runs on the embedded preset use a synthetic dataset and a smaller language model: compare
# their *pattern* (which variant wins, by how much) with the thesis, not their values.

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")
data = ""
plm = ""
seed = 0
results_dir = ""  # empty: the project's results/ folder

# %% tags=["hide-input"]
import tempfile

import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore import report
from ambcore.book import banner, config_from_parameters, missing_note, numbered_table, results_csvs

cfg = config_from_parameters(preset, data, plm)
display(banner(cfg))
found = results_csvs(results_dir or None)
# The thesis' rows alone: the report's tables built from no runs of ours.
no_runs = report.summarize(report.collect_runs(tempfile.mkdtemp()))
SHOWN = ["Model", "Source", "Data", "PLM / text features", "n seeds", "MAE", "Corr", "Acc-7 (%)",
         "Acc-2 (%)", "F1 (%)", "Trainable params (M)", "Acc-2/F1 convention"]


def show_table(table: str, builder) -> str:
    """Display thesis table ``table`` (ours beside it when its CSV exists); return a status line."""
    stem = "table_" + table.replace(".", "_")
    if stem in found:
        frame = pd.read_csv(found[stem])
        ours = frame[frame["Source"].astype(str).str.startswith("this book")]
        data_plm = "; ".join(sorted(set(ours["Data"].astype(str) + " / " + ours["PLM / text features"].astype(str))))
        display(numbered_table(
            report.format_table(frame)[SHOWN],
            f"Thesis table {table} (CMU-MOSEI) with our runs beside each model ({data_plm or 'no runs of ours'})",
            name=f"tbl-results-{stem}",
        ))
        return f"{len(ours)} row(s) of ours from results/{stem}.csv ({data_plm or 'none'})"
    display(missing_note(
        f"results/{stem}.csv",
        "The Ablation chapter (notebooks/04_ablation.py) writes it; until then only the "
        "thesis' numbers are shown.",
    ))
    display(numbered_table(
        report.format_table(builder(no_runs))[SHOWN],
        f"Thesis table {table} as printed (CMU-MOSEI; no runs of ours yet)",
        name=f"tbl-results-{stem}",
    ))
    return f"not run yet (results/{stem}.csv is missing)"


def headline(stem: str, model: str = "AMB") -> str:
    """Our test MAE of ``model`` against the thesis' (for the prose), from the results CSV."""
    if stem not in found:
        return "not available yet"
    frame = pd.read_csv(found[stem])
    rows = frame[frame["Model"] == model]
    ours = rows[rows["Source"].astype(str).str.startswith("this book")]
    thesis = rows[~rows["Source"].astype(str).str.startswith("this book")]
    if ours.empty or thesis.empty:
        return f"no {model} row in results/{stem}.csv"
    o, t = ours.iloc[0], thesis.iloc[0]
    spread = f" ± {o['MAE std']:.3f} over {int(o['n seeds'])} seeds" if pd.notna(o["MAE std"]) else " (one seed)"
    return (f"{o['MAE']:.3f}{spread} on {o['Data']} with {o['PLM / text features']} "
            f"(thesis: {t['MAE']:.3f} on CMU-MOSEI)")


glue("n_results_files", str(len(found)), display=False)
glue("amb_mae", headline("table_6_1"), display=False)

# %% [markdown]
# The results folder holds {glue:text}`n_results_files` CSV file(s). AMB's test MAE in this
# build: {glue:text}`amb_mae`.
#
# ## Table 6.1: AMB against the state of the art
#
# The rows *cited* were copied by the thesis from other papers and are not rerun here; for the
# models rerun here, the thesis' row comes first and ours follow it. Status:
# {glue:text}`status_6_1`.

# %% tags=["hide-input"]
glue("status_6_1", show_table("6.1", report.table_6_1), display=False)

# %% [markdown]
# ## Table 6.2: adapters against fine-tuning, and missing modalities
#
# Status: {glue:text}`status_6_2`.

# %% tags=["hide-input"]
glue("status_6_2", show_table("6.2", report.table_6_2), display=False)

# %% [markdown]
# ## Other results files
#
# Every other CSV file under `results/` (per-run tables, robustness curves, the thesis' numbers),
# as written.

# %% tags=["hide-input"]
others = {k: v for k, v in found.items() if k not in ("table_6_1", "table_6_2")}
if not others:
    display(missing_note("other results files", "No other CSV files under results/ yet."))
for stem, path in others.items():
    frame = pd.read_csv(path)
    display(numbered_table(frame.head(40), f"results/{path.name} (first 40 rows)"))
