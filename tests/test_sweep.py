"""The sweep runner (ambcore.sweep): planning, skipping finished cells, resuming killed ones.

Most tests inject a small fake trainer that follows train_and_evaluate's folder contract
(config.json first, an epoch log standing in for last/, DONE last) so that the scheduling
logic is tested in milliseconds; tests marked ``integration`` use the real trainer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pytest

from ambcore import runs
from ambcore.cli import main as cli_main
from ambcore.errors import AmbError
from ambcore.sweep import load_spec, plan, run_sweep

pytestmark = pytest.mark.costly(35)  # about 35 s: started early (tests/conftest.py)

SPEC = {
    "name": "toy",
    "preset": "smoke",
    "seeds": [0, 1],
    "overrides": {"max_epochs": 3},
    "cells": [
        {"name": "amb", "overrides": {"model": "amb"}},
        {"name": "amb-text-only", "overrides": {"model": "amb", "variant": "text-only"}},
    ],
}


def fake_train(cfg, run_dir, resume=True):
    """Trains "epochs" by appending to epochs.txt; crashes once where a crash_* file says so."""
    run_dir = Path(run_dir)
    sweep_root = run_dir.parents[1]
    with open(sweep_root / "calls.log", "a") as log:
        log.write(f"{run_dir.parent.name}/{run_dir.name} resume={resume}\n")
    with open(sweep_root / "devices.log", "a") as log:  # which GPU a submitit job was given
        log.write(f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}\n")
    paths = runs.RunPaths(run_dir)
    if paths.config.exists() and not resume:
        raise AmbError(f"{run_dir} holds an unfinished run")
    if not paths.config.exists():
        runs.write_json(paths.config, cfg.to_dict())
    epochs_file = run_dir / "epochs.txt"
    done = epochs_file.read_text().split() if epochs_file.exists() else []
    crash = sweep_root / f"crash_{run_dir.parent.name}_{run_dir.name}"
    for epoch in range(len(done) + 1, cfg.max_epochs + 1):
        with open(epochs_file, "a") as fh:
            fh.write(f"{epoch}\n")
        if crash.exists():
            crash.unlink()
            raise RuntimeError(f"simulated crash after epoch {epoch}")
    runs.write_json(paths.metrics, {"test": {"mae": 1.0}})
    runs.write_json(paths.done, {})


def _calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_plan_names_folders_from_cell_and_seed(tmp_path):
    spec = load_spec(SPEC, runs_dir=tmp_path)
    cells = plan(spec)
    assert [(c.name, c.seed) for c in cells] == [
        ("amb", 0),
        ("amb", 1),
        ("amb-text-only", 0),
        ("amb-text-only", 1),
    ]
    assert cells[3].run_dir == tmp_path / "amb-text-only" / "seed1"
    assert cells[3].cfg.variant == "text-only" and cells[3].cfg.seed == 1
    assert cells[3].cfg.max_epochs == 3 and cells[3].cfg.preset == "smoke"
    assert {c.status for c in cells} == {"new"}


def test_spec_files_yaml_toml_json_agree(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "s.json").write_text(json.dumps(SPEC))
    (tmp_path / "s.toml").write_text(
        'name = "toy"\npreset = "smoke"\nseeds = [0, 1]\n[overrides]\nmax_epochs = 3\n'
        '[[cells]]\nname = "amb"\noverrides = {model = "amb"}\n'
        '[[cells]]\nname = "amb-text-only"\noverrides = {model = "amb", variant = "text-only"}\n'
    )
    plans = [
        [(c.name, c.seed, c.cfg) for c in plan(load_spec(tmp_path / f, runs_dir=tmp_path))]
        for f in ("s.yaml", "s.json", "s.toml")
    ]
    assert plans[0] == plans[1] == plans[2]


def test_grid_spec_and_preset_axis(tmp_path):
    spec = load_spec(
        {"seeds": [3], "grid": {"preset": ["smoke", "embedded"], "variant": ["full", "no-text"]}},
        runs_dir=tmp_path,
    )
    cells = plan(spec)
    assert [c.name for c in cells] == [
        "smoke_full",
        "smoke_no-text",
        "embedded_full",
        "embedded_no-text",
    ]
    assert cells[0].cfg.plm == "tiny-random" and cells[2].cfg.plm == "embedded"
    assert cells[3].cfg.variant == "no-text" and cells[3].cfg.seed == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        ({**SPEC, "sedes": [0]}, r"unknown sweep spec key\(s\) \['sedes'\]"),
        (
            {**SPEC, "cells": [{"name": "x", "overrides": {"lr_rate": 1}}]},
            r"cell 'x': unknown config key\(s\) 'lr_rate'",
        ),
        ({**SPEC, "cells": [{"name": "x", "overrides": {"seed": 1}}]}, "list seeds under 'seeds'"),
        ({**SPEC, "cells": [{"name": "a/b"}]}, "not a valid folder name"),
        ({**SPEC, "cells": [{"name": "a"}, {"name": "a"}]}, r"duplicate cell name\(s\) \['a'\]"),
        ({**SPEC, "grid": {"model": ["amb"]}}, "exactly one of 'cells'"),
        ({**SPEC, "seeds": []}, "non-empty list of integers"),
    ],
)
def test_spec_errors_name_the_problem(tmp_path, bad, message):
    with pytest.raises(AmbError, match=message):
        load_spec(bad, runs_dir=tmp_path)


def test_skips_finished_cells_and_resumes_a_killed_one(tmp_path):
    (tmp_path / "crash_amb-text-only_seed0").touch()  # this cell dies after its first epoch
    first = run_sweep(SPEC, train_fn=fake_train, runs_dir=tmp_path, progress=False)
    outcomes = {(o.cell, o.seed): o.outcome for o in first.outcomes}
    assert outcomes == {
        ("amb", 0): "trained",
        ("amb", 1): "trained",
        ("amb-text-only", 0): "failed",
        ("amb-text-only", 1): "trained",
    }
    assert "simulated crash after epoch 1" in first.failed[0].error
    killed = tmp_path / "amb-text-only" / "seed0"
    assert not runs.is_done(killed) and (killed / "epochs.txt").read_text().split() == ["1"]
    assert [c.status for c in plan(first.spec)] == ["done", "done", "partial", "done"]

    second = run_sweep(SPEC, train_fn=fake_train, runs_dir=tmp_path, progress=False)
    outcomes = {(o.cell, o.seed): (o.status_before, o.outcome) for o in second.outcomes}
    assert outcomes[("amb-text-only", 0)] == ("partial", "resumed")
    assert outcomes[("amb", 0)] == outcomes[("amb", 1)] == ("done", "skipped")
    # Finished cells were not touched; the killed one continued from epoch 2, not from scratch.
    assert _calls(tmp_path)[4:] == ["amb-text-only/seed0 resume=True"]
    assert (killed / "epochs.txt").read_text().split() == ["1", "2", "3"]
    assert runs.is_done(killed)
    cell_file = json.loads((killed / "sweep.json").read_text())
    assert cell_file == {
        "sweep": "toy",
        "cell": "amb-text-only",
        "seed": 0,
        "overrides": {"max_epochs": 3, "model": "amb", "variant": "text-only"},
    }

    third = run_sweep(SPEC, train_fn=fake_train, runs_dir=tmp_path, progress=False)
    assert {o.outcome for o in third.outcomes} == {"skipped"}
    assert len(_calls(tmp_path)) == 5


def test_fail_fast_stops_the_sweep(tmp_path):
    (tmp_path / "crash_amb_seed0").touch()
    with pytest.raises(AmbError, match="failed"):
        run_sweep(SPEC, train_fn=fake_train, runs_dir=tmp_path, progress=False, fail_fast=True)
    assert _calls(tmp_path) == ["amb/seed0 resume=True"]


def test_a_locked_run_is_left_to_its_owner(tmp_path):
    from ambcore.sweep import _run_lock

    with _run_lock(tmp_path / "amb" / "seed0") as acquired:
        assert acquired
        assert plan(load_spec(SPEC, runs_dir=tmp_path))[0].status == "running"
        result = run_sweep(SPEC, train_fn=fake_train, runs_dir=tmp_path, progress=False)
    assert result.outcomes[0].outcome == "busy"
    assert "amb/seed0 resume=True" not in _calls(tmp_path)
    assert plan(result.spec)[0].status == "new"


def test_cli_dry_run_and_overrides(tmp_path, capsys):
    spec_file = tmp_path / "toy.json"
    spec_file.write_text(json.dumps(SPEC))
    (tmp_path / "runs" / "amb" / "seed1").mkdir(parents=True)
    runs.write_json(tmp_path / "runs" / "amb" / "seed1" / "DONE", {})
    code = cli_main(
        [
            "sweep",
            str(spec_file),
            "--dry-run",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--set",
            "lr=0.5",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "2 cell(s) x 2 seed(s)" in out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("amb")]
    assert [line[:3] for line in lines] == [
        ["amb", "0", "new"],
        ["amb", "1", "done"],
        ["amb-text-only", "0", "new"],
        ["amb-text-only", "1", "new"],
    ]
    assert "lr=0.5" in out
    assert not (tmp_path / "runs" / "amb" / "seed0").exists()  # nothing was trained
    assert cli_main(["sweep", str(tmp_path / "missing.yaml"), "--dry-run"]) == 1


@pytest.mark.slow
def test_submitit_local_executor_runs_cells_in_subprocesses(tmp_path, monkeypatch):
    """The distributed path: each cell a submitit job (a subprocess), one per GPU at a time."""
    spec = {**SPEC, "cells": SPEC["cells"][:1]}  # one cell, two seeds: two parallel jobs
    monkeypatch.setattr("ambcore.sweep._visible_gpus", lambda: [0, 1])  # pretend two GPUs
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake trainer travels
    try:
        (tmp_path / "crash_amb_seed1").touch()
        first = run_sweep(
            spec,
            backend="submitit",
            cluster="local",
            train_fn=fake_train,
            runs_dir=tmp_path,
            progress=False,
        )
        assert [(o.seed, o.outcome) for o in first.outcomes] == [(0, "trained"), (1, "failed")]
        assert "simulated crash after epoch 1" in first.failed[0].error
        assert "job logs:" in first.failed[0].error
        # each of the two concurrent jobs saw only its own GPU
        assert sorted((tmp_path / "devices.log").read_text().split()) == ["0", "1"]
        second = run_sweep(
            spec,
            backend="submitit",
            cluster="local",
            max_parallel=1,
            train_fn=fake_train,
            runs_dir=tmp_path,
            progress=False,
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [(o.seed, o.outcome) for o in second.outcomes] == [(0, "skipped"), (1, "resumed")]
    assert (tmp_path / "amb" / "seed1" / "epochs.txt").read_text().split() == ["1", "2", "3"]
    assert all(runs.is_done(c.run_dir) for c in plan(second.spec))
    assert sorted(_calls(tmp_path)) == [
        "amb/seed0 resume=True",
        "amb/seed1 resume=True",
        "amb/seed1 resume=True",
    ]


def test_costliest_cells_start_first_on_parallel_local_workers(tmp_path, monkeypatch):
    """With a cost estimate, the local dispatcher starts the costliest cells first (one worker:
    the calls happen in that order); without one, in spec order."""
    monkeypatch.setattr("ambcore.sweep._visible_gpus", lambda: [])
    cost = {"amb": 1.0, "amb-text-only": 5.0}
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        run_sweep(
            SPEC,
            backend="submitit",
            cluster="local",
            max_parallel=1,
            train_fn=fake_train,
            runs_dir=tmp_path / "cost",
            progress=False,
            cost=lambda cell: cost[cell.name],
        )
        run_sweep(
            SPEC,
            backend="submitit",
            cluster="local",
            max_parallel=1,
            train_fn=fake_train,
            runs_dir=tmp_path / "spec",
            progress=False,
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [c.split()[0] for c in _calls(tmp_path / "cost")] == [
        "amb-text-only/seed0",
        "amb-text-only/seed1",
        "amb/seed0",
        "amb/seed1",
    ]
    assert [c.split()[0] for c in _calls(tmp_path / "spec")] == [
        "amb/seed0",
        "amb/seed1",
        "amb-text-only/seed0",
        "amb-text-only/seed1",
    ]
