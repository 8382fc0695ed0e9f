"""The data chapter's tables, sentences and figures (ambcore.data.report, ambcore.data.figures)
on a small hand-made dataset whose every number is known."""

from __future__ import annotations

import numpy as np
import pytest

from ambcore.data import figures
from ambcore.data import report as data_report
from ambcore.data.types import MultimodalDataset, Split


def _split(name: str, labels: list[float], lengths: list[int], rng) -> Split:
    return Split(
        name=name,
        ids=[f"{name}{i}" for i in range(len(labels))],
        texts=[" ".join(["w"] * n) for n in lengths],
        visual=[rng.normal(size=(n, 3)).astype(np.float32) for n in lengths],
        acoustic=[rng.normal(size=(n, 2)).astype(np.float32) for n in lengths],
        labels=np.asarray(labels, dtype=np.float32),
        words=[["w"] * n for n in lengths],
    )


def _dataset(synthetic: bool = False, repairs: dict | None = None) -> MultimodalDataset:
    rng = np.random.default_rng(0)
    splits = {
        "train": _split("train", [-3.0, -1.0, 0.0, 0.4, 2.6], [2, 3, 4, 5, 6], rng),
        "valid": _split("valid", [1.0, -0.5], [3, 3], rng),
        "test": _split("test", [2.0, -2.0, 0.2, 1.4], [4, 2, 3, 5], rng),
    }
    return MultimodalDataset(
        name="hand-made",
        source="/x/hand.pkl",
        format="mmsa-aligned",
        splits=splits,
        visual_dim=3,
        acoustic_dim=2,
        is_synthetic=synthetic,
        repairs=repairs or {},
        fingerprint="abc",
    )


def test_tables_of_the_report():
    dataset = _dataset(repairs={"train/audio: -inf -> 0": 7})
    report = data_report.describe(dataset)
    sizes = data_report.sizes_table(report)
    assert sizes["utterances"].to_dict() == {"train": 5, "valid": 2, "test": 4}
    labels = data_report.label_table(report)
    # train: -3 -> -3, -1 -> -1, 0 -> 0, 0.4 -> 0, 2.6 -> 3
    assert labels.loc["train", ["-3", "-1", "+0", "+3", "+1"]].tolist() == [1, 1, 2, 1, 0]
    assert labels.loc["train", [">0", "=0", "<0"]].tolist() == [2, 1, 2]
    assert labels.loc["valid", "mean"] == pytest.approx(0.25)
    lengths = data_report.length_table(report)
    assert lengths.loc[("train", "words"), "max"] == 6
    assert lengths.loc[("test", "visual_steps"), "min"] == 2
    repairs = data_report.repairs_table(report)
    assert repairs["count"].to_dict() == {"train/audio: -inf -> 0": 7}
    none = data_report.repairs_table(data_report.describe(_dataset()))
    assert list(none["count"]) == [0] and none.index[0].startswith("none")
    assert data_report.headline(report).splitlines() == [
        "dataset: hand-made",
        "format:  mmsa-aligned, visual 3-d, acoustic 2-d",
    ]


def test_sentences_and_glued_values():
    dataset = _dataset()
    note = data_report.label_skew_note(dataset)
    assert "40% of the labels are positive and 40% negative (mean -0.20)" in note
    assert "negative or no skew" in note
    synthetic = data_report.label_skew_note(_dataset(synthetic=True))
    assert "**synthetic**" in synthetic and "designed in" in synthetic
    assert "not show CMU-MOSEI" in data_report.dataset_notice(_dataset(synthetic=True))
    assert "/x/hand.pkl" in data_report.dataset_notice(dataset)
    values = data_report.glue_values(dataset, data_report.describe(dataset))
    assert values["data_n_train"] == "5" and values["data_positive_pct"] == "40"
    assert values["data_label_mean"] == "-0.20" and values["data_av_only_pct"].startswith("n/a")
    assert data_report.synthetic_overrides(10, None, 3) == {
        "synthetic_n_train": 10,
        "synthetic_n_test": 3,
    }


def test_examples_correlations_and_design():
    labels = np.array([0.5, -2.0, 3.0, 1.0, 0.0])
    low, middle, high = data_report.example_utterances(labels, seed=0)
    assert (low, high) == (1, 2) and middle in (0, 3, 4)
    assert data_report.example_utterances(np.array([1.0, -1.0, 0.0]), seed=5) == [1, 2, 0]
    rng = np.random.default_rng(1)
    sequences = [rng.normal(size=(4, 3)) for _ in range(20)]
    y = rng.normal(size=20)
    means = np.stack([s.mean(0) for s in sequences])
    expected = [np.corrcoef(means[:, d], y)[0, 1] for d in range(3)]
    assert data_report.dimension_correlations(sequences, y) == pytest.approx(expected, abs=1e-6)
    mean, std = data_report.train_feature_stats([np.ones((2, 2)), np.zeros((2, 2))])
    assert mean.tolist() == [0.5, 0.5] and std == pytest.approx([0.5, 0.5], abs=1e-5)
    design = data_report.synthetic_design_table()
    assert design["share of utterances"].sum() == pytest.approx(1.0)
    assert design.loc["ironic", "label follows"] == "face and voice"


def test_figures_draw_every_panel():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = _dataset(synthetic=True)
    for fig, panels in (
        (figures.label_figure(dataset), 2),
        (figures.length_figure(dataset), 3),
        (figures.correlation_figure(dataset), 2),
    ):
        assert len([ax for ax in fig.axes if ax.get_title() or ax.get_xlabel()]) == panels
        plt.close(fig)
    fig = figures.utterance_figure(dataset, 0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["w"] * 4  # the words
    plt.close(fig)
