"""``python -m ambcore bench --numerics`` (ambcore.bench.numerics) on the smoke preset: both arms
train the same seeds, the bf16 arm really runs under autocast on the CPU, the comparison is the
verdicts' family over every metric, and the record is JSON with the decision."""

from __future__ import annotations

import json

import pytest

from ambcore import stats
from ambcore.bench.numerics import ARMS, decide, format_numerics, run_numerics
from ambcore.cli import main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    runs = tmp_path_factory.mktemp("numerics")
    record = run_numerics("smoke", seeds=(0, 1), runs_dir=runs, parallel=1, progress=False)
    return runs, record


def test_both_arms_train_the_same_seeds_and_differ_only_in_precision(study):
    _, record = study
    assert record["config_differences"] == {"precision": {"bf16": "bf16", "fp32": "fp32"}}
    assert sorted((r["arm"], r["seed"]) for r in record["runs"]) == [
        (arm, seed) for arm in sorted(ARMS) for seed in (0, 1)
    ]
    assert record["autocast_dtype"] == {"bf16": "torch.bfloat16", "fp32": "None"}
    # bf16 autocast changes the numbers on the CPU (a no-op autocast would give 0 here)
    assert [s["seed"] for s in record["prediction_shift"]] == [0, 1]
    assert all(s["mean_abs"] > 0 for s in record["prediction_shift"])


def test_the_comparison_is_the_verdicts_family_over_every_metric(study):
    _, record = study
    rows = record["comparison"]
    assert [r["metric"] for r in rows] == list(stats.METRICS)
    assert all(r["a"] == "bf16" and r["b"] == "fp32" and r["n_a"] == r["n_b"] == 2 for r in rows)
    assert all(r["p_holm"] >= r["p"] for r in rows if r["p"] is not None)
    assert set(record["verdicts"]) == set(stats.METRICS)
    assert record["decision"] == decide(record["verdicts"])
    for key in ("git_revision", "git_dirty", "load_average_1_5_15min", "machine", "config"):
        assert key in record
    json.dumps(record)  # JSON as it stands (no NaN objects, no sets)
    table = format_numerics(record)
    assert "MAE" in table and "F1" in table and "decision:" in table


def test_a_second_run_reuses_the_finished_runs(study):
    runs, record = study
    again = run_numerics("smoke", seeds=(0, 1), runs_dir=runs, parallel=1, progress=False)
    assert again["trained_runs"] == 0 and record["trained_runs"] == 4
    assert again["comparison"] == record["comparison"]


def test_the_decision_keeps_bf16_only_when_no_metric_tells_the_arms_apart():
    same = {m: "not distinguishable" for m in stats.METRICS}
    assert decide(same)["paper_precision"] == "auto" and decide(same)["keep_bf16_default"]
    apart = {**same, "acc7": "bf16 lower (worse than fp32)"}
    assert decide(apart)["paper_precision"] == "fp32"
    assert decide(apart)["distinguishable_on"] == ["acc7"]


def test_one_seed_per_arm_is_refused_in_one_line(capsys):
    assert main(["bench", "--numerics", "--preset", "smoke", "--seeds", "0"]) != 0
    assert "at least 2 per arm" in capsys.readouterr().err
