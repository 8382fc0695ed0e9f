# %% [markdown]
# # Training AMB
#
# This chapter trains Adapted Multimodal BERT as section 6.3.1 of the thesis describes it:
# the pretrained BERT stays frozen, only the adapters, the visual and acoustic encoders, the
# fusion layers and the predictor are trained, with Adam, the L1 loss on the sentiment score,
# dropout 0.2 and early stopping on the validation MAE. The best checkpoint is then read back
# from disk and evaluated on the validation and test splits.
#
# Everything the page shows is read from the run folder that `ambcore.train_and_evaluate`
# writes (`config.json`, `env.json`, `history.csv`, `metrics.json`, `test_predictions.csv`,
# `best/`). An existing finished run is reused, not retrained, so that later chapters and
# rebuilds of the book show the same run. The same training from a terminal:
#
# ```bash
# python -m ambcore train --preset embedded --seed 0 --out runs/embedded/amb/seed0
# ```
#
# On a GPU machine with CMU-MOSEI, the thesis setup (bert-base-uncased, Adam 5e-5, patience 10):
#
# ```bash
# papermill notebooks/03_train.ipynb out.ipynb -p preset paper -p data /path/to/aligned_50.pkl
# ```
#
# The metrics follow MMSA's definitions exactly (see `ambcore.metrics`): Acc-7 and Acc-5 round
# clipped scores half-to-even, the binary accuracy and weighted F1 are given in both of the
# conventions the literature uses: *has-0* (negative vs non-negative, all utterances) and
# *non-0* (negative vs positive, utterances labelled 0 left out).

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")  # smoke | embedded | paper
data = ""  # empty: the preset's data (synthetic; the paper preset reads AMB_DATA)
plm = ""  # empty: the preset's language model
seed = 0
run_dir = ""  # empty: <runs>/<preset>/amb/seed<seed> (the ablation reuses it)
# extra config values as KEY=VALUE strings, for example lr=1e-4 and adapter_dim=64
overrides = []

# %% tags=["hide-input"]
# %matplotlib inline
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore import experiments, plots, run_report, runs
from ambcore.config import apply_overrides
from ambcore.pages import banner, config_from_parameters, numbered_table
from ambcore.train import train_and_evaluate

cfg = apply_overrides(config_from_parameters(preset, data, plm, seed, tuned_for="amb"),
                      list(overrides))
run_path = Path(run_dir) if run_dir else experiments.run_dir(cfg, "amb")
display(banner(cfg))

# %% [markdown]
# The configuration of this run: the preset's values, the learning rate and dropout chosen for
# AMB by the tuning study on validation data (`results/tuning_<preset>.json`, shown in the
# Ablation chapter), then the parameters; the full resolved configuration is the run folder's
# `config.json`.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
display(run_report.config_table(cfg))

# %% [markdown]
# ## Training
#
# If the folder already holds a finished run (a `DONE` marker) it is read back; an unfinished
# one (an interrupted build) continues from its last finished epoch.

# %%
result = train_and_evaluate(cfg, run_path, progress=True, resume=True)
metrics = runs.read_metrics(run_path)
history = runs.read_history(run_path)
predictions = pd.read_csv(run_path / "test_predictions.csv")
source = plots.provenance_line(result.data_name, result.is_synthetic, result.plm)
print(run_report.training_summary(result))

# %% [markdown]
# The run folder's files; the tables and figures below are built from them. (The ablation and
# robustness chapters later add `sweep.json` and `robustness.csv`, not listed here.)

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
later = {"sweep.json", experiments.ROBUSTNESS_FILE}  # written by chapters 04 and 05
print("\n".join(run_report.run_files(run_path, leave_out=later)))

# %% [markdown]
# ## Learning curves
#
# Training and validation loss (the L1 task loss, i.e. the MAE), the validation MAE and the
# validation Acc-7 after every epoch; the dashed line marks the epoch whose checkpoint is kept.

# %% tags=["hide-input"]
fig = plots.learning_curves(history, best_epoch=result.best_epoch, subtitle=source)
display(fig)
plt.close(fig)

# %% [markdown]
# ## Test metrics
#
# The best checkpoint on the validation and test splits. The last row is the trivial baseline
# that predicts the mean training label for every test utterance: a model has learned
# something only where it beats it. Its correlation is undefined (a constant prediction).

# %% tags=["hide-input"]
table = run_report.metrics_overview(metrics)
display(banner(cfg))
display(numbered_table(table, f"AMB on {source}", name="tbl-train-metrics",
                           digits=run_report.METRIC_DIGITS))
for name, value in run_report.glue_values(result, metrics).items():
    glue(name, value, display=False)

# %% [markdown]
# On the test split the model reaches an MAE of {glue:text}`train_test_mae` (the mean-label
# baseline: {glue:text}`train_baseline_mae`), a correlation of {glue:text}`train_test_corr`,
# an Acc-7 of {glue:text}`train_test_acc7` % and a non-0 Acc-2 / F1 of
# {glue:text}`train_test_acc2_non0` % / {glue:text}`train_test_f1_non0` %, training
# {glue:text}`train_n_trainable` parameters; the best of {glue:text}`train_epochs` epochs was
# epoch {glue:text}`train_best_epoch`. Data: {glue:text}`train_data`; language model:
# {glue:text}`train_plm`.
#
# ## Predictions
#
# Each test utterance's prediction against its label. The labels of MOSEI-style data are
# averages of annotators and lie on a grid of thirds, hence the columns.

# %% tags=["hide-input"]
fig = plots.prediction_scatter(predictions["y_true"], predictions["y_pred"], subtitle=source)
display(fig)
plt.close(fig)

# %% [markdown]
# The 7-class confusion matrix of Acc-7: both scores clipped to [-3, 3] and rounded; each row
# is a true class (its number of utterances in brackets), each cell the share of that row
# predicted as the column's class.

# %% tags=["hide-input"]
fig = plots.confusion_matrix_figure(predictions["y_true"], predictions["y_pred"], subtitle=source)
display(fig)
plt.close(fig)

# %% [markdown]
# ## Where this run came from
#
# The run folder's `env.json` records the versions, the device, the code revision and the
# fingerprint of the data.

# %% tags=["hide-input"]
display(run_report.provenance_table(runs.read_json(run_path / "env.json")))
