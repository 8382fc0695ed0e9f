"""Interrupting the main job: SIGTERM (or Ctrl-C) on ``python -m ambcore book`` stops the
kernel and every process the kernel started within seconds, and prints how to resume.

The first test uses a made-up chapter whose kernel starts a worker in a session of its own that
ignores SIGTERM (as submitit's workers do); the second interrupts the smoke book in chapter 03.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ambcore.book import CHAPTERS, BookOptions

pytestmark = pytest.mark.alone  # signals the main job's process tree and times its end

ROOT = Path(__file__).resolve().parents[1]


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a signal for it never reaches pytest
    )


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s output up to the first that contains ``needle``."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    proc.kill()
    pytest.fail(f"{needle!r} not seen within {timeout} s:\n{''.join(lines)[-4000:]}")


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for p in procs:
        try:  # is_running() also checks the creation time: a reused PID is not ours
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except (psutil.Error, ProcessLookupError):
            pass


def _terminate_and_check(proc: subprocess.Popen, tree: list[psutil.Process]) -> str:
    """SIGTERM the job; within 10 s it has exited and no process of ``tree`` is left."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_all([psutil.Process(proc.pid), *tree])
        pytest.fail("the job did not exit within 30 s of SIGTERM")
    seconds = time.monotonic() - t0
    print(f"stopped {len(tree)} process(es) in {seconds:.1f} s after SIGTERM")
    left = _alive(tree)
    _kill_all(tree)  # never leave a process behind, even when the test fails
    assert not left, "processes left after SIGTERM:\n" + "\n".join(left)
    assert seconds < 10, f"the job took {seconds:.1f} s to stop"
    assert proc.returncode == 128 + signal.SIGTERM, rest[-3000:]
    assert "Traceback" not in rest, rest[-3000:]
    return rest


CHAPTER = """\
# %% tags=["parameters"]
preset = "embedded"
data = ""
plm = ""
seed = 0
pid_file = ""

# %%
import subprocess, sys, time
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
worker = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
open(pid_file, "w").write(str(worker.pid))
time.sleep(600)
"""


def test_sigterm_stops_the_kernel_and_its_workers_that_ignore_sigterm(tmp_path):
    import jupytext

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "01_data.py").write_text(
        CHAPTER.replace('pid_file = ""', f'pid_file = "{tmp_path / "worker.pid"}"')
    )
    nb = jupytext.read(notebooks / "01_data.py")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    jupytext.write(nb, notebooks / "01_data.ipynb")
    script = textwrap.dedent(f"""
        import os, sys
        from ambcore.book import BookInterrupted, run_book
        try:
            run_book("smoke", notebooks_dir={str(notebooks)!r}, out_dir={str(tmp_path / "out")!r},
                     build=False, chapters="01")
        except BookInterrupted as exc:  # as `python -m ambcore book` exits
            sys.stdout.flush()
            os._exit(128 + exc.signum)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = _start([sys.executable, "-c", script], env)
    _wait_for_line(proc, "01_data: executing", timeout=120)
    deadline = time.monotonic() + 120
    while not (tmp_path / "worker.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    worker = int((tmp_path / "worker.pid").read_text())
    tree = _descendants(proc.pid)
    assert worker in {p.pid for p in tree}, "the kernel's worker was not found"
    assert psutil.Process(worker).ppid() != proc.pid  # the kernel's child, not the job's
    rest = _terminate_and_check(proc, tree)
    assert "interrupted (SIGTERM) during chapter 01_data" in rest
    # the chapters that were selected, from the interrupted one on
    assert f"--out {tmp_path / 'out'} --no-build --chapters 01 (or the same command" in rest, rest
    timings = (tmp_path / "out" / "timings.json").read_text()
    assert '"interrupted"' in timings
    assert (tmp_path / "out" / "01_data.failed.ipynb").exists()  # the partial notebook is kept


def test_resume_command_names_the_options_that_differ_from_the_defaults(tmp_path):
    from ambcore.book import default_book_dir

    book = default_book_dir().resolve()
    options = BookOptions(
        preset="smoke",
        data=None,
        plm="tiny-random",
        seed=3,
        build=False,
        warnings_as_errors=True,
        sync=False,
        results_dir=tmp_path / "r",
        book_dir=book,
        out_dir=book / "executed",
        notebooks_dir=tmp_path,
    )
    assert options.command(CHAPTERS[3:5]) == (
        f"python -m ambcore book --preset smoke --plm tiny-random --seed 3 --results-dir "
        f"{tmp_path / 'r'} --no-build -W --no-sync --chapters 04,05"
    )


@pytest.mark.slow
def test_sigterm_during_the_smoke_book_leaves_no_process_and_says_how_to_resume(tmp_path):
    env = dict(
        os.environ,
        AMB_RUNS=str(tmp_path / "runs"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.pop("AMB_DATA", None)
    env.pop("AMB_PLM", None)
    proc = _start(
        [
            sys.executable,
            "-m",
            "ambcore",
            "book",
            "--preset",
            "smoke",
            "--no-build",
            "--no-sync",
            "--out",
            str(tmp_path / "executed"),
            "--results-dir",
            str(tmp_path / "results"),
        ],
        env,
    )
    _wait_for_line(proc, "03_train: executing", timeout=400)
    time.sleep(3)  # the kernel has started and is running the chapter
    tree = _descendants(proc.pid)
    assert tree, "no kernel found"
    rest = _terminate_and_check(proc, tree)
    assert "interrupted (SIGTERM) during chapter 03_train" in rest
    assert "resume with: python -m ambcore book --preset smoke" in rest
    assert "--chapters 03,04,05,06,07" in rest


# ---- the launcher, scripts/run_book.sh ------------------------------------------------------------


def _launcher_copy(tmp_path: Path, setup: str) -> Path:
    """scripts/run_book.sh in a folder whose setup.sh and .venv/bin/python are stand-ins."""
    (tmp_path / "scripts").mkdir(parents=True)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    launcher = tmp_path / "scripts" / "run_book.sh"
    launcher.write_text((ROOT / "scripts" / "run_book.sh").read_text())
    (tmp_path / "scripts" / "setup.sh").write_text(setup)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\necho $$ > book.pid\nexec sleep 600\n")
    python.chmod(0o755)
    return launcher


def _wait_for_file(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.1)
    pytest.fail(f"{path.name} was not written")


def test_launcher_passes_sigterm_to_the_setup_and_execs_the_book(tmp_path):
    # during the setup: the signal reaches the setup's own children
    setup = "sleep 600 &\necho $! > setup_child.pid\nwait\n"
    launcher = _launcher_copy(tmp_path / "a", setup)
    proc = _start(["bash", str(launcher), "smoke"], dict(os.environ))
    child = psutil.Process(_wait_for_file(tmp_path / "a" / "setup_child.pid"))
    rest = _terminate_and_check(proc, [child])
    # after the setup: the book replaces the launcher, so the launcher's PID is the book's
    launcher = _launcher_copy(tmp_path / "b", "true\n")
    proc = _start(["bash", str(launcher), "smoke"], dict(os.environ))
    assert _wait_for_file(tmp_path / "b" / "book.pid") == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM, rest
