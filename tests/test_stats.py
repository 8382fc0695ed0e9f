"""Bootstrap intervals, paired tests, Holm's correction and verdicts (ambcore.stats) on
synthetic predictions whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ambcore import stats
from ambcore.errors import AmbError
from ambcore.metrics import sentiment_metrics


def _labels(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.normal(0, 1.5, n) * 3) / 3, -3, 3)


def _cell(y, noise, seeds=(0, 1, 2), bias=0.0, base=100):
    """seed -> predictions: labels plus independent noise of std ``noise`` per seed."""
    out = {}
    for s in seeds:
        rng = np.random.default_rng(base + s)
        out[s] = pd.DataFrame({"id": [f"u{i}" for i in range(y.size)], "y_true": y,
                               "y_pred": y + bias + rng.normal(0, noise, y.size)})  # fmt: skip
    return out


def test_estimate_is_the_mean_over_seeds_of_the_metrics():
    y = _labels()
    cell = _cell(y, 0.8)
    ci = stats.bootstrap_ci(cell, n_boot=200)
    for metric in stats.CI_METRICS:
        expected = np.mean([sentiment_metrics(f["y_pred"], f["y_true"])[metric]
                            for f in cell.values()])  # fmt: skip
        assert ci[metric]["estimate"] == pytest.approx(expected, abs=1e-9)
        assert ci[metric]["lo"] <= ci[metric]["estimate"] <= ci[metric]["hi"]


def test_bootstrap_is_deterministic_and_seeded():
    y = _labels()
    cell = _cell(y, 0.8)
    assert stats.bootstrap_ci(cell, n_boot=200, seed=3) == stats.bootstrap_ci(cell, n_boot=200, seed=3)
    assert stats.bootstrap_ci(cell, n_boot=200, seed=3) != stats.bootstrap_ci(cell, n_boot=200, seed=4)


def test_interval_covers_the_true_mae_about_95_percent_of_the_time():
    # Errors ~ N(0, 1): the population MAE is sqrt(2/pi). Over many independent test sets the
    # 95 % interval should contain it in roughly 95 % of them.
    truth = np.sqrt(2 / np.pi)
    hits = 0
    n_sets = 200
    for k in range(n_sets):
        y = np.zeros(200)
        rng = np.random.default_rng(1000 + k)
        cell = {0: pd.DataFrame({"id": [str(i) for i in range(200)], "y_true": y,
                                 "y_pred": rng.normal(0, 1, 200)})}  # fmt: skip
        ci = stats.bootstrap_ci(cell, n_boot=300, seed=k)["mae"]
        hits += ci["lo"] <= truth <= ci["hi"]
    assert 0.88 <= hits / n_sets <= 0.99


def test_interval_narrows_with_more_utterances():
    small = stats.bootstrap_ci(_cell(_labels(100), 0.8), n_boot=300)["mae"]
    large = stats.bootstrap_ci(_cell(_labels(1600), 0.8), n_boot=300)["mae"]
    assert (large["hi"] - large["lo"]) < 0.5 * (small["hi"] - small["lo"])


def test_identical_models_are_not_distinguishable():
    y = _labels()
    a = _cell(y, 0.8)
    r = stats.paired_test(a, {s: f.copy() for s, f in a.items()}, n_perm=2000)
    assert r.diff == 0.0 and r.p_value == 1.0
    assert r.seeds == (0, 1, 2)


def test_models_of_equal_quality_give_a_large_p_value():
    y = _labels()
    r = stats.paired_test(_cell(y, 0.8, base=100), _cell(y, 0.8, base=200), n_perm=2000)
    assert r.p_value > 0.05
    assert r.lo < 0 < r.hi


def test_a_clearly_better_model_gives_a_small_p_value_and_a_negative_difference():
    y = _labels()
    better, worse = _cell(y, 0.3), _cell(y, 1.2)
    r = stats.paired_test(better, worse, n_perm=2000)
    assert r.p_value < 0.001
    assert r.hi < 0 and r.lo <= r.diff <= r.hi
    mae = lambda c: np.mean([np.abs(f["y_pred"] - f["y_true"]).mean() for f in c.values()])  # noqa: E731
    assert r.diff == pytest.approx(mae(better) - mae(worse))


def test_seeds_are_matched_and_utterance_order_does_not_matter():
    y = _labels()
    a, b = _cell(y, 0.5, seeds=(0, 1, 2)), _cell(y, 0.9, seeds=(1, 2, 5))
    shuffled = {s: f.sample(frac=1.0, random_state=s) for s, f in b.items()}
    r1 = stats.paired_test(a, b, n_perm=500)
    r2 = stats.paired_test(a, shuffled, n_perm=500)
    assert r1.seeds == (1, 2)
    assert r1 == r2
    with pytest.raises(AmbError, match="no common seed"):
        stats.paired_test(_cell(y, 0.5, seeds=(0,)), _cell(y, 0.5, seeds=(1,)))


def test_different_test_utterances_are_refused():
    y = _labels()
    a, b = _cell(y, 0.5), _cell(y, 0.5)
    b[0] = b[0].iloc[1:]
    with pytest.raises(AmbError, match="test utterances differ"):
        stats.paired_test(a, b)


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    nan = stats.holm([0.01, float("nan"), 0.02])
    assert np.isnan(nan[1]) and nan[[0, 2]] == pytest.approx([0.02, 0.02])


def test_compare_to_adjusts_across_rows_and_verdicts_follow_the_test():
    y = _labels()
    amb = _cell(y, 0.4)
    # errors of the same size, the other way round: equally good, a different model
    mirrored = {s: f.assign(y_pred=2 * f["y_true"] - f["y_pred"]) for s, f in amb.items()}
    preds = {"amb": amb, "same": mirrored, "worse": _cell(y, 1.2)}
    frame = stats.compare_to(preds, "amb", ["amb", "same", "worse", "absent"], n_perm=2000)
    assert list(frame["cell"]) == ["same", "worse"]
    assert frame["p_holm"].tolist() == pytest.approx(list(stats.holm(frame["p"])))
    rows = frame.set_index("cell")
    assert "is lower than worse's" in stats.verdict(rows.loc["worse"], "AMB", "worse")
    assert "not distinguishable" in stats.verdict(rows.loc["same"], "AMB", "same")
    assert "Holm-adjusted p = " in stats.verdict(rows.loc["same"], "AMB", "same")


def test_cell_intervals_reads_run_folders(tmp_path):
    y = _labels(50)
    cell = _cell(y, 0.5, seeds=(0, 1))
    records = []
    for seed, frame in cell.items():
        folder = tmp_path / f"amb/seed{seed}"
        folder.mkdir(parents=True)
        frame.to_csv(folder / "test_predictions.csv", index=False)
        records.append({"cell": "amb", "seed": seed, "run": f"amb/seed{seed}"})
    preds = stats.cell_predictions(pd.DataFrame(records), tmp_path)
    table = stats.cell_intervals(preds, n_boot=100)
    assert list(table["cell"]) == ["amb"]
    assert table.loc[0, "mae_lo"] < table.loc[0, "mae"] < table.loc[0, "mae_hi"]
    with pytest.raises(AmbError, match="test_predictions.csv is missing"):
        stats.read_predictions(tmp_path)


def test_a_cell_without_a_common_seed_is_not_tested():
    y = _labels()
    preds = {"amb": _cell(y, 0.4), "other": _cell(y, 1.2, seeds=(7,)), "worse": _cell(y, 1.2)}
    frame = stats.compare_to(preds, "amb", ["other", "worse"], n_perm=500).set_index("cell")
    assert np.isnan(frame.loc["other", "p_holm"]) and frame.loc["other", "n_seeds"] == 0
    assert frame.loc["worse", "p_holm"] == frame.loc["worse", "p"]  # a family of one
    assert "could not be compared" in stats.verdict(frame.loc["other"], "AMB", "other")


def test_verdict_names_read_as_english():
    row = {"diff": -0.1, "lo": -0.2, "hi": -0.05, "p_holm": 0.001}
    assert stats.verdict(row, "AMB", "MISA-Adapters").startswith(
        "AMB's MAE is lower than MISA-Adapters': difference -0.100 [-0.200, -0.050]")
