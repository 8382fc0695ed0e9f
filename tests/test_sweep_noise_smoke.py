"""Robustness curves and the sweep with the real trainer (smoke preset: tiny random BERT)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ambcore import runs
from ambcore.config import get_config
from ambcore.noise import NOISE_KINDS
from ambcore.robustness import robustness_curve, summarize_curves
from ambcore.sweep import plan, run_sweep
from ambcore.train import train_and_evaluate

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPEC = {
    "name": "smoke",
    "preset": "smoke",
    "seeds": [0],
    "overrides": {"max_epochs": 3, "patience": 5},
    "cells": [{"name": "amb", "overrides": {"model": "amb"}}],
}


class _Killed(RuntimeError):
    pass


def _train_then_die_after_epoch_1(cfg, run_dir, resume=True):
    def die(epoch):
        if epoch == 1:
            raise _Killed("killed after epoch 1")

    return train_and_evaluate(cfg, run_dir, progress=False, resume=resume, on_epoch_end=die)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A one-cell sweep whose run is killed after epoch 1 and then resumed by the sweep."""
    root = tmp_path_factory.mktemp("sweep")
    first = run_sweep(SPEC, train_fn=_train_then_die_after_epoch_1, runs_dir=root, progress=False)
    second = run_sweep(SPEC, runs_dir=root, progress=False)
    return root, first, second


pytestmark = pytest.mark.slow


def test_sweep_resumes_a_killed_training_run(swept):
    root, first, second = swept
    assert [o.outcome for o in first.outcomes] == ["failed"]
    assert "killed after epoch 1" in first.outcomes[0].error
    assert [(o.status_before, o.outcome) for o in second.outcomes] == [("partial", "resumed")]
    run_dir = plan(second.spec)[0].run_dir
    env = runs.read_json(run_dir / "env.json")
    assert [r["after_epoch"] for r in env["resumed"]] == [1]
    assert list(runs.read_history(run_dir)["epoch"]) == [1, 2, 3]
    assert runs.read_config(run_dir) == get_config(
        "smoke", seed=0, model="amb", max_epochs=3, patience=5
    )
    # (that a resumed run ends exactly where an uninterrupted one does is tests/test_train.py's)


def test_robustness_curve_on_the_best_checkpoint(swept):
    root, _, second = swept
    run_dir = plan(second.spec)[0].run_dir
    curve = robustness_curve(run_dir, NOISE_KINDS, rates=(0.0, 1.0), n_draws=2, seed=0)
    assert len(curve) == (2 + 2 * 2) * 2  # text kinds once, visual/acoustic per granularity
    assert set(curve[curve["kind"] == "visual"]["granularity"]) == {"step", "element"}
    assert set(curve[curve["kind"] == "deletion"]["granularity"]) == {"token"}
    clean = curve[curve["rate"] == 0.0]
    test = runs.read_metrics(run_dir)["test"]
    # rate 0 is the clean evaluation of the trainer, identical over draws
    assert np.allclose(clean["corr"], test["corr"]) and np.allclose(clean["mae"], test["mae"])
    assert (clean["corr_std"] == 0).all()
    assert (curve[curve["rate"] == 1.0]["realised_rate"] == 1.0).all()
    noisy = curve[curve["rate"] == 1.0]
    assert (noisy["mae"] != test["mae"]).all()  # every kind and granularity reaches the model
    step, element = (
        noisy[(noisy["kind"] == "visual") & (noisy["granularity"] == g)]
        for g in ("step", "element")
    )
    assert step["mae"].item() != element["mae"].item()  # the two granularities differ
    again = robustness_curve(
        run_dir, "visual", rates=(1.0,), n_draws=2, seed=0, granularities=("step",)
    )
    visual = step
    assert (
        len(again) == 1 and again["corr"].item() == visual["corr"].item()
    )  # seeded: the same draws
    assert visual["corr_std"].item() > 0  # two different draws
    row = curve.iloc[0]
    assert row["row_name"] == "AMB" and row["plm"] == "tiny random BERT" and row["is_synthetic"]
    summary = summarize_curves(curve)
    assert len(summary) == len(curve) and set(summary["n_runs"]) == {1}


def test_robustness_curves_in_worker_processes_equal_in_process(swept, tmp_path):
    """Two single-thread worker processes compute the same curves as this process does."""
    import shutil

    from ambcore.experiments import ROBUSTNESS_FILE, robustness_curves_of_runs

    root, _, second = swept
    source = plan(second.spec)[0].run_dir
    copies = []
    for name in ("a", "b", "c"):
        shutil.copytree(source, tmp_path / name)
        (tmp_path / name / ROBUSTNESS_FILE).unlink(missing_ok=True)
        copies.append(tmp_path / name)
    rates = (0.0, 0.5)
    here = robustness_curves_of_runs(copies[:1], rates, 1, parallel=1, progress=False)
    there = robustness_curves_of_runs(copies[1:], rates, 1, parallel=2, progress=False)
    assert all((c / ROBUSTNESS_FILE).exists() for c in copies)
    columns = [c for c in here.columns if c != "run"]
    for run in map(str, copies[1:]):
        part = there[there["run"] == run][columns].reset_index(drop=True)
        assert part.equals(here[columns].reset_index(drop=True))
