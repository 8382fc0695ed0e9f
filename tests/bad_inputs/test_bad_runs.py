"""Bad run inputs: config values, divergence, tampered checkpoints, a second trainer, crashes,
unwritable outputs. Each case: a non-zero exit, exactly one ``error:`` line, no traceback and
no partial output (smoke preset, one or two epochs: seconds per case)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ambcore import atomic, runs
from ambcore.cli import main as cli_main
from ambcore.config import ConfigError, get_config
from ambcore.models.checkpoint import file_sha256, read_checkpoint
from ambcore.paths import PROJECT_ROOT
from ambcore.train import train_and_evaluate

SMOKE = {"max_epochs": 1}
TRAIN = ["train", "--preset", "smoke", "--no-progress", "--set", "max_epochs=1"]


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    env.pop("PYTHONHASHSEED", None)  # set by seeding in this process; children seed themselves
    return env


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli_main(list(argv))
    return code, capsys.readouterr().err


def _one_error(code: int, err: str, *needles: str) -> str:
    """The single ``error:`` line of a failed command, which must contain every needle."""
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Two finished one-epoch runs that differ only in the seed."""
    root = tmp_path_factory.mktemp("finished")
    for seed in (0, 1):
        train_and_evaluate(
            get_config("smoke", seed=seed, **SMOKE), root / f"seed{seed}", progress=False
        )
    return root


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the seed-0 run, free to tamper with."""
    target = tmp_path / "run"
    shutil.copytree(finished / "seed0", target)
    return target


# ---- config values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "batch_size=0"], "batch_size"),
        (["--set", "batch_size=-4"], "batch_size"),
        (["--set", "eval_batch_size=0"], "eval_batch_size"),
        (["--set", "lr=nan"], "lr"),
        (["--set", "lr=inf"], "lr"),
        (["--set", "lr=1e30"], "lr"),
        (["--set", "grad_clip=nan"], "grad_clip"),
        (["--set", "dropout=1.5"], "dropout"),
        (["--set", "encoder_heads=3"], "encoder_heads"),
        (["--seed", "-1"], "seed"),
        (["--set", "seed=4294967296"], "seed"),
        (["--set", "synthetic_n_train=0"], "synthetic_n_train"),
        (["--set", "noise_augment_rate=5"], "noise_augment_rate"),
        (["--set", "num_workers=-1"], "num_workers"),
        (["--set", "patience=0"], "patience"),
        (["--set", "max_text_len=0"], "max_text_len"),
    ],
)
def test_bad_config_value_is_one_line_before_anything_runs(capsys, tmp_path, args, key):
    out = tmp_path / "run"
    code, err = _cli(capsys, *TRAIN, "--out", str(out), *args)
    line = _one_error(code, err, f"'{key}'")
    assert "expected" in line  # what is allowed
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"seed": 1e23},
        {"seed": 2**32},
        {"seed": True},
        {"synthetic_seed": -5},
        {"lr": float("nan")},
        {"patience": 0},
        {"max_text_len": 1},
    ],
)
def test_get_config_refuses_out_of_range_values(overrides):
    with pytest.raises(ConfigError, match=next(iter(overrides))):
        get_config("smoke", **overrides)


def test_real_cli_prints_one_line_without_traceback(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ambcore", *TRAIN, "--out", str(out), "--set", "batch_size=0"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    _one_error(done.returncode, done.stderr, "'batch_size'=0")
    assert not out.exists()


# ---- divergence ------------------------------------------------------------------------------


def test_divergence_stops_marks_the_run_and_keeps_the_last_good_checkpoint(
    capsys, tmp_path, monkeypatch
):
    """From the 7th step on (epoch 2 of 6 steps), the loss turns every weight into NaN."""
    import ambcore.train as train

    real_loss, calls = train._task_loss, []

    def exploding_loss(cfg, prediction, labels):
        calls.append(1)
        loss = real_loss(cfg, prediction, labels)
        return loss * float("nan") if len(calls) > 6 else loss

    monkeypatch.setattr(train, "_task_loss", exploding_loss)
    out = tmp_path / "run"
    code, err = _cli(
        capsys, *TRAIN, "--out", str(out), "--set", "max_epochs=3", "--set", "patience=5"
    )
    _one_error(code, err, "diverged at epoch 2", str(out))
    marker = runs.read_diverged(out)
    assert marker["epoch"] == 2 and marker["best_epoch"] == 1
    assert runs.run_status(out) == "diverged"
    assert not (out / "DONE").exists() and not (out / "metrics.json").exists()
    _, _, tensors = read_checkpoint(out / "best")  # hash-checked and finite: epoch 1
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert runs.load_resume_state(out / "last").epoch == 1
    assert len(runs.read_history(out)) == 1

    monkeypatch.setattr(train, "_task_loss", real_loss)
    code, err = _cli(
        capsys,
        *TRAIN,
        "--out",
        str(out),
        "--set",
        "max_epochs=3",
        "--set",
        "patience=5",
        "--resume",
    )
    _one_error(code, err, "diverged at epoch 2")


# ---- checkpoints -----------------------------------------------------------------------------


def _flip_last_byte_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's values
    path.write_bytes(bytes(data))


def _rehash(run_dir: Path) -> None:
    """Record the current weights' SHA-256, as a careful forger would."""
    meta_path = run_dir / "best" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = file_sha256(run_dir / "best" / "weights.safetensors")
    meta_path.write_text(json.dumps(meta))


def test_flipped_bit_in_best_weights_is_refused(capsys, run_copy):
    _flip_last_byte_bit(run_copy / "best" / "weights.safetensors")
    code, err = _cli(capsys, "evaluate", str(run_copy))
    _one_error(code, err, "SHA-256", "weights.safetensors")
    with pytest.raises(Exception, match="SHA-256"):
        runs.verify_finished(run_copy)


def test_truncated_weights_are_refused(capsys, run_copy):
    path = run_copy / "best" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "SHA-256")
    _rehash(run_copy)
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "not a readable safetensors file")


def test_corrupt_weights_header_is_refused(capsys, run_copy):
    path = run_copy / "best" / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[8:16] = b"{{{{{{{{"
    path.write_bytes(bytes(data))
    _rehash(run_copy)
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "not a readable safetensors file")


def test_nan_weights_are_refused(capsys, run_copy):
    path = run_copy / "best" / "weights.safetensors"
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(path), metadata={"format": "ambcore", "version": "1"})
    _rehash(run_copy)
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "NaN", name)


def test_best_config_not_json_is_refused(capsys, run_copy):
    (run_copy / "best" / "config.json").write_text("{not json")
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "config.json", "not valid JSON")


def test_best_folder_from_another_seed_is_refused(capsys, finished, run_copy):
    shutil.rmtree(run_copy / "best")
    shutil.copytree(finished / "seed1" / "best", run_copy / "best")
    _one_error(*_cli(capsys, "evaluate", str(run_copy)), "seed", "another run")
    with pytest.raises(Exception, match="another run"):
        runs.verify_finished(run_copy)


def test_best_folder_from_another_config_is_refused(capsys, run_copy):
    path = run_copy / "best" / "config.json"
    config = json.loads(path.read_text())
    config["cfg"]["lr"] = config["cfg"]["lr"] / 2
    path.write_text(json.dumps(config))
    _one_error(
        *_cli(
            capsys,
            "predict",
            str(run_copy),
            "--data",
            "synthetic",
            "--out",
            str(run_copy.parent / "p.csv"),
        ),
        "lr",
        "another run",
    )
    assert not (run_copy.parent / "p.csv").exists()


def test_verify_finished_accepts_a_good_run_and_refuses_a_short_history(run_copy):
    assert runs.verify_finished(run_copy)["epochs_run"] == 1
    (run_copy / "history.csv").write_text((run_copy / "history.csv").read_text().splitlines()[0])
    with pytest.raises(Exception, match="history.csv"):
        runs.verify_finished(run_copy)


# ---- the run folder's lock -------------------------------------------------------------------


def test_second_train_on_the_same_folder_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ambcore",
        "train",
        "--preset",
        "smoke",
        "--no-progress",
        "--out",
        str(out),
        "--set",
        "max_epochs=400",
        "--set",
        "patience=400",
    ]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "config.json").exists() and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        t0 = time.monotonic()
        second = subprocess.run(
            cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=120
        )
        _one_error(second.returncode, second.stderr, str(out), f"pid {first.pid}")
        assert time.monotonic() - t0 < 60
        assert first.poll() is None  # the holder trains on
        assert runs.lock_holder(out) == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert runs.lock_holder(out) is None  # released by the kernel when the holder died
    with runs.run_lock(out), runs.run_lock(out):  # taken again; re-entry in one process is a no-op
        assert runs.lock_holder(out) == os.getpid()


# ---- crashes between the files of an epoch ---------------------------------------------------


class _Crash(Exception):
    pass


@pytest.fixture
def crashed_after_final_state(tmp_path, monkeypatch):
    """A 2-epoch run that dies right after the final epoch's ``last/state.json``."""
    real_save = runs.save_resume_state

    def save_then_die(last_dir, rs):
        real_save(last_dir, rs)
        if rs.epoch == 2:
            raise _Crash()

    monkeypatch.setattr(runs, "save_resume_state", save_then_die)
    cfg = get_config("smoke", max_epochs=2, patience=5)
    out = tmp_path / "run"
    with pytest.raises(_Crash):
        train_and_evaluate(cfg, out, progress=False)
    monkeypatch.setattr(runs, "save_resume_state", real_save)
    return cfg, out


def test_crash_between_state_and_history_loses_no_history_row(crashed_after_final_state):
    cfg, out = crashed_after_final_state
    result = train_and_evaluate(cfg, out, progress=False, resume=True)
    assert result.epochs_run == 2
    assert list(runs.read_history(out)["epoch"]) == [1, 2]
    runs.verify_finished(out)


def test_resume_removes_temporary_files_of_a_crash(crashed_after_final_state):
    cfg, out = crashed_after_final_state
    leftovers = [out / ".metrics.json.x1y2.tmp", out / "last" / ".state.json.a1b2.tmp"]
    for path in leftovers:
        path.write_text("partial")
    train_and_evaluate(cfg, out, progress=False, resume=True)
    assert not any(path.exists() for path in leftovers)
    assert not list(out.rglob("*.tmp"))


# ---- outputs that cannot be written ----------------------------------------------------------


def test_predict_out_a_folder_is_refused(capsys, run_copy, tmp_path):
    folder = tmp_path / "preds"
    folder.mkdir()
    code, err = _cli(capsys, "predict", str(run_copy), "--data", "synthetic", "--out", str(folder))
    _one_error(code, err, str(folder), "folder")
    assert list(folder.iterdir()) == []


def test_train_out_an_existing_file_is_refused(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    _one_error(*_cli(capsys, *TRAIN, "--out", str(target)), str(target), "not a folder")
    assert target.read_text() == "keep me"


def test_read_only_run_folder_is_one_line(capsys, tmp_path, monkeypatch):
    """A folder the process may not write into (simulated: root ignores permission bits)."""

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    out = tmp_path / "run"
    _one_error(
        *_cli(capsys, *TRAIN, "--out", str(out)), "cannot write", str(out), "Permission denied"
    )


def test_full_disk_is_one_line_naming_the_file(capsys, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full)
    out = tmp_path / "run"
    _one_error(
        *_cli(capsys, *TRAIN, "--out", str(out)),
        "cannot write",
        str(out),
        "No space left on device",
    )


def test_plm_with_a_pickled_weights_file_is_one_line(capsys, tmp_path):
    """torch refuses the pickle (weights-only); its multi-line message becomes one line."""
    from transformers import BertConfig

    from ambcore.models.plm import load_tokenizer

    plm = tmp_path / "plm"
    tokenizer = load_tokenizer(get_config("smoke"))
    tokenizer.save_pretrained(plm)
    BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    ).save_pretrained(plm)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (plm / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    out = tmp_path / "run"
    _one_error(
        *_cli(capsys, *TRAIN, "--out", str(out), "--set", f"plm={plm}"),
        str(plm),
        "pytorch_model.bin",
    )
    assert not marker.exists()
    assert not out.exists()
