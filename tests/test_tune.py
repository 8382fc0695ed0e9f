"""The tuner (ambcore.tune, ``python -m ambcore tune``): search spaces as data, the same budget
for every model, no test split while tuning, resuming a killed study."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from ambcore import paths, report, runs, tune
from ambcore.cli import main
from ambcore.errors import AmbError
from ambcore.paths import PROJECT_ROOT

EXPERIMENTS = PROJECT_ROOT / "experiments"


def write_spec(
    tmp_path: Path,
    n_trials=2,
    cells=("amb", "misa", "mag-bert"),
    sweep=EXPERIMENTS / "recipes_smoke.yaml",
    space=EXPERIMENTS / "search_space.yaml",
):
    spec = {
        "name": "t",
        "sweep": str(sweep),
        "cells": list(cells),
        "space": str(space),
        "n_trials": n_trials,
        "seed": 100,
        "runs_dir": "tune",  # inside AMB_RUNS = tmp_path
        "pruner": {"n_startup_trials": 2, "n_warmup_steps": 1},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """The runs folder of every test is its tmp_path: a spec's runs_dir stays inside it."""
    monkeypatch.setenv("AMB_RUNS", str(tmp_path))


class FakeTrain:
    """A trainer that records its calls and checks what it is given; valid MAE is smallest at
    lr = 1e-3 (one epoch, reported through on_epoch_end as the real trainer does)."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, cfg, run_dir, progress, resume, on_epoch_end, dataset):
        assert set(dataset.splits) == {"train", "valid"}
        with pytest.raises(KeyError):
            dataset["test"]
        self.calls.append(Path(run_dir).name)
        mae = 0.5 + abs(math.log10(cfg.lr) + 3)
        runs.write_csv(
            Path(run_dir) / "history.csv", [{"epoch": 1, "valid_mae": mae}], runs.HISTORY_COLUMNS
        )
        on_epoch_end(1)
        return SimpleNamespace(valid={"mae": mae})


@pytest.fixture(scope="module")
def smoke_data():
    from ambcore.config import get_config
    from ambcore.data import load_dataset

    cfg = get_config("smoke")
    return load_dataset(cfg.data, cfg)


def test_search_spaces_are_data_with_a_reason_per_range(tmp_path):
    space = tune.load_space(EXPERIMENTS / "search_space.yaml")
    for model, dropout in (
        ("amb", "dropout"),
        ("misa", "misa_dropout"),
        ("mag-bert", "mag_dropout"),
    ):
        lr = space[model]["lr"]
        assert lr.log and lr.factor > 1 and lr.reason
        assert (
            space[model][dropout].reason and space[model][dropout].low < space[model][dropout].high
        )
    bad = tmp_path / "space.yaml"
    bad.write_text("models:\n  amb:\n    lr: {factor: 10, log: true}\n", encoding="utf-8")
    with pytest.raises(AmbError, match=r"space.yaml: models.amb.lr: a range needs 'reason'"):
        tune.load_space(bad)
    bad.write_text("models:\n  amb:\n    lrate: {low: 1, high: 2, reason: x}\n", encoding="utf-8")
    with pytest.raises(AmbError, match="models.amb.lrate: not a config field"):
        tune.load_space(bad)


def test_ranges_are_centred_on_each_recipe(tmp_path):
    spec = tune.load_tune_spec(write_spec(tmp_path))
    for cell, cfg in spec.cells:
        low, high = spec.space[cfg.model]["lr"].bounds(cfg)
        assert low == pytest.approx(cfg.lr / 10) and high == pytest.approx(cfg.lr * 10)
    assert {cfg.lr for _, cfg in spec.cells} == {1e-3, 1e-4, 1e-5}  # AMB, MISA, MAG-BERT recipes
    assert len({(cfg.max_epochs, cfg.patience) for _, cfg in spec.cells}) == 1


def test_cells_with_different_epoch_budgets_are_refused(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "preset": "smoke",
                "cells": [
                    {"name": "amb", "overrides": {"model": "amb"}},
                    {"name": "misa", "overrides": {"model": "misa", "max_epochs": 5}},
                ],
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(AmbError, match="different epoch budgets.*misa: max_epochs=5"):
        tune.load_tune_spec(write_spec(tmp_path, cells=("amb", "misa"), sweep=sweep))


def test_a_study_runs_n_trials_on_train_and_valid_only(tmp_path, smoke_data):
    spec = tune.load_tune_spec(write_spec(tmp_path, n_trials=3, cells=("amb",)))
    fake = FakeTrain()
    study = tune.run_study(spec, "amb", spec.cells[0][1], train_fn=fake, dataset=smoke_data)
    assert len(fake.calls) == 3 and len(study.trials) == 3
    assert all(t.intermediate_values for t in study.trials)  # the pruner saw every epoch
    assert (spec.runs_dir / "amb" / tune.STUDY_FILE).exists()


def test_a_stopped_study_resumes_without_redoing_finished_trials(tmp_path, smoke_data):
    spec = tune.load_tune_spec(write_spec(tmp_path, n_trials=3, cells=("amb",)))
    cfg = spec.cells[0][1]
    first = FakeTrain()
    tune.run_study(spec, "amb", cfg, train_fn=first, dataset=smoke_data, stop_after=1)
    assert len(first.calls) == 1
    again = FakeTrain()  # a new process: the study is read back from its journal
    study = tune.run_study(spec, "amb", cfg, train_fn=again, dataset=smoke_data)
    assert len(again.calls) == 2 and first.calls[0] not in again.calls
    assert [t.number for t in study.trials] == [0, 1, 2]
    done = FakeTrain()
    tune.run_study(spec, "amb", cfg, train_fn=done, dataset=smoke_data)
    assert done.calls == []  # a finished study is not rerun


def test_a_trial_of_a_killed_process_is_repeated_with_its_values(tmp_path, smoke_data):
    spec = tune.load_tune_spec(write_spec(tmp_path, n_trials=2, cells=("amb",)))
    cfg = spec.cells[0][1]
    study = tune._open_study(spec, "amb", spec.runs_dir / "amb")
    killed = study.ask()  # a trial left RUNNING by a process that no longer exists
    values = tune.suggest(killed, spec.space["amb"], cfg)
    killed.set_user_attr("worker", f"{socket.gethostname()}:999999999")
    fake = FakeTrain()
    study = tune.run_study(spec, "amb", cfg, train_fn=fake, dataset=smoke_data)
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    repeated = study.trials[1]
    assert repeated.params == pytest.approx(values) and repeated.user_attrs["requeued_from"] == 0
    assert repeated.state == optuna.trial.TrialState.COMPLETE and len(fake.calls) == 2


def test_tiny_smoke_study_never_evaluates_test(tmp_path, capsys):
    """Real training on the smoke preset: 2 trials for each of AMB, MISA and MAG-BERT."""
    record = tmp_path / "record.json"
    assert main(["tune", str(write_spec(tmp_path)), "--record", str(record)]) == 0
    trial_dirs = sorted((tmp_path / "tune").glob("*/trial-*"))
    assert len(trial_dirs) >= 3
    for folder in trial_dirs:
        assert not (folder / "test_predictions.csv").exists()
        if (folder / "metrics.json").exists():
            metrics = runs.read_metrics(folder)
            assert metrics["valid_only"] is True
            assert not [k for k in metrics if k.startswith("test")]
    assert report.collect_runs(tmp_path / "tune").empty  # trials never reach the tables
    saved = json.loads(record.read_text(encoding="utf-8"))
    assert set(saved["chosen"]) == {"amb", "misa", "mag-bert"}
    assert saved["git"]["revision"] and saved["machine"]["cpus"] and saved["date"]
    finished = [t for t in saved["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert {c: sum(t["cell"] == c for t in finished) for c in saved["chosen"]} == {
        "amb": 2,
        "misa": 2,
        "mag-bert": 2,
    }
    for cell, chosen in saved["chosen"].items():
        lr = chosen["params"]["lr"]
        recipe = {"amb": 1e-3, "misa": 1e-4, "mag-bert": 1e-5}[cell]
        assert recipe / 10 <= lr <= recipe * 10
    assert "tune t: 3 cell(s) x 2 trial(s)" in capsys.readouterr().out


def test_the_record_is_read_when_it_matches_and_produced_otherwise(tmp_path, smoke_data):
    spec_path = write_spec(tmp_path, n_trials=2, cells=("amb", "misa"))
    record_path = tmp_path / "results" / "tuning_smoke.json"
    fake = FakeTrain()
    record, how = tune.ensure_record(spec_path, record_path, train_fn=fake, dataset=smoke_data)
    assert how == "tuned" and len(fake.calls) == 4 and record_path.exists()
    assert record["models"] == {"amb": "amb", "misa": "misa"} and record["fingerprint"]
    again = FakeTrain()
    same, how = tune.ensure_record(spec_path, record_path, train_fn=again, dataset=smoke_data)
    assert how == "read" and again.calls == [] and same == record
    fresh = FakeTrain()
    _, how = tune.ensure_record(
        spec_path, record_path, retune=True, train_fn=fresh, dataset=smoke_data
    )
    assert how == "tuned" and len(fresh.calls) == 4  # every trial trained anew
    assert len(list((tmp_path / "tune").glob("amb.*.old"))) == 1
    bigger = FakeTrain()
    _, how = tune.ensure_record(
        write_spec(tmp_path, n_trials=3, cells=("amb", "misa")),
        record_path,
        train_fn=bigger,
        dataset=smoke_data,
    )
    # another spec: its journals are set aside, never extended, and every trial trains anew
    assert how == "tuned" and len(bigger.calls) == 6
    assert (tmp_path / "tune" / "amb" / "study.journal.stale-1").exists()

    summary = tune.record_summary(json.loads(record_path.read_text(encoding="utf-8")))
    assert list(summary["cell"]) == ["amb", "misa"] and list(summary["trials"]) == [3, 3]
    assert summary["chosen"].str.contains("lr=").all()
    best = {
        t["cell"]: min(x["value"] for x in record["trials"] if x["cell"] == t["cell"])
        for t in record["trials"]
    }
    assert record["chosen"]["amb"]["value"] == best["amb"]
    fig = tune.trials_figure(json.loads(record_path.read_text(encoding="utf-8")))
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "amb"


def test_the_chapter_shows_the_record_the_runs_use(tmp_path, monkeypatch, smoke_data):
    """book_record and current_record: the results folder's matching record first, then the
    project's committed one; a stale one is never used; no spec, no record."""
    results = tmp_path / "results"
    monkeypatch.setenv("AMB_RESULTS", str(results))
    monkeypatch.setenv("AMB_RUNS", str(tmp_path / "runs"))
    record, said = tune.book_record("paper")
    assert record is None and "no tuning spec for the paper preset" in said
    committed, said = tune.book_record("smoke")
    assert said == "read from tuning_smoke.json in the project's results/"
    assert committed == tune.current_record("smoke")
    mine = tune.ensure_record(
        tune.spec_for_preset("smoke"),
        results / "tuning_smoke.json",
        retune=True,
        train_fn=FakeTrain(),
        dataset=smoke_data,
    )[0]
    record, said = tune.book_record("smoke")
    assert (
        record == mine != committed and said == "read from tuning_smoke.json in the results folder"
    )
    (results / "tuning_smoke.json").write_text(json.dumps(dict(mine, fingerprint="0" * 16)))
    assert tune.book_record("smoke")[0] == committed  # a stale record is passed over
    other = write_spec(tmp_path, n_trials=7, cells=("amb",))
    monkeypatch.setattr(tune, "spec_for_preset", lambda preset: other)
    record, said = tune.book_record("smoke")
    assert (
        record is None and said.startswith("no record matching experiments/") and "recipes'" in said
    )


def test_a_recipe_outside_its_range_is_refused(tmp_path):
    """The first trial is the recipe: a range that does not contain it is a spec error."""
    space = yaml.safe_load((EXPERIMENTS / "search_space.yaml").read_text())
    space["models"]["misa"]["new_params_lr"]["low"] = 3e-4  # MISA's recipe trains all at 1e-4
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    with pytest.raises(AmbError, match=r"cell 'misa'.*new_params_lr=0.0001 lies outside"):
        tune.load_tune_spec(write_spec(tmp_path, cells=("misa",), space=tmp_path / "space.yaml"))


def test_the_tuning_seed_is_not_an_evaluation_seed(tmp_path):
    spec = yaml.safe_load(write_spec(tmp_path).read_text())
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({**spec, "seed": 0}))
    with pytest.raises(AmbError, match="seed 0 is one of the evaluation seeds"):
        tune.load_tune_spec(tmp_path / "tune.yaml")


def test_chosen_values_by_cell_then_model():
    """A tuned cell takes its own study's values; another cell of the same model takes those of
    the cell named like the model (AMB's variants take AMB's, not AMB-FT's)."""
    record = {
        "models": {"amb-ft": "amb", "amb": "amb", "mag": "mag-bert"},
        "chosen": {
            "amb-ft": {"params": {"lr": 1e-4}},
            "amb": {"params": {"lr": 2e-3}},
            "mag": {"params": {"lr": 3e-5}},
        },
    }
    assert tune.chosen_values(record, "mag", "mag-bert") == {"lr": 3e-5}
    assert tune.chosen_values(record, "amb-ft", "amb") == {"lr": 1e-4}
    assert tune.chosen_values(record, "amb-no-text", "amb") == {"lr": 2e-3}
    assert tune.chosen_values(record, "misa") == {} and tune.chosen_values(None, "amb") == {}


def test_the_fingerprint_holds_changed_values_only(tmp_path):
    """Values equal to the defaults stay out of the fingerprint, so a new config field with a
    default does not make a committed record stale; a changed value does."""
    from dataclasses import replace

    from ambcore.config import Config, get_config

    assert tune._changed_fields(Config()) == {}
    smoke = tune._changed_fields(get_config("smoke"))
    assert smoke["preset"] == "smoke" and "mag_pooling" not in smoke and "lr" in smoke
    spec = tune.load_tune_spec(write_spec(tmp_path, n_trials=2, cells=("amb", "misa")))
    changed = replace(spec, cells=tuple((c, replace(cfg, lr=cfg.lr * 2)) for c, cfg in spec.cells))
    assert tune.fingerprint(changed) != tune.fingerprint(spec)


def test_the_committed_records_match_their_specs():
    """The book's runs take the committed records' values; a spec or recipe change without a
    new record would silently fall back to the recipes, so it fails here instead."""
    for preset in ("smoke", "embedded"):
        path = paths.PROJECT_ROOT / "results" / tune.record_name(preset)
        assert path.exists(), (
            f"{path} missing: python -m ambcore tune experiments/tune_{preset}.yaml --record results/{path.name}"
        )
        saved = json.loads(path.read_text(encoding="utf-8"))
        wanted = tune.fingerprint(tune.load_tune_spec(tune.spec_for_preset(preset)))
        assert saved["fingerprint"] == wanted, f"{path} is stale: rerun the tuning (--retune)"


def _finished_trials(journal: Path, cell: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return []
    study = optuna.load_study(
        study_name=cell, storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]


def test_kill_9_during_a_study_and_resume(tmp_path):
    """A real smoke study killed with SIGKILL after its first finished trial; started again it
    keeps that trial (its run folder is not touched) and ends with n_trials finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = write_spec(tmp_path, n_trials=3, cells=("amb",))
    journal = tmp_path / "tune" / "amb" / tune.STUDY_FILE
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ambcore", "tune", str(spec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while (
            not _finished_trials(journal, "amb") and proc.poll() is None and time.time() < deadline
        ):
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    first = _finished_trials(journal, "amb")
    assert len(first) >= 1, "the study did not finish a trial before it was killed"
    if len(first) == 3:
        pytest.skip("the study finished before the kill")
    kept = {t.number: tmp_path / "tune" / "amb" / t.user_attrs["run_dir"] / "DONE" for t in first}
    stamps = {n: p.stat().st_mtime_ns for n, p in kept.items()}
    assert main(["tune", str(spec)]) == 0
    finished = _finished_trials(journal, "amb")
    assert len(finished) == 3
    assert {n: p.stat().st_mtime_ns for n, p in kept.items()} == stamps  # not trained again
    assert {t.number for t in first} <= {t.number for t in finished}


def test_bounds_written_as_yaml_strings_are_numbers(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "models:\n  amb:\n    lr: {low: 1e-5, high: 1e-3, log: true, reason: r}\n", encoding="utf-8"
    )
    r = tune.load_space(space)["amb"]["lr"]  # YAML 1.1 reads 1e-5 as a string
    assert (r.low, r.high) == (1e-5, 1e-3)


def test_record_status_names_what_produced_the_record():
    record = {
        "git": {"revision": "0123456789abcdef"},
        "date": "2026-12-01T05:00:00+0000",
        "machine": {"hostname": "box", "cpus": 2},
        "data": "synthetic",
        "plm": "embedded",
        "n_trials": 10,
        "max_epochs": 4,
    }
    said = tune.record_status(record, "read from x")
    assert said == (
        "read from x (git 0123456789, 2026-12-01T05:00:00+0000, box, 2 CPUs; data "
        "synthetic, PLM embedded; 10 trials of at most 4 epochs)"
    )
    record["git"]["dirty"] = True
    assert "(git 0123456789 with uncommitted changes, " in tune.record_status(record, "x")


def test_every_study_starts_at_the_recipe(tmp_path, smoke_data):
    """The first trial of each study is the cell's recipe exactly (every parameter of its space;
    new_params_lr 0, "the same as lr", is lr), so the chosen values are never worse on
    validation than the recipe; a cell with a space of its own (AMB-FT) uses it."""
    spec = tune.load_tune_spec(
        write_spec(tmp_path, n_trials=2, cells=("misa", "mag-bert", "amb-ft"))
    )
    cells = dict(spec.cells)
    misa_point = tune.recipe_point(tune.space_of(spec.space, "misa", cells["misa"]), cells["misa"])
    assert misa_point == {"lr": 1e-4, "new_params_lr": 1e-4, "misa_dropout": 0.5}
    assert set(tune.space_of(spec.space, "amb-ft", cells["amb-ft"])) == {
        "lr",
        "new_params_lr",
        "dropout",
    }
    fake = FakeTrain()
    studies = tune.tune(spec, train_fn=fake, dataset=smoke_data, progress=False)
    for cell, study in studies.items():
        first = study.get_trials(deepcopy=False)[0]
        point = tune.recipe_point(tune.space_of(spec.space, cell, cells[cell]), cells[cell])
        assert first.user_attrs["recipe"] and first.params == point
    frame = tune.trials_frame(studies)
    assert list(frame.groupby("cell")["recipe"].sum()) == [1, 1, 1]
    record = json.loads(tune.write_record(spec, studies, tmp_path / "r.json").read_text())
    summary = tune.record_summary(record).set_index("cell")
    first = {c: s.get_trials(deepcopy=False)[0].value for c, s in studies.items()}
    assert summary["recipe's valid MAE"].to_dict() == first
    assert (summary["best valid MAE"] <= summary["recipe's valid MAE"]).all()


def test_a_pruned_trial_is_checked_at_its_last_reported_epoch(tmp_path):
    """Optuna gives a pruned trial the value of its last report, not its best: the record's
    cross-check accepts that value and refuses any other."""
    (tmp_path / "history.csv").write_text("epoch,valid_mae\n1,1.26\n2,1.29\n3,1.32\n")

    def trial(state, value, steps):
        return SimpleNamespace(
            state=SimpleNamespace(name=state),
            value=value,
            intermediate_values=steps,
            user_attrs={"run_dir": "x"},
        )

    steps = {1: 1.26, 2: 1.29, 3: 1.32}
    assert tune._trial_value_problem(trial("PRUNED", 1.32, steps), tmp_path) is None
    assert "pruned at epoch 3" in tune._trial_value_problem(trial("PRUNED", 1e-9, steps), tmp_path)
    assert tune._trial_value_problem(trial("COMPLETE", 1.26, steps), tmp_path) is None
    assert "best validation MAE is 1.26" in tune._trial_value_problem(
        trial("COMPLETE", 1.32, steps), tmp_path
    )
