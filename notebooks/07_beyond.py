# %% [markdown]
# # Beyond the thesis: its future work
#
# The thesis ends (7.2, "Future Work") with questions it leaves open. This chapter builds
# three of them and tests two on this build's data:
#
# - **A cross-attention fusion module.** "The only part of the architecture that would have to
#   change would be the feedforward network in the fusion layer": at each layer the projected
#   [CLS] state attends over the visual and acoustic encoders' output *sequences* (not only
#   their [CLS] summaries), then the same residual chain and predictor
#   (`fusion_module="cross_attention"`).
# - **Feeding the fusion back into the PLM** ("shifting", as MAG-BERT does): the fused state
#   displaces the hidden states that enter the next PLM layer through MAG-BERT's gate and its
#   norm-ratio bound; the PLM stays frozen, the adapters and the shift train
#   (`fusion_feedback="shift"`).
# - **Other frozen PLMs** ("the choice of the frozen PLM is not investigated enough"): `--plm`
#   takes a local folder of the BERT, RoBERTa, XLM-RoBERTa, ELECTRA or DeBERTa-v2/v3 families,
#   with the adapters in the same place in each.
#
# Each variant changes that one choice and takes AMB's tuned values; AMB's row is the
# ablation chapter's runs. The same study on a GPU machine with CMU-MOSEI:
#
# ```bash
# python -m ambcore sweep experiments/beyond_paper.yaml --set data=/path/to/aligned_50.pkl
# ```

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")  # smoke | embedded | paper
data = ""  # empty: the preset's data (synthetic; the paper preset reads AMB_DATA)
plm = ""  # empty: the preset's language model
n_seeds = 0  # 0: the study's seeds for the preset (ambcore.experiments.BEYOND_SEEDS)
runs_dir = ""  # empty: the preset's runs folder, where the ablation chapter put AMB's runs
collect_only = False  # True: train nothing, only collect the finished runs of runs_dir
parallel = 0  # runs at once; 0: one per CPU core (one per GPU on a GPU machine)
results_dir = ""  # empty: the project's results/ folder

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import display

from ambcore import experiments, report, stats
from ambcore.pages import banner, config_from_parameters, default_results_dir, numbered_table
from ambcore.models import budget
from ambcore.plots import differences_figure
from ambcore.runs import atomic_write_text

cfg = config_from_parameters(preset, data, plm)
shared = experiments.overrides_of(cfg)
runs_path = Path(runs_dir) if runs_dir else experiments.runs_root(preset, shared)
results_path = Path(results_dir or default_results_dir())
display(banner(cfg))

# %% [markdown]
# ## What the variants cost
#
# Trainable parameters at the thesis' geometry (bert-base-uncased's architecture, random
# weights on the meta device: counts depend on shapes only), by component, beside AMB's
# 8.66 M:

# %% tags=["hide-input"]
costs = budget.beyond_budgets()
display(numbered_table(costs.reset_index(), "Trainable parameters of the variants at bert-base (counted from the models built)",
                       name="tbl-beyond-budget", digits=3))

# %% [markdown]
# ## The runs
#
# AMB's runs are found finished (the ablation chapter trained them); each variant trains over
# the study's seeds with AMB's values.

# %% tags=["hide-input"]
spec = experiments.beyond_spec(preset, n_seeds=n_seeds or None, shared=shared, runs_dir=runs_dir or None)
display(experiments.cells_table(spec))
outcomes = experiments.train_spec(spec, parallel=parallel, collect_only=collect_only)

# %% [markdown]
# ## The verdicts
#
# Each variant against AMB on every metric, by the book's test (runs as independent samples,
# the test videos resampled as clusters, Welch-Satterthwaite degrees of freedom), Holm-adjusted
# across this chapter's family. "Not distinguishable" is what the data say when the interval
# holds zero.

# %% tags=["hide-input"]
beyond_runs = report.collect_runs(runs_path)
beyond_runs = beyond_runs[beyond_runs["cell"].isin(experiments.BEYOND_CELLS)].reset_index(drop=True)
summary = report.summarize(beyond_runs)
synthetic = bool(summary["is_synthetic"].all())
source = "; ".join(sorted({f"{d} · PLM {p}" for d, p in zip(summary["data"], summary["plm"])}))
predictions = stats.available_predictions(beyond_runs, runs_path)
family = experiments.design_family(predictions, beyond_runs, pairs=experiments.BEYOND_FAMILY)
study = experiments.design_study(summary, family, synthetic, alternatives=experiments.BEYOND_ALTERNATIVES)
_ = atomic_write_text(results_path / "beyond_study.csv", study.to_csv(index=False))

# %% tags=["hide-input"]
display(banner(cfg))
caption = f"Beyond the thesis: test metrics, mean ± std over seeds ({source})"
display(numbered_table(study.drop(columns=["verdict"]), caption, name="tbl-beyond-study", digits=3))
for sentence in study["verdict"][study["verdict"] != ""]:
    print(sentence)

# %% tags=["hide-input"]
names = {cell: alternative for cell, (_, _, alternative, _) in experiments.BEYOND_ALTERNATIVES.items()}
fig = differences_figure(family, names, subtitle=source)
plt.show()

# %% [markdown]
# ## Other PLM families
#
# One table of per-family module names (`ambcore.models.families`) tells the adapters where
# each family's feed-forward LayerNorm is; there are no per-family copies of the model. The
# tests build a tiny random model of every family and check the forward shapes, that only the
# adapters, encoders and fusion train, and counts derived from the layer shapes. Below, AMB on
# each family's base size. **These are counts from random weights: this book has no
# pretrained weights of these PLMs and makes no claim about their accuracy**; a researcher with
# local copies passes them as `--plm /path/to/folder`.

# %% tags=["hide-input"]
families = budget.family_budgets()
display(numbered_table(families.reset_index(), "AMB's parameters on each PLM family's base size (random weights; counts only)",
                       name="tbl-beyond-families", digits=3))
