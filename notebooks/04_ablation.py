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

from ambcore import experiments, report, stats, tune
from ambcore.pages import banner, config_from_parameters, default_results_dir, numbered_table
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
# config overrides on top of the preset. MISA and MAG-BERT start from their original recipes
# (`ambcore.models.misa.ORIGINAL_MOSEI_SETTINGS`: value clipping, learning-rate halving from
# the best epoch; `ambcore.models.magbert.ORIGINAL_SETTINGS`: AdamW, linear warm-up); on the
# smaller presets the settings that size the model and the training time stay the preset's, so
# every model gets the same budget. On top of the recipe, every cell takes the values the
# tuning study below chose for it: AMB, AMB-FT, MISA, MISA-Adapters and MAG-BERT each have a
# study of their own; the modality ablations (text-only, no-text), the design alternatives and
# the control take AMB's values (`experiments.cell_overrides`). Without a matching tuning
# record the cells train at the recipes' values, and the tuning status says so. The cell
# `amb-shuffled-av` is not a model but a control of the test (see *How differences are
# judged*): AMB with the audio-visual features permuted across utterances.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
cells = experiments.cells_table(spec)
print(f"preset {spec['preset']}: {len(cells)} cells x seeds {spec['seeds']}")
print(cells.to_string(index=False))

# %% [markdown]
# ## Tuning: the same budget for every model, on validation only
#
# A comparison is only fair when every model had the same chance to fit the budget. Every row
# that trains parameters of its own gets one Optuna study (`python -m ambcore tune
# experiments/tune_<preset>.yaml`, `ambcore.tune`): AMB, AMB-FT, MISA, MISA-Adapters and
# MAG-BERT, the same number of trials and the preset's epoch budget for each, a TPE sampler
# over the learning rate (log-uniform, a factor of 10 around the recipe's value), the dropout
# and, where pretrained weights train beside new ones, a separate rate for the parts trained
# from scratch (`new_params_lr`; for AMB-FT the fine-tuned PLM layers take `lr` and the
# adapters, encoders and fusion `new_params_lr`; `experiments/search_space.yaml` gives a reason
# for every range), and a median pruner on the per-epoch validation MAE. The first trial of
# every study is the recipe exactly, so the chosen values score at least as well as the
# recipe's on validation data. Trials train at seed 100, which no table evaluates: the chosen
# trial is never one of the reported runs. A trial's score is its best validation MAE; the
# test split is not given to the tuner at all. The record (git revision, date, machine, every trial)
# is kept in `results/tuning_<preset>.json` and read back as long as the spec is unchanged.
# Record: {glue:text}`abl_tuning_status`.

# %% tags=["hide-input"]
results_path = Path(results_dir or default_results_dir())
record, tuning_status = tune.book_record(preset)
if record is not None:
    tuning_status = tune.record_status(record, tuning_status)
    display(numbered_table(tune.record_summary(record), f"Tuning per row ({preset} preset)",
                           digits={"recipe's valid MAE": 4, "best valid MAE": 4}))
    fig = tune.trials_figure(record)
    plt.show()
glue("abl_tuning_status", tuning_status, display=False)

# %% [markdown]
# The seed runs below train at the chosen values (the cells table lists them). The main job
# (`python -m ambcore book`) makes the record before the first chapter when none matches the
# spec, and `--retune` makes it anew; the test split is read only by the seed runs, once each.
#
# **MAG-BERT and this language model.** The tuning table compares each model's recipe (its
# study's first trial) with the chosen values on validation data. MAG-BERT's recipe was made
# for 40 epochs of CMU-MOSEI with bert-base; two things stand in its way here. First, its head
# reads BERT's pooler: {glue:text}`abl_pooler_verdict` (table below, the frozen PLM over the
# training texts). bert-base's pooler is trained by its next-sentence task; all-MiniLM-L6-v2
# was trained for mean pooling, so the embedded preset sets `mag_pooling=mean` (a config value;
# the original stays the default). Second, the gate and the head start untrained, and a few
# dozen Adam steps move each weight by at most about the rate times the number of steps,
# at the recipe's rate far too little to reach the labels' scale: hence
# `new_params_lr`, the rate of the parts trained from scratch, in the search space of both
# fine-tuned baselines.

# %% tags=["hide-input"]
from ambcore.data import load_dataset
from ambcore.models import plm as plm_module

spread = plm_module.summary_spread(cfg, load_dataset(cfg.data, cfg)["train"].texts)
display(numbered_table(pd.DataFrame(spread), f"The PLM's sentence summaries ({cfg.plm})", digits=3))
glue("abl_pooler_verdict", plm_module.spread_verdict(spread, cfg.mag_pooling), display=False)

# %% [markdown]
#
# ## Training
#
# Finished runs are skipped (AMB seed 0 comes from the training chapter); the progress bar
# counts runs.

# %%
outcomes = experiments.train_spec(spec, parallel=parallel, collect_only=collect_only)

# %% [markdown]
# ## Collecting the runs
#
# Every finished run folder is read back (`metrics.json`, `config.json`, `env.json`) and the
# seeds of each cell are averaged: `ambcore.report.collect_runs` and `summarize`.
#
# **How differences are judged** (`ambcore.stats`). A verdict is a claim about *training*
# one model against *training* another, and about the videos a test split samples, so both
# sources of variance we did not control enter it. Each cell's runs are an independent sample of
# its training procedure: seed s of one cell and seed s of another are not pairs. The test
# utterances are grouped into videos (the id's part before `$_$`), whose clips share a speaker,
# and the video is the unit of the test sample. The difference of two cells is the difference
# of their mean metric over runs; its variance is the spread of each cell's per-run metric
# divided by its number of runs, plus the part a cluster bootstrap of test videos (one draw
# shared by both cells) gives that the runs of a cell share; the ratio is referred to
# Student's t with Welch-Satterthwaite degrees of freedom. A cell's interval uses the same two
# parts. With a single run a cell's seed variance is unknown and no p-value is given.
#
# **Families.** Every comparison is made on MAE, Corr, Acc-7, Acc-2 and F1 at once and computed
# once. This chapter has two families, each Holm-adjusted over all its pairs and metrics
# together: (1) the comparisons of tables 6.1/6.2 and their reading (AMB against MISA,
# MAG-BERT, AMB-FT, MISA-Adapters, text-only and no-text; MISA-Adapters against MISA), and
# (2) the design study at the end (each alternative against AMB's default). A pair shows the
# same numbers wherever it appears. A difference is called a difference only when its adjusted
# p-value is below 0.05; otherwise the pair is *not distinguishable*.
#
# **The test, tested.** On simulated experiments with the structure of real runs (videos of five
# clips, a seed that shifts a whole run, a per-video error of the model, noise per utterance),
# two cells of the *same* model must be called different in at most 5 % of the experiments and
# the 95 % interval must cover the true zero in at least 95 %: {glue:text}`abl_calibration`.

# %% tags=["hide-input"]
from ambcore.plots import calibration_figure

calibration = stats.calibration(sizes=((3, 50), (5, 50)), n_sims=200, n_boot=200, planted=0.5)
display(numbered_table(calibration, "Calibration of the comparison on simulated runs (A/A: the "
                       "same model in both cells; power: predictions shifted by 0.5)", digits=3))
fig = calibration_figure(calibration)
plt.show()
worst = calibration.filter(like="false positives").max().max()
cover = calibration.filter(like="coverage").min().min()
glue("abl_calibration", f"measured here, the highest false-positive rate is {worst:.1%} and the "
     f"lowest coverage {cover:.1%} ({int(calibration['simulations'].iloc[0])} simulations per "
     f"size, Monte-Carlo error ±{calibration['mc_se'].iloc[0]:.1%})", display=False)

# %% [markdown]
# A cell **learns** when its best validation MAE (mean over seeds) is at least 1 % below that
# of the mean-label predictor (the mean of the training labels, scored on valid); a cell that
# does not is marked † in every table and named below.

# %% tags=["hide-input"]
runs_frame = report.collect_runs(runs_path)
ablation_cells = [c["name"] for c in spec["cells"]]
runs_frame = runs_frame[runs_frame["cell"].isin(ablation_cells)].reset_index(drop=True)
predictions = stats.available_predictions(runs_frame, runs_path)
family = report.ablation_family(predictions, runs_frame)
summary = report.add_statistics(report.summarize(runs_frame), predictions, family=family)
if summary.empty:
    raise RuntimeError(f"no finished ablation runs under {runs_path}")
source = "; ".join(sorted({f"{d} · PLM {p}" for d, p in zip(summary["data"], summary["plm"])}))
written = experiments.write_ablation_results(runs_frame, summary, results_path, family=family)
shown = summary[["cell", "row_name", "n_seeds", "seeds", "trainable_params_m",
                 "test_mae_mean", "test_corr_mean", "test_acc7_mean", "valid_mae_mean",
                 "valid_baseline_mae_mean", "learns"]]
display(numbered_table(shown, f"Finished runs per cell ({source})", digits=3))
print("results files:", ", ".join(p.name for p in written.values()))

# %% [markdown]
# ## Table 6.1: AMB against the fine-tuned baselines
#
# Two tables, each titled with its own data. The first holds our runs: test split, mean ± std
# over seeds and the 95 % interval, on the data and language model its caption names; ΔMAE is
# AMB's MAE minus the row's (negative: AMB is better) with its interval and Holm-adjusted
# p-value. The second holds the thesis' table as published (CMU-MOSEI, bert-base-uncased; the
# *cited* rows are literature numbers the thesis copied). On the embedded preset our rows are
# a check of the pipeline on synthetic data, not an estimate of the thesis' numbers: the two
# tables are not to be read against each other. Accuracies and F1 in percent; Acc-2/F1 of our
# rows use the non-0 convention (MISA's and MAG-BERT's code report it).

# %% tags=["hide-input"]
ours, caption, theirs, theirs_caption, verdicts = report.thesis_table_page(summary, "6.1")
display(banner(cfg))
display(numbered_table(ours, caption, name="tbl-ablation-6-1"))
display(numbered_table(theirs, theirs_caption, name="tbl-thesis-6-1"))
glue("abl_verdicts_6_1", verdicts, display=False)

# %% [markdown]
# ## Table 6.2: adapters against fine-tuning, missing modalities
#
# The same layout for the thesis' ablation.

# %% tags=["hide-input"]
ours, caption, theirs, theirs_caption, verdicts = report.thesis_table_page(summary, "6.2")
display(banner(cfg))
display(numbered_table(ours, caption, name="tbl-ablation-6-2"))
display(numbered_table(theirs, theirs_caption, name="tbl-thesis-6-2"))
glue("abl_verdicts_6_2", verdicts, display=False)

# %% [markdown]
# Table 6.1, AMB against each row: {glue:text}`abl_verdicts_6_1`.
#
# Table 6.2, AMB against each row: {glue:text}`abl_verdicts_6_2`.
#
# The columns of both tables:

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
print(", ".join(report.COMPACT_COLUMNS))

# %% [markdown]
# ## Figure 6.2: Acc-7 against trainable parameters
#
# Our runs (circles, error bars = std over seeds) beside the thesis' models (triangles) and
# the literature it cites (squares). Our points are on {glue:text}`abl_source`; the thesis'
# points are CMU-MOSEI with bert-base-uncased. The parameter axis is comparable in kind (each way
# of adapting a language model costs what it costs), the accuracy axis is not: our accuracies
# come from other data and another language model. ICCN gives no parameter count and is not
# drawn.

# %% tags=["hide-input"]
points = report.acc7_vs_params(summary)
glue("abl_source", source, display=False)
display(banner(cfg))
fig = acc7_params_figure(points, subtitle=f"ours: {source}; thesis and cited: CMU-MOSEI")
plt.show()

# %% [markdown]
# ## What the runs show
#
# Every sentence below is computed from family (1) (see *How differences are judged*): the MAE
# verdict, the other metrics, the per-seed MAE of both cells, the share of seed pairs in which
# the first cell is better and the validation difference beside the test difference. On
# synthetic data each sentence says whether the synthetic generator planted its answer; a
# comparison that was not planted is no evidence about CMU-MOSEI either way.
#
# - **Audio-visual information.** {glue:text}`abl_tav_verdict`
# - **Text.** {glue:text}`abl_notext_verdict`
# - **Adapters against fine-tuning (AMB).** {glue:text}`abl_ft_verdict`; AMB-FT trains
#   {glue:text}`abl_ft_params` M parameters against AMB's {glue:text}`abl_amb_params` M.
# - **Adapters against fine-tuning (MISA).** {glue:text}`abl_misa_ft_verdict`
# - **AMB against the baselines.** {glue:text}`abl_misa_verdict`; {glue:text}`abl_mag_bert_verdict`;
#   {glue:text}`abl_misa_adapters_verdict`
# - **Cells that learn nothing.** {glue:text}`abl_non_learners`.
# - **Training budget.** Runs whose best epoch was their last one were still improving when
#   the preset's {glue:text}`abl_max_epochs` epochs ran out: {glue:text}`abl_budget`.
#
# Seeds per cell: {glue:text}`abl_n_seeds`.

# %% tags=["hide-input"]
synthetic = bool(summary["is_synthetic"].all())
reading = {f"abl_{key.replace('-', '_')}_verdict": text
           for key, text in report.ablation_verdicts(summary, family, synthetic).items()}
params = summary.set_index("cell")["trainable_params_m"].map("{:.2f}".format)
reading |= {
    "abl_ft_params": params.get("amb-ft", "n/a"), "abl_amb_params": params.get("amb", "n/a"),
    "abl_non_learners": report.non_learner_sentence(summary),
    "abl_max_epochs": str(cfg.max_epochs),
    "abl_budget": report.budget_sentence(runs_frame, cfg.max_epochs),
    "abl_n_seeds": ", ".join(f"{c} {n}" for c, n in zip(summary["cell"], summary["n_seeds"])),
}
for key, value in reading.items():  # each key glued exactly once
    glue(key, value, display=False)

# %% [markdown]
# ## The controls of the test
#
# Two controls on real runs check the test where the answer is known without it. The
# *negative* control trains AMB with its audio-visual features permuted across utterances, so
# they carry nothing about the label or the text; it must not be called different from
# AMB text-only. The *positive* control is the planted text signal: AMB without text must be
# called different from AMB. Each is tested alone on MAE at 0.05.

# %% tags=["hide-input"]
names = dict(zip(summary["cell"], summary["row_name"]))
controls = report.control_outcomes(predictions, names)
display(numbered_table(controls, f"Controls of the test ({source})", name="tbl-controls", digits=3))
for _, c in controls.iterrows():
    print(f"{c['control']} control ({c['a']} against {c['b']}, expected {c['expected']}): {c['outcome']}")

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
# changing only that choice; the default's row is the AMB cell's runs above. Each alternative
# takes AMB's tuned values. The comparisons form family (2): each alternative against the
# default on every metric, Holm-adjusted together.

# %% tags=["hide-input"]
design = experiments.design_spec(preset, n_seeds=n_seeds or None, shared=shared, runs_dir=runs_dir or None)
design_outcomes = experiments.train_spec(design, parallel=parallel, collect_only=collect_only)

# %% tags=["hide-input"]
from ambcore.runs import atomic_write_text

design_runs = report.collect_runs(runs_path)
design_runs = design_runs[design_runs["cell"].isin(experiments.DESIGN_CELLS)].reset_index(drop=True)
design_preds = stats.available_predictions(design_runs, runs_path)
design_family = experiments.design_family(design_preds, design_runs)
study = experiments.design_study(report.summarize(design_runs), design_family, synthetic)
_ = atomic_write_text(results_path / "design_study.csv", study.to_csv(index=False))
caption = f"Choices the thesis leaves open: test metrics, mean ± std over seeds ({source})"
display(numbered_table(study.drop(columns=["verdict"]), caption, name="tbl-design-study", digits=3))
for sentence in study["verdict"][study["verdict"] != ""]:
    print(sentence)
