"""Shared test set-up.

- No test changes the CPU thread count of the tests that follow it: commands called
  in-process (``ambcore.cli.main``) apply their thread policy to this process
  (``ambcore.threads.apply_threads``); a later in-process training would then run with another
  thread count, whose floating-point sums differ in the last bits from the same run in a
  subprocess. Each test gets the count it started with back.
- Parallel runs (``pytest -n N --dist loadfile``, pytest-xdist; ``scripts/test.sh``): each
  worker writes its runs and results files into a folder of its own under ``$AMB_RUNS`` and
  ``$AMB_RESULTS``; the tests of one file run in one worker (its module fixtures are built
  once), and the notebooks run in one worker, in order (a chapter reads what the chapters
  before it wrote). Tests marked ``alone`` (they measure time or send signals to process
  trees) are left to a pass of their own without other workers. The notebooks, then the files
  marked ``costly(seconds)`` from the costliest down, start first: the pass ends on short
  files rather than on a long one started last (``scripts/test.sh`` keeps this order with
  ``--no-loadscope-reorder``; xdist would otherwise start the files with the most tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

NOTEBOOKS_SCOPE = "notebooks"
_PER_WORKER_FOLDERS = ("AMB_RUNS", "AMB_RESULTS")


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    for name in _PER_WORKER_FOLDERS:  # read by ambcore.paths and inherited by notebook kernels
        if os.environ.get(name):
            folder = Path(os.environ[name]) / worker
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(folder)


def scope_of(nodeid: str) -> str:
    """The unit of work of a test for ``--dist loadfile``: its file, or for a notebook's cell
    (nbval) every notebook together, so that the chapters run in order in one kernel after
    another."""
    file = nodeid.split("::", 1)[0]
    return NOTEBOOKS_SCOPE if file.endswith(".ipynb") or "::ipynb::" in nodeid else file


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The notebooks first (in chapter order), then the ``costly`` files from the costliest
    down, then the rest in collected order: ``--dist loadfile`` hands out files in this order."""

    def rank(item: pytest.Item) -> tuple[int, float]:
        if scope_of(item.nodeid) == NOTEBOOKS_SCOPE:
            return 0, 0.0
        costly = item.get_closest_marker("costly")
        return (1, -float(costly.args[0])) if costly else (2, 0.0)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile`` with the notebooks as one unit (``scope_of``); other modes as usual.
    (xdist's ``loadgroup`` cannot be used for this: its group suffix is lost on pytest 9's
    node ids.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ChaptersInOrder(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ChaptersInOrder(config, log)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
