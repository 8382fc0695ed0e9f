"""Shared test set-up: no test changes the CPU thread count of the tests that follow it.

Commands called in-process (``ambcore.cli.main``) apply their thread policy to this process
(``ambcore.threads.apply_threads``); a later in-process training would then run with another
thread count, whose floating-point sums differ in the last bits from the same run in a
subprocess. Each test gets the count it started with back.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
