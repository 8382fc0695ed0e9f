"""Comparisons over runs and test videos, intervals, Holm's correction, verdicts and the
calibration of the test (ambcore.stats) on simulated predictions whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ambcore import stats
from ambcore.errors import AmbError
from ambcore.metrics import sentiment_metrics


def _split(n_videos=60, seed=0):
    return stats._simulated_test_split(n_videos, np.random.default_rng(seed))


def _cell(ids, y, n_runs=5, shift=0.0, seed=1, video_error=None):
    """Runs of one model (``stats.simulate_cell``); the same ``video_error`` = the same model."""
    rng = np.random.default_rng(seed)
    n_videos = len(set(stats.video_of(ids)))
    if video_error is None:
        video_error = np.random.default_rng(1000).normal(0, stats.SIM_VIDEO_ERROR, n_videos)
    return stats.simulate_cell(y, ids, video_error, n_runs, rng, shift=shift)


def test_video_of_takes_the_part_before_the_separator():
    assert list(stats.video_of(["vid1$_$0", "vid1$_$1", "lonely", "a$_$b$_$c"])) == [
        "vid1",
        "vid1",
        "lonely",
        "a",
    ]


def test_weighted_metrics_equal_ambcore_metrics():
    """The replicate-weighted metrics at weight 1 are ``ambcore.metrics``' (MMSA's)."""
    ids, y = _split()
    p = y + np.random.default_rng(3).normal(0, 0.8, y.size)
    ours = stats._weighted_metrics(np.ones((1, y.size)), y, p)
    theirs = sentiment_metrics(p, y)
    for metric in stats.METRICS:
        assert ours[metric][0] == pytest.approx(theirs[metric], abs=1e-12), metric


def test_estimate_is_the_mean_over_runs_of_the_metrics():
    ids, y = _split()
    cell = _cell(ids, y)
    ci = stats.bootstrap_ci(cell, n_boot=200)
    for metric in stats.CI_METRICS:
        per_run = [sentiment_metrics(f["y_pred"], f["y_true"])[metric] for f in cell.values()]
        assert ci[metric]["estimate"] == pytest.approx(np.mean(per_run))
        assert ci[metric]["lo"] < ci[metric]["estimate"] < ci[metric]["hi"]


def test_everything_is_deterministic_and_seeded():
    ids, y = _split()
    a, b = _cell(ids, y, seed=1), _cell(ids, y, seed=2)
    assert stats.bootstrap_ci(a, n_boot=200, seed=3) == stats.bootstrap_ci(a, n_boot=200, seed=3)
    assert stats.bootstrap_ci(a, n_boot=200, seed=3) != stats.bootstrap_ci(a, n_boot=200, seed=4)
    assert stats.paired_test(a, b, seed=5) == stats.paired_test(a, b, seed=5)


def test_runs_are_not_paired_by_seed():
    """Seed s of one cell and seed s of the other share only an integer: renaming the seeds of
    one cell, or giving it other seeds, changes nothing."""
    ids, y = _split()
    a, b = _cell(ids, y, seed=1), _cell(ids, y, seed=2)
    renamed = {10 + s: f for s, f in b.items()}
    r1, r2 = stats.paired_test(a, b), stats.paired_test(a, renamed)
    assert (r1.diff, r1.lo, r1.hi, r1.p_value) == (r2.diff, r2.lo, r2.hi, r2.p_value)
    assert r2.seeds_b == (10, 11, 12, 13, 14) and r2.seeds == (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)
    three = {s: b[s] for s in (0, 1, 2)}
    r3 = stats.paired_test(a, three)
    assert len(r3.per_seed_a) == 5 and len(r3.per_seed_b) == 3 and np.isfinite(r3.p_value)


def test_utterance_order_does_not_matter_and_other_utterances_are_refused():
    ids, y = _split()
    a, b = _cell(ids, y, seed=1), _cell(ids, y, seed=2)
    shuffled = {s: f.sample(frac=1.0, random_state=s).reset_index(drop=True) for s, f in b.items()}
    assert stats.paired_test(a, b) == stats.paired_test(a, shuffled)
    other = {s: f.assign(id=[f"x{i}" for i in range(len(f))]) for s, f in b.items()}
    with pytest.raises(AmbError, match="test utterances differ"):
        stats.paired_test(a, other)


def test_a_single_run_gives_no_p_value():
    """One run cannot say how much another seed would change it: no claim about the method."""
    ids, y = _split()
    a, b = _cell(ids, y, n_runs=1, seed=1), _cell(ids, y, seed=2)
    r = stats.paired_test(a, b)
    assert np.isfinite(r.diff) and np.isnan(r.p_value) and np.isnan(r.lo)
    assert np.isnan(stats.bootstrap_ci(a)["mae"]["lo"])


def test_five_runs_against_five_can_reach_significance():
    """A planted, real difference of training procedures is found at five runs a cell."""
    ids, y = _split(100)
    better, worse = _cell(ids, y, seed=1), _cell(ids, y, seed=2, shift=0.8)
    results = stats.compare(better, worse)
    assert results["mae"].diff < 0 and results["mae"].p_value < 0.01
    assert results["mae"].hi < 0 and results["mae"].win_share == 1.0
    assert results["corr"].diff > -0.05  # a shift leaves the correlation about alone


def test_seed_variance_widens_the_interval():
    """The same test-split error with more seed-to-seed spread gives a wider interval: the
    run term is part of the variance (the old per-utterance test ignored it)."""
    ids, y = _split()
    a = _cell(ids, y, seed=1)
    b = _cell(ids, y, seed=2)
    spread = {s: f.assign(y_pred=f["y_pred"] + 0.5 * (s - 2)) for s, f in b.items()}
    narrow, wide = stats.paired_test(a, b), stats.paired_test(a, spread)
    assert wide.se_runs > 1.5 * narrow.se_runs and wide.hi - wide.lo > narrow.hi - narrow.lo


def test_videos_are_the_unit_of_the_test_sample():
    """Clips of one video that err together count as one draw: a model error shared by the
    clips of a video widens the interval more than the same error spread over utterances."""
    ids, y = _split(40)
    a = _cell(ids, y, seed=1)
    b = _cell(ids, y, seed=2)
    codes = np.unique(stats.video_of(ids), return_inverse=True)[1]
    rng = np.random.default_rng(9)
    per_video = rng.normal(0, 0.8, codes.max() + 1)[codes]
    per_clip = rng.permutation(per_video)  # the same values, no longer grouped by video
    by_video = stats.paired_test(
        a, {s: f.assign(y_pred=f["y_pred"] + per_video) for s, f in b.items()}
    )
    by_clip = stats.paired_test(
        a, {s: f.assign(y_pred=f["y_pred"] + per_clip) for s, f in b.items()}
    )
    assert by_video.se_videos > 1.5 * by_clip.se_videos


def test_holm_against_a_hand_computed_example():
    # p sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    nan = stats.holm([0.01, float("nan"), 0.02])
    assert np.isnan(nan[1]) and nan[[0, 2]] == pytest.approx([0.02, 0.02])


def test_a_family_is_every_pair_and_every_metric_adjusted_together():
    ids, y = _split()
    preds = {
        "amb": _cell(ids, y, seed=1),
        "same": _cell(ids, y, seed=2),
        "worse": _cell(ids, y, seed=3, shift=0.8),
        "single": _cell(ids, y, n_runs=1, seed=4),
    }
    pairs = [
        ("s", "amb", "same"),
        ("w", "amb", "worse"),
        ("one", "amb", "single"),
        ("gone", "amb", "absent"),
    ]
    frame = stats.family(preds, pairs)
    assert len(frame) == 4 * len(stats.METRICS)
    finite = frame["p"].notna()
    assert finite.sum() == 2 * len(stats.METRICS)  # the single run and the absent cell: no p
    assert frame.loc[finite, "p_holm"].tolist() == pytest.approx(
        list(stats.holm(frame.loc[finite, "p"]))
    )
    rows = {(r["key"], r["metric"]): r for _, r in frame.iterrows()}
    assert "is lower than worse's" in stats.verdict(rows[("w", "mae")], "AMB", "worse")
    assert "AMB's Acc-7 is" in stats.verdict(rows[("s", "acc7")], "AMB", "same")
    assert "single run" in stats.verdict(rows[("one", "mae")], "AMB", "single")
    assert "no finished runs" in stats.verdict(rows[("gone", "mae")], "AMB", "absent")
    details = stats.verdict_details(rows[("w", "mae")], "AMB", "worse")
    assert "better in 25 of 25 seed pairs" in details and "MAE per seed: AMB" in details
    # compare_to is a family of its own over one metric
    small = stats.compare_to(preds, "amb", ["same", "worse"])
    assert small["p_holm"].tolist() == pytest.approx(list(stats.holm(small["p"])))


def test_the_validation_difference_stands_beside_the_test_difference():
    ids, y = _split()
    preds = {"a": _cell(ids, y, seed=1), "b": _cell(ids, y, seed=2)}
    runs_frame = pd.DataFrame({"cell": ["a"] * 5 + ["b"] * 5, "valid_mae": [0.5] * 5 + [0.7] * 5})
    row = stats.family(preds, [("ab", "a", "b")], metrics=("mae",), runs_frame=runs_frame).iloc[0]
    assert row["valid_diff"] == pytest.approx(-0.2)
    assert "validation difference -0.200" in stats.verdict_details(row, "A", "B")


def test_cell_intervals_reads_run_folders(tmp_path):
    ids, y = _split(20)
    cell = _cell(ids, y, n_runs=2)
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


def test_verdict_names_read_as_english():
    row = {"diff": -0.1, "lo": -0.2, "hi": -0.05, "p_holm": 0.001}
    assert stats.verdict(row, "AMB", "MISA-Adapters").startswith(
        "AMB's MAE is lower than MISA-Adapters': difference -0.100 [-0.200, -0.050]"
    )
    row = {"diff": 0.1, "lo": -0.2, "hi": 0.3, "p_holm": 0.4, "metric": "corr"}
    assert stats.verdict(row, "AMB", "MISA").startswith(
        "AMB's Corr is not distinguishable from MISA's"
    )


@pytest.fixture(scope="module")
def calibration():
    return stats.calibration(sizes=((3, 40), (5, 60)), n_sims=300, planted=0.5, n_boot=200, seed=11)


def test_calibration_a_a_pairs_reject_at_most_at_the_nominal_rate(calibration):
    """Two cells of the same model (seed shifts, a per-video error, utterance noise): the test
    calls them different in at most 5 % of simulated experiments (within Monte-Carlo error,
    two standard errors), for every metric and size."""
    for _, row in calibration.iterrows():
        bound = 0.05 + 2 * row["mc_se"]
        for metric in stats.METRICS:
            rate = row[f"false positives {stats.METRIC_LABELS[metric]}"]
            assert rate <= bound, (metric, row["runs per cell"], rate)


def test_calibration_the_interval_covers_the_true_zero(calibration):
    for _, row in calibration.iterrows():
        for metric in stats.METRICS:
            coverage = row[f"coverage {stats.METRIC_LABELS[metric]}"]
            assert coverage >= 0.95 - 2 * row["mc_se"], (metric, row["runs per cell"], coverage)


def test_calibration_a_planted_difference_is_found(calibration):
    power = calibration.set_index("runs per cell")["power MAE (shift 0.5)"]
    assert power[5] > 0.5 and power[5] >= power[3]


def test_the_old_per_utterance_test_would_fail_the_calibration():
    """The check can fail: averaging the seeds and resampling utterances as independent (the
    scheme this module replaced) rejects far more than 5 % of A/A pairs on the same
    simulation."""
    rng = np.random.default_rng(5)
    rejected, n_sims = 0, 150
    for _ in range(n_sims):
        ids, y = stats._simulated_test_split(40, rng)
        video_error = rng.normal(0, stats.SIM_VIDEO_ERROR, 40)
        a = stats.simulate_cell(y, ids, video_error, 3, rng)
        b = stats.simulate_cell(y, ids, video_error, 3, rng)
        d = np.mean([np.abs(a[s]["y_pred"] - y) - np.abs(b[s]["y_pred"] - y) for s in a], axis=0)
        boot = rng.choice(d, size=(400, d.size)).mean(axis=1)  # utterances as independent
        lo, hi = np.quantile(boot, [0.025, 0.975])
        rejected += not lo <= 0 <= hi
    assert rejected / n_sims > 0.10


def test_one_run_gets_an_interval_over_test_videos_only():
    ids, y = _split()
    run = _cell(ids, y, n_runs=1)[0]
    ci = stats.run_interval(run, n_boot=300)
    for metric in stats.CI_METRICS:
        assert ci[metric]["lo"] < ci[metric]["estimate"] < ci[metric]["hi"], metric
    assert ci["mae"]["estimate"] == pytest.approx(
        sentiment_metrics(run["y_pred"], run["y_true"])["mae"]
    )
