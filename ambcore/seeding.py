"""One seeding function for python, numpy and torch (and so data order and noise draws)."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed every generator the project uses and return a torch.Generator for data order.

    With ``deterministic`` the same seed and preset give bit-identical results on the same
    CPU machine (torch's deterministic algorithms are requested; CUDA may still differ).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if deterministic:
        _deterministic_kernels()
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def _deterministic_kernels() -> None:
    """torch's deterministic algorithms, warning where none exists. The public switch also
    imports the inductor compiler to set its flag (about a second per process, measured: every
    run of a sweep is a process); torch.compile is the only user of that flag, so it is set
    through the public switch only when the compiler is already loaded."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)
