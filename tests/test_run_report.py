"""What the training chapter says about a run (ambcore.run_report), on made-up results."""

from __future__ import annotations

from types import SimpleNamespace

from ambcore import get_config, run_report


def _metrics(mae: float, corr: float | None) -> dict:
    return {
        "mae": mae,
        "corr": corr,
        "acc7": 0.25,
        "acc5": 0.3,
        "acc2_has0": 0.6,
        "f1_has0": 0.61,
        "acc2_non0": 0.655,
        "f1_non0": 0.6666,
        "n": 40,
    }


def _result(run_dir, **changes):
    values = dict(
        run_dir=run_dir,
        reused=False,
        seconds=12.4,
        epochs_run=5,
        best_epoch=3,
        stopped_early=True,
        n_trainable_params=123456,
        data_name="SYNTHETIC x",
        plm="tiny-random",
        is_synthetic=True,
    )
    values.update(changes)
    return SimpleNamespace(**values)


def test_config_table_shows_the_chosen_settings():
    cfg = get_config("smoke", lr=2e-4)
    table = run_report.config_table(cfg)
    assert list(table.index) == list(run_report.CONFIG_SHOWN)
    assert table.loc["lr", "value"] == "0.0002" and table.loc["preset", "value"] == "smoke"


def test_paths_are_shown_relative_to_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("AMB_RUNS", str(tmp_path))
    run = tmp_path / "smoke" / "amb" / "seed0"
    run.mkdir(parents=True)
    assert run_report.shown_path(run) == "$AMB_RUNS/smoke/amb/seed0"
    assert run_report.shown_path(tmp_path.parent / "elsewhere") == "elsewhere"
    summary = run_report.training_summary(_result(run))
    assert str(tmp_path) not in summary
    assert summary.splitlines() == [
        "run folder: $AMB_RUNS/smoke/amb/seed0",
        "trained in 12 s; 5 epochs, best epoch 3 (stopped early); 123,456 trainable parameters",
    ]
    reused = run_report.training_summary(_result(run, reused=True, stopped_early=False))
    assert "reused (already finished); 5 epochs, best epoch 3; " in reused


def test_run_files_leave_out_hidden_and_named_files(tmp_path):
    for name in ("metrics.json", ".lock", "sweep.json", "DONE"):
        (tmp_path / name).write_text("")
    assert run_report.run_files(tmp_path, leave_out={"sweep.json"}) == ["DONE", "metrics.json"]


def test_metrics_and_glued_values():
    metrics = {
        "valid": _metrics(0.7, 0.5),
        "test": _metrics(0.8, None),
        "test_baseline_train_mean": _metrics(1.1, None),
    }
    table = run_report.metrics_overview(metrics)
    assert list(table[""]) == [
        "valid (best checkpoint)",
        "test (best checkpoint)",
        "test: predict the training mean",
    ]
    assert list(table["MAE"]) == [0.7, 0.8, 1.1]
    assert run_report.METRIC_DIGITS["MAE"] == 3 and run_report.METRIC_DIGITS["Acc-7 (%)"] == 1
    from ambcore.pages import numbered_table

    shown = numbered_table(table, "c", digits=run_report.METRIC_DIGITS).markdown
    assert "| test (best checkpoint) | 0.800 | – | 25.0 | 30.0 | 60.0 |" in shown
    values = run_report.glue_values(_result("x"), metrics)
    assert values["train_test_mae"] == "0.800" and values["train_test_corr"] == "n/a"
    assert values["train_test_acc2_non0"] == "65.5" and values["train_test_f1_non0"] == "66.7"
    assert values["train_baseline_mae"] == "1.100" and values["train_n_trainable"] == "123,456"


def test_provenance_table_marks_uncommitted_changes():
    env = {
        "device": "cpu",
        "versions": {"torch": "2", "transformers": "5"},
        "git_revision": "abc",
        "git_dirty": True,
        "data_fingerprint": "f00",
        "hostname": "h",
        "cpu_count": 2,
    }
    table = run_report.provenance_table(env)
    assert table.loc["git revision", "value"] == "abc (uncommitted changes)"
    assert table.loc["host / CPUs", "value"] == "h / 2"
