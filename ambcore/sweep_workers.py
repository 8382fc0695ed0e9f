"""Persistent sweep workers: one process per slot that trains cell after cell (thesis 6.3.3-6.3.4).

A fresh process per run pays for its imports (torch, transformers), the PLM's load and the
set-up again and again: seconds of every run of a sweep whose runs last tens of seconds. A
worker here starts once per slot (one per visible GPU, else ``max_parallel`` on the CPU),
imports once, keeps each PLM it loaded (``ambcore.models.plm.keep_loaded``: later runs get an
exact copy, no file is read again) and runs ``ambcore.sweep.run_cell`` for each cell it is
sent. Everything that makes a run resumable stays with ``run_cell``: the per-run lock, the
DONE check, ``sweep.json``; the adoption checks happen in the sweep before any cell is sent.

- A cell that raises is reported like the in-process backend reports it; the worker goes on.
- A cell that ends its worker (a crash of the interpreter, ``os._exit``, the kernel's OOM
  killer) is recorded as failed, naming the exit status and the worker's log
  (``<runs_dir>/_workers/``), and a new worker takes the slot for the next cell.
- Ctrl-C or SIGTERM in the sweep stops every worker and its children (``interrupt.kill_tree``);
  the workers ignore Ctrl-C themselves (it reaches the whole process group; the sweep stops
  them). A ``kill -9`` of the sweep ends them too (``interrupt.die_with_parent``: the kernel's
  parent-death signal plus the watchdog over ``$AMB_WATCH_PIDS``).

The protocol is two pipes per worker (``multiprocessing.connection.Connection`` over inherited
file descriptors): the sweep sends a cloudpickled ``(run_cell, its arguments, {"train_fn": ...})``
(empty bytes: stop), the worker answers with a pickled ``("ok", result)`` or ``("error", message,
traceback)``. The worker runs as ``python -m ambcore.sweep_workers`` (its name shows in ``ps``).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import cloudpickle  # submitit's dependency; carries a train_fn defined in a test or notebook

from ambcore import interrupt

__all__ = ["WORKER_MODULE", "WorkerCrashed", "Worker", "run_on_workers"]

WORKER_MODULE = "ambcore.sweep_workers"
LOG_FOLDER = "_workers"
STOP_WAIT_S = 10.0  # a worker asked to stop exits at once; after this it is killed
LOG_TAIL_LINES = 12


class WorkerCrashed(Exception):
    """The worker process ended while it ran a cell."""


# ---- the sweep's side --------------------------------------------------------------------------------


@dataclass
class Worker:
    """One worker process and its two pipes; ``gpu``: the one GPU it sees (None: CPU)."""

    gpu: int | None
    log: Path
    proc: subprocess.Popen = field(init=False)
    outbox: Connection = field(init=False)
    inbox: Connection = field(init=False)
    cells: int = 0  # cells sent to it

    def __post_init__(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])  # the same ambcore as ours
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log, "ab") as log, interrupt.signals_ignored([signal.SIGINT]):
                self.proc = subprocess.Popen(  # from the main thread: see die_with_parent
                    [sys.executable, "-m", WORKER_MODULE, str(to_worker_r), str(from_worker_w)],
                    pass_fds=(to_worker_r, from_worker_w),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self.outbox = Connection(to_worker_w, readable=False)
        self.inbox = Connection(from_worker_r, writable=False)

    def send(self, target: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
        self.cells += 1
        self.outbox.send_bytes(cloudpickle.dumps((target, args, kwargs)))

    def receive(self) -> tuple:
        """The worker's answer to the cell it runs; ``WorkerCrashed`` if it ended instead."""
        try:
            if not self.inbox.poll(0) and self.proc.poll() is not None:
                raise EOFError  # ended; a child of it may still hold the pipe open
            return pickle.loads(self.inbox.recv_bytes())
        except (EOFError, OSError):
            code = self.proc.wait(timeout=30)
            status = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            raise WorkerCrashed(
                f"the worker process ended ({status}) while it trained; its log: {self.log}"
            ) from None

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def stop(self) -> None:
        """Ask it to exit; kill it (and its children) if it does not within ``STOP_WAIT_S``."""
        try:
            self.outbox.send_bytes(b"")
            self.proc.wait(timeout=STOP_WAIT_S)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self.close()

    def kill(self) -> None:
        with interrupt.signals_ignored():
            interrupt.kill_tree([self.proc.pid], include_root=True, grace=0.5)
        self.proc.poll()

    def close(self) -> None:
        for conn in (self.outbox, self.inbox):
            conn.close()


# result(cell, outcome) where outcome is ("ok", result) | ("error", message, details)
Report = Callable[[Any, tuple], None]


def run_on_workers(
    cells: Sequence[Any],
    target: Callable[..., Any],
    args_of: Callable[[Any], tuple],
    kwargs: dict[str, Any],
    slots: Sequence[int | None],
    log_folder: Path,
    report: Report,
) -> None:
    """Call ``target(*args_of(cell), **kwargs)`` for each of ``cells`` (in this order) on one
    persistent worker per slot and ``report`` each as it ends (``ambcore.sweep`` passes
    ``run_cell``). Whatever ends this early (Ctrl-C, SIGTERM, an exception from ``report``)
    first stops every worker. A worker that ended while it ran a cell is replaced for the next."""
    queue = list(cells)
    workers: list[Worker | None] = [None] * len(slots)
    running: dict[int, Any] = {}  # slot index -> the cell its worker runs
    started = 0
    try:
        with interrupt.watched():  # the workers end with this process, even after a kill -9
            while queue or running:
                for i, gpu in enumerate(slots):
                    if not queue or i in running:
                        continue
                    if workers[i] is None:
                        started += 1
                        workers[i] = Worker(gpu, log_folder / f"worker{i}-{started}.log")
                    cell = queue.pop(0)
                    workers[i].send(target, args_of(cell), kwargs)
                    running[i] = cell
                ready = wait([workers[i].inbox for i in running], timeout=1.0)
                ended = [
                    i
                    for i in running
                    if workers[i].inbox in ready or workers[i].proc.poll() is not None
                ]
                for i in ended:
                    worker, cell = workers[i], running.pop(i)
                    try:
                        outcome = worker.receive()
                    except WorkerCrashed as exc:
                        details = worker.log_tail()
                        worker.kill()
                        worker.close()
                        workers[i] = None  # replaced before its slot's next cell
                        outcome = ("error", str(exc), details)
                    report(cell, outcome)
    except BaseException:
        for worker in workers:
            if worker is not None:
                worker.kill()
                worker.close()
        raise
    for worker in workers:
        if worker is not None:
            worker.stop()


# ---- the worker's side -------------------------------------------------------------------------------


def _serve(inbox: Connection, outbox: Connection) -> int:
    # lazy: only a worker loads torch, the PLMs and the trainer; the sweep imports this module
    import torch

    from ambcore.models import plm

    plm.keep_loaded(True)
    import ambcore.train  # noqa: F401 - imported once, before the first cell arrives

    threads = torch.get_num_threads()
    while True:
        try:
            message = inbox.recv_bytes()
        except EOFError:  # the sweep is gone
            return 0
        if not message:
            return 0
        target, args, kwargs = cloudpickle.loads(message)
        try:
            reply = ("ok", target(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - reported to the sweep, the worker goes on
            line = " ".join(traceback.format_exception_only(exc)[-1].split())[:400]
            reply = ("error", line, "\n".join(traceback.format_exc().rstrip().splitlines()[-12:]))
        finally:
            if torch.get_num_threads() != threads:  # a cell's thread policy is not the next's
                torch.set_num_threads(threads)
        outbox.send_bytes(pickle.dumps(reply))


def main(argv: Sequence[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group; the sweep stops us
    interrupt.die_with_parent()
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[worker {os.getpid()}] started {started}", flush=True)
    return _serve(inbox, outbox)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
