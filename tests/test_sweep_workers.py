"""Persistent sweep workers (ambcore.sweep_workers): one process per slot trains cell after cell.

The fake trainer of tests/test_sweep.py travels to the workers by value (cloudpickle) and logs
the process that ran each cell; the last test trains the smoke preset for real and compares
the metrics with one fresh process per run, bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pandas as pd
import pytest
import test_sweep
from test_sweep import SPEC, fake_train

from ambcore import runs
from ambcore.errors import AmbError
from ambcore.sweep import plan, run_sweep

pytestmark = pytest.mark.costly(70)  # about 70 s: started early (tests/conftest.py)

FOUR_CELLS = SPEC  # two cells x two seeds


@pytest.fixture(autouse=True)
def _by_value(monkeypatch):
    """The fake trainers go to the workers by value; and no GPU is seen (CPU slots)."""
    monkeypatch.setattr("ambcore.sweep._visible_gpus", lambda: [])
    for module in (test_sweep, sys.modules[__name__]):
        cloudpickle.register_pickle_by_value(module)
    yield
    for module in (test_sweep, sys.modules[__name__]):
        cloudpickle.unregister_pickle_by_value(module)


def logging_train(cfg, run_dir, resume=True):
    """fake_train that also logs which process ran the cell; ``exit_<cell>_<seed>`` ends the
    process half-way, ``raise_<cell>_<seed>`` raises (each once)."""
    run_dir = Path(run_dir)
    root = run_dir.parents[1]
    with open(root / "pids.log", "a") as log:
        log.write(f"{run_dir.parent.name}/{run_dir.name} {os.getpid()}\n")
    for kind in ("exit", "raise"):
        marker = root / f"{kind}_{run_dir.parent.name}_{run_dir.name}"
        if marker.exists():
            marker.unlink()
            if kind == "exit":  # half-way: its config written, like a run killed in epoch 1
                runs.write_json(runs.RunPaths(run_dir).config, cfg.to_dict())
                os._exit(3)
            raise RuntimeError(f"simulated failure of {run_dir.parent.name}/{run_dir.name}")
    fake_train(cfg, run_dir, resume)


def _pids(root: Path) -> dict[str, int]:
    lines = (root / "pids.log").read_text().split("\n")
    return {cell: int(pid) for cell, pid in (line.split() for line in lines if line)}


def test_two_workers_run_every_cell_each_several(tmp_path):
    result = run_sweep(
        FOUR_CELLS, train_fn=logging_train, runs_dir=tmp_path, max_parallel=2, progress=False
    )
    assert [o.outcome for o in result.outcomes] == ["trained"] * 4
    pids = _pids(tmp_path)
    assert len(pids) == 4 and len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert all(runs.is_done(c.run_dir) for c in plan(result.spec))
    cell_file = json.loads((tmp_path / "amb-text-only" / "seed1" / "sweep.json").read_text())
    assert cell_file["cell"] == "amb-text-only" and cell_file["seed"] == 1
    again = run_sweep(
        FOUR_CELLS, train_fn=logging_train, runs_dir=tmp_path, max_parallel=2, progress=False
    )
    assert [o.outcome for o in again.outcomes] == ["skipped"] * 4


def test_a_failing_cell_is_recorded_and_its_worker_goes_on(tmp_path):
    (tmp_path / "raise_amb_seed0").touch()
    result = run_sweep(
        FOUR_CELLS,
        train_fn=logging_train,
        runs_dir=tmp_path,
        workers="persistent",
        max_parallel=1,
        progress=False,
    )
    assert [o.outcome for o in result.outcomes] == ["failed", "trained", "trained", "trained"]
    assert "RuntimeError: simulated failure of amb/seed0" in result.failed[0].error
    assert "Traceback" in result.failed[0].details
    assert len(set(_pids(tmp_path).values())) == 1  # one worker for all four


def test_a_cell_that_ends_its_worker_fails_and_a_new_worker_takes_the_slot(tmp_path):
    (tmp_path / "exit_amb_seed1").touch()
    result = run_sweep(
        FOUR_CELLS,
        train_fn=logging_train,
        runs_dir=tmp_path,
        workers="persistent",
        max_parallel=1,
        progress=False,
    )
    assert [o.outcome for o in result.outcomes] == ["trained", "failed", "trained", "trained"]
    error = result.failed[0].error
    assert "worker process ended (exit status 3)" in error and "_workers" in error
    pids = _pids(tmp_path)
    assert pids["amb/seed0"] == pids["amb/seed1"] != pids["amb-text-only/seed0"]
    assert pids["amb-text-only/seed0"] == pids["amb-text-only/seed1"]
    second = run_sweep(
        FOUR_CELLS, train_fn=logging_train, runs_dir=tmp_path, max_parallel=2, progress=False
    )
    assert [(o.status_before, o.outcome) for o in second.outcomes][1] == ("partial", "resumed")
    assert all(runs.is_done(c.run_dir) for c in plan(second.spec))


def test_fail_fast_stops_the_workers(tmp_path):
    (tmp_path / "raise_amb_seed0").touch()
    with pytest.raises(AmbError, match="fail_fast"):
        run_sweep(
            FOUR_CELLS,
            train_fn=logging_train,
            runs_dir=tmp_path,
            max_parallel=2,
            fail_fast=True,
            progress=False,
        )
    from ambcore import interrupt

    assert not [p for p in _pids(tmp_path).values() if interrupt._alive(p)]


def test_costliest_cells_go_first_and_unknown_workers_are_refused(tmp_path):
    cost = {"amb": 1.0, "amb-text-only": 5.0}
    run_sweep(
        FOUR_CELLS,
        train_fn=logging_train,
        runs_dir=tmp_path,
        workers="persistent",
        max_parallel=1,
        progress=False,
        cost=lambda cell: cost[cell.name],
    )
    assert list(_pids(tmp_path)) == [
        "amb-text-only/seed0",
        "amb-text-only/seed1",
        "amb/seed0",
        "amb/seed1",
    ]
    with pytest.raises(AmbError, match="unknown sweep workers 'many'"):
        run_sweep(FOUR_CELLS, train_fn=logging_train, runs_dir=tmp_path, workers="many")
    with pytest.raises(AmbError, match="option of the local backend"):
        run_sweep(
            FOUR_CELLS,
            backend="submitit",
            train_fn=logging_train,
            runs_dir=tmp_path,
            workers="fresh",
        )


def _numbers(run_dir: Path) -> tuple:
    """What a run computed: its test and validation metrics and its per-epoch history, without
    the wall-clock columns."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    history = history[[c for c in history.columns if "second" not in c and "time" not in c]]
    return (
        {k: metrics[k] for k in ("test", "valid") if k in metrics},
        history.to_dict(orient="list"),
    )


@pytest.mark.integration
@pytest.mark.slow
def test_persistent_workers_give_the_metrics_of_fresh_processes_bit_for_bit(tmp_path):
    """Two cells of the smoke preset in one persistent worker (the second after the first, in
    the same process) against one fresh process per run: the same numbers, bit for bit."""
    spec = {
        "name": "same",
        "preset": "smoke",
        "seeds": [0],
        "overrides": {"max_epochs": 3},
        "cells": [
            {"name": "amb", "overrides": {"model": "amb"}},
            {"name": "misa", "overrides": {"model": "misa"}},
        ],
    }
    kept = run_sweep(
        spec, runs_dir=tmp_path / "kept", workers="persistent", max_parallel=1, progress=False
    )
    fresh = run_sweep(
        spec, runs_dir=tmp_path / "fresh", workers="fresh", max_parallel=1, progress=False
    )
    assert [o.outcome for o in kept.outcomes + fresh.outcomes] == ["trained"] * 4
    for cell in ("amb", "misa"):
        a, b = (_numbers(tmp_path / way / cell / "seed0") for way in ("kept", "fresh"))
        assert a[0] and a == b, cell
