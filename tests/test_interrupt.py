"""Interruption (ambcore.interrupt): SIGTERM or Ctrl-C stops every process a command started,
leaves its runs resumable and prints the command that resumes them.

The end-to-end tests start ``python -m ambcore sweep`` (two parallel submitit tasks, or two
persistent workers) and ``python -m ambcore train`` in a session of their own, send SIGTERM
while they train, and then look in ``/proc`` for any process left in that session.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from ambcore import interrupt, runs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.alone,  # signals process trees and waits a few seconds for them to end
]


def _session_pids(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            text = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] not in "ZX":
            found.append(int(name))
    return found


def _wait_until(condition, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def _env(runs_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AMB_RUNS": str(runs_dir),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m ambcore ARGS`` as the leader of a new session, output to ``log``.{out,err}."""
    return subprocess.Popen(
        [sys.executable, "-m", "ambcore", *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=open(f"{log}.out", "w"),
        stderr=open(f"{log}.err", "w"),
    )


def _kill_session(sid: int) -> None:
    for pid in _session_pids(sid):  # what the code under test left behind
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _terminate_and_check(proc: subprocess.Popen, log: Path, expected_resume: str) -> str:
    """SIGTERM ``proc``; within seconds it and every process of its session must be gone and
    its stderr must hold ``resume with: <command>``. Returns the command."""
    sid = proc.pid
    try:
        assert len(_session_pids(sid)) >= 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert _wait_until(lambda: not _session_pids(sid), timeout=5), _session_pids(sid)
    finally:
        _kill_session(sid)
        if proc.poll() is None:
            proc.kill()
    err = Path(f"{log}.err").read_text()
    assert proc.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if "resume with: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    command = lines[0].split("resume with: ", 1)[1]
    assert command.startswith(expected_resume), command
    return command


def _run_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "ambcore"]
    return subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=500
    )


# How a sweep trains in parallel: a submitit task per run, or persistent worker processes
# (ambcore.sweep_workers, the local backend's default with --max-parallel > 1).
SWEEP_PATHS = {"submitit": ["--backend", "submitit"], "persistent": []}


def _workers(sid: int) -> list[int]:
    """The processes that train (submitit tasks or persistent workers) of session ``sid``."""
    found = []
    for pid in _session_pids(sid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"submitit.core._submit" in cmdline or b"ambcore.sweep_workers" in cmdline:
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", list(SWEEP_PATHS))
def test_sigterm_stops_a_parallel_sweep_and_it_resumes(tmp_path, path):
    spec = tmp_path / "long.yaml"
    spec.write_text(
        "name: long\npreset: smoke\nseeds: [0]\noverrides: {max_epochs: 30, patience: 30}\n"
        "cells:\n  - {name: amb, overrides: {model: amb}}\n"
        "  - {name: text-only, overrides: {model: amb, variant: text-only}}\n"
    )
    runs_dir, env = tmp_path / "runs", _env(tmp_path / "root")
    args = [
        "sweep",
        str(spec),
        *SWEEP_PATHS[path],
        "--max-parallel",
        "2",
        "--runs-dir",
        str(runs_dir),
        "--no-progress",
    ]
    proc = _start(args, env, tmp_path / "sweep")
    run_dirs = [runs_dir / "amb" / "seed0", runs_dir / "text-only" / "seed0"]

    def training() -> list[Path]:  # a finished epoch, not finished
        return [d for d in run_dirs if (d / "last" / "state.json").exists() and not runs.is_done(d)]

    try:  # both workers run and at least one of them is half-way through its run
        assert _wait_until(lambda: len(_workers(proc.pid)) == 2 and training(), 240)
        interrupted = training()
    except BaseException:
        _kill_session(proc.pid)
        raise
    command = _terminate_and_check(
        proc,
        tmp_path / "sweep",
        shlex.join(["python", "-m", "ambcore", "sweep", str(spec), *SWEEP_PATHS[path]]),
    )

    again = _run_command(command, env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    rows = {
        row[0]: row[2:4]
        for row in (line.split() for line in again.stdout.splitlines())
        if row[:1] in (["amb"], ["text-only"])
    }
    for run_dir in interrupted:
        assert rows[run_dir.parent.name] == ["partial", "resumed"], again.stdout
    for run_dir in run_dirs:
        assert runs.is_done(run_dir) and len(runs.read_history(run_dir)) == 30


@pytest.mark.slow
@pytest.mark.parametrize("path", list(SWEEP_PATHS))
def test_the_workers_of_a_sweep_killed_by_sigkill_end_too(tmp_path, path):
    """No handler runs on ``kill -9``: the workers notice that the sweep is gone."""
    spec = tmp_path / "long.yaml"
    spec.write_text(
        "name: long\npreset: smoke\nseeds: [0, 1]\noverrides: {max_epochs: 30, patience: 30}\n"
        "cells:\n  - {name: amb, overrides: {model: amb}}\n"
    )
    args = [
        "sweep",
        str(spec),
        *SWEEP_PATHS[path],
        "--max-parallel",
        "2",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--no-progress",
    ]
    proc = _start(args, _env(tmp_path / "root"), tmp_path / "sweep")
    try:
        cells = [tmp_path / "runs" / "amb" / f"seed{seed}" / "sweep.json" for seed in (0, 1)]
        assert _wait_until(lambda: all(c.exists() for c in cells), 240)  # both cells started
        proc.kill()
        proc.wait()
        assert _wait_until(lambda: not _session_pids(proc.pid), 5), _session_pids(proc.pid)
    finally:
        _kill_session(proc.pid)


@pytest.mark.slow
def test_sigterm_stops_train_and_it_resumes(tmp_path):
    out, env = tmp_path / "run", _env(tmp_path / "root")
    args = [
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--set",
        "max_epochs=8",
        "--set",
        "patience=8",
        "--no-progress",
    ]
    proc = _start(args, env, tmp_path / "train")
    try:
        assert _wait_until(lambda: (out / "last" / "state.json").exists(), 240)
    except BaseException:
        _kill_session(proc.pid)
        raise
    command = _terminate_and_check(
        proc, tmp_path / "train", "python -m ambcore train --preset smoke"
    )
    assert command.endswith("--resume") and "--set max_epochs=8" in command
    assert not runs.is_done(out)

    again = _run_command(command, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert runs.is_done(out) and len(runs.read_history(out)) == 8
    assert runs.read_json(out / "env.json")["resumed"]


# ---- the pieces --------------------------------------------------------------------------------------


def test_kill_tree_ends_children_that_ignore_sigterm(tmp_path):
    """A shell that traps SIGTERM, and its own child: both gone within the grace period."""
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & sleep 60; wait"])
    try:
        assert _wait_until(lambda: len(interrupt.descendants(proc.pid)) >= 2, 10)
        tree = [proc.pid, *interrupt.descendants(proc.pid)]
        start = time.monotonic()
        signalled = interrupt.kill_tree(proc.pid, grace=1.0, include_root=True)
        assert set(tree) <= set(signalled)
        assert time.monotonic() - start < 5
        assert not any(interrupt._alive(pid) for pid in tree)
    finally:
        proc.kill()
        proc.wait()


_POOL_SCRIPT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from ambcore import interrupt

with interrupt.watched():
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                               initializer=interrupt.die_with_parent)
    ready = set()  # workers run the initializer before their first job
    while len(ready) < 2:
        ready |= {job.result() for job in [pool.submit(os.getpid) for _ in range(20)]}
    jobs = [pool.submit(time.sleep, 120) for _ in range(2)]
    print(" ".join(str(p) for p in ready), flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(interrupt._alive(p) for p in workers)
        proc.kill()  # no chance to clean up
        proc.wait()
        assert _wait_until(lambda: not any(interrupt._alive(p) for p in workers), 5)
    finally:
        _kill_session(proc.pid)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stop_pool_does_not_wait_for_running_jobs():
    import multiprocessing

    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    jobs = [pool.submit(_sleep, 60) for _ in range(3)]
    assert _wait_until(lambda: len(pool._processes) == 2, 10)
    workers = list(pool._processes)
    start = time.monotonic()
    interrupt.stop_pool(pool)
    assert time.monotonic() - start < 5
    assert not any(interrupt._alive(p) for p in workers)
    assert jobs[2].cancelled() or jobs[2].done()


def test_die_with_parent_does_nothing_in_the_watched_process_itself(monkeypatch):
    monkeypatch.setattr(interrupt, "_watchdog_started", False)
    with interrupt.watched():
        assert os.environ[interrupt.WATCH_ENV].split(":")[1] == str(os.getpid())
        interrupt.die_with_parent(parent=False)
        assert interrupt._watchdog_started is False
    assert interrupt.WATCH_ENV not in os.environ


def test_interrupt_on_signals_raises_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupt.interrupt_on_signals() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert received == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is before


_STOP_FIRST_SCRIPT = """
import os, signal, subprocess, time
from ambcore import interrupt

child = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60"])
while child.pid not in interrupt.descendants():
    time.sleep(0.05)
try:
    with interrupt.interrupt_on_signals(stop_first=True):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
except KeyboardInterrupt:
    print(child.wait(timeout=1))  # already stopped when the interruption arrives
"""


def test_interrupt_on_signals_can_stop_the_children_first(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _STOP_FIRST_SCRIPT],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(-signal.SIGKILL)]  # the child ignored SIGTERM


def test_a_token_names_one_process_even_after_its_pid_is_reused():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        token = interrupt._token(proc.pid)
        host, pid, start = token.rsplit(":", 2)
        assert pid == str(proc.pid) and float(start) > 0 and not interrupt._gone(token)
        assert interrupt._gone(f"{host}:{pid}:{float(start) - 60:.2f}")  # an earlier process
        assert not interrupt._gone(f"elsewhere:{pid}:{start}")  # not this machine's
    finally:
        proc.kill()
        proc.wait()
    assert interrupt._gone(token)


def test_unwatched_passes_no_watch_list_on(monkeypatch):
    monkeypatch.setenv(interrupt.WATCH_ENV, "host:1:0")
    with interrupt.unwatched():
        assert interrupt.WATCH_ENV not in os.environ
    assert os.environ[interrupt.WATCH_ENV] == "host:1:0"


def test_same_command_repeats_the_command_line(monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        ["/x/ambcore/__main__.py", "book", "--preset", "smoke", "--results-dir", "my results"],
    )
    assert (
        interrupt.same_command()
        == "python -m ambcore book --preset smoke --results-dir 'my results'"
    )
