# %% [markdown]
# # Results beside the thesis
#
# This chapter puts the runs of the {doc}`04_ablation` chapter next to the thesis' tables 6.1
# and 6.2 (CMU-MOSEI, bert-base-uncased) {cite}`chlapanis2022amb`. It reads the results files
# that the ablation chapter writes, `results/table_6_1.csv` and `results/table_6_2.csv` (one
# row per model: `model`, metrics as `mae_mean`/`mae_std` and so on over seeds, and the `data`
# and `plm` that produced them), and the thesis' numbers from `ambcore/reference/thesis_tables.csv`.
# Nothing on this page is typed by hand.
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
import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore.book import (
    banner,
    compare_with_thesis,
    config_from_parameters,
    missing_note,
    numbered_table,
    results_csvs,
)
from ambcore.reference import thesis_table

cfg = config_from_parameters(preset, data, plm)
display(banner(cfg))
found = results_csvs(results_dir or None)
glue("n_results_files", str(len(found)), display=False)


def provenance(frame: pd.DataFrame) -> str:
    """Which data and language model produced a results file (its own columns say)."""
    parts = []
    for column in ("data", "plm", "preset"):
        if column in frame.columns:
            parts.append(f"{column}: {', '.join(map(str, sorted(frame[column].astype(str).unique())))}")
    return "; ".join(parts) or "the file does not say which data and language model produced it"


# %% [markdown]
# The results folder holds {glue:text}`n_results_files` CSV file(s).
#
# ## Table 6.1: AMB against the state of the art
#
# {numref}`tbl-thesis-6-1` is the thesis' table as printed; the rows marked *cited* were copied
# by the thesis from other papers and are not rerun here. Our status: {glue:text}`status_6_1`.

# %% tags=["hide-input"]
cols = ["model", "text_encoder", "mae", "corr", "acc7", "acc2", "f1", "trainable_params_m"]
digits = {"acc7": 1, "acc2": 1, "f1": 1, "trainable_params_m": 1}
display(numbered_table(
    thesis_table("6.1")[cols],
    "Thesis table 6.1 as printed (CMU-MOSEI, bert-base-uncased; trainable parameters in millions)",
    name="tbl-thesis-6-1",
    digits=digits,
))
if "table_6_1" in found:
    ours = pd.read_csv(found["table_6_1"])
    glue("status_6_1", f"{len(ours)} model(s) from results/table_6_1.csv ({provenance(ours)})", display=False)
    display(banner(cfg))
    display(numbered_table(
        compare_with_thesis(ours, "6.1"),
        f"Table 6.1 beside our runs ({provenance(ours)}); mean ± std over seeds",
        name="tbl-ours-6-1",
    ))
else:
    glue("status_6_1", "not run yet (results/table_6_1.csv is missing)", display=False)
    display(missing_note(
        "results/table_6_1.csv",
        "The Ablation chapter (notebooks/04_ablation.py) writes it; until then only the thesis' "
        "numbers are shown.",
    ))

# %% [markdown]
# ## Table 6.2: adapters against fine-tuning, and missing modalities
#
# {numref}`tbl-thesis-6-2` is the thesis' ablation. Our status: {glue:text}`status_6_2`.

# %% tags=["hide-input"]
display(numbered_table(
    thesis_table("6.2")[cols],
    "Thesis table 6.2 as printed (CMU-MOSEI, bert-base-uncased; trainable parameters in millions)",
    name="tbl-thesis-6-2",
    digits=digits,
))
if "table_6_2" in found:
    ours = pd.read_csv(found["table_6_2"])
    glue("status_6_2", f"{len(ours)} model(s) from results/table_6_2.csv ({provenance(ours)})", display=False)
    display(banner(cfg))
    display(numbered_table(
        compare_with_thesis(ours, "6.2"),
        f"Table 6.2 beside our runs ({provenance(ours)}); mean ± std over seeds",
        name="tbl-ours-6-2",
    ))
else:
    glue("status_6_2", "not run yet (results/table_6_2.csv is missing)", display=False)
    display(missing_note(
        "results/table_6_2.csv",
        "The Ablation chapter (notebooks/04_ablation.py) writes it; until then only the thesis' "
        "numbers are shown.",
    ))

# %% [markdown]
# ## Other results files
#
# Every other CSV file under `results/` (robustness curves, benchmarks), as written.

# %% tags=["hide-input"]
others = {k: v for k, v in found.items() if k not in ("table_6_1", "table_6_2")}
if not others:
    display(missing_note("other results files", "No other CSV files under results/ yet."))
for stem, path in others.items():
    frame = pd.read_csv(path)
    display(numbered_table(frame.head(40), f"results/{path.name} ({provenance(frame)}; first 40 rows)"))
