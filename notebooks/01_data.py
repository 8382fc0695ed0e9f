# %% [markdown]
# # Data
#
# The thesis evaluates AMB on CMU-MOSEI (section 6.3.1): YouTube opinion clips annotated with
# a sentiment score in [-3, 3], with word-aligned visual (FACET, 35-d) and acoustic (COVAREP,
# 74-d) features. This chapter shows what a researcher checks first about the dataset that
# every later chapter trains on: which dataset it is, the split sizes, the label
# distribution, the sequence lengths, a few utterances with their features, and every repair
# the loader made.
#
# `ambcore.data.load_dataset` reads the layouts users have: MMSA's `aligned_50.pkl` /
# `unaligned_50.pkl`, and the `mosei.pkl` of MAG-BERT and MISA (the layout is detected from the
# file). Pickles are read with a restricted unpickler that admits numpy arrays and plain Python
# containers only, so a file carrying code is refused before anything in it runs. NaN and
# ±inf feature values are replaced by 0 and counted. The same report from a terminal:
#
# ```bash
# python -m ambcore data inspect synthetic            # or a path, e.g. $AMB_DATA
# python -m ambcore data inspect aligned_50.pkl --json
# python -m ambcore data synth --out mosei_sized.pkl --n-train 16326 --n-valid 1871 --n-test 4659
# ```

# %% tags=["parameters"]
import os

preset = os.environ.get("AMB_PRESET", "embedded")  # smoke | embedded | paper
data = ""  # empty: the preset's data ("synthetic"; the paper preset reads AMB_DATA); or a path
seed = 0  # picks the example utterances shown below
n_train = None  # synthetic sizes; None: the preset's (synthetic_n_train, ...)
n_valid = None
n_test = None
synthetic_seed = None  # None: the preset's synthetic_seed

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from myst_nb import glue

from ambcore.data import figures, load_dataset
from ambcore.data import report as data_report
from ambcore.pages import banner, config_from_parameters

overrides = data_report.synthetic_overrides(n_train, n_valid, n_test, synthetic_seed)
cfg = config_from_parameters(preset, data, "", seed, **overrides)
dataset = load_dataset(cfg.data, cfg)
report = data_report.describe(dataset)
display(banner(cfg))
display(Markdown(data_report.dataset_notice(dataset)))

# %% [markdown]
# ## Which dataset, and its splits

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
print(data_report.headline(report))
display(data_report.sizes_table(report))

# %% tags=["hide-input"]
for name, value in data_report.glue_values(dataset, report).items():
    glue(name, value, display=False)

# %% [markdown]
# CMU-MOSEI in the MMSA files has 16,326 / 1,871 / 4,659 utterances (MAG-BERT's and MISA's
# files: 16,265 / 1,869 / 4,643). The embedded preset uses a smaller synthetic dataset so that
# one training run takes about a minute on a laptop CPU.
#
# ## Labels
#
# Accuracy over seven classes (Acc-7) rounds each label to the nearest integer after clipping
# it to [-3, 3] (`np.round`, half to even, as MMSA's metrics do), so the histogram below uses
# the same bins. MOSEI's annotations are averages of three annotators, so labels fall on
# thirds.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
display(data_report.label_table(report))

# %% tags=["hide-input"]
figures.label_figure(dataset)
plt.show()

# %% tags=["hide-input"]
display(Markdown(data_report.label_skew_note(dataset)))

# %% [markdown]
# ## Sequence lengths
#
# Word-aligned layouts have one visual and one acoustic step per word; unaligned layouts keep
# the features' own frame rates. Batches are padded to their longest member, not to a fixed
# 50 (see `ambcore.data.collate`).

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
display(data_report.length_table(report))

# %% tags=["hide-input"]
figures.length_figure(dataset)
plt.show()

# %% [markdown]
# ## A few utterances and their features
#
# Each heatmap shows one utterance's feature sequence (time along x, feature dimension along
# y), each dimension standardised with the training split's mean and standard deviation so
# that dimensions of different scales can be compared by eye.

# %% tags=["hide-input"]
test_split = dataset["test"]
for index in data_report.example_utterances(test_split.labels, seed):  # low, drawn, high
    display(Markdown(data_report.utterance_line(test_split, index)))
    figures.utterance_figure(dataset, index, "test")
    plt.show()

# %% [markdown]
# ## Which feature dimensions follow the label?
#
# The correlation of each dimension's utterance mean with the label on the training split.
# On CMU-MOSEI this is a first look at which facial and vocal features carry sentiment; on the
# synthetic data it recovers the planted informative dimensions.

# %% tags=["hide-input"]
figures.correlation_figure(dataset)
plt.show()

# %% [markdown]
# ## Repairs
#
# Every change the loader made to the data, by split and modality. Real COVAREP features
# contain `-inf` on some frames; MMSA replaces them with 0 silently, this loader counts them.

# %% tags=["hide-input"]
# NBVAL_CHECK_OUTPUT
display(data_report.repairs_table(report))

# %% [markdown]
# A repeated id within a split is one of the repairs (its later occurrences get a suffix, since
# the paired statistics match predictions by id); an id in more than one split is kept and
# reported here as possible leakage.

# %% tags=["hide-input"]
display(Markdown(data_report.shared_ids_note(report)))

# %% [markdown]
# ## What the synthetic dataset is, and what it is not
#
# CMU-MOSEI cannot be redistributed, so the book's default chapters run on a synthetic,
# MOSEI-shaped dataset (`ambcore.data.synthetic`) whose ground truth is known. Its utterances
# are English sentences composed from a lexicon of opinion words with valences, intensifiers,
# negation, "X but Y" contrast and neutral filler, so the pretrained language model has real
# language to understand. A few visual and acoustic dimensions carry the sentiment that the
# speaker expresses (acoustic more weakly than visual), the rest are distractors, and some
# acoustic frames are `-inf` like real COVAREP features. The label follows the words for most
# utterances; for a minority (ironic utterances, and neutral words said with a clearly
# positive or negative face and voice) only face and voice reveal it.
#
# **The outcomes of the later chapters on this dataset are designed in**: text + audio +
# visual should beat text-only, text-only should be close behind, and a model without text
# should be far worse. Seeing those outcomes validates the pipeline (data, model, training,
# evaluation); it is not evidence about CMU-MOSEI, and no number on a page marked SYNTHETIC
# should be compared with the thesis' tables as if it were.

# %% tags=["hide-input"]
if dataset.is_synthetic:
    display(data_report.synthetic_design_table())
