"""Interruption: Ctrl-C or SIGTERM stops every process a command started (the runs behind
thesis chapter 6.3 take hours; they must stop cleanly and continue where they stopped).

Training runs are resumable at any moment (``ambcore.runs`` writes every file atomically, the
resume state is committed after each epoch), so stopping a job only has to make sure that
nothing it started keeps running. Three pieces do that:

- ``install_sigterm()``: SIGTERM (what job launchers, ``kill`` and ``timeout`` send) raises
  ``KeyboardInterrupt`` in the main thread, like Ctrl-C, so the same ``finally`` blocks run.
- ``kill_tree()``: every descendant of a process (workers, submitit's job controllers and
  their tasks, data-loader workers, a notebook kernel and what it started), found in ``/proc``
  before any is signalled, gets SIGTERM and, after a short grace period, SIGKILL (submitit's
  tasks ignore SIGTERM).
- ``die_with_parent()``: called in a worker, it ends the worker when the process that started
  it, or any process listed in ``$AMB_WATCH_PIDS`` (see ``watched()``), is gone, even after a
  ``kill -9`` that left no chance to clean up (Linux: ``PR_SET_PDEATHSIG`` plus a watchdog
  thread; elsewhere the watchdog alone).

``interruptible(resume)`` wraps a CLI command with all of it and prints one line with the
command that continues the work; ``python -m ambcore sweep`` and ``train`` use it. The main job
(``python -m ambcore book``) can use it the same way, with ``same_command`` as ``resume``: its
notebook kernels and what they start are descendants of the book process (``stop_children``
finds them), and the workers of a sweep inside a kernel also end when the book process ends,
since ``watched()`` passes its identity down through the environment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "WATCH_ENV",
    "install_sigterm",
    "restore_signals",
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

_received: list[int] = []  # the signals that interrupted this process, in order
_watchdog_started = False


# ---- signals -------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install_sigterm() -> dict[int, Any]:
    """SIGTERM (and SIGINT) raise ``KeyboardInterrupt`` in the main thread; returns the previous
    handlers (for ``restore_signals``). No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGINT)}


def restore_signals(saved: dict[int, Any]) -> None:
    for s, handler in saved.items():
        signal.signal(s, handler)


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


# ---- the process tree (Linux /proc) ----------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of ``pid`` from ``/proc``; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and ")"
    return fields[0], int(fields[1]), int(fields[19])


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children.setdefault(st[1], []).append(int(name))
    return children


def descendants(pid: int | None = None) -> list[int]:
    """Every live descendant of ``pid`` (default: this process), parents before children."""
    root = os.getpid() if pid is None else pid
    if not os.path.isdir("/proc"):  # not Linux: psutil if it is there, else nothing to find
        try:
            import psutil

            return [p.pid for p in psutil.Process(root).children(recursive=True)]
        except Exception:  # noqa: BLE001 - no psutil or the process is gone
            return []
    children, out, todo = _children_map(), [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    if st is None:
        if os.path.isdir("/proc"):
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return st[0] not in ("Z", "X")  # a zombie has ended; only its exit status is left


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


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
        found = [p for p in dict.fromkeys(found) if _alive(p)]
        if not found:
            break
        for sig in (signal.SIGTERM, signal.SIGKILL):
            _signal_all([p for p in found if _alive(p)], sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_alive(p) for p in found):
                time.sleep(0.05)
        signalled += found
    return signalled


def stop_children(grace: float = GRACE_S) -> list[int]:
    """``kill_tree`` of this process with further Ctrl-C / SIGTERM ignored while it runs."""
    with signals_ignored():
        return kill_tree(grace=grace)


# ---- workers that end with their parent ------------------------------------------------------------


def _token(pid: int) -> str:
    st = _stat(pid)
    return f"{socket.gethostname()}:{pid}:{st[2] if st else 0}"


def _gone(token: str) -> bool:
    host, pid, start = token.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process (e.g. a SLURM job's submitter): not ours to watch
    st = _stat(int(pid))
    if st is None:
        return not _alive(int(pid))
    return st[0] in ("Z", "X") or (start != "0" and str(st[2]) != start)  # ended, or pid reused


@contextlib.contextmanager
def watched() -> Iterator[None]:
    """Processes started inside the block (they inherit the environment) learn this process's
    identity through ``$AMB_WATCH_PIDS``; ``die_with_parent()`` in them ends them with it."""
    saved = os.environ.get(WATCH_ENV)
    mine = _token(os.getpid())
    entries = [e for e in (saved or "").split(",") if e]
    os.environ[WATCH_ENV] = ",".join(entries + ([mine] if mine not in entries else []))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(WATCH_ENV, None)
        else:
            os.environ[WATCH_ENV] = saved


def _set_parent_death_signal() -> None:
    """Linux: the kernel sends SIGKILL to this process when the thread that started it ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def unwatched() -> Iterator[None]:
    """Processes started inside the block outlive this one (e.g. SLURM jobs, which a sweep only
    submits): ``$AMB_WATCH_PIDS`` is not passed on."""
    saved = os.environ.pop(WATCH_ENV, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[WATCH_ENV] = saved


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
    import shlex

    return shlex.join(["python", "-m", "ambcore", *sys.argv[1:]])


def interruptible(resume: Callable[[Any], str]) -> Callable[[Command], Command]:
    """Decorate a CLI command ``func(args) -> exit code``: Ctrl-C or SIGTERM stops every process
    it started, prints ``interrupted ...; resume with: <resume(args)>`` on stderr and returns
    130 (SIGINT) or 143 (SIGTERM)."""

    def decorate(func: Command) -> Command:
        @functools.wraps(func)
        def run(args: Any) -> int:
            _received.clear()
            saved = install_sigterm()
            try:
                with watched():
                    return func(args)
            except KeyboardInterrupt:
                stop_children()
                sig = _received[-1] if _received else signal.SIGINT
                print(
                    f"interrupted by {signal.Signals(sig).name}; every process it started is "
                    f"stopped; resume with: {resume(args)}",
                    file=sys.stderr,
                    flush=True,
                )
                return EXIT_CODES.get(sig, 130)
            finally:
                restore_signals(saved)

        return run

    return decorate
