# %% [markdown]
# # Ablation: adapters against fine-tuning, and missing modalities
#
# This chapter reruns the comparisons of thesis sections 6.3.2 and 6.3.3: AMB against the
# fine-tuned baselines MISA and MAG-BERT (table 6.1), and AMB without text, without the
# audio-visual inputs, with a fine-tuned instead of an adapted language model (AMB-FT), and
# MISA with adapters instead of fine-tuning (table 6.2). Every configuration is trained over
# several seeds and reported as mean ± standard deviation over them.
#
# What is trained is defined once, in `ambcore.experiments` (the cells, their config overrides
# and the seeds of each preset); the runs go through the sweep runner (`ambcore.sweep`), which
# skips finished runs and resumes interrupted ones. AMB's seed 0 is the run of the training
# chapter ({doc}`03_train`), found finished and not trained again. The same sweep from a
# terminal:
#
# ```bash
# python -m ambcore sweep experiments/ablation_embedded.yaml
# ```
#
# and the thesis' setup on a GPU machine with CMU-MOSEI:
#
# ```bash
# python -m ambcore sweep experiments/ablation_paper.yaml --set data=/path/to/aligned_50.pkl
# ```
#
# With `collect_only` the chapter trains nothing and only reads the finished runs of a runs
# folder (e.g. one copied from a GPU machine).

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")  # smoke | embedded | paper
data = ""  # empty: the preset's data (synthetic; the paper preset reads AMB_DATA)
plm = ""  # empty: the preset's language model
n_seeds = 0  # 0: the preset's seeds (ambcore.experiments.GRIDS)
runs_dir = ""  # empty: the preset's runs folder, where the training chapter put AMB seed 0
collect_only = False  # True: train nothing, only collect the finished runs of runs_dir
parallel = 0  # runs at once; 0: one per CPU core (one per GPU on a GPU machine)
results_dir = ""  # empty: the project's results/ folder (read by the Results chapter)

# %% tags=["hide-input"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from ambcore import experiments, report
from ambcore.book import banner, config_from_parameters, default_results_dir, numbered_table
from ambcore.plots import acc7_params_figure

cfg = config_from_parameters(preset, data, plm)
shared = experiments.overrides_of(cfg)  # e.g. another PLM or dataset: its own runs folder
runs_path = Path(runs_dir) if runs_dir else experiments.runs_root(preset, shared)
spec = experiments.ablation_spec(preset, n_seeds=n_seeds or None, shared=shared,
                                 runs_dir=runs_dir or None)
display(banner(cfg))

# %% [markdown]
# ## The cells
#
# Each row is one configuration (a *cell* of the sweep), the thesis row it reproduces and its
# config overrides on top of the preset. MISA and MAG-BERT train with their original recipes
# (`ambcore.models.misa.ORIGINAL_MOSEI_SETTINGS`: value clipping, learning-rate halving from
# the best epoch; `ambcore.models.magbert.ORIGINAL_SETTINGS`: AdamW, linear warm-up); on the
# smaller presets the settings that size the model and the training time stay the preset's, so
# every model gets the same budget. The learning rates stay the recipes' own (MISA 1e-4,
# MAG-BERT 1e-5) while AMB's is the preset's: on a budget of a few hundred steps a recipe made
# for 40 epochs of CMU-MOSEI may not converge, which the *Training budget* point below checks.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
cells = pd.DataFrame([
    {"cell": c["name"], "thesis row": experiments.CELLS[c["name"]].label,
     "tables": ", ".join(experiments.CELLS[c["name"]].tables),
     "overrides": ", ".join(f"{k}={v}" for k, v in c["overrides"].items())}
    for c in spec["cells"]
])  # fmt: skip
print(f"preset {spec['preset']}: {len(cells)} cells x seeds {spec['seeds']}")
print(cells.to_string(index=False))

# %% [markdown]
# ## Training
#
# Finished runs are skipped (AMB seed 0 comes from the training chapter); the progress bar
# counts runs.

# %%
if collect_only:
    print(f"collect_only: nothing is trained; reading the finished runs under {runs_path}")
else:
    result = experiments.run_experiment(spec, parallel=parallel)
    outcomes = result.frame()[["cell", "seed", "outcome", "seconds"]]
    print(outcomes.to_string(index=False, float_format=lambda s: f"{s:.0f}"))
    print(f"trained {int((outcomes['outcome'] != 'skipped').sum())} run(s) in "
          f"{outcomes['seconds'].sum():.0f} s of run time")  # fmt: skip
    if result.failed:
        raise RuntimeError("failed runs:\n" + "\n\n".join(f.error for f in result.failed))

# %% [markdown]
# ## Collecting the runs
#
# Every finished run folder is read back (`metrics.json`, `config.json`, `env.json`) and the
# seeds of each cell are averaged: `ambcore.report.collect_runs` and `summarize`.

# %% tags=["hide-input"]
runs_frame = report.collect_runs(runs_path)
ablation_cells = [c["name"] for c in spec["cells"]]
runs_frame = runs_frame[runs_frame["cell"].isin(ablation_cells)].reset_index(drop=True)
summary = report.summarize(runs_frame)
if summary.empty:
    raise RuntimeError(f"no finished ablation runs under {runs_path}")
source = "; ".join(sorted({f"{d} · PLM {p}" for d, p in zip(summary["data"], summary["plm"])}))
results_path = Path(results_dir or default_results_dir())
written = experiments.write_ablation_results(runs_frame, summary, results_path)
shown = summary[["cell", "row_name", "n_seeds", "seeds", "trainable_params_m",
                 "test_mae_mean", "test_corr_mean", "test_acc7_mean"]]  # fmt: skip
display(numbered_table(shown, f"Finished runs per cell ({source})", digits=3))
print("results files:", ", ".join(p.name for p in written.values()))

# %% [markdown]
# ## Table 6.1: AMB against the fine-tuned baselines
#
# The rows *cited in thesis table 6.1* are literature numbers the thesis copied (CMU-MOSEI) and
# nobody reruns; the rows *thesis table 6.1* are the thesis' own numbers (CMU-MOSEI,
# bert-base-uncased); the rows *this book* are our runs, test split, mean ± std over seeds, on
# the data and language model their columns name. Accuracies and F1 in percent; Acc-2/F1 of
# our rows use the non-0 convention (MISA's and MAG-BERT's code report it).

# %% tags=["hide-input"]
table_61 = report.format_table(report.table_6_1(summary))
display(banner(cfg))
display(numbered_table(table_61.drop(columns=["Reference"]),
                       f"Thesis table 6.1 beside our runs ({source})", name="tbl-ablation-6-1"))

# %% [markdown]
# ## Table 6.2: adapters against fine-tuning, missing modalities
#
# The same layout for the thesis' ablation.

# %% tags=["hide-input"]
table_62 = report.format_table(report.table_6_2(summary))
display(banner(cfg))
display(numbered_table(table_62.drop(columns=["Reference"]),
                       f"Thesis table 6.2 beside our runs ({source})", name="tbl-ablation-6-2"))

# %% [markdown]
# The columns of both tables:

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
print(", ".join(table_62.columns))

# %% [markdown]
# ## Figure 6.2: Acc-7 against trainable parameters
#
# Our runs (circles, error bars = std over seeds) beside the thesis' models (triangles) and
# the literature it cites (squares). Our points are on {glue:text}`abl_source`; the thesis'
# points are CMU-MOSEI with bert-base-uncased, so compare the *arrangement* (how much each way
# of adapting the language model costs in parameters and what it buys), not the values. ICCN
# gives no parameter count and is not drawn.

# %% tags=["hide-input"]
points = report.acc7_vs_params(summary)
glue("abl_source", source, display=False)
display(banner(cfg))
fig = acc7_params_figure(points, subtitle=f"ours: {source}; thesis and cited: CMU-MOSEI")
plt.show()

# %% [markdown]
# ## What the runs show
#
# Numbers below are test-split means over seeds from the run folders; a difference counts as
# clear only when it is larger than the standard deviation over seeds of either cell.
#
# - **Audio-visual information.** AMB (text + audio + visual) reaches a correlation of
#   {glue:text}`abl_amb_corr` against {glue:text}`abl_textonly_corr` for AMB text-only: a
#   difference of {glue:text}`abl_tav_vs_t_diff`, which {glue:text}`abl_tav_vs_t_verdict`.
# - **Text.** Without text (AMB no-text) the correlation is {glue:text}`abl_notext_corr`
#   ({glue:text}`abl_notext_verdict`).
# - **Adapters against fine-tuning (AMB).** AMB-FT reaches {glue:text}`abl_ft_corr`
#   ({glue:text}`abl_ft_verdict`), training {glue:text}`abl_ft_params` M parameters against
#   AMB's {glue:text}`abl_amb_params` M.
# - **Adapters against fine-tuning (MISA).** MISA-Adapters {glue:text}`abl_misa_corr_a` against
#   fine-tuned MISA {glue:text}`abl_misa_corr_ft` ({glue:text}`abl_misa_verdict`).
# - **Training budget.** Runs whose best epoch was their last one were still improving when
#   the preset's {glue:text}`abl_max_epochs` epochs ran out: {glue:text}`abl_budget`.
#
# On the synthetic dataset the first two outcomes are planted by design (see {doc}`01_data`):
# they show that the pipeline recovers a known answer, not that AMB behaves this way on
# CMU-MOSEI. Seeds per cell: {glue:text}`abl_n_seeds`.

# %% tags=["hide-input"]
def verdict(cmp: dict, better: str, worse: str) -> str:
    """A computed sentence: which way the difference goes and whether seeds could explain it."""
    if cmp["n_seeds"] < 2:
        return f"{better if cmp['diff'] > 0 else worse} on a single seed (no spread to judge it)"
    size = "clearly (beyond the spread over seeds)" if cmp["beyond_spread"] else \
        "within the spread over seeds, so not a clear difference"
    return f"{better if cmp['diff'] > 0 else worse}, {size}"


def have(*names):
    return all(n in set(summary["cell"]) for n in names)


def fmt(x):
    return f"{x:.3f}"


# Each key is glued exactly once (a key glued twice is a build warning): start from
# "missing" texts and overwrite those whose cells ran.
reading = {
    "abl_amb_corr": "n/a", "abl_textonly_corr": "n/a", "abl_tav_vs_t_diff": "n/a",
    "abl_tav_vs_t_verdict": "cannot be judged (cells missing)", "abl_notext_corr": "n/a",
    "abl_notext_verdict": "cells missing", "abl_ft_corr": "n/a", "abl_ft_verdict": "cells missing",
    "abl_ft_params": "n/a", "abl_amb_params": "n/a", "abl_misa_corr_a": "n/a",
    "abl_misa_corr_ft": "n/a", "abl_misa_verdict": "cells missing",
}  # fmt: skip
reading["abl_n_seeds"] = ", ".join(f"{c} {n}" for c, n in zip(summary["cell"], summary["n_seeds"]))
if have("amb", "amb-text-only"):
    c = experiments.compare_cells(summary, "amb", "amb-text-only", "test_corr")
    reading["abl_amb_corr"] = fmt(c["a"])
    reading["abl_textonly_corr"] = fmt(c["b"])
    reading["abl_tav_vs_t_diff"] = f"{c['diff']:+.3f}"
    reading["abl_tav_vs_t_verdict"] = verdict(c, "favours T+A+V", "favours text-only")
if have("amb", "amb-no-text"):
    c = experiments.compare_cells(summary, "amb-no-text", "amb", "test_corr")
    reading["abl_notext_corr"] = fmt(c["a"])
    reading["abl_notext_verdict"] = f"{c['diff']:+.3f} against AMB: " + verdict(
        c, "no-text is better", "no-text is worse")
if have("amb", "amb-ft"):
    c = experiments.compare_cells(summary, "amb-ft", "amb", "test_corr")
    params = summary.set_index("cell")["trainable_params_m"]
    reading["abl_ft_corr"] = fmt(c["a"])
    reading["abl_ft_verdict"] = f"{c['diff']:+.3f} against AMB: " + verdict(
        c, "fine-tuning is better", "fine-tuning is worse")
    reading["abl_ft_params"] = f"{params['amb-ft']:.2f}"
    reading["abl_amb_params"] = f"{params['amb']:.2f}"
if have("misa", "misa-adapters"):
    c = experiments.compare_cells(summary, "misa-adapters", "misa", "test_corr")
    reading["abl_misa_corr_a"] = fmt(c["a"])
    reading["abl_misa_corr_ft"] = fmt(c["b"])
    reading["abl_misa_verdict"] = verdict(c, "adapters are better", "adapters are worse")
# Under-trained cells: the best epoch is the last epoch of a run that used the whole budget.
budget = runs_frame.assign(
    still=(runs_frame["best_epoch"] == runs_frame["epochs_run"])
    & (runs_frame["epochs_run"] >= cfg.max_epochs)
).groupby("row_name", sort=False)["still"].agg(["sum", "count"])
still = budget[budget["sum"] > 0]
reading["abl_max_epochs"] = str(cfg.max_epochs)
reading["abl_budget"] = (
    "none, every run had passed its best epoch" if still.empty else
    ", ".join(f"{name} {int(r['sum'])} of {int(r['count'])} runs" for name, r in still.iterrows())
    + "; read these cells as lower bounds of what their recipes reach with more epochs"
)  # fmt: skip
for key, value in reading.items():
    glue(key, value, display=False)

# %% [markdown]
# ## Choices the thesis leaves open
#
# Three choices of AMB's design are not fixed by the thesis' text (see the {doc}`02_model`
# chapter): whether the [CLS] state of every layer goes through one shared projection or one per
# layer, whether fusion layer $l$ also reads the fused state $f_{l-1}$ (`chain`) or fuses only
# its own layer (`independent`, the predictor reading the mean over layers), and where the
# adapter sits: on the feed-forward LayerNorm's output with nothing after it (ours), or as
# AdapterHub's Pfeiffer adapter (residual taken before that LayerNorm, the LayerNorm re-applied).
#
# **AMB uses the shared projection, the chain and our placement.** The first two are what the
# thesis' own parameter counts and its text allow together (8.6 M on bert-base; derived in
# chapter 02). The placement cannot be decided by counting (both placements train the same
# parameters); ours is the literal reading of "insert them after the feedforward layernorm
# layers" (6.2.3). Each alternative is trained here with the same seeds as the other cells,
# changing only that choice; the default's row is the AMB cell's runs above.

# %% tags=["hide-input"]
design = experiments.design_spec(preset, n_seeds=n_seeds or None, shared=shared, runs_dir=runs_dir or None)
if collect_only:
    print(f"collect_only: nothing is trained; reading the finished runs under {runs_path}")
else:
    design_result = experiments.run_experiment(design, parallel=parallel)
    design_outcomes = design_result.frame()[["cell", "seed", "outcome", "seconds"]]
    print(design_outcomes.to_string(index=False, float_format=lambda s: f"{s:.0f}"))
    if design_result.failed:
        raise RuntimeError("failed runs:\n" + "\n\n".join(f.error for f in design_result.failed))

# %% tags=["hide-input"]
from ambcore.runs import atomic_write_text

design_runs = report.collect_runs(runs_path)
design_runs = design_runs[design_runs["cell"].isin(experiments.DESIGN_CELLS)].reset_index(drop=True)
study = experiments.design_study(report.summarize(design_runs))
_ = atomic_write_text(results_path / "design_study.csv", study.to_csv(index=False))
caption = f"Choices the thesis leaves open: test metrics, mean ± std over seeds ({source})"
display(numbered_table(study.drop(columns=["verdict"]), caption, name="tbl-design-study", digits=3))
for sentence in study["verdict"][study["verdict"] != ""]:
    print(sentence)
