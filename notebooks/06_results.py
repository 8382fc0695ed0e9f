# %% [markdown]
# # Results beside the thesis
#
# This chapter gathers the results of the {doc}`04_ablation` chapter and the thesis' tables 6.1
# and 6.2 (CMU-MOSEI, bert-base-uncased) {cite}`chlapanis2022amb`. It reads the tables that the
# ablation chapter writes with `ambcore.report.write_report` (`results/table_6_1.csv`,
# `results/table_6_2.csv`: our rows, mean ± std over seeds, each naming its data and language
# model, and the thesis' rows) and the thesis' own numbers from `results/thesis_tables.csv` and
# `results/literature.csv`. Our rows and the thesis' are shown as separate tables, each titled
# with its data. Nothing on this page is typed by hand.
#
# On the embedded preset our runs use a synthetic dataset and a smaller language model: they
# check that the pipeline recovers what the synthetic data plant (see {doc}`04_ablation`), and
# say nothing about how the models compare on CMU-MOSEI. With the paper preset on CMU-MOSEI
# the two tables hold the same measurement.

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

from ambcore import report
from ambcore.pages import (banner, config_from_parameters, file_preview, missing_note, numbered_table,
                           results_csvs, results_table)

cfg = config_from_parameters(preset, data, plm)
display(banner(cfg))
found = results_csvs(results_dir or None)
glue("n_results_files", str(len(found)), display=False)
glue("amb_mae", report.headline_mae(pd.read_csv(found["table_6_1"])) if "table_6_1" in found
     else "not available yet", display=False)

# %% [markdown]
# The results folder holds {glue:text}`n_results_files` CSV file(s). AMB's test MAE in this
# build: {glue:text}`amb_mae`.
#
# ## Table 6.1: AMB against the state of the art
#
# The first table holds our rows, the second the thesis' table as published (its *cited* rows
# were copied by the thesis from other papers and are not rerun here). Our rows carry 95 %
# intervals over seeds and test videos and AMB's comparison with each row (ΔMAE = AMB's MAE
# minus the row's, Holm-adjusted p; the scheme is stated in {doc}`04_ablation`); a row
# marked † did not beat the mean-label predictor on validation. Every comparison sentence here
# is computed from those tests. Status: {glue:text}`status_6_1`.

# %% tags=["hide-input"]
shown, status = results_table("6.1", found)
display(*shown)
glue("status_6_1", status, display=False)

# %% [markdown]
# ## Table 6.2: adapters against fine-tuning, and missing modalities
#
# Status: {glue:text}`status_6_2`.

# %% tags=["hide-input"]
shown, status = results_table("6.2", found)
display(*shown)
glue("status_6_2", status, display=False)

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
    shown, left_out = file_preview(pd.read_csv(path))
    display(numbered_table(shown, f"results/{path.name}" + (f" ({left_out})" if left_out else "")))
