"""Run-folder helpers: atomic writes, JSON/CSV conventions, resume state round trips."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from ambcore import runs
from ambcore.config import get_config
from ambcore.errors import AmbError


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    runs.write_json(path, {"mae": 0.5})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full (simulated)")

    # The failure happens after the temporary file was written, at the rename.
    monkeypatch.setattr(runs.os, "replace", fail)
    with pytest.raises(OSError, match="simulated"):
        runs.write_json(path, {"mae": 0.1})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_atomic_write_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "history.csv"
    runs.write_csv(path, [{"epoch": 1, "train_loss": 1.0}], ["epoch", "train_loss"])
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class Exploding:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])  # half the bytes reach the temp file
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "fdopen", lambda fd, mode: Exploding(real_fdopen(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        runs.write_csv(path, [{"epoch": 2, "train_loss": 0.5}] * 100, ["epoch", "train_loss"])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


def test_json_nan_is_null_and_csv_nan_is_empty(tmp_path):
    runs.write_json(tmp_path / "m.json", {"corr": float("nan"), "n": np.int64(3)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"corr": None, "n": 3}
    runs.write_csv(tmp_path / "h.csv", [{"a": float("nan"), "b": 0.1}], ["a", "b"])
    assert (tmp_path / "h.csv").read_text().splitlines() == ["a,b", ",0.1"]


def test_replace_dir_and_recovery(tmp_path):
    target = tmp_path / "best"

    def writer(text):
        return lambda folder: (folder / "w.txt").write_text(text)

    runs.replace_dir(target, writer("one"))
    runs.replace_dir(target, writer("two"))
    assert (target / "w.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # A crash after the old folder was moved aside and the new one was complete.
    os.replace(target, tmp_path / "best.old")
    (tmp_path / "best.new").mkdir()
    (tmp_path / "best.new" / "w.txt").write_text("three")
    (tmp_path / "best.new" / ".complete").write_text("")
    runs.recover_dir_swap(target)
    assert (target / "w.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # A crash while the new folder was being written: the old one stays.
    (tmp_path / "best.new").mkdir()
    (tmp_path / "best.new" / "w.txt").write_text("partial")
    runs.recover_dir_swap(target)
    assert (target / "w.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_rng_state_round_trip():
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    tensors, scalars = runs.capture_rng_state()
    expected = (torch.rand(4), random.random(), np.random.normal(), np.random.rand())
    runs.restore_rng_state(tensors, scalars)
    got = (torch.rand(4), random.random(), np.random.normal(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def _step(model, opt):
    loss = model(torch.ones(2, 3)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_resume_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _step(model, opt)
    tensors, scalars = runs.capture_rng_state()
    cfg = get_config("smoke")
    state = runs.ResumeState(
        epoch=1,
        model={k: v.detach().clone() for k, v in model.named_parameters()},
        optimizer=opt.state_dict(),
        rng_tensors=tensors,
        rng_scalars=scalars,
        best_valid_mae=float("inf"),
        best_epoch=0,
        epochs_since_best=1,
        history=[{"epoch": 1, "valid_corr": float("nan")}],
        config_json=cfg.to_json(),
    )
    last = tmp_path / "last"
    runs.save_resume_state(last, state)
    state.epoch = 2
    runs.save_resume_state(last, state)  # the epoch-1 files are pruned
    assert sorted(p.name for p in last.iterdir()) == [
        "model-e0002.safetensors",
        "optimizer-e0002.safetensors",
        "rng-e0002.safetensors",
        "state.json",
    ]
    assert not list(last.glob("*.pkl")) and not list(last.glob("*.pt"))

    loaded = runs.load_resume_state(last)
    assert loaded.epoch == 2 and loaded.best_valid_mae == float("inf")
    assert loaded.history == [{"epoch": 1, "valid_corr": None}]
    assert json.loads(loaded.config_json) == json.loads(cfg.to_json())

    # The restored optimizer continues exactly like the original one.
    clone = torch.nn.Linear(3, 1)
    clone.load_state_dict(loaded.model)
    opt2 = torch.optim.Adam(clone.parameters(), lr=1e-2)
    opt2.load_state_dict(loaded.optimizer)
    _step(model, opt)
    _step(clone, opt2)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_state_json_points_to_complete_files(tmp_path):
    """Files for a newer epoch that was never committed are ignored (and pruned next time)."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters())
    tensors, scalars = runs.capture_rng_state()
    state = runs.ResumeState(
        1,
        dict(model.named_parameters()),
        opt.state_dict(),
        tensors,
        scalars,
        0.5,
        1,
        0,
        [],
        get_config("smoke").to_json(),
    )
    runs.save_resume_state(tmp_path, state)
    (tmp_path / "model-e0002.safetensors").write_bytes(b"half a file")
    assert runs.load_resume_state(tmp_path).epoch == 1


def test_collect_env_fields():
    env = runs.collect_env("cpu", data_fingerprint="abc", plm={"name": "tiny-random"})
    for key in ("python", "versions", "device", "git_revision", "git_dirty", "hostname"):
        assert key in env
    assert env["versions"]["torch"] == torch.__version__
    assert env["cpu_count"] == os.cpu_count()
    assert env["data_fingerprint"] == "abc"


def test_default_run_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AMB_RUNS", str(tmp_path))
    cfg = get_config("paper", seed=2, data="/data/aligned_50.pkl")
    assert runs.default_run_dir(cfg) == tmp_path / "paper" / "amb-seed2"
    assert runs.default_run_dir(get_config("smoke", model="misa")).name == "misa-seed0"
    changed = runs.default_run_dir(get_config("smoke", lr=0.1))
    assert changed.name.startswith("amb-seed0-") and changed != runs.default_run_dir(
        get_config("smoke", lr=0.2)
    )


# ---- the one lock, the one config diff, the run folder's events --------------------------------


def test_file_lock_is_exclusive_and_names_its_holder(tmp_path):
    path = tmp_path / "sub" / ".lock"
    first, second = runs.FileLock(path), runs.FileLock(path)
    assert first.holder() is None  # no file yet
    assert first.acquire(blocking=False)  # creates the folder and the file
    assert first.holder() == os.getpid()
    assert not second.acquire(blocking=False)  # one open file holds it, even in one process
    first.release()
    assert first.holder() is None
    with second:  # the blocking form, as the tuning journal takes it
        assert not first.acquire(blocking=False)
    assert first.acquire(blocking=False)
    first.release()


def test_config_diff_names_what_differs():
    cfg = get_config("smoke")
    saved = cfg.to_dict()
    assert runs.config_diff(saved, cfg) == {}
    saved.pop("lr")
    saved["seed"] = cfg.seed + 1
    diff = runs.config_diff(saved, cfg)
    assert diff == {"lr": (None, cfg.lr), "seed": (cfg.seed + 1, cfg.seed)}
    assert runs.format_config_diff(diff, limit=1) == f"lr: None -> {cfg.lr!r}"
    assert runs.format_config_diff(diff, sep="vs").endswith(f"seed: {cfg.seed + 1} vs {cfg.seed}")


def test_run_folder_events_write_the_run_files(tmp_path):
    cfg = get_config("smoke")
    folder = runs.RunFolder(tmp_path / "run", cfg)
    with folder.claim(resume=False):
        assert not folder.reused and folder.resume_state is None
        assert runs.lock_holder(folder.paths.root) == os.getpid()
        folder.start(lambda: {"made": "here"})
        assert runs.read_config(folder.paths.root) == cfg
        folder.best(lambda best: (best / "weights").write_text("w"))
        state = runs.ResumeState(
            epoch=1,
            model={"w": torch.zeros(2)},
            optimizer={"state": {}, "param_groups": []},
            rng_tensors={"t": torch.zeros(1)},
            rng_scalars={},
            best_valid_mae=0.5,
            best_epoch=1,
            epochs_since_best=0,
            history=[{"epoch": 1, "train_loss": 1.0}],
            config_json=cfg.to_json(),
        )
        folder.epoch(state)
    assert runs.lock_holder(folder.paths.root) is None
    assert len(runs.read_history(folder.paths.root)) == 1
    assert runs.load_resume_state(folder.paths.last).best_valid_mae == 0.5
    assert (folder.paths.best / "weights").read_text() == "w"

    with pytest.raises(AmbError, match="unfinished run; continue it with --resume"):
        with runs.RunFolder(folder.paths.root, cfg).claim(resume=False):
            pass
    other = get_config("smoke", lr=cfg.lr * 2)
    with pytest.raises(AmbError, match="different config .*lr: "):
        with runs.RunFolder(folder.paths.root, other).claim(resume=True):
            pass
    again = runs.RunFolder(folder.paths.root, cfg)
    with again.claim(resume=True):
        assert again.resume_state.epoch == 1
        again.diverged({"epoch": 2, "message": "diverged at epoch 2"})
    with pytest.raises(AmbError, match="diverged at epoch 2"):
        with runs.RunFolder(folder.paths.root, cfg).claim(resume=True):
            pass
