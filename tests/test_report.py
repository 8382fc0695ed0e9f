"""Report tables (ambcore.report) built from run folders that the tests write.

The run folders have the layout train_and_evaluate writes (config.json, env.json, sweep.json,
metrics.json from ambcore.metrics on generated predictions, DONE); every expected number is
recomputed from those predictions or read from the reference CSV, never typed.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from ambcore import runs
from ambcore.config import get_config
from ambcore.errors import AmbError
from ambcore.metrics import sentiment_metrics
from ambcore.report import (
    acc7_vs_params,
    cited_rows,
    collect_runs,
    format_table,
    row_name,
    summarize,
    table_6_1,
    table_6_2,
    thesis_display_name,
    thesis_rows,
    write_report,
)

DATA_NAME = "SYNTHETIC MOSEI-shaped (seed 1234)"
# cell -> (config overrides, trainable parameters, prediction noise level)
CELLS = {
    "amb": (dict(model="amb"), 8_600, 0.3),
    "amb-ft": (dict(model="amb", text_adaptation="finetune", finetune_layers="last:1"), 47_200, 0.6),
    "misa-ft": (dict(model="misa", text_adaptation="finetune"), 47_100, 0.5),
    "amb-no-text": (dict(model="amb", variant="no-text"), 8_600, 2.0),
}
SEEDS = (0, 1, 2)


def write_run(root, cell, overrides, n_params, noise, seed, done=True, sweep=True):
    """A run folder as train_and_evaluate leaves it; returns its test metrics."""
    cfg = get_config("smoke", seed=seed, **overrides)
    run_dir = root / cell / f"seed{seed}"
    rng = np.random.default_rng(zlib.crc32(f"{cell}/{seed}".encode()))
    metrics = {}
    for split, n in (("valid", 60), ("test", 80)):
        y_true = np.round(rng.uniform(-3, 3, n) * 3) / 3
        y_pred = y_true + rng.normal(0, noise, n)
        metrics[split] = sentiment_metrics(y_pred, y_true)
    runs.write_json(run_dir / "config.json", cfg.to_dict())
    runs.write_json(run_dir / "env.json", {"plm": {"name": cfg.plm, "random_init": True}})
    if sweep:
        runs.write_json(run_dir / "sweep.json", {"cell": cell, "seed": seed})
    runs.write_json(run_dir / "metrics.json", {
        **metrics, "data": DATA_NAME, "is_synthetic": True, "plm": cfg.plm, "model": cfg.model,
        "n_trainable_params": n_params, "best_epoch": 2, "epochs_run": 3,
    })  # fmt: skip
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
    write_run(tmp_path / "adhoc", "mag", dict(model="mag-bert", text_adaptation="finetune"),
              110_800, 0.4, 5, sweep=False)  # fmt: skip
    return tmp_path, expected


def test_row_names_follow_the_thesis():
    assert row_name("amb", "adapters") == "AMB"
    assert row_name("amb", "finetune") == "AMB-FT"
    assert row_name("amb", "adapters", "text-only") == "AMB text-only"
    assert row_name("misa", "finetune") == "MISA (FT)"
    assert row_name("misa", "adapters") == "MISA-Adapters"
    assert row_name("mag-bert", "finetune") == "MAG-BERT (FT)"
    # every model the thesis reran has a name our runs can produce
    ours = {row_name(m, a, v) for m in ("amb", "misa", "mag-bert")
            for a in ("adapters", "finetune") for v in ("full", "text-only", "no-text")}  # fmt: skip
    thesis = thesis_rows()
    assert {thesis_display_name(m, a) for m, a in zip(thesis["model"], thesis["text_adaptation"])} <= ours


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
    assert summary.loc["amb", "n_seeds"] == 3 and summary.loc["amb", "seeds"] == "0,1,2"
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
    assert list(cited["Model"]) == [f"{m} ({f})" for m, f in
                                    zip(literature["model"], literature["text_features"])]  # fmt: skip
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
    assert models[models.index("AMB") + 1] == "AMB" and models.index("AMB") > models.index("ICCN (B)")
    assert models[models.index("MISA (FT)") + 1] == "MISA (FT)"
    amb = ours[ours["Model"] == "AMB"].iloc[0]
    acc7 = np.array([expected[("amb", s)]["acc7"] for s in SEEDS]) * 100
    assert amb["Acc-7 (%)"] == pytest.approx(acc7.mean())
    assert amb["Acc-7 (%) std"] == pytest.approx(acc7.std(ddof=1))
    f1 = np.array([expected[("amb", s)]["f1_non0"] for s in SEEDS]) * 100
    assert amb["F1 (%)"] == pytest.approx(f1.mean())
    assert amb["Data"] == DATA_NAME and "tiny random BERT" in amb["PLM / text features"]
    assert amb["n seeds"] == 3 and amb["Acc-2/F1 convention"].startswith("non-0")
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
    assert " ± " in amb["MAE"] and " ± " in amb["Acc-7 (%)"] and amb["n seeds"] == "3"
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
