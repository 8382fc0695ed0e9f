"""Red-team cases of the tuner, the book's kernels and real files under faults.

Each case is what an attacker or an unlucky user does: a tuning spec that writes outside the
runs folder, a spec field of the wrong type, a study killed with ``kill -9`` during a journal
append, a journal cut or full of garbage, a journal of another spec, forged trial values,
Ctrl-C during ``tune``, a chapter cell that hangs, and dataset files whose ids repeat. A refusal
is a non-zero exit with exactly one ``error:`` line and no traceback, and nothing is written
outside the runs folder; a repair is one line and the work goes on.

The studies train with a fake trainer (a one-epoch history whose validation MAE depends on the
learning rate, as ``tests/test_tune.py``'s), injected in this process or, where a process must
be killed, in a child started for it; the faults are injected as the sweep tests inject theirs.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from ambcore import runs
from ambcore.cli import main as cli_main
from ambcore.paths import PROJECT_ROOT

pytestmark = pytest.mark.costly(35)  # about 35 s: started early (tests/conftest.py)

EXPERIMENTS = PROJECT_ROOT / "experiments"
JOURNAL = "study.journal"


# ---- helpers -------------------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _one_error(code: int, err: str, *needles: str) -> str:
    """A refusal: exit 1 (2 is for a command line that does not parse), one line on stderr,
    ``error: ...`` naming every needle."""
    assert code == 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def fake_train(cfg, run_dir, progress=False, resume=True, on_epoch_end=None, dataset=None):
    """One "epoch": a history row whose validation MAE is smallest at lr = 1e-3."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / "calls.log", "a") as log:
        log.write(f"{run_dir.name}\n")
    mae = 0.5 + abs(math.log10(cfg.lr) + 3)
    runs.write_csv(run_dir / "history.csv", [{"epoch": 1, "valid_mae": mae}], runs.HISTORY_COLUMNS)
    on_epoch_end(1)
    return SimpleNamespace(valid={"mae": mae})


def _calls(cell_dir: Path) -> list[str]:
    log = cell_dir / "calls.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture()
def runs_root(tmp_path, monkeypatch):
    """AMB_RUNS two levels below tmp_path, so that ``../../escaped`` would land in tmp_path."""
    root = tmp_path / "home" / "runs"
    root.mkdir(parents=True)
    monkeypatch.setenv("AMB_RUNS", str(root))
    return root


@pytest.fixture()
def fake(monkeypatch):
    """The tuner's trainer (``ambcore.train.train_and_evaluate``) replaced by ``fake_train``."""
    import ambcore.train

    monkeypatch.setattr(ambcore.train, "train_and_evaluate", fake_train)


def _tune_spec(tmp_path: Path, text: str = "", **fields) -> Path:
    spec = {
        "name": "rt",
        "sweep": str(EXPERIMENTS / "recipes_smoke.yaml"),
        "cells": ["amb"],
        "space": str(EXPERIMENTS / "search_space.yaml"),
        "n_trials": 2,
        "seed": 100,
        "runs_dir": "rt",
        "pruner": {"n_startup_trials": 2, "n_warmup_steps": 1},
    }
    spec.update(fields)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec) + text, encoding="utf-8")
    return path


def _study(journal: Path, cell: str = "amb"):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(
        study_name=cell, storage=JournalStorage(JournalFileBackend(str(journal)))
    )


def _finished(journal: Path, cell: str = "amb") -> list:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in _study(journal, cell).get_trials(deepcopy=False) if t.state in done]


# A child process running ``python -m ambcore tune`` with the fake trainer and, by mode, a fault:
#   run:   nothing more;
#   kill:  the append that marks the first trial complete writes half its bytes, holding the
#          journal's lock, and the process kills itself with SIGKILL (a real kill -9 mid-append);
#   sleep: the first trial announces itself in MARKER and sleeps (the test sends SIGINT).
CHILD = r"""
import json, math, os, signal, sys, time
from pathlib import Path
from types import SimpleNamespace

import ambcore.train
from ambcore import runs

mode, marker = sys.argv[1], Path(sys.argv[2])


def fake_train(cfg, run_dir, progress=False, resume=True, on_epoch_end=None, dataset=None):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if mode == "sleep":
        marker.write_text(run_dir.name)
        time.sleep(120)
    mae = 0.5 + abs(math.log10(cfg.lr) + 3)
    runs.write_csv(run_dir / "history.csv", [{"epoch": 1, "valid_mae": mae}], runs.HISTORY_COLUMNS)
    on_epoch_end(1)
    return SimpleNamespace(valid={"mae": mae})


ambcore.train.train_and_evaluate = fake_train
if mode == "kill":
    from optuna.storages.journal import JournalFileBackend

    real_append = JournalFileBackend.append_logs

    def append_then_die(self, logs):
        if any(log.get("op_code") == 6 and log.get("state") == 1 for log in logs):
            text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
            self._lock.acquire()
            with open(self._file_path, "ab") as fh:
                fh.write(text[: len(text) // 2].encode())
                fh.flush()
                os.fsync(fh.fileno())
            marker.write_text("cut")
            os.kill(os.getpid(), signal.SIGKILL)
        real_append(self, logs)

    JournalFileBackend.append_logs = append_then_die

from ambcore.cli import main

sys.argv = ["ambcore", *sys.argv[3:]]  # what the resume hint repeats
sys.exit(main(sys.argv[1:]))
"""


def _child(mode: str, marker: Path, *argv: str, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", CHILD, mode, str(marker), *map(str, argv)]
    if wait:
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# ---- 1. the tuning spec: the runs folder, the trial cap, every field -------------------------------


@pytest.mark.parametrize("runs_dir", ["../../escaped", "ok/../../escaped", "ABSOLUTE"])
def test_a_tuning_spec_cannot_write_outside_the_runs_folder(
    tmp_path, runs_root, capsys, fake, runs_dir
):
    runs_dir = str(tmp_path / "escaped") if runs_dir == "ABSOLUTE" else runs_dir
    spec = _tune_spec(tmp_path, runs_dir=runs_dir)
    before = _files(tmp_path)
    code, out, err = _cli(capsys, "tune", spec)
    _one_error(code, err, str(spec), "runs_dir", "escaped", "is not allowed")
    assert out == "" and not (tmp_path / "escaped").exists()
    assert _files(tmp_path) == before and list(runs_root.iterdir()) == []


def test_a_tuning_spec_cannot_follow_a_symlink_out(tmp_path, runs_root, capsys, fake):
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs_root / "link").symlink_to(outside)
    code, _, err = _cli(capsys, "tune", _tune_spec(tmp_path, runs_dir="link"))
    _one_error(code, err, "runs_dir", "link", "leads out of the runs folder")
    (runs_root / "rt").mkdir()
    (runs_root / "rt" / "amb").symlink_to(outside)  # a cell's study folder leading out
    code, _, err = _cli(capsys, "tune", _tune_spec(tmp_path))
    _one_error(code, err, "cell 'amb'", "symlink out of the study's folder")
    assert list(outside.iterdir()) == []


def test_the_trials_are_capped_and_the_cap_is_overridable(tmp_path, runs_root, capsys, fake):
    code, out, err = _cli(capsys, "tune", _tune_spec(tmp_path, n_trials=100_000_000))
    _one_error(code, err, "n_trials", "100000000", "at most 1000", "--max-trials")
    assert out == "" and list(runs_root.iterdir()) == []
    spec = _tune_spec(tmp_path, n_trials=3)
    _one_error(*_cli(capsys, "tune", spec, "--max-trials", "2")[::2], "n_trials = 3", "at most 2")
    code, out, err = _cli(capsys, "tune", spec, "--max-trials", "3")
    assert code == 0 and "Traceback" not in err, err
    assert len(_finished(runs_root / "rt" / "amb" / JOURNAL)) == 3


def _space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


AMB_LR = "models:\n  amb:\n    lr: {factor: 10, log: true, reason: r}\n"
BAD_FIELDS = {
    "space-a-list": (dict(space="LIST"), ("space.yaml", "mapping", "['amb', 'misa']")),
    "space-a-string": (dict(space="STRING"), ("space.yaml", "mapping", "'just words'")),
    "space-models-a-list": (dict(space="models: [amb, misa]\n"), ("space.yaml", "models", "amb")),
    "space-model-a-string": (
        dict(space="models:\n  amb: lr\n"),
        ("space.yaml", "models.amb", "lr"),
    ),
    "space-bound-a-word": (
        dict(space="models:\n  amb:\n    dropout: {low: none, high: 0.5, reason: r}\n"),
        ("models.amb.dropout.low", "none", "a number"),
    ),
    "space-log-a-word": (
        dict(space="models:\n  amb:\n    lr: {factor: 10, log: yes please, reason: r}\n"),
        ("models.amb.lr.log", "yes please"),
    ),
    "space-reason-a-number": (
        dict(space="models:\n  amb:\n    lr: {factor: 10, reason: 7}\n"),
        ("models.amb.lr", "reason", "7"),
    ),
    "space-text-field": (
        dict(space="models:\n  amb:\n    variant: {low: 0, high: 1, reason: r}\n"),
        ("models.amb.variant", "not a number"),
    ),
    "n_trials-a-bool": (dict(n_trials=True), ("n_trials = True",)),
    "seed-a-word": (dict(seed="zero"), ("seed = 'zero'",)),
    "seed-negative": (dict(seed=-1), ("seed = -1",)),
    "cells-a-string": (dict(cells="amb"), ("cells = 'amb'",)),
    "cells-numbers": (dict(cells=[1, 2]), ("cells = [1, 2]",)),
    "pruner-a-list": (dict(pruner=[2, 1]), ("pruner = [2, 1]",)),
    "pruner-a-word": (
        dict(pruner={"n_startup_trials": "two"}),
        ("pruner.n_startup_trials = 'two'",),
    ),
    "pruner-unknown-key": (dict(pruner={"patience": 2}), ("pruner.patience", "unknown")),
    "sweep-a-number": (dict(sweep=5), ("sweep = 5",)),
    "name-a-path": (dict(name="../x"), ("name '../x'",)),
    "factor-around-zero": (
        dict(
            cells=["misa"],
            space="models:\n  misa:\n    weight_decay: {factor: 10, log: true, reason: r}\n",
        ),
        ("cell 'misa'", "weight_decay", "low and high"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_a_malformed_spec_field_is_one_line_naming_file_key_and_value(
    tmp_path, runs_root, capsys, fake, case
):
    fields, needles = BAD_FIELDS[case]
    fields = dict(fields)
    if "space" in fields:
        text = {"LIST": "- amb\n- misa\n", "STRING": "just words\n"}.get(
            fields["space"], fields["space"]
        )
        fields["space"] = _space(tmp_path, text)
    spec = _tune_spec(tmp_path, **fields)
    code, out, err = _cli(capsys, "tune", spec)
    where = "space.yaml" if "space.yaml" in needles or case.startswith("space") else str(spec)
    _one_error(code, err, where, *needles)
    assert out == "" and list(runs_root.iterdir()) == []


# ---- 2. a damaged journal ------------------------------------------------------------------------


def _resume(capsys, spec: Path) -> tuple[int, str, str]:
    code, out, err = _cli(capsys, "tune", spec)
    assert "Traceback" not in err and "error:" not in err, err[-2000:]
    return code, out, err


def test_a_kill_9_during_a_journal_append_is_resumed(tmp_path, runs_root, capsys, fake):
    """The child dies (SIGKILL) half-way through the append that marks trial 0 complete; the
    next run drops the cut line in one line, runs trial 0's values again and finishes."""
    spec = _tune_spec(tmp_path, n_trials=3)
    marker = tmp_path / "cut"
    child = _child("kill", marker, "tune", spec)
    assert child.returncode == -signal.SIGKILL and marker.read_text() == "cut", child.stderr[-2000:]
    journal = runs_root / "rt" / "amb" / JOURNAL
    assert not journal.read_bytes().endswith(b"\n")  # the cut append
    code, _, err = _resume(capsys, spec)
    assert code == 0
    assert (
        _lines(err) == [line for line in _lines(err) if "last line was cut" in line]
        and len(_lines(err)) == 1
    )
    trials = _study(journal).get_trials(deepcopy=False)
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the killed trial ...
    again = [t for t in trials if t.user_attrs.get("requeued_from") == 0]
    assert len(again) == 1 and again[0].params == trials[0].params  # ... runs again, same values
    assert again[0].user_attrs.get("recipe") and again[0].state == optuna.trial.TrialState.COMPLETE
    assert len(_finished(journal)) == 3
    assert json.loads("[" + ",".join(journal.read_text().splitlines()) + "]")  # every line whole


def _a_finished_study(tmp_path: Path, runs_root: Path, n_trials: int = 2) -> tuple[Path, Path]:
    """A study finished by a child process (its trials name a process that no longer exists)."""
    spec = _tune_spec(tmp_path, n_trials=n_trials)
    child = _child("run", tmp_path / "unused", "tune", spec)
    assert child.returncode == 0, child.stderr[-2000:]
    return spec, runs_root / "rt" / "amb" / JOURNAL


def test_a_journal_with_a_cut_last_line_drops_it_and_reruns_the_trial(
    tmp_path, runs_root, capsys, fake
):
    spec, journal = _a_finished_study(tmp_path, runs_root)
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 30])  # the last entry (trial 1 complete), cut
    code, _, err = _resume(capsys, spec)
    assert code == 0 and len(_lines(err)) == 1 and "last line was cut" in err, err
    assert str(journal) in err and "runs again" in err
    trials = _study(journal).get_trials(deepcopy=False)
    again = [t for t in trials if t.user_attrs.get("requeued_from") == 1]
    assert len(again) == 1 and again[0].params == trials[1].params
    assert len(_finished(journal)) == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"this is not a journal\n",
        b"\x00\xff\x10 binary",
        b'{"op_code": 0}\n{"op_cod',
        b"[1, 2, 3]\n",
        b'{"op_code": 42, "worker_id": "w"}\n',
    ],
)
def test_an_unreadable_journal_is_set_aside_and_the_study_restarts(
    tmp_path, runs_root, capsys, fake, garbage
):
    spec, journal = _a_finished_study(tmp_path, runs_root)
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = b"".join(lines[:2]) + garbage + b"".join(lines[2:])  # garbage amid good entries
    journal.write_bytes(damaged)
    code, _, err = _resume(capsys, spec)
    assert code == 0 and len(_lines(err)) == 1, err
    assert "cannot be read" in err and "set aside as study.journal.corrupt-1" in err
    assert (journal.parent / "study.journal.corrupt-1").read_bytes() == damaged
    assert len(_finished(journal)) == 2  # a new study, complete


def test_a_journal_of_another_spec_is_set_aside_not_extended(tmp_path, runs_root, capsys, fake):
    spec, journal = _a_finished_study(tmp_path, runs_root, n_trials=2)
    bigger = _tune_spec(tmp_path, n_trials=3)  # another spec: another fingerprint
    code, _, err = _resume(capsys, bigger)
    assert code == 0 and len(_lines(err)) == 1 and "made for another spec" in err, err
    assert "study.journal.stale-1" in err
    assert len(_finished(journal.with_name("study.journal.stale-1"))) == 2  # kept as it was
    assert [t.number for t in _finished(journal)] == [0, 1, 2]  # three new trials, not 2 + 1
    assert len(_calls(journal.parent)) == 3


# ---- 3. forged trial values --------------------------------------------------------------------


def test_forged_journal_values_are_refused_by_the_record(tmp_path, runs_root, capsys, fake):
    spec, journal = _a_finished_study(tmp_path, runs_root)
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    for entry in entries:
        if entry.get("op_code") == 6 and entry.get("values"):
            entry["values"] = [1e-9]  # every trial's value "improved"
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    record = tmp_path / "record.json"
    code, _, err = _cli(capsys, "tune", spec, "--record", record)
    line = _one_error(code, err, "trial 0", "1e-09", "history.csv")
    assert "'amb'" in line and not record.exists()


# ---- 4. Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_during_tune_prints_only_the_resume_line(tmp_path, runs_root, capsys, fake):
    spec = _tune_spec(tmp_path, n_trials=2)
    marker = tmp_path / "started"
    child = _child("sleep", marker, "tune", spec, wait=False)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), child.communicate()[1][-2000:]
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130
    assert len(_lines(err)) == 1, err
    assert err.startswith("interrupted by SIGINT") and "resume with: python -m ambcore tune" in err
    cell = runs_root / "rt" / "amb"
    assert "KeyboardInterrupt" in (cell / "optuna.log").read_text()  # Optuna's account, kept
    code, _, err = _resume(capsys, spec)  # the stopped trial (the recipe) runs again
    assert code == 0 and err == ""
    trials = _study(cell / JOURNAL).get_trials(deepcopy=False)
    again = [t for t in trials if t.user_attrs.get("requeued_from") == 0]
    assert len(again) == 1 and again[0].params == trials[0].params and again[0].user_attrs["recipe"]


# ---- 5. a hung cell ------------------------------------------------------------------------------

HUNG_CHAPTER = """\
# %% tags=["parameters"]
preset = "embedded"
data = ""
plm = ""
seed = 0

# %%
print("before the hang")

# %%
import subprocess, sys, time
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
worker = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
open(PID_FILE, "w").write(str(worker.pid))
time.sleep(600)
"""

BOOK_CHILD = r"""
import sys
from pathlib import Path

import ambcore.book

ambcore.book.default_notebooks_dir = lambda: Path(sys.argv[1])  # the made-up chapter
from ambcore.cli import main

sys.exit(main(sys.argv[2:]))
"""


def test_a_hung_cell_stops_the_book_in_one_line_and_every_process_with_it(tmp_path):
    import jupytext
    import psutil

    notebooks, out, pid_file = (
        tmp_path / "notebooks",
        tmp_path / "executed",
        tmp_path / "worker.pid",
    )
    notebooks.mkdir()
    (notebooks / "01_data.py").write_text(HUNG_CHAPTER.replace("PID_FILE", repr(str(pid_file))))
    nb = jupytext.read(notebooks / "01_data.py")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    jupytext.write(nb, notebooks / "01_data.ipynb")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "AMB_CELL_TIMEOUT": "900"}
    t0 = time.monotonic()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            BOOK_CHILD,
            str(notebooks),
            "book",
            "--preset",
            "smoke",
            "--no-build",
            "--no-sync",
            "--chapters",
            "01",
            "--out",
            str(out),
            "--cell-timeout",
            "4",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - t0
    worker = int(pid_file.read_text())
    try:
        alive = (
            psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE
        )
    except psutil.NoSuchProcess:
        alive = False
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr[-3000:]
    errors = [line for line in child.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, child.stderr[-3000:]
    line = errors[0]
    for needle in (
        "chapter 01_data",
        "cell 3 ('import subprocess",
        "cell time limit of 4 s",
        "--cell-timeout",
        str(out / "01_data.failed.ipynb"),
    ):
        assert needle in line, line
    assert not alive, "the chapter's worker (its own session, SIGTERM ignored) outlived the book"
    kept = (out / "01_data.failed.ipynb").read_text()
    assert "before the hang" in kept  # the partial notebook, with what ran
    assert (
        json.loads((out / "timings.json").read_text())["chapters"]["01_data"]["status"]
        == "timed out"
    )
    assert seconds < 120


@pytest.mark.parametrize(
    "given, env, words",
    [("abc", None, ["--cell-timeout", "'abc'"]), (None, "-5", ["AMB_CELL_TIMEOUT", "'-5'"])],
)
def test_a_cell_time_limit_that_is_not_seconds_is_one_line(
    tmp_path, capsys, monkeypatch, given, env, words
):
    if env is not None:
        monkeypatch.setenv("AMB_CELL_TIMEOUT", env)
    argv = ["book", "--preset", "smoke", "--no-build", "--out", tmp_path / "out"]
    code, out, err = _cli(capsys, *argv, *(["--cell-timeout", given] if given else []))
    _one_error(code, err, *words, "seconds")
    assert not (tmp_path / "out").exists()


# ---- 6. repeated ids -----------------------------------------------------------------------------


def _mmsa_file(tmp_path: Path, ids: dict[str, list[str]]) -> Path:
    """An MMSA pickle whose splits have the given ids (features and labels made up)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    obj = {}
    for split, names in ids.items():
        n = len(names)
        obj[split] = {
            "raw_text": np.array(["a b c"] * n, dtype=object),
            "id": np.array(names, dtype=object),
            "audio": rng.normal(size=(n, 3, 4)).astype(np.float32),
            "vision": rng.normal(size=(n, 3, 5)).astype(np.float32),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    path = tmp_path / "ids.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def test_a_repeated_id_within_a_split_gets_a_counted_suffix(tmp_path, capsys):
    """MulT-style files repeat the video part as the id; a file the user cannot fix must load,
    with ids unique within each split (the paired statistics match predictions by id)."""
    from ambcore.data.loaders import load_dataset

    train = ["vid", "vid", "vid", "v$_$1", "v$_$1", "vid$_$2", "w$_$0"]
    path = _mmsa_file(tmp_path, {"train": train, "valid": ["x$_$0"], "test": ["y$_$0", "y$_$1"]})
    code, out, err = _cli(capsys, "data", "inspect", path, "--json")
    assert code == 0 and err == "", err
    repairs = json.loads(out)["repairs"]
    [key] = [k for k in repairs if k.startswith("train/id:")]
    assert repairs[key] == 3 and "2 repeated id(s)" in key and "'vid'" in key and "'v$_$1'" in key
    ids = load_dataset(path)["train"].ids
    assert len(set(ids)) == len(ids) == len(train)
    assert ids == ["vid", "vid$_$3", "vid$_$4", "v$_$1", "v$_$1#2", "vid$_$2", "w$_$0"]
    assert [i.split("$_$")[0] for i in ids] == [i.split("$_$")[0] for i in train]  # videos kept


def test_an_id_in_two_splits_is_reported_as_possible_leakage(tmp_path, capsys):
    from ambcore.data import report
    from ambcore.data.loaders import load_dataset

    path = _mmsa_file(
        tmp_path,
        {
            "train": ["a$_$0", "a$_$1", "b$_$0"],
            "valid": ["a$_$1", "c$_$0"],
            "test": ["b$_$0", "a$_$1", "d$_$0"],
        },
    )
    code, out, err = _cli(capsys, "data", "inspect", path)
    assert code == 0 and err == "", err
    assert "ids in more than one split (possible leakage between splits):" in out
    assert "train & valid: 1 (e.g. 'a$_$1')" in out and "train & test: 2" in out
    described = report.describe(load_dataset(path))
    assert described["shared_ids"]["train & test"] == {"count": 2, "examples": ["a$_$1", "b$_$0"]}
    assert described["shared_ids"]["valid & test"]["count"] == 1
    note = report.shared_ids_note(described)  # the data chapter's sentence
    assert note.startswith("**Possible leakage: 4 id(s) appear in more than one split**")
    assert "train & test: 2" in note
