"""Report tables (ambcore.report) built from run folders that the tests write.

The run folders have the layout train_and_evaluate writes (config.json, env.json, sweep.json,
metrics.json from ambcore.metrics on generated predictions, DONE); every expected number is
recomputed from those predictions or read from the reference CSV, never typed.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

from ambcore import runs, stats
from ambcore.config import get_config
from ambcore.errors import AmbError
from ambcore.metrics import sentiment_metrics
from ambcore.report import (
    ABLATION_FAMILY,
    COMPACT_COLUMNS,
    ablation_family,
    ablation_verdicts,
    acc7_vs_params,
    add_statistics,
    budget_sentence,
    cited_rows,
    collect_runs,
    compact_table,
    control_outcomes,
    format_table,
    headline_mae,
    learns,
    non_learner_sentence,
    non_learners,
    row_name,
    summarize,
    table_6_1,
    table_6_2,
    table_caption,
    table_verdicts,
    thesis_display_name,
    thesis_rows,
    thesis_table_page,
    verdicts_from_table,
    write_report,
)

DATA_NAME = "SYNTHETIC MOSEI-shaped (seed 1234)"
# cell -> (config overrides, trainable parameters, prediction noise level)
CELLS = {
    "amb": (dict(model="amb"), 8_600, 0.3),
    "amb-ft": (
        dict(model="amb", text_adaptation="finetune", finetune_layers="last:1"),
        47_200,
        0.6,
    ),
    "misa": (dict(model="misa", text_adaptation="finetune"), 47_100, 0.5),
    "amb-no-text": (dict(model="amb", variant="no-text"), 8_600, 2.0),
}
SEEDS = (0, 1, 2, 3, 4)


def write_run(root, cell, overrides, n_params, noise, seed, done=True, sweep=True):
    """A run folder as train_and_evaluate leaves it; returns its test metrics."""
    cfg = get_config("smoke", seed=seed, **overrides)
    run_dir = root / cell / f"seed{seed}"
    rng = np.random.default_rng(zlib.crc32(f"{cell}/{seed}".encode()))
    metrics, labels_of = {}, {}
    for split, n in (("valid", 60), ("test", 80)):
        # every run of every cell predicts the same test utterances (as on a real split)
        labels = np.random.default_rng(7) if split == "test" else rng
        y_true = np.round(labels.uniform(-3, 3, n) * 3) / 3
        y_pred = y_true + rng.normal(0, noise, n)
        metrics[split] = sentiment_metrics(y_pred, y_true)
        labels_of[split] = y_true
    # the mean-label predictor (training labels are centred: their mean is 0) on valid
    with warnings.catch_warnings():  # a constant has no correlation; the MAE is what counts
        warnings.simplefilter("ignore", RuntimeWarning)
        metrics["valid_baseline_train_mean"] = sentiment_metrics(np.zeros(60), labels_of["valid"])
    runs.write_csv(
        run_dir / "test_predictions.csv",
        [{"id": f"t{i}", "y_true": t, "y_pred": p} for i, (t, p) in enumerate(zip(y_true, y_pred))],
        ("id", "y_true", "y_pred"),
    )
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    runs.write_json(run_dir / "env.json", {"plm": {"name": cfg.plm, "random_init": True}})
    if sweep:
        runs.write_json(run_dir / "sweep.json", {"cell": cell, "seed": seed})
    runs.write_json(
        run_dir / "metrics.json",
        {
            **metrics,
            "data": DATA_NAME,
            "is_synthetic": True,
            "plm": cfg.plm,
            "model": cfg.model,
            "n_trainable_params": n_params,
            "best_epoch": 2,
            "epochs_run": 3,
        },
    )
    if done:
        runs.write_json(run_dir / "DONE", {})
    return metrics["test"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("runs")
    expected = {}
    for cell, (overrides, n_params, noise) in CELLS.items():
        for seed in SEEDS:
            expected[(cell, seed)] = write_run(tmp_path, cell, overrides, n_params, noise, seed)
    write_run(tmp_path, "killed", dict(model="amb"), 8_600, 0.3, 0, done=False)
    write_run(
        tmp_path / "adhoc",
        "mag",
        dict(model="mag-bert", text_adaptation="finetune"),
        110_800,
        0.4,
        5,
        sweep=False,
    )
    return tmp_path, expected


def test_row_names_follow_the_thesis():
    assert row_name("amb", "adapters") == "AMB"
    assert row_name("amb", "finetune") == "AMB-FT"
    assert row_name("amb", "adapters", "text-only") == "AMB text-only"
    assert row_name("misa", "finetune") == "MISA (FT)"
    assert row_name("misa", "adapters") == "MISA-Adapters"
    assert row_name("mag-bert", "finetune") == "MAG-BERT (FT)"
    # every model the thesis reran has a name our runs can produce
    ours = {
        row_name(m, a, v)
        for m in ("amb", "misa", "mag-bert")
        for a in ("adapters", "finetune")
        for v in ("full", "text-only", "no-text")
    }
    thesis = thesis_rows()
    assert {
        thesis_display_name(m, a) for m, a in zip(thesis["model"], thesis["text_adaptation"])
    } <= ours


def test_collect_runs_reads_every_finished_run(runs_dir):
    root, expected = runs_dir
    frame = collect_runs(root)
    assert len(frame) == len(CELLS) * len(SEEDS) + 1  # the killed run (no DONE) is left out
    assert "killed" not in set(frame["cell"])
    adhoc = frame[frame["run"] == "adhoc/mag/seed5"].iloc[0]
    assert adhoc["cell"] == "adhoc/mag/seed5" and adhoc["row_name"] == "MAG-BERT (FT)"
    row = frame[(frame["cell"] == "amb-ft") & (frame["seed"] == 1)].iloc[0]
    assert row["row_name"] == "AMB-FT" and row["finetune_layers"] == "last:1"
    assert row["plm"] == "tiny random BERT" and row["data"] == DATA_NAME and row["is_synthetic"]
    assert row["trainable_params_m"] == pytest.approx(0.0472)
    for key in ("mae", "corr", "acc7", "acc2_non0", "f1_has0"):
        assert row[f"test_{key}"] == pytest.approx(expected[("amb-ft", 1)][key])


def test_summarize_mean_and_std_over_seeds(runs_dir):
    root, expected = runs_dir
    summary = summarize(collect_runs(root)).set_index("cell")
    assert summary.loc["amb", "n_seeds"] == 5 and summary.loc["amb", "seeds"] == "0,1,2,3,4"
    for cell in CELLS:
        for key in ("mae", "corr", "acc7"):
            values = np.array([expected[(cell, s)][key] for s in SEEDS])
            assert summary.loc[cell, f"test_{key}_mean"] == pytest.approx(values.mean())
            assert summary.loc[cell, f"test_{key}_std"] == pytest.approx(values.std(ddof=1))
    assert np.isnan(summary.loc["adhoc/mag/seed5", "test_mae_std"])  # one seed: no std


def test_summarize_refuses_seeds_of_different_models(runs_dir):
    root, _ = runs_dir
    frame = collect_runs(root)
    frame.loc[(frame["cell"] == "amb") & (frame["seed"] == 2), "trainable_params_m"] = 1.0
    with pytest.raises(AmbError, match="cell 'amb'.*different trainable parameter counts"):
        summarize(frame)


def test_table_6_1_puts_our_rows_beside_the_thesis_and_cited_rows(runs_dir):
    root, expected = runs_dir
    summary = summarize(collect_runs(root))
    table = table_6_1(summary)
    cited = table[table["Source"].str.startswith("cited in thesis table 6.1")]
    literature = cited_rows("6.1")
    assert list(cited["Model"]) == [
        f"{m} ({f})" for m, f in zip(literature["model"], literature["text_features"])
    ]
    assert list(cited["Acc-7 (%)"]) == list(literature["acc7"])
    assert list(cited["MAE"]) == list(literature["mae"])
    assert list(cited["Reference"]) == list(literature["citation"])
    thesis = table[table["Source"].str.startswith("thesis table 6.1")]
    reference = thesis_rows("6.1")
    assert list(thesis["Model"]) == ["MAG-BERT (FT)", "MISA (FT)", "AMB"]
    assert list(thesis["Corr"]) == list(reference["corr"])
    assert list(thesis["Trainable params (M)"]) == list(reference["trainable_params_m"])
    assert set(table[~table["Source"].str.startswith("this")]["Data"]) == {"CMU-MOSEI"}

    ours = table[table["Source"].str.startswith("this book")]
    assert list(ours["Model"]) == ["MAG-BERT (FT)", "MISA (FT)", "AMB"]  # thesis order
    # each of our rows follows the thesis row of the same model
    models = list(table["Model"])
    assert models[models.index("AMB") + 1] == "AMB" and models.index("AMB") > models.index(
        "ICCN (B)"
    )
    assert models[models.index("MISA (FT)") + 1] == "MISA (FT)"
    amb = ours[ours["Model"] == "AMB"].iloc[0]
    acc7 = np.array([expected[("amb", s)]["acc7"] for s in SEEDS]) * 100
    assert amb["Acc-7 (%)"] == pytest.approx(acc7.mean())
    assert amb["Acc-7 (%) std"] == pytest.approx(acc7.std(ddof=1))
    f1 = np.array([expected[("amb", s)]["f1_non0"] for s in SEEDS]) * 100
    assert amb["F1 (%)"] == pytest.approx(f1.mean())
    assert amb["Data"] == DATA_NAME and "tiny random BERT" in amb["PLM / text features"]
    assert amb["n seeds"] == 5 and amb["Acc-2/F1 convention"].startswith("non-0")
    has0 = table_6_1(summary, acc2="has0")
    acc2 = np.array([expected[("amb", s)]["acc2_has0"] for s in SEEDS]) * 100
    assert has0[has0["Source"].str.startswith("this") & (has0["Model"] == "AMB")][
        "Acc-2 (%)"
    ].item() == pytest.approx(acc2.mean())


def test_table_6_2_matches_misa_and_missing_modalities(runs_dir):
    root, _ = runs_dir
    table = table_6_2(summarize(collect_runs(root)))
    ours = table[table["Source"].str.startswith("this book")]
    assert set(ours["Model"]) == {"AMB no-text", "MISA (FT)", "AMB-FT", "AMB"}
    models = list(table["Model"])
    assert models[models.index("MISA (FT)") + 1] == "MISA (FT)"  # thesis' "MISA" is fine-tuned
    assert table["Source"].iloc[models.index("MISA (FT)")].startswith("thesis table 6.2")
    assert models[models.index("AMB-FT") + 1] == "AMB-FT"
    assert table["Source"].str.startswith("thesis table 6.2").sum() == len(thesis_rows("6.2"))


def test_format_table_and_write_report(runs_dir, tmp_path_factory):
    root, _ = runs_dir
    summary = summarize(collect_runs(root))
    shown = format_table(table_6_1(summary))
    amb = shown[shown["Source"].str.startswith("this") & (shown["Model"] == "AMB")].iloc[0]
    assert " ± " in amb["MAE"] and " ± " in amb["Acc-7 (%)"] and amb["n seeds"] == "5"
    thesis_amb = shown[shown["Source"].str.startswith("thesis") & (shown["Model"] == "AMB")].iloc[0]
    assert "±" not in thesis_amb["MAE"]
    assert shown[shown["Model"] == "ICCN (B)"]["Trainable params (M)"].item() == "–"

    out = tmp_path_factory.mktemp("report")
    written = write_report(root, out)
    assert set(written) == {"runs", "summary", "table_6_1", "table_6_2", "figure_6_2_points"}
    reread = pd.read_csv(written["table_6_1"])
    assert list(reread["Model"]) == list(table_6_1(summary)["Model"])
    assert len(pd.read_csv(written["runs"])) == len(CELLS) * len(SEEDS) + 1


def test_figure_6_2_points(runs_dir):
    root, _ = runs_dir
    points = acc7_vs_params(summarize(collect_runs(root)))
    assert set(points["source"]) == {"this book", "thesis", "cited"}
    ours = points[points["source"] == "this book"]
    assert (ours["data"] == DATA_NAME).all() and len(ours) == len(CELLS) + 1


def test_empty_and_missing_runs_folders(tmp_path):
    assert summarize(collect_runs(tmp_path)).empty
    table = table_6_1(summarize(collect_runs(tmp_path)))
    assert not table["Source"].str.startswith("this").any() and len(table) == 9
    with pytest.raises(AmbError, match="does not exist"):
        collect_runs(tmp_path / "nope")


def test_learns_against_the_mean_label_predictor():
    assert learns(0.80, 1.00) is True
    assert learns(0.995, 1.00) is False  # within the margin: not learning
    assert learns(1.10, 1.00) is False
    assert learns(float("nan"), 1.0) is None and learns(0.5, float("nan")) is None


def test_non_learners_are_computed_and_marked(runs_dir):
    root, _ = runs_dir
    frame = collect_runs(root)
    summary = summarize(frame).set_index("cell")
    for cell in CELLS:  # recomputed from the run folders' numbers
        runs_of = frame[frame["cell"] == cell]
        beats = runs_of["valid_mae"].mean() < 0.99 * runs_of["valid_baseline_mae"].mean()
        assert summary.loc[cell, "learns"] == beats
    assert summary.loc["amb", "learns"] and not summary.loc["amb-no-text", "learns"]  # noise 2.0
    summary = summary.reset_index()
    assert non_learners(summary) == ["AMB no-text"]
    shown = compact_table(table_6_2(summary))
    assert (shown["Model"] == "AMB no-text †").sum() == 1  # ours only, not the thesis' row
    assert (shown["Model"].str.endswith("†")).sum() == 1
    written = pd.read_csv(write_report(root, tmp_path_of(root))["table_6_2"])
    assert (compact_table(written)["Model"] == "AMB no-text †").sum() == 1  # survives the CSV
    sentences = verdicts_from_table(written)  # what the Results chapter says, from the CSV
    assert sentences[-1] == "AMB no-text did not beat the mean-label predictor on validation (†)"
    assert any(s.startswith("AMB's MAE is lower than AMB no-text's") for s in sentences)
    assert len(sentences) == 4  # three tested rows and the non-learner
    amb = written[written["Source"].str.startswith("this book") & (written["Model"] == "AMB")].iloc[
        0
    ]
    headline = headline_mae(written)
    assert f"{amb['MAE']:.3f} ± {amb['MAE std']:.3f} over 5 seeds" in headline
    assert f"[{amb['MAE lo']:.3f}, {amb['MAE hi']:.3f}]" in headline and DATA_NAME in headline


def tmp_path_of(root):
    out = root.parent / f"{root.name}-report"
    out.mkdir(exist_ok=True)
    return out


def test_tables_carry_intervals_and_holm_adjusted_paired_tests(runs_dir):
    root, _ = runs_dir
    frame = collect_runs(root)
    preds = stats.available_predictions(frame, root)
    family = ablation_family(preds, frame, n_boot=300)
    summary = add_statistics(summarize(frame), preds, n_boot=300, family=family)
    cells = summary.set_index("cell")
    for cell in CELLS:
        assert (
            cells.loc[cell, "test_mae_lo"]
            < cells.loc[cell, "test_mae_mean"]
            < cells.loc[cell, "test_mae_hi"]
        )
    # table 6.2: AMB against AMB-FT, MISA (FT) and AMB no-text, Holm across the chapter's
    # family (every pair, every metric); the same numbers as the family's rows, in both tables
    p = cells[["p_6_2", "p_holm_6_2"]].dropna()
    assert set(p.index) == {"amb-ft", "misa", "amb-no-text"}
    mae = family[(family["metric"] == "mae") & (family["a"] == "amb")].set_index("b")
    assert list(p["p_holm_6_2"]) == list(mae.loc[p.index, "p_holm"])
    assert family["p_holm"].dropna().tolist() == pytest.approx(
        list(stats.holm(family["p"].dropna()))
    )
    assert cells.loc["misa", "p_holm_6_1"] == cells.loc["misa", "p_holm_6_2"]
    assert (
        cells.loc["amb-no-text", "mae_diff_hi_6_2"] < 0
        and cells.loc["amb-no-text", "p_holm_6_2"] < 0.01
    )
    amb_mae = cells.loc["amb", "test_mae_mean"]
    assert cells.loc["misa", "mae_diff_6_2"] == pytest.approx(
        amb_mae - cells.loc["misa", "test_mae_mean"]
    )
    # table 6.1: MAG-BERT's only run is seed 5, AMB has 0-2: nothing to pair, no p-value
    assert np.isnan(cells.loc["adhoc/mag/seed5", "p_6_1"])
    sentences = table_verdicts(summary.reset_index(drop=True), "6.2")
    assert any(s.startswith("AMB's MAE is lower than AMB no-text's") for s in sentences)
    assert len(sentences) == 3

    table = table_6_2(summary)
    ours = table[table["Source"].str.startswith("this book")].set_index("Model")
    assert ours.loc["AMB no-text", "p vs AMB (Holm)"] == cells.loc["amb-no-text", "p_holm_6_2"]
    assert ours.loc["AMB", "MAE lo"] == cells.loc["amb", "test_mae_lo"]
    assert ours.loc["AMB", "Acc-7 (%) hi"] == pytest.approx(100 * cells.loc["amb", "test_acc7_hi"])
    shown = compact_table(table)
    assert list(shown.columns) == list(COMPACT_COLUMNS)  # no per-row data / PLM / convention
    amb = shown[(shown["Model"] == "AMB") & (shown["Source"] == "ours")].iloc[0]
    assert "±" in amb["MAE"] and "[" in amb["MAE"]
    assert shown["ΔMAE vs AMB [95 % CI]"].str.len().max() <= 24
    caption = table_caption(table, "Thesis table 6.2 beside our runs")
    assert caption.count(DATA_NAME) == 1 and "Holm" in caption and "†" in caption
    page, page_caption, theirs, theirs_caption, verdicts = thesis_table_page(summary, "6.2")
    assert page.equals(
        compact_table(table[table["Source"].str.startswith("this book")].reset_index(drop=True))
    )
    assert set(page["Source"]) == {"ours"} and set(theirs["Source"]) <= {"thesis", "cited"}
    assert DATA_NAME in page_caption and "CMU-MOSEI" in theirs_caption
    assert DATA_NAME not in theirs_caption and "CMU-MOSEI" not in page_caption
    assert verdicts == ("; ".join(table_verdicts(summary, "6.2")) or "no test")
    with pytest.raises(ValueError, match="no thesis table '6.3'"):
        thesis_table_page(summary, "6.3")


def test_ablation_verdicts_are_computed_from_the_family(runs_dir):
    root, _ = runs_dir
    frame = collect_runs(root)
    summary = summarize(frame)
    preds = stats.available_predictions(frame, root)
    family = ablation_family(preds, frame, n_boot=300)
    assert len(family) == len(ABLATION_FAMILY) * len(stats.METRICS)
    text = ablation_verdicts(summary, family, synthetic=True)
    assert set(text) == {key for key, *_ in ABLATION_FAMILY}
    assert "no finished runs" in text["tav"] and "no finished runs" in text["misa-ft"]
    assert text["notext"].startswith("AMB's MAE is lower than AMB no-text's")
    assert (
        "[planted:" in text["notext"] and "[not planted: no evidence about CMU-MOSEI]" in text["ft"]
    )
    assert (
        "MAE per seed: AMB" in text["ft"]
        and "seed pairs" in text["ft"]
        and "validation difference" in text["ft"]
    )
    row = family[(family["key"] == "ft") & (family["metric"] == "mae")].iloc[0]
    assert f"Holm-adjusted p = {stats._p(row['p_holm'])}" in text["ft"]
    assert "Corr" in text["ft"] and "Acc-7" in text["ft"]
    assert "planted" not in ablation_verdicts(summary, family, synthetic=False)["ft"]
    assert "AMB no-text did not beat the mean-label predictor" in non_learner_sentence(summary)
    assert non_learner_sentence(summary[summary["cell"] == "amb"]).startswith("every cell beats")


def test_controls_pass_or_fail_on_the_test(runs_dir):
    root, _ = runs_dir
    frame = collect_runs(root)
    preds = stats.available_predictions(frame, root)
    names = dict(zip(frame["cell"], frame["row_name"]))
    shuffled = {s: f.copy() for s, f in preds["amb"].items()}
    out = control_outcomes(
        {**preds, "amb-shuffled-av": shuffled, "amb-text-only": preds["amb"]}, names
    )
    by = out.set_index("control")
    assert by.loc["positive", "outcome"] == "pass" and by.loc["positive", "called different"]
    assert by.loc["negative", "outcome"] == "pass"  # the same predictions: not different
    wrong = control_outcomes(
        {**preds, "amb-shuffled-av": preds["amb-no-text"], "amb-text-only": preds["amb"]}, names
    )
    assert wrong.set_index("control").loc["negative", "outcome"] == "FAIL"
    assert control_outcomes({}, names)["outcome"].eq("not run").all()


def test_budget_sentence_names_runs_still_improving():
    frame = pd.DataFrame(
        {"row_name": ["AMB", "AMB", "MISA (FT)"], "best_epoch": [3, 2, 3], "epochs_run": [3, 3, 3]}
    )
    assert budget_sentence(frame, 3).startswith("AMB 1 of 2 runs, MISA (FT) 1 of 1 runs;")
    assert budget_sentence(frame, 5).startswith("none")  # stopped early, not out of budget
