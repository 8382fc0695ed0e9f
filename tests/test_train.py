"""End-to-end training on the CPU (smoke preset: tiny random BERT, synthetic data, seconds).

One reference run (3 epochs) is shared by the tests of this module; the determinism and resume
tests train again and compare with it bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ambcore import runs
from ambcore.cli import main as cli_main
from ambcore.config import get_config
from ambcore.errors import AmbError
from ambcore.paths import PROJECT_ROOT
from ambcore.train import evaluate_run, predict, train_and_evaluate

pytestmark = pytest.mark.costly(50)  # about 50 s: started early (tests/conftest.py)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Three epochs and a patience that never triggers: every run trains exactly 3 epochs.
OVERRIDES = {"max_epochs": 3, "patience": 5}


def smoke_config(**extra):
    return get_config("smoke", **{**OVERRIDES, **extra})


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    result = train_and_evaluate(smoke_config(), run_dir, progress=False)
    return run_dir, result


def _history_without_time(run_dir: Path) -> pd.DataFrame:
    return runs.read_history(run_dir).drop(columns=["seconds"])


def _same_run_results(a: Path, b: Path) -> None:
    ma, mb = runs.read_metrics(a), runs.read_metrics(b)
    assert ma["valid"] == mb["valid"]
    assert ma["test"] == mb["test"]
    assert ma["best_epoch"] == mb["best_epoch"]
    pd.testing.assert_frame_equal(_history_without_time(a), _history_without_time(b))
    assert (a / "test_predictions.csv").read_bytes() == (b / "test_predictions.csv").read_bytes()
    wa = load_file(a / "best" / "weights.safetensors")
    wb = load_file(b / "best" / "weights.safetensors")
    assert wa.keys() == wb.keys()
    assert all(wa[k].equal(wb[k]) for k in wa)


def test_smoke_run_writes_every_artifact(reference_run):
    run_dir, result = reference_run
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "env.json",
        "history.csv",
        "metrics.json",
        "test_predictions.csv",
        "best",
        "last",
        "DONE",
    } <= names
    assert not [p for p in run_dir.rglob("*") if p.suffix in {".pkl", ".pt", ".pth", ".bin"}]
    assert not [p for p in run_dir.rglob("*.tmp")]

    assert runs.read_config(run_dir) == smoke_config()
    env = runs.read_json(run_dir / "env.json")
    assert env["device"] == "cpu" and env["versions"]["torch"]
    assert env["data_fingerprint"] and env["plm"]["name"] == "tiny-random"

    history = runs.read_history(run_dir)
    assert list(history["epoch"]) == [1, 2, 3]
    assert set(runs.HISTORY_COLUMNS) == set(history.columns)
    assert history["train_loss"].notna().all() and history["valid_mae"].notna().all()

    metrics = runs.read_metrics(run_dir)
    assert metrics["is_synthetic"] is True and metrics["plm"] == "tiny-random"
    assert metrics["best_epoch"] == int(history["valid_mae"].idxmin()) + 1
    # The best checkpoint is what was evaluated: its valid MAE is the best epoch's.
    assert metrics["valid"]["mae"] == pytest.approx(history["valid_mae"].min(), abs=1e-6)
    assert result.test == metrics["test"] and result.epochs_run == 3 and not result.reused

    preds = pd.read_csv(run_dir / "test_predictions.csv")
    assert list(preds.columns) == ["id", "y_true", "y_pred"]
    assert len(preds) == metrics["test"]["n"] == smoke_config().synthetic_n_test
    assert preds["id"].is_unique
    # the mean-label predictor on valid: the mean of the training labels, scored on valid
    from ambcore.data.loaders import load_dataset
    from ambcore.metrics import sentiment_metrics

    data = load_dataset("synthetic", smoke_config())
    constant = np.full(len(data["valid"].labels), np.mean(data["train"].labels))
    expected = sentiment_metrics(constant, data["valid"].labels)["mae"]
    assert metrics["valid_baseline_train_mean"]["mae"] == pytest.approx(expected)


def test_same_seed_gives_bit_identical_results(reference_run, tmp_path):
    run_dir, _ = reference_run
    train_and_evaluate(smoke_config(), tmp_path / "again", progress=False)
    _same_run_results(run_dir, tmp_path / "again")


def test_other_seed_gives_other_results(reference_run, tmp_path):
    run_dir, _ = reference_run
    other = train_and_evaluate(smoke_config(seed=1, max_epochs=1), tmp_path / "s1", progress=False)
    assert other.history["train_loss"][0] != runs.read_history(run_dir)["train_loss"][0]


class Interrupted(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(reference_run, tmp_path):
    run_dir, _ = reference_run
    target = tmp_path / "interrupted"

    def crash_after_first_epoch(epoch: int) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_and_evaluate(
            smoke_config(), target, progress=False, on_epoch_end=crash_after_first_epoch
        )
    assert not (target / "DONE").exists() and (target / "last" / "state.json").exists()
    with pytest.raises(AmbError, match="unfinished run"):
        train_and_evaluate(smoke_config(), target, progress=False)

    resumed = train_and_evaluate(smoke_config(), target, progress=False, resume=True)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3
    _same_run_results(run_dir, target)
    assert len(runs.read_json(target / "env.json")["resumed"]) == 1


def test_finished_run_is_not_redone(reference_run):
    run_dir, result = reference_run
    before = (run_dir / "metrics.json").stat().st_mtime_ns
    again = train_and_evaluate(smoke_config(), run_dir, progress=False, resume=True)
    assert again.reused and again.test == result.test
    assert (run_dir / "metrics.json").stat().st_mtime_ns == before
    with pytest.raises(AmbError, match="different config.*lr"):
        train_and_evaluate(smoke_config(lr=0.5), run_dir, progress=False)


def test_evaluate_run_reproduces_metrics_and_predict_covers_every_split(reference_run, tmp_path):
    run_dir, result = reference_run
    ev = evaluate_run(run_dir)
    assert ev.is_synthetic
    for split, expected in (("valid", result.valid), ("test", result.test)):
        got = getattr(ev, split)
        for key in ("mae", "acc7", "acc2_has0", "f1_non0"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12), (split, key)

    frame = predict(run_dir, "synthetic", tmp_path / "preds.csv")
    cfg = smoke_config()
    on_disk = pd.read_csv(tmp_path / "preds.csv")
    assert list(on_disk.columns) == ["split", "id", "y_true", "y_pred"]
    assert on_disk["split"].value_counts().to_dict() == {
        "train": cfg.synthetic_n_train,
        "valid": cfg.synthetic_n_valid,
        "test": cfg.synthetic_n_test,
    }
    assert len(frame) == len(on_disk)
    test_rows = on_disk[on_disk["split"] == "test"].reset_index(drop=True)
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    pd.testing.assert_series_equal(test_rows["id"], saved["id"])
    pd.testing.assert_series_equal(test_rows["y_pred"], saved["y_pred"], atol=1e-6)


# ---- CLI -------------------------------------------------------------------------------------


def test_cli_unknown_preset_and_key_list_the_valid_ones(tmp_path, capsys):
    assert cli_main(["train", "--preset", "nope", "--out", str(tmp_path / "r")]) == 2  # usage
    assert (
        "invalid choice: 'nope' (choose from 'smoke', 'embedded', 'paper')"
        in capsys.readouterr().err
    )
    assert (
        cli_main(
            ["train", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", "learning_rate=1"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "unknown config key(s) 'learning_rate'" in err and "lr" in err
    assert (
        cli_main(["train", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", "lr"]) == 1
    )
    assert "key=value" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_evaluate_and_predict(reference_run, tmp_path, capsys):
    run_dir, result = reference_run
    assert cli_main(["evaluate", str(tmp_path)]) == 1  # a runtime error, not a usage error
    assert "not a run folder" in capsys.readouterr().err
    assert cli_main(["evaluate", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["is_synthetic"] and out["test"]["mae"] == pytest.approx(result.test["mae"])
    assert (
        cli_main(["predict", str(run_dir), "--data", "synthetic", "--out", str(tmp_path / "p.csv")])
        == 0
    )
    assert "wrote" in capsys.readouterr().out and (tmp_path / "p.csv").exists()


def test_cli_train_reuses_a_finished_run(reference_run, capsys):
    run_dir, _ = reference_run
    args = ["train", "--preset", "smoke", "--seed", "0", "--out", str(run_dir), "--no-progress"]
    for key, value in OVERRIDES.items():
        args += ["--set", f"{key}={value}"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "SYNTHETIC" in out


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(reference_run, tmp_path):
    """A real ``kill -9`` in the middle of training, then ``--resume`` from the CLI."""
    run_dir, _ = reference_run
    target = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "ambcore",
        "train",
        "--preset",
        "smoke",
        "--seed",
        "0",
        "--out",
        str(target),
        "--no-progress",
    ]
    for key, value in OVERRIDES.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = target / "last" / "state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), proc.stderr.read().decode()[-2000:]
    assert not (target / "DONE").exists(), "the run finished before it could be killed"

    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_run_results(run_dir, target)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    """DistributedDataParallel on the CPU (gloo): two ranks train, rank 0 alone writes."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ambcore",
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "max_epochs=1",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 1 epoch(s)") == 1  # only rank 0 reports
    metrics = runs.read_metrics(out)
    assert metrics["world_size"] == 2 and (out / "DONE").exists()
    assert len(pd.read_csv(out / "test_predictions.csv")) == smoke_config().synthetic_n_test
    assert runs.read_json(out / "env.json")["world_size"] == 2


def test_seeding_requests_deterministic_kernels_without_loading_the_compiler():
    """seed_everything turns torch's deterministic algorithms on (warn only) and, unless the
    compiler is already loaded, does not import torch._inductor (about a second per process)."""
    import subprocess
    import sys

    code = (
        "import sys, torch; from ambcore.seeding import seed_everything; seed_everything(3); "
        "print(torch.are_deterministic_algorithms_enabled(), "
        "torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"]


# ---- the run's best/ as a library model (Hugging Face conventions) ------------------------------


def test_best_folder_loads_with_from_pretrained_and_has_a_model_card(reference_run, tmp_path):
    import ambcore
    from ambcore.data import load_dataset
    from ambcore.models.amb import AMB
    from ambcore.models.misa import MISA

    run_dir, result = reference_run
    model = ambcore.from_pretrained(run_dir)  # the run folder: its best/ checkpoint
    assert isinstance(model, AMB) and not model.training
    assert isinstance(AMB.from_pretrained(run_dir / "best"), AMB)
    with pytest.raises(AmbError, match="class AMB.*not MISA"):
        MISA.from_pretrained(run_dir)
    # the same predictions as the run's own evaluation, from raw inputs
    test = load_dataset("synthetic", smoke_config())["test"]
    scores = model.predict(test.texts, test.visual, test.acoustic)
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    assert isinstance(scores, np.ndarray) and scores.shape == (len(test),)
    np.testing.assert_allclose(scores, saved["y_pred"].to_numpy(), atol=1e-6)
    # config.json: the constructor's arguments, the ambcore Config nested (not a transformers config)
    config = json.loads((run_dir / "best" / "config.json").read_text())
    assert sorted(config) == ["acoustic_dim", "cfg", "visual_dim"] and "model_type" not in config
    assert config["cfg"] == runs.read_config(run_dir).to_dict()
    # the model card: the Hub's metadata block, data (SYNTHETIC), metrics with intervals
    from huggingface_hub import ModelCard

    card = ModelCard.load(run_dir / "best" / "README.md")
    assert card.data.library_name == "ambcore" and "synthetic-data" in card.data.tags
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["mae"].metric_value == pytest.approx(result.test["mae"])
    assert results["mae"].dataset_split == "test" and "SYNTHETIC" in results["mae"].dataset_name
    lo, hi = results["mae"].metric_args["ci95_lo"], results["mae"].metric_args["ci95_hi"]
    assert lo < result.test["mae"] < hi
    text = card.text
    assert "**SYNTHETIC data.**" in text and "tiny-random" in text
    assert f"{result.test['mae']:.3f} [{lo:.3f}, {hi:.3f}]" in text


def test_cli_predict_is_model_predict(reference_run, tmp_path):
    import ambcore
    from ambcore.data import load_dataset

    run_dir, _ = reference_run
    assert (
        cli_main(["predict", str(run_dir), "--data", "synthetic", "--out", str(tmp_path / "p.csv")])
        == 0
    )
    on_disk = pd.read_csv(tmp_path / "p.csv")
    library = predict(run_dir, "synthetic", tmp_path / "q.csv")  # the evaluation loop's numbers
    pd.testing.assert_frame_equal(on_disk, pd.read_csv(tmp_path / "q.csv"), atol=1e-6)
    assert len(library) == len(on_disk)
    train = load_dataset("synthetic", smoke_config())["train"]
    scores = ambcore.from_pretrained(run_dir).predict(
        train.texts, train.visual, train.acoustic, batch_size=7
    )
    np.testing.assert_allclose(scores, on_disk[on_disk["split"] == "train"]["y_pred"], atol=1e-6)


def test_one_train_step_changes_exactly_the_trainable_parameters():
    """flax's check: one step of the loop moves the trainable weights and nothing else."""
    from ambcore.train import TrainSetup, TrainState, _Dist, create_train_state, set_up, train_step

    cfg = smoke_config()
    setup = set_up(cfg, _Dist())
    state = create_train_state(setup)
    assert isinstance(setup, TrainSetup) and isinstance(state, TrainState)
    before = {n: p.detach().clone() for n, p in state.model.named_parameters()}
    loader = _epoch_loader_of(setup)
    batch = next(iter(loader)).to(setup.device)
    task, aux = train_step(state, batch, setup)
    assert task.ndim == 0 and torch.isfinite(task)
    after = dict(state.model.named_parameters())
    changed = {n for n in before if not before[n].equal(after[n])}
    trainable = {n for n, p in state.model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable


def _epoch_loader_of(setup):
    from ambcore.train import _epoch_loader

    return _epoch_loader(setup.dataset["train"], setup.tokenizer, setup.cfg, 1, setup.dist)
