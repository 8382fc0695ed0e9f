"""Where the CPU-seconds of a training run go, by phase (thesis 6.3.1: the cost of a run).

``phase_profile()`` watches a run from the outside (nothing in the trainer changes): global
module forward hooks, the optimizers' global step hooks, and wrappers around
``Tensor.backward``, the collate's tokenisation, the trainer's ``predict_split`` and the
robustness evaluation. CPU time (``time.process_time``: every thread of this process) is
charged to the innermost open phase, so the phases add up to the total:

- ``tokenising``: word pieces of a split (``ambcore.data.collate._tokenize``);
- ``batching``: padding and stacking a batch (``Collator``), without the tokenising;
- ``plm forward``: the pretrained encoder's modules (``transformers``), adapters included
  (``adapters`` when they are separate modules the hooks can see: they are);
- ``av encoders``: the visual and acoustic sequence encoders (AMB's and MISA's);
- ``fusion and heads``: every other module of the model (fusion, gates, predictor, MISA's
  private/shared projections and its fusion transformer);
- ``backward``: ``loss.backward()`` (the gradients of every module);
- ``optimizer``: ``optimizer.step()``;
- ``checkpoints``: writing the best weights and the resume state;
- ``other``: the rest (setup, loss, clipping, data loading, the loop itself).

Phases inside ``predict_split`` are prefixed ``evaluation: `` (validation and test passes of
the trainer) and those inside a robustness curve ``noise evaluation: ``, so that
``evaluation: plm forward`` and ``plm forward`` (training) are told apart.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as nn_module
from torch.optim import optimizer as optim_module

from ambcore import robustness, runs, train
from ambcore.data import collate
from ambcore.models.adapters import BottleneckAdapter
from ambcore.models.encoders import SequenceEncoder
from ambcore.models.misa import SequenceEncoder as MisaEncoder
from ambcore.train import train_and_evaluate

__all__ = ["PhaseClock", "phase_profile", "profile_training_run", "PHASES"]

PHASES = (
    "tokenising",
    "batching",
    "plm forward",
    "adapters",
    "av encoders",
    "fusion and heads",
    "backward",
    "optimizer",
    "checkpoints",
    "other",
)
CONTEXTS = ("evaluation", "noise evaluation")


class PhaseClock:
    """Exclusive CPU time per phase: a stack of open phases, the innermost one is charged."""

    def __init__(self, clock: Callable[[], float] = time.process_time):
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []
        self.last = clock()

    def _label(self, name: str) -> str:
        contexts = [s for s in self.stack if s in CONTEXTS]
        if name in CONTEXTS or not contexts:
            return name
        return f"{contexts[-1]}: {name}"

    def _charge(self) -> None:
        now = self.clock()
        top = self.stack[-1] if self.stack else "other"
        label = self._label(top) if top not in CONTEXTS else top
        self.seconds[label] = self.seconds.get(label, 0.0) + (now - self.last)
        self.last = now

    def push(self, name: str) -> None:
        self._charge()
        self.stack.append(name)

    def pop(self) -> None:
        self._charge()
        if self.stack:
            self.stack.pop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def wrap(self, fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapper

    def totals(self) -> dict[str, float]:
        """Seconds per label, charged up to now (``other`` for time outside every phase)."""
        self._charge()
        return dict(self.seconds)


def _module_phase(module: nn.Module) -> str | None:
    """The phase of a module's forward, or None for a module outside the model's parts."""
    if isinstance(module, BottleneckAdapter):
        return "adapters"
    if isinstance(module, (SequenceEncoder, MisaEncoder)):
        return "av encoders"
    owner = type(module).__module__
    if owner.startswith("transformers."):
        return "plm forward"
    if owner.startswith("ambcore.models"):
        return "fusion and heads"
    return None  # torch building blocks: the phase of their parent


@contextlib.contextmanager
def _patched(target: Any, attribute: str, value: Any) -> Iterator[None]:
    saved = getattr(target, attribute)
    setattr(target, attribute, value)
    try:
        yield
    finally:
        setattr(target, attribute, saved)


def _module_hooks(clock: PhaseClock) -> contextlib.ExitStack:
    """Global forward hooks: a module of a known part opens its phase (if not already open)."""
    pushed: list[bool] = []

    def pre(module, _inputs):
        phase = _module_phase(module)
        opened = phase is not None and (not clock.stack or clock.stack[-1] != phase)
        if opened:
            clock.push(phase)
        pushed.append(opened)

    def post(module, _inputs, _output):
        if pushed and pushed.pop():
            clock.pop()

    stack = contextlib.ExitStack()
    stack.callback(nn_module.register_module_forward_pre_hook(pre).remove)
    stack.callback(nn_module.register_module_forward_hook(post).remove)
    return stack


def _optimizer_hooks(clock: PhaseClock) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    handles = [
        optim_module.register_optimizer_step_pre_hook(lambda *a: clock.push("optimizer")),
        optim_module.register_optimizer_step_post_hook(lambda *a: clock.pop()),
    ]
    for handle in handles:
        stack.callback(handle.remove)
    return stack


@contextlib.contextmanager
def phase_profile() -> Iterator[PhaseClock]:
    """Charge this process' CPU time to phases while the block runs (see the module doc)."""
    clock = PhaseClock()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_module_hooks(clock))
        stack.enter_context(_optimizer_hooks(clock))
        patches = [
            (torch.Tensor, "backward", clock.wrap(torch.Tensor.backward, "backward")),
            (collate, "_tokenize", clock.wrap(collate._tokenize, "tokenising")),
            (collate.Collator, "__call__", clock.wrap(collate.Collator.__call__, "batching")),
            (train, "predict_split", clock.wrap(train.predict_split, "evaluation")),
            (train, "_save_best", clock.wrap(train._save_best, "checkpoints")),
            (runs, "save_resume_state", clock.wrap(runs.save_resume_state, "checkpoints")),
            (
                robustness,
                "robustness_curve",
                clock.wrap(robustness.robustness_curve, "noise evaluation"),
            ),
            (robustness, "predict_split", clock.wrap(robustness.predict_split, "noise evaluation")),
        ]
        for target, attribute, value in patches:
            stack.enter_context(_patched(target, attribute, value))
        yield clock


def _merge(seconds: dict[str, float]) -> dict[str, float]:
    """Phase labels in a fixed order (the known phases first), rounded to milliseconds."""
    order = {p: i for i, p in enumerate(PHASES)}

    def key(label: str) -> tuple:
        context, _, phase = label.rpartition(": ")
        return (
            CONTEXTS.index(context) + 1 if context in CONTEXTS else 0,
            order.get(phase, len(order)),
            label,
        )

    return {label: round(seconds[label], 3) for label in sorted(seconds, key=key)}


def profile_training_run(
    cfg,
    run_dir,
    noise_rates: tuple[float, ...] = (0.0, 0.5, 1.0),
    noise_kinds: tuple[str, ...] = ("replacement", "visual"),
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (a fresh folder) under ``phase_profile``, then evaluate it
    under noise (``noise_kinds`` x ``noise_rates``, one draw); CPU seconds per phase.

    The record holds the phases, their total, the wall time, the epochs trained (so a reader can
    scale a short run to the preset's epochs), and the noise grid."""
    start_wall = time.perf_counter()
    with phase_profile() as clock:
        result = train_and_evaluate(cfg, run_dir, progress=False)
        if noise_kinds and noise_rates:
            robustness.robustness_curve(
                run_dir, list(noise_kinds), rates=list(noise_rates), n_draws=1, seed=cfg.seed
            )
        seconds = clock.totals()
    return {
        "cpu_s_by_phase": _merge(seconds),
        "cpu_s_total": round(sum(seconds.values()), 3),
        "wall_s": round(time.perf_counter() - start_wall, 3),
        "torch_threads": torch.get_num_threads(),
        "epochs": int(result.epochs_run),
        "n_train": int(cfg.synthetic_n_train) if cfg.data == "synthetic" else None,
        "noise_grid": {"kinds": list(noise_kinds), "rates": list(noise_rates), "n_draws": 1},
    }
