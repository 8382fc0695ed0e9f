# %% [markdown]
# # Robustness to noisy inputs
#
# Thesis section 6.3.4 corrupts the inputs of trained models at test time and follows the
# correlation as the corruption grows: words deleted (replaced by `[UNK]`) or replaced by random
# vocabulary tokens, and multiplicative Gaussian noise on a random subset of the visual or the
# acoustic time steps (Hazarika et al. 2022; how many Gaussian draws a selected step gets is
# discussed below). The rate is the probability of corrupting each
# word piece or time step; `[CLS]`, `[SEP]` and padding are never touched. The best checkpoint
# of every run is evaluated on the test split; curves are averaged over the runs (seeds) of a
# model, the band is ± one standard deviation over them. The noise functions and their tests
# are in `ambcore.noise`, the evaluation of a run under noise in `ambcore.robustness`.
#
# The models are AMB, MISA and AMB-FT, the runs of the {doc}`04_ablation` chapter (found
# finished, not trained again), and, beyond the thesis, AMB trained with noise augmentation
# (`noise_augment_rate`: a fraction of the training samples gets one kind of noise over its
# whole modality, the remedy Hazarika et al. propose). From a terminal:
#
# ```bash
# python -m ambcore sweep experiments/robustness_embedded.yaml
# ```

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")  # smoke | embedded | paper
data = ""  # empty: the preset's data (synthetic; the paper preset reads AMB_DATA)
plm = ""  # empty: the preset's language model
n_seeds = 0  # 0: the preset's seeds (ambcore.experiments.GRIDS)
runs_dir = ""  # empty: the preset's runs folder (shared with the ablation chapter)
collect_only = False  # True: train nothing; evaluate the finished runs of runs_dir
parallel = 0  # runs at once; 0: the preset's choice (one per CPU core or GPU)
rates = []  # corruption rates; empty: the preset's grid
n_draws = 0  # noise draws per run and rate; 0: the preset's
results_dir = ""  # empty: the project's results/ folder (read by the Results chapter)

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore import experiments
from ambcore.noise import DEFAULT_GRANULARITY, NOISE_GRANULARITIES
from ambcore.pages import banner, config_from_parameters, default_results_dir, numbered_table
from ambcore.robustness import granularity_figure, select_granularity, summarize_curves
from ambcore.plots import robustness_figure
from ambcore.runs import atomic_write_text

# %% tags=["hide-input"]
cfg = config_from_parameters(preset, data, plm)
grid = experiments.grid(preset, n_seeds or None)
rates = [float(r) for r in rates] or list(grid.rates)
n_draws = int(n_draws) or grid.n_draws
spec = experiments.robustness_spec(preset, n_seeds=n_seeds or None,
                                   shared=experiments.overrides_of(cfg), runs_dir=runs_dir or None)
display(banner(cfg))

# %% [markdown]
# The runs and the grid of this build:

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
cell_names = ", ".join(c["name"] for c in spec["cells"])
print(f"preset {preset}: cells {cell_names}; seeds {spec['seeds']}")
print(f"rates {rates}; {n_draws} noise draw(s) per run and rate; kinds: deletion, replacement, "
      f"visual, acoustic; visual/acoustic granularities: {', '.join(NOISE_GRANULARITIES)}")

# %% [markdown]
# ## The runs
#
# AMB, MISA and AMB-FT are normally finished by the ablation chapter; the noise-augmented AMB
# is trained here.

# %%
outcomes = experiments.train_spec(spec, parallel=parallel, collect_only=collect_only)

# %% [markdown]
# ## Evaluating under noise
#
# Each run's curves are cached in its folder (`robustness.csv`), so a rebuild only evaluates
# what is new.

# %%
run_dirs = experiments.finished_runs(spec)
if not run_dirs:
    raise RuntimeError(f"no finished runs for figure 6.3 in {spec['runs_dir']}")
curves = experiments.robustness_curves_of_runs(run_dirs, rates, n_draws,
                                               parallel=parallel or grid.parallel)
all_curves = summarize_curves(curves)  # both granularities of the visual/acoustic noise
summary = select_granularity(all_curves, DEFAULT_GRANULARITY)  # figure 6.3 and the tables below
source = "; ".join(sorted({f"{d} · PLM {p}" for d, p in zip(summary["data"], summary["plm"])}))
results_path = Path(results_dir or default_results_dir())
atomic_write_text(results_path / "robustness_curves.csv", all_curves.to_csv(index=False))
print(f"{len(run_dirs)} runs; {len(curves)} curve points; "
      "written: robustness_curves.csv in the results folder")

# %% [markdown]
# ## Figure 6.3
#
# Correlation of each model's test predictions against the corruption rate, one panel per
# kind of noise: (a) deletion, (b) replacement, (c) visual noise, (d) acoustic noise. Visual and
# acoustic noise here multiply each selected time step by one N(0, 1) scalar (the default
# granularity, next section).

# %% tags=["hide-input"]
display(banner(cfg))
fig = robustness_figure(summary, subtitle=f"{source} · visual/acoustic noise: one draw per {DEFAULT_GRANULARITY}")
plt.show()

# %% [markdown]
# ## One Gaussian draw per step, or one per element?
#
# The thesis follows Hazarika et al. and speaks of "multiplicative Gaussian noise to a randomly
# selected set of input sequence elements", without saying how many draws a selected element
# gets. Hazarika et al.'s public code multiplies each selected unit by *one* N(0, 1) scalar,
# which keeps the unit's pattern up to a random gain and sign; drawing one N(0, 1) per feature
# instead erases the step's content. **The default is one scalar per selected time step**
# (`ambcore.noise.DEFAULT_GRANULARITY`): it is the operation of the code the thesis follows,
# applied to the elements the thesis names; the element-wise draw is the stronger corruption.
# Both are evaluated on the same runs with the same selected steps; the visual and acoustic
# panels side by side (the text panels do not depend on it):

# %% tags=["hide-input"]
fig = granularity_figure(all_curves, subtitle=source)
plt.show()

# %% tags=["hide-input"]
av = all_curves[all_curves["kind"].isin(["visual", "acoustic"]) & (all_curves["rate"] == max(rates))]
gap = av.pivot_table(index=["row_name", "kind"], columns="granularity", values="corr_mean")
gap["element - step"] = gap["element"] - gap["step"]
display(numbered_table(gap.reset_index(), f"Correlation at rate {max(rates):g} by granularity ({source})",
                       name="tbl-robustness-granularity", digits=3))

# %% [markdown]
# ## How much each modality matters
#
# The drop of the correlation from clean inputs to the highest rate, per model and kind of
# noise. A model that ignores a modality loses nothing when it is corrupted.

# %% tags=["hide-input"]
drops = experiments.modality_drops(summary)
display(numbered_table(drops, f"Correlation drop from rate 0 to the highest rate ({source})",
                       name="tbl-robustness-drops", digits=3))
_ = atomic_write_text(results_path / "robustness_drops.csv", drops.to_csv(index=False))

# %% [markdown]
# The columns of the drop table:

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
print(", ".join(drops.columns))

# %% [markdown]
# ## Does it recover the planted ground truth?
#
# Each step of the ordering is a comparison of the correlations a model's runs reach under two
# kinds of noise at the highest rate, made with the test of {doc}`04_ablation` (the runs and
# the test videos as the sources of variance) and Holm-adjusted across every model's three
# comparisons: this chapter's family. The same runs predict under both kinds of noise, and the
# test treats them as independent samples, which makes it conservative.
#
# {glue:text}`rob_truth_intro`
#
# {glue:text}`rob_truth_lines`
#
# On CMU-MOSEI (the thesis) the text panels fall steeply, visual noise costs AMB and MISA
# less, AMB-FT is hardly affected by visual noise, and the acoustic panel is inconclusive. Only
# a CMU-MOSEI build of this chapter can say whether the runs here repeat that.

# %% tags=["hide-input"]
by_model = {model: list(runs) for model, runs in curves.groupby("row_name", sort=False)["run"].unique().items()}
family = experiments.modality_family(by_model)
_ = atomic_write_text(results_path / "robustness_comparisons.csv", family.to_csv(index=False))
intro, lines = experiments.planted_truth_text(drops, family, synthetic=bool(summary["is_synthetic"].all()),
                                              n_runs=int(summary["n_runs"].min()), rate=max(rates))
glue("rob_truth_intro", intro, display=False)
glue("rob_truth_lines", "; ".join(lines) + ".", display=False)
print(intro)
print("\n".join(lines))
