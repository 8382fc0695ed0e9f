"""Interruption: Ctrl-C or SIGTERM stops every process a command started (the runs behind
thesis chapter 6.3 take hours; they must stop cleanly and continue where they stopped).

Training runs are resumable at any moment (``ambcore.runs`` writes every file atomically, the
resume state is committed after each epoch), so stopping a job only has to make sure that
nothing it started keeps running. Three pieces do that:

- ``interrupt_on_signals()``: SIGTERM (what job launchers, ``kill`` and ``timeout`` send)
  raises ``KeyboardInterrupt`` in the main thread, like Ctrl-C, so the same ``finally`` blocks
  run; with ``stop_first`` every descendant is stopped before (the main job's).
- ``kill_tree()``: every descendant of a process (workers, submitit's job controllers and
  their tasks, data-loader workers, a notebook kernel and what it started), found with
  ``psutil`` before any is signalled, gets SIGTERM and, after a short grace period, SIGKILL
  (submitit's tasks ignore SIGTERM).
- ``die_with_parent()``: called in a worker, it ends the worker when the process that started
  it, or any process listed in ``$AMB_WATCH_PIDS`` (see ``watched()``), is gone, even after a
  ``kill -9`` that left no chance to clean up (Linux: ``PR_SET_PDEATHSIG`` plus a watchdog
  thread; elsewhere the watchdog alone).

``interruptible(resume)`` wraps a CLI command with all of it and prints one line with the
command that continues the work; ``python -m ambcore sweep``, ``train`` and ``tune`` use it.
The main job (``ambcore.book.run_book``) uses ``interrupt_on_signals(stop_first=True)`` and
``watched()`` itself: its notebook kernels and what they start are descendants of the book
process, and the workers of a sweep inside a kernel also end when the book process ends, since
``watched()`` passes its identity down through the environment (``ambcore.threads.environment``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil

from ambcore.threads import environment

__all__ = [
    "WATCH_ENV",
    "interrupt_on_signals",
    "descendants",
    "kill_tree",
    "stop_children",
    "signals_ignored",
    "die_with_parent",
    "watched",
    "unwatched",
    "stop_pool",
    "interruptible",
    "same_command",
]

WATCH_ENV = "AMB_WATCH_PIDS"  # "host:pid:start,...": processes whose end ends a worker
GRACE_S = 2.0  # between SIGTERM and SIGKILL
WATCHDOG_PERIOD_S = 0.5
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A process's start time as psutil gives it (since the epoch) moves with the boot time that the
# system clock implies (NTP): starts that differ by less are the same process.
START_TOLERANCE_S = 2.0
GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)  # ended; only the exit status is left

_watchdog_started = False


# ---- signals -------------------------------------------------------------------------------------


@contextlib.contextmanager
def interrupt_on_signals(
    stop_first: bool = False, signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[list[int]]:
    """Inside the block, SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the main thread;
    yields the signals received, in order. The previous handlers come back afterwards; outside
    the main thread the block changes nothing.

    ``stop_first``: the handler stops every descendant of this process (``kill_tree``) before it
    raises, and a signal that arrives while it does is ignored. The main job needs it: its
    kernels run in sessions of their own, so a terminal's Ctrl-C reaches only the book process,
    which waits on a kernel that must be gone before the interruption can unwind.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if stop_first and received:  # already stopping
            return
        received.append(signum)
        if stop_first:
            kill_tree()
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    saved = {s: signal.signal(s, handler) for s in signums}
    try:
        yield received
    finally:
        for s, previous in saved.items():
            signal.signal(s, previous)


@contextlib.contextmanager
def signals_ignored(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Ignore ``signals`` inside the block (main thread only). While cleaning up: a second
    Ctrl-C or SIGTERM must not cut the cleanup short. Around starting workers with
    ``signals=(SIGINT,)``: the workers inherit the ignored Ctrl-C (Python then installs no
    KeyboardInterrupt handler), so a Ctrl-C in the terminal reaches only the process that
    started them, which stops them (no traceback from every worker)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


# ---- the process tree (psutil) --------------------------------------------------------------------


def descendants(pid: int | None = None) -> list[int]:
    """Every descendant of ``pid`` (default: this process), parents before children; empty
    when ``pid`` is gone."""
    try:
        tree = psutil.Process(os.getpid() if pid is None else pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p.pid for p in tree]


def _running(proc: psutil.Process) -> bool:
    """Whether ``proc`` runs: not ended (a zombie has), its pid not taken by another process."""
    try:
        return proc.is_running() and proc.status() not in GONE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists, and is not ours to read
        return True


def _alive(pid: int) -> bool:
    try:
        return _running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _processes(pids: Sequence[int]) -> list[psutil.Process]:
    found = []
    for pid in dict.fromkeys(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):  # gone meanwhile (or its pid reused: not sent)
            proc.send_signal(sig)


def kill_tree(
    pids: int | Sequence[int] | None = None, grace: float = GRACE_S, include_root: bool = False
) -> list[int]:
    """End every descendant of ``pids`` (default: this process), and with ``include_root`` the
    processes themselves: SIGTERM, then SIGKILL after ``grace`` seconds for those still running.
    The trees are read before any signal and again until they are empty, so that children
    started meanwhile are found too. Returns the pids that were signalled."""
    me = os.getpid()
    roots = [me] if pids is None else [pids] if isinstance(pids, int) else list(pids)
    signalled: list[int] = []
    for _ in range(5):
        found = [p for root in roots for p in descendants(root)]
        if include_root:
            found = [r for r in roots if r != me] + found
        procs = [p for p in _processes(found) if _running(p)]
        if not procs:
            break
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_all([p for p in procs if _running(p)], sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_running(p) for p in procs):
                time.sleep(0.05)
        signalled += [p.pid for p in procs]
    return signalled


def stop_children(grace: float = GRACE_S) -> list[int]:
    """``kill_tree`` of this process with further Ctrl-C / SIGTERM ignored while it runs."""
    with signals_ignored():
        return kill_tree(grace=grace)


# ---- workers that end with their parent ------------------------------------------------------------


def _token(pid: int) -> str:
    """``host:pid:start``, the start in seconds since the epoch (0 when unknown): one process,
    told apart from a later one that reuses its pid."""
    try:
        start = psutil.Process(pid).create_time()
    except psutil.Error:
        start = 0.0
    return f"{socket.gethostname()}:{pid}:{start:.2f}"


def _gone(token: str) -> bool:
    host, pid, start = token.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process (e.g. a SLURM job's submitter): not ours to watch
    try:
        proc = psutil.Process(int(pid))
        reused = float(start) > 0 and abs(proc.create_time() - float(start)) > START_TOLERANCE_S
        return reused or proc.status() in GONE
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, ValueError):  # not ours to read, or not a token of ours
        return False


@contextlib.contextmanager
def watched() -> Iterator[None]:
    """Processes started inside the block (they inherit the environment) learn this process's
    identity through ``$AMB_WATCH_PIDS``; ``die_with_parent()`` in them ends them with it."""
    mine = _token(os.getpid())
    entries = [e for e in os.environ.get(WATCH_ENV, "").split(",") if e]
    with environment({WATCH_ENV: ",".join(entries + ([mine] if mine not in entries else []))}):
        yield


def _set_parent_death_signal() -> None:
    """Linux: the kernel sends SIGKILL to this process when the thread that started it ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def unwatched() -> Iterator[None]:
    """Processes started inside the block outlive this one (e.g. SLURM jobs, which a sweep only
    submits): ``$AMB_WATCH_PIDS`` is not passed on."""
    with environment({WATCH_ENV: None}):
        yield


def die_with_parent(parent: bool = True) -> None:
    """In a worker: end this process (and its children) when a process of ``$AMB_WATCH_PIDS``
    ends or, with ``parent``, when the process that started it ends (usable as a
    ``ProcessPoolExecutor`` initializer). Entries naming this process are skipped, so calling it
    in the watched process itself does nothing; calling it twice starts one watchdog.

    The parent's end is caught by ``PR_SET_PDEATHSIG`` (Linux; it fires when the *thread* that
    started the worker ends, so start such workers from a thread that outlives them, as the
    main thread does) and by a watchdog thread polling every ``WATCHDOG_PERIOD_S``.
    """
    global _watchdog_started
    me, ppid = str(os.getpid()), os.getppid()
    tokens = [
        t for t in os.environ.get(WATCH_ENV, "").split(",") if t and t.rsplit(":", 2)[1:2] != [me]
    ]
    if parent and ppid != 1:
        tokens.append(_token(ppid))
    if _watchdog_started or not tokens:
        return
    if parent:
        _set_parent_death_signal()
        if os.getppid() != ppid:  # the parent ended before the death signal was armed
            os._exit(EXIT_CODES[signal.SIGTERM])
    _watchdog_started = True

    def watch() -> None:
        while not any(_gone(t) for t in tokens):
            time.sleep(WATCHDOG_PERIOD_S)
        kill_tree(grace=0.5)  # this worker's own children first
        os._exit(EXIT_CODES[signal.SIGTERM])

    threading.Thread(target=watch, name="amb-die-with-parent", daemon=True).start()


def stop_pool(pool: Any) -> None:
    """End a ``concurrent.futures.ProcessPoolExecutor`` now: its worker processes (and theirs)
    are killed and pending jobs cancelled, instead of ``shutdown(wait=True)`` waiting for the
    running ones to finish."""
    workers = list(getattr(pool, "_processes", None) or {})  # pid -> Process (CPython 3.8+)
    with signals_ignored():
        kill_tree(workers, include_root=True, grace=0.5)
        pool.shutdown(wait=False, cancel_futures=True)


# ---- a CLI command ---------------------------------------------------------------------------------


Command = Callable[[Any], int]  # a CLI command: parsed args -> exit status


def same_command(args: Any = None) -> str:
    """``python -m ambcore`` with this process's arguments: the resume command of a job that
    skips what it finished (e.g. ``book``). Meant for the console entry point, where
    ``sys.argv`` holds the command line."""
    return shlex.join(["python", "-m", "ambcore", *sys.argv[1:]])


def interruptible(resume: Callable[[Any], str]) -> Callable[[Command], Command]:
    """Decorate a CLI command ``func(args) -> exit code``: Ctrl-C or SIGTERM stops every process
    it started, prints ``interrupted ...; resume with: <resume(args)>`` on stderr and returns
    130 (SIGINT) or 143 (SIGTERM)."""

    def decorate(func: Command) -> Command:
        @functools.wraps(func)
        def run(args: Any) -> int:
            with interrupt_on_signals() as received:
                try:
                    with watched():
                        return func(args)
                except KeyboardInterrupt:
                    stop_children()
                    sig = received[-1] if received else signal.SIGINT
                    print(
                        f"interrupted by {signal.Signals(sig).name}; every process it started is "
                        f"stopped; resume with: {resume(args)}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return EXIT_CODES.get(sig, 130)

        return run

    return decorate
