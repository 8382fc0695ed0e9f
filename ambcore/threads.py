"""CPU threads: how many each process uses, so that a shared machine degrades gracefully.

PyTorch's CPU kernels run on OpenMP threads. Two habits make them slow on a machine that other
programs share (a laptop with a browser open, a CI runner, two runs side by side):

- more threads than free cores: every parallel region waits for its slowest thread, and a
  thread whose core is taken by another program makes all the others wait;
- OpenMP's *active* wait policy: waiting threads spin, burning the cores the other program
  needs. ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. OpenMP reads it once, when the
  library loads, so it must be in the environment before ``import torch`` in a process.

The policy, in one place:

- ``AMB_THREADS`` (or ``--threads N`` on the commands that train or evaluate) sets the threads
  of a process; otherwise a process working alone keeps an ``OMP_NUM_THREADS`` it was started
  with or takes the CPU cores it may use, and each of
  ``workers`` processes running side by side takes ``cores // workers`` (one when there are at
  least as many workers as cores);
- every process this project starts (papermill kernels, sweep and noise workers) gets the
  count through its environment (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) together with
  ``OMP_WAIT_POLICY=PASSIVE`` (``child_env``); ``AMB_THREADS`` itself is inherited only when
  the user set it, so that a kernel's workers still share the cores out among themselves;
- ``import ambcore`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already says
  otherwise (``set_passive_wait_policy``), and ``apply_threads`` sets torch's intra-op threads
  in a running process.

``environment`` is the one way the package sets what the processes it starts inherit: these
thread settings, and ``ambcore.interrupt``'s list of processes whose end ends a worker.

This module imports nothing heavy (no torch at import time), so it can run before torch loads.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping

from ambcore.config import ConfigError

__all__ = [
    "ENV_VAR",
    "THREAD_VARS",
    "available_cores",
    "requested_threads",
    "threads_per_process",
    "process_threads",
    "child_env",
    "set_passive_wait_policy",
    "apply_threads",
    "child_environment",
    "environment",
]

ENV_VAR = "AMB_THREADS"
# The variables that OpenMP and MKL read when torch loads.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
WAIT_POLICY_VAR = "OMP_WAIT_POLICY"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; all cores where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def requested_threads(
    threads: int | str | None = None, env: Mapping[str, str] | None = None
) -> int | None:
    """The explicit thread count: ``threads`` (e.g. ``--threads``), else ``AMB_THREADS``, else
    None. A value that is not a positive integer raises ``ConfigError`` naming its source."""
    env = os.environ if env is None else env
    if threads not in (None, ""):
        source, value = "--threads", threads
    else:
        source, value = ENV_VAR, env.get(ENV_VAR)
    if value in (None, ""):
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(f"{source}={value!r}: expected a positive number of CPU threads")
    return count


def threads_per_process(
    workers: int = 1,
    threads: int | str | None = None,
    cores: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Threads for each of ``workers`` processes running side by side.

    An explicit count (``threads`` / ``AMB_THREADS``) wins; otherwise the cores are shared out,
    at least one thread each: one process alone takes every core, two workers on two cores one
    thread each."""
    explicit = requested_threads(threads, env)
    if explicit is not None:
        return explicit
    cores = cores or available_cores()
    return max(1, cores // max(1, int(workers)))


def child_env(n_threads: int) -> dict[str, str]:
    """The environment a child process needs to use ``n_threads`` threads, waiting passively."""
    n = str(int(n_threads))
    return {**{var: n for var in THREAD_VARS}, WAIT_POLICY_VAR: "PASSIVE"}


def set_passive_wait_policy(env: dict[str, str] | None = None) -> str:
    """``OMP_WAIT_POLICY=PASSIVE`` unless already set; effective only before torch loads.
    Returns the policy in force."""
    env = os.environ if env is None else env
    return env.setdefault(WAIT_POLICY_VAR, "PASSIVE")


def process_threads(threads: int | str | None = None, env: Mapping[str, str] | None = None) -> int:
    """Threads of a process working alone: ``threads`` / ``AMB_THREADS``, else an
    ``OMP_NUM_THREADS`` already in the environment (set by whoever started the process), else
    every core it may use."""
    env = os.environ if env is None else env
    explicit = requested_threads(threads, env)
    if explicit is not None:
        return explicit
    try:
        inherited = int(env.get("OMP_NUM_THREADS", ""))
    except ValueError:
        inherited = 0
    return inherited if inherited > 0 else available_cores()


def apply_threads(threads: int | str | None = None) -> int:
    """Set this process' thread count (``process_threads``) for torch and for the processes it
    starts (an explicit ``threads`` also becomes their ``AMB_THREADS``); return the count.
    torch's intra-op threads change at once when torch is loaded; OpenMP's pool size for a
    process not yet started comes from the environment."""
    n = process_threads(threads)
    if threads not in (None, ""):  # --threads: every process started from here, as AMB_THREADS
        os.environ[ENV_VAR] = str(n)
    for key, value in child_env(n).items():
        if key == WAIT_POLICY_VAR:
            os.environ.setdefault(key, value)
        else:
            os.environ[key] = value
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def child_environment(n_threads: int) -> Iterator[dict[str, str]]:
    """Processes started inside the block use ``n_threads`` threads each and wait passively; the
    previous environment comes back afterwards."""
    values = child_env(n_threads)
    with environment(values):
        yield values


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set environment variables (``None``: remove one) for the processes started inside the
    block; the previous values, or their absence, come back afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    _set_environment(values)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
