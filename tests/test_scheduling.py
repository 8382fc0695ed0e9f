"""Run costs for scheduling come from earlier runs' history.csv, scaled by the machine probe."""

from __future__ import annotations

import pytest

from ambcore import experiments, runs
from ambcore.sweep import load_spec, plan


def _cells(tmp_path):
    spec = experiments.ablation_spec("smoke", runs_dir=tmp_path / "sweep")
    return plan(load_spec(spec))


def _fake_run(run_dir, epoch_seconds, probe=None):
    run_dir.mkdir(parents=True)
    rows = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(epoch_seconds)]
    runs.write_csv(run_dir / "history.csv", rows, ["epoch", "seconds"])
    if probe is not None:
        runs.write_json(run_dir / "env.json", {"machine": {"probe": {"gflops": probe}}})


def test_costs_follow_the_measured_epochs(tmp_path):
    cells = _cells(tmp_path)
    root = tmp_path / "sweep"
    _fake_run(root / "amb" / "seed0", [2.0, 4.0])  # 3 s per epoch
    _fake_run(root / "misa" / "seed0", [9.0])
    costs = experiments.scheduling_costs(cells)
    epochs = cells[0].cfg.max_epochs
    assert costs["amb"] == pytest.approx(3.0 * epochs)
    assert costs["misa"] == pytest.approx(9.0 * epochs)
    # Unmeasured cells: the median of the measured ones per epoch.
    assert costs["amb-no-text"] == pytest.approx(6.0 * epochs)


def test_costs_are_scaled_by_the_probe_of_the_machine(tmp_path):
    cells = _cells(tmp_path)
    _fake_run(tmp_path / "sweep" / "amb" / "seed0", [4.0], probe=50.0)
    same = experiments.scheduling_costs(cells, probe_now=50.0)["amb"]
    twice_as_fast = experiments.scheduling_costs(cells, probe_now=100.0)["amb"]
    assert twice_as_fast == pytest.approx(same / 2)
    assert experiments.scheduling_costs(cells, probe_now=None)["amb"] == pytest.approx(same)


def test_nothing_measured_falls_back_to_the_default(tmp_path):
    cells = _cells(tmp_path)
    costs = experiments.scheduling_costs(cells, probe_now=80.0)
    epochs = cells[0].cfg.max_epochs
    assert set(costs) == {c.name for c in cells}
    assert all(
        c == pytest.approx(experiments.DEFAULT_EPOCH_SECONDS * epochs) for c in costs.values()
    )


def test_a_run_without_finished_epochs_is_no_measurement(tmp_path):
    run = tmp_path / "sweep" / "amb" / "seed0"
    run.mkdir(parents=True)
    assert experiments.epoch_seconds(run) is None
    (run / "history.csv").write_text("epoch,seconds\n")
    assert experiments.epoch_seconds(run) is None
    _fake_run(tmp_path / "other", [1.5, 2.5], probe=20.0)
    assert experiments.epoch_seconds(tmp_path / "other") == {"epoch_s": 2.0, "probe_gflops": 20.0}


def test_run_experiment_orders_parallel_runs_by_measured_cost(tmp_path, monkeypatch):
    """The costs handed to the sweep are the measured ones (no typed constants)."""
    import ambcore.sweep as sweep

    seen = {}

    def fake_run_sweep(spec, **kwargs):
        cells = plan(spec)
        seen.update({c.name: kwargs["cost"](c) for c in cells})

    monkeypatch.setenv(runs.PROBE_ENV, '{"gflops": 10.0}')
    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    spec = experiments.ablation_spec("smoke", runs_dir=tmp_path / "sweep")
    _fake_run(tmp_path / "sweep" / "misa" / "seed0", [30.0], probe=10.0)
    _fake_run(tmp_path / "sweep" / "amb" / "seed0", [3.0], probe=10.0)
    experiments.run_experiment(spec, parallel=2, progress=False)
    assert max(seen, key=seen.get) == "misa"
    assert seen["misa"] > seen["amb"]
