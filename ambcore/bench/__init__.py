"""Benchmarks, in one place (thesis 6.3.1: what a run costs and on which machine).

- ``ambcore.bench.training``: ``python -m ambcore bench``, the fast training/evaluation path
  against a naive reference path, side by side, with the machine block and the per-phase
  CPU-time breakdown of one short training run (``ambcore.bench.phases``).
- ``ambcore.bench.phases``: where the CPU-seconds of a training run go (tokenising, PLM
  forward, audio-visual encoders, backward, optimizer, evaluation, noise evaluation).
- ``ambcore.bench.numerics``: ``python -m ambcore bench --numerics``, AMB trained on the same
  seeds in fp32 and under bf16 autocast, compared with the verdicts' test (``ambcore.stats``).
- ``ambcore.bench.sdk``: the SDK conversion on MOSEI-sized synthetic ``.csd`` files
  (``python -m ambcore.bench.sdk``).

The names of ``ambcore.bench.training`` are re-exported here (``from ambcore.bench import
run_benchmark``).
"""

from ambcore.bench.training import *  # noqa: F401,F403
from ambcore.bench.training import (  # noqa: F401  (used by tests and the memory worker)
    DEFAULT_MODELS,
    _environment,
    _ModelBench,
    _targets,
    _worker,
    measure_memory,
    paired_steps,
    targets_frame,
)
from ambcore.bench.training import __all__ as _training_all

__all__ = list(_training_all)
