"""Benchmark of the fast training and evaluation path against a naive reference path.

``python -m ambcore bench`` (``run_benchmark``) trains and evaluates each requested model on the
same synthetic batches, in one process, along two paths:

The fast path (what ``ambcore.train`` does by default, ``cfg.fast_path=True``)
    - length-bucketed batches with dynamic padding (text, visual and acoustic padded to the
      longest sequence of the batch), tokenized once per split and cached;
    - frozen PLM weights have ``requires_grad=False`` (no weight gradient is computed for them);
    - evaluation under ``torch.inference_mode``;
    - on CUDA also: bf16 autocast, scaled-dot-product attention, fused Adam, pinned memory with
      non-blocking copies, optional ``torch.compile`` (``cfg.compile``), and no host-device
      synchronisation inside a training step (the loss is accumulated on the device).

The naive reference path (``NAIVE_PATH``), what straightforward research code does
    - every batch padded to a fixed ``NAIVE_PAD_TO`` = 50 tokens (text) and 50 feature steps
      (the aligned_50 layout; longer unaligned sequences: the batch's longest), fp32, batches
      in plain shuffled order (no bucketing), every batch tokenized again (no cache);
    - every parameter keeps ``requires_grad=True``; "frozen" weights are frozen only by leaving
      them out of the optimizer, so their gradients are computed and thrown away;
    - ``torch.optim.Adam`` with its defaults; the loss read with ``.item()`` after every step;
    - evaluation under ``torch.no_grad`` (not ``inference_mode``).

Both paths use the same weights at the start, the same optimizer settings, the same attention
implementation and, in every epoch, the same set of training samples (the epoch's permutation
comes from the same seed); ``tests/test_fast_path.py`` checks that they compute the same
predictions and gradients. Text is capped at ``NAIVE_PAD_TO`` tokens on both paths unless
``--set max_text_len=...`` says otherwise, so both paths see the same tokens.

What is measured
----------------
- training: wall time of one full epoch over the training split (samples/s, ms per step);
- evaluation: wall time of one pass over the validation split (samples/s);
- peak memory of training (RSS on the CPU, ``max_memory_allocated`` on CUDA), measured in a
  fresh subprocess per model and path (so one measurement cannot reuse another's memory);
- trainable parameters;
- AMB against AMB-FT step by step on the same batches (``paired_steps``: every batch of an
  epoch trained by both, alternating which goes first), for the target on their step cost;
- under load (``under_load``): the same training steps with and without a competing busy
  process (a spinning Python process per competitor), alternating, and the ratio of the two;
  the thread settings in force (``ambcore.threads``) are recorded beside it.

Every round times each model's fast and naive paths back to back (interleaved), after a
warm-up of a few steps per path; the JSON reports the median, quartiles and min/max over
rounds, and the fast/naive ratio of each round (paired, so that load changes on a shared
machine affect both sides of a ratio alike).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ambcore.bench.phases import profile_training_run
from ambcore.config import Config, apply_overrides, config_from_dict
from ambcore.data import load_dataset
from ambcore.data.collate import Collator, SplitDataset, make_loader
from ambcore.data.types import Split
from ambcore.errors import AmbError
from ambcore.models import build_model
from ambcore.models.plm import load_tokenizer, plm_config
from ambcore.paths import PROJECT_ROOT
from ambcore.runs import collect_env, machine_block
from ambcore.seeding import seed_everything
from ambcore.threads import WAIT_POLICY_VAR
from ambcore.train import (
    TrainSetup,
    TrainState,
    epoch_seed,
    make_optimizer,
    predict_split,
    resolve_device,
    train_epoch,
)
from ambcore.train import _task_loss as task_loss

__all__ = [
    "BENCH_MODELS",
    "NAIVE_PAD_TO",
    "NAIVE_PATH",
    "FAST_PATH",
    "TARGETS",
    "bench_config",
    "naive_loader",
    "fast_loader",
    "make_naive_model",
    "naive_train_epoch",
    "naive_predict",
    "fast_train_epoch",
    "fast_predict",
    "run_benchmark",
    "under_load",
    "busy_processes",
    "format_report",
    "summary_frame",
    "efficiency_frame",
    "count_flops",
    "achieved",
    "default_output",
    "phase_breakdown",
    "phases_frame",
    "machine_frame",
    "record_machines",
    "record_phases",
]

NAIVE_PAD_TO = 50  # the thesis' fixed text length and the aligned_50 feature length

# Benchmark names -> config overrides. AMB-FT and MISA fine-tune the embeddings and the last 3
# PLM layers (the thesis' 47.2 M / 47.1 M on bert-base); MAG-BERT fine-tunes the whole PLM.
BENCH_MODELS: dict[str, dict[str, Any]] = {
    "amb": dict(model="amb", text_adaptation="adapters"),
    "amb-ft": dict(model="amb", text_adaptation="finetune", finetune_layers="last:3"),
    "misa": dict(model="misa", text_adaptation="finetune", finetune_layers="last:3"),
    "mag-bert": dict(model="mag-bert", text_adaptation="finetune", finetune_layers="all"),
    "misa-adapters": dict(model="misa", text_adaptation="adapters"),
    "mag-bert-adapters": dict(model="mag-bert", text_adaptation="adapters"),
    "amb-text-only": dict(model="amb", text_adaptation="adapters", variant="text-only"),
    "amb-no-text": dict(model="amb", text_adaptation="adapters", variant="no-text"),
}
DEFAULT_MODELS = ("amb", "amb-ft", "misa", "mag-bert")

FAST_PATH = (
    "length-bucketed batches, dynamic padding, tokenized once and cached; frozen PLM weights "
    "without gradients; evaluation under torch.inference_mode; on CUDA also bf16 autocast, "
    "SDPA attention, fused Adam, pinned memory and non-blocking copies, no per-step sync"
)
NAIVE_PATH = (
    f"fixed padding to {NAIVE_PAD_TO} tokens and {NAIVE_PAD_TO} feature steps, fp32, shuffled "
    "batches without bucketing, tokenized every batch (no cache); all weights require grad "
    "(frozen ones only left out of the optimizer); default Adam; loss.item() every step; "
    "evaluation under torch.no_grad"
)

# The targets, checked (never tuned) on the figures of a run.
TARGETS = {
    "train_epoch_fast_over_naive": 0.5,  # fast epoch <= 0.5 x naive epoch (each model)
    "amb_over_amb_ft_train_step": 0.7,  # AMB step <= 0.7 x AMB-FT step (fast path)
}


# ---- configuration --------------------------------------------------------------------------


def _layers_of(cfg: Config) -> int:
    return int(plm_config(cfg.plm).num_hidden_layers)


def bench_config(base: Config, name: str) -> Config:
    """``base`` with benchmark model ``name``'s overrides (``last:K`` capped at the PLM's depth)."""
    if name not in BENCH_MODELS:
        raise AmbError(f"unknown benchmark model {name!r}; known: {', '.join(BENCH_MODELS)}")
    overrides = dict(BENCH_MODELS[name])
    layers = overrides.get("finetune_layers", "")
    if layers.startswith("last:"):
        overrides["finetune_layers"] = f"last:{min(int(layers[5:]), _layers_of(base))}"
    return apply_overrides(base, overrides)


# ---- batches ----------------------------------------------------------------------------------


def fast_loader(split: Split, tokenizer, cfg: Config, shuffle: bool, generator=None):
    """The trainer's own loader (``cfg.fast_path=True``: bucketing, dynamic padding, cache)."""
    return make_loader(
        split, tokenizer, replace(cfg, fast_path=True), shuffle=shuffle, generator=generator
    )


def naive_loader(split: Split, tokenizer, cfg: Config, shuffle: bool, generator=None):
    """Batches of the naive path: plain shuffled order, tokenized per batch, fixed padding.

    Built from the collate's own pieces: a ``SplitDataset`` without a tokenizer (so the
    ``Collator`` tokenizes every batch again), a plain random (or sequential) batch sampler, and
    ``pad_to=NAIVE_PAD_TO`` (text and features padded to at least 50). With the same
    ``generator`` seed an epoch holds the same samples as ``fast_loader``'s.
    """
    dataset = SplitDataset(split, tokenizer=None, max_text_len=cfg.max_text_len)
    if shuffle:
        sampler = BatchSampler(RandomSampler(dataset, generator=generator), cfg.batch_size, False)
    else:
        sampler = BatchSampler(SequentialSampler(dataset), cfg.eval_batch_size, False)
    collate = Collator(tokenizer, cfg.max_text_len, cfg.variant, pad_to=NAIVE_PAD_TO)
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers
    )


# ---- the two paths ----------------------------------------------------------------------------


def make_naive_model(model: nn.Module) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of ``model`` whose every parameter requires grad, and the parameters to optimize.

    The optimized parameters are those ``model`` trains; the others still get gradients.
    """
    naive = copy.deepcopy(model)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    for param in naive.parameters():
        param.requires_grad_(True)
    params = [p for n, p in naive.named_parameters() if n in trainable_names]
    return naive, params


def _task_loss(cfg: Config, out, labels: torch.Tensor) -> torch.Tensor:
    loss = task_loss(cfg, out.prediction, labels)  # ()
    return loss if out.aux_loss is None else loss + out.aux_loss.float()


def naive_train_epoch(model, loader, optimizer, cfg: Config, device: torch.device) -> float:
    """One epoch along the naive path; returns the mean loss per sample."""
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        batch = batch.to(device)
        out = model(batch)
        loss = _task_loss(cfg, out, batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)  # a host-device sync every step
        count += len(batch)
    return total / max(count, 1)


def naive_predict(model, loader, device: torch.device) -> dict[str, float]:
    """Predictions of the naive path (``torch.no_grad``), by utterance id."""
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            prediction = model(batch).prediction.float().reshape(-1).cpu()  # (B,)
            out.update(zip(batch.ids, prediction.tolist()))
    return out


def fast_train_epoch(model, loader, optimizer, trainable, tokenizer, cfg, device, epoch) -> float:
    """One epoch of the trainer itself (``ambcore.train``); returns the mean task loss."""
    state = TrainState(model, optimizer, trainable=list(trainable))
    loss, _aux = train_epoch(
        state, TrainSetup(cfg, device, tokenizer=tokenizer), epoch, loader=loader
    )
    return loss


def fast_predict(model, split: Split, tokenizer, cfg: Config, device, loader) -> dict[str, float]:
    """Predictions of the trainer's evaluation (``ambcore.train.predict_split``), by id."""
    pred = predict_split(model, split, tokenizer, cfg, device, loader=loader)
    return dict(zip(pred.ids, pred.y_pred.tolist()))


# ---- measuring --------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(a)),
        "q1": float(np.percentile(a, 25)),
        "q3": float(np.percentile(a, 75)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def _status_mib(key: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MiB (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process' peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _load_data(cfg: Config):
    dataset = load_dataset(cfg.data, cfg)
    return dataset, load_tokenizer(cfg)


def _build(cfg: Config, dataset, device: torch.device) -> nn.Module:
    seed_everything(cfg.seed)
    return build_model(cfg, dataset.visual_dim, dataset.acoustic_dim).to(device)


def _make_optimizer(params, cfg: Config, device: torch.device, fast: bool):
    if fast:
        return make_optimizer(params, cfg, device)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _epoch_generator(cfg: Config, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))


def measure_memory(cfg: Config, path: str, steps: int = 3) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps along ``path`` ("fast" | "naive"), this process.

    Meant to run in a fresh process (``python -m ambcore.bench memory``): the model is built,
    the epoch's batches are made, then the peak is reset and the steps run on the epoch's
    longest batches (the peak of an epoch is reached on its longest batch).
    """
    device = resolve_device(cfg.device)
    dataset, tokenizer = _load_data(cfg)
    split = dataset["train"]
    model = _build(cfg, dataset, device)
    generator = _epoch_generator(cfg, 1)
    if path == "fast":
        trainable = [p for p in model.parameters() if p.requires_grad]
        batches = list(fast_loader(split, tokenizer, cfg, shuffle=True, generator=generator))
    else:
        model, trainable = make_naive_model(model)
        batches = list(naive_loader(split, tokenizer, cfg, shuffle=True, generator=generator))
    batches.sort(key=lambda b: (b.input_ids.shape[1], b.visual.shape[1], len(b)), reverse=True)
    batches = batches[:steps]
    optimizer = _make_optimizer(trainable, cfg, device, fast=path == "fast")
    if path == "fast":
        run = lambda: fast_train_epoch(
            model, batches, optimizer, trainable, tokenizer, cfg, device, 1
        )
    else:
        run = lambda: naive_train_epoch(model, batches, optimizer, cfg, device)
    result: dict[str, Any] = {
        "steps": len(batches),
        "longest_tokens": int(batches[0].input_ids.shape[1]),
    }
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        run()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        result.update(kind="cuda max_memory_allocated", peak_mib=peak, peak_delta_mib=peak - before)
    else:
        exact = _reset_peak_rss()
        before = _status_mib("VmRSS") or 0.0
        run()
        peak = _peak_rss_mib()
        result.update(
            kind="cpu peak RSS (VmHWM)" if exact else "cpu peak RSS (ru_maxrss)",
            peak_mib=peak,
            peak_delta_mib=peak - before,
        )
    return result


def _memory_in_subprocess(cfg: Config, path: str, steps: int) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "ambcore.bench",
        "memory",
        "--path",
        path,
        "--steps",
        str(steps),
        "--config",
        cfg.to_json(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise AmbError(f"bench memory worker ({cfg.model}, {path}) failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class _ModelBench:
    """One benchmark model: its fast and naive copies, optimizers and loaders."""

    def __init__(self, name: str, cfg: Config, dataset, tokenizer, device: torch.device):
        self.name, self.cfg, self.device, self.tokenizer = name, cfg, device, tokenizer
        self.train_split, self.valid_split = dataset["train"], dataset["valid"]
        model = _build(cfg, dataset, device)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in self.trainable)
        self.n_total = sum(p.numel() for p in model.parameters())
        self.naive, naive_params = make_naive_model(model)
        self.model = model  # uncompiled (FLOPs are counted on it)
        self.fast = model
        if cfg.compile and device.type == "cuda":
            self.fast = torch.compile(model)
        self.fast_opt = _make_optimizer(self.trainable, cfg, device, fast=True)
        self.naive_opt = _make_optimizer(naive_params, cfg, device, fast=False)
        self.fast_eval_loader = fast_loader(self.valid_split, tokenizer, cfg, shuffle=False)
        self.naive_eval_loader = naive_loader(self.valid_split, tokenizer, cfg, shuffle=False)
        self.times: dict[str, list[float]] = {
            k: [] for k in ("fast_train", "naive_train", "fast_eval", "naive_eval")
        }
        self.steps = {"fast": 0, "naive": 0}
        self.tokens = {"fast": 0, "naive": 0}
        self.flops: dict[str, int] | None = None

    def _train_loaders(self, epoch: int):
        fast = fast_loader(
            self.train_split, self.tokenizer, self.cfg, True, _epoch_generator(self.cfg, epoch)
        )
        naive = naive_loader(
            self.train_split, self.tokenizer, self.cfg, True, _epoch_generator(self.cfg, epoch)
        )
        return fast, naive

    def warm_up(self, steps: int) -> None:
        """A few untimed steps and an untimed evaluation batch on each path."""
        fast, naive = self._train_loaders(0)
        fast_batches = [b for _, b in zip(range(steps), fast)]
        naive_batches = [b for _, b in zip(range(steps), naive)]
        fast_train_epoch(
            self.fast,
            fast_batches,
            self.fast_opt,
            self.trainable,
            self.tokenizer,
            self.cfg,
            self.device,
            0,
        )
        naive_train_epoch(self.naive, naive_batches, self.naive_opt, self.cfg, self.device)
        naive_predict(self.naive, naive_batches[:1], self.device)
        self.fast.eval()
        with torch.inference_mode():
            self.fast(fast_batches[0].to(self.device))

    def round(self, epoch: int) -> None:
        """One timed training epoch and one timed evaluation pass on each path."""
        fast, naive = self._train_loaders(epoch)
        self.steps = {"fast": len(fast), "naive": len(naive)}
        self.times["fast_train"].append(
            _timed(
                lambda: fast_train_epoch(
                    self.fast,
                    fast,
                    self.fast_opt,
                    self.trainable,
                    self.tokenizer,
                    self.cfg,
                    self.device,
                    epoch,
                ),
                self.device,
            )
        )
        self.times["naive_train"].append(
            _timed(
                lambda: naive_train_epoch(self.naive, naive, self.naive_opt, self.cfg, self.device),
                self.device,
            )
        )
        self.times["fast_eval"].append(
            _timed(
                lambda: fast_predict(
                    self.fast,
                    self.valid_split,
                    self.tokenizer,
                    self.cfg,
                    self.device,
                    self.fast_eval_loader,
                ),
                self.device,
            )
        )
        self.times["naive_eval"].append(
            _timed(
                lambda: naive_predict(self.naive, self.naive_eval_loader, self.device), self.device
            )
        )

    def count_flops(self, epoch: int = 1) -> dict[str, int]:
        """FLOPs of one training epoch (forward, backward; the batches of a timed round) and
        of one evaluation pass on the fast path, counted by ``FlopCounterMode`` (matrix
        products, attention, convolutions: the operations that dominate; element-wise ops and
        the optimizer's update are not counted). The epoch really trains the model once more."""
        fast, _ = self._train_loaders(epoch)
        self.flops = {
            "train_epoch": count_flops(
                lambda: fast_train_epoch(
                    self.model,
                    fast,
                    self.fast_opt,
                    self.trainable,
                    self.tokenizer,
                    self.cfg,
                    self.device,
                    epoch,
                )
            ),
            "eval_pass": count_flops(
                lambda: fast_predict(
                    self.model,
                    self.valid_split,
                    self.tokenizer,
                    self.cfg,
                    self.device,
                    self.fast_eval_loader,
                )
            ),
            "train_steps": len(fast),
        }
        return self.flops

    def padded_tokens(self) -> dict[str, int]:
        """Text positions (B x T summed over batches) that one epoch feeds the PLM, per path."""
        fast, naive = self._train_loaders(1)
        return {
            "fast": int(sum(b.input_ids.numel() for b in fast)),
            "naive": int(sum(b.input_ids.numel() for b in naive)),
        }

    def report(self, memory: dict[str, Any]) -> dict[str, Any]:
        n_train, n_valid = len(self.train_split), len(self.valid_split)
        t = self.times
        paired_train = [f / n for f, n in zip(t["fast_train"], t["naive_train"])]
        paired_eval = [f / n for f, n in zip(t["fast_eval"], t["naive_eval"])]
        out: dict[str, Any] = {
            "config": {
                k: getattr(self.cfg, k) for k in ("model", "text_adaptation", "finetune_layers")
            },
            "trainable_params": self.n_trainable,
            "total_params": self.n_total,
            "padded_text_tokens_per_epoch": self.padded_tokens(),
        }
        for path in ("fast", "naive"):
            train, evaluate = _stats(t[f"{path}_train"]), _stats(t[f"{path}_eval"])
            out[path] = {
                "train_epoch_s": train,
                "train_epoch_s_rounds": [round(x, 3) for x in t[f"{path}_train"]],
                "train_samples_per_s": n_train / train["median"],
                "train_steps_per_epoch": self.steps[path],
                "train_step_ms": 1000.0 * train["median"] / max(self.steps[path], 1),
                "eval_s": evaluate,
                "eval_s_rounds": [round(x, 3) for x in t[f"{path}_eval"]],
                "eval_samples_per_s": n_valid / evaluate["median"],
                "peak_memory_mib": memory.get(path, {}).get("peak_mib"),
                "peak_memory_delta_mib": memory.get(path, {}).get("peak_delta_mib"),
            }
        out["ratio_fast_over_naive"] = {
            "train_epoch": _stats(paired_train),
            "eval": _stats(paired_eval),
        }
        out["memory"] = memory
        if self.flops is not None:
            out["flops"] = {
                **self.flops,
                "per_train_sample": self.flops["train_epoch"] / n_train,
                "per_eval_sample": self.flops["eval_pass"] / n_valid,
            }
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    """The FLOPs ``fn()`` runs, by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add
    counts 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def achieved(
    flops: dict[str, Any],
    timings: dict[str, Any],
    probe_gflops: float | None,
    threads: int,
    device: str,
) -> dict[str, Any]:
    """Achieved GFLOP/s of a model's training epoch and evaluation pass (its FLOPs over the
    median time of the fast path), beside the machine's probe x threads (thesis 6.3.1: how far
    the code is from the machine). On a GPU the CPU probe is no bound: no fraction then."""
    train = flops["train_epoch"] / 1e9 / timings["train_epoch_s"]["median"]
    evaluate = flops["eval_pass"] / 1e9 / timings["eval_s"]["median"]
    bound = probe_gflops * threads if probe_gflops and device == "cpu" else None
    return {
        "train_gflop_per_s": train,
        "eval_gflop_per_s": evaluate,
        "probe_gflop_per_s": probe_gflops,
        "threads": threads,
        "probe_x_threads_gflop_per_s": bound,
        "train_fraction_of_probe_x_threads": train / bound if bound else None,
        "eval_fraction_of_probe_x_threads": evaluate / bound if bound else None,
    }


def default_output(preset: str) -> Path:
    return PROJECT_ROOT / "results" / f"bench-{preset}.json"


def _environment(device: torch.device) -> dict[str, Any]:
    env = collect_env(device)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "device": str(device),
        "device_name": env["device_name"] or platform.machine(),
        "torch": torch.__version__,
        "transformers": env["versions"].get("transformers"),
        "python": env["python"],
        "platform": env["platform"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_revision": env["git_revision"],
        "git_dirty": env["git_dirty"],
        "load_average_1_5_15min": [round(x, 2) for x in load] if load else None,
        "machine": env["machine"],  # CPU model, cores, calibration probe (ambcore.runs)
    }


def paired_steps(
    a: _ModelBench, b: _ModelBench, passes: int = 2, max_batches: int = 64
) -> dict[str, Any]:
    """Training steps of models ``a`` and ``b`` (fast path) on the same batches, timed in pairs.

    Every batch of one training epoch is trained by ``a`` and then by ``b`` (in the next pass
    ``b`` first, so that a slow drift of the machine's load favours neither), ``passes``
    times. The per-batch ratios a/b are what "a step of ``a`` costs x times a step of ``b`` on
    the same batch" means; their median is robust to the odd disturbed step, which an
    epoch-level median of a few rounds is not. At most ``max_batches`` batches of the epoch are
    used (MOSEI-sized data has over 500)."""
    if a.cfg.batch_size != b.cfg.batch_size:
        raise AmbError("paired_steps: both models must use the same batch size")
    batches = list(
        fast_loader(a.train_split, a.tokenizer, a.cfg, True, _epoch_generator(a.cfg, 10_000))
    )[:max_batches]
    times: dict[str, list[float]] = {a.name: [], b.name: []}

    def step(bench: _ModelBench, batch) -> float:
        return _timed(
            lambda: fast_train_epoch(
                bench.fast,
                [batch],
                bench.fast_opt,
                bench.trainable,
                bench.tokenizer,
                bench.cfg,
                bench.device,
                0,
            ),
            bench.device,
        )

    for p in range(passes):
        for batch in batches:
            order = (a, b) if p % 2 == 0 else (b, a)
            for bench in order:
                times[bench.name].append(step(bench, batch))
    ratios = [x / y for x, y in zip(times[a.name], times[b.name])]
    return {
        "models": [a.name, b.name],
        "batches": len(batches),
        "passes": passes,
        "step_ms": {name: _stats([t * 1000 for t in ts]) for name, ts in times.items()},
        "ratio": _stats(ratios),
    }


@contextlib.contextmanager
def busy_processes(n: int = 1):
    """``n`` competing processes that spin on a CPU core each until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them reach full speed
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def under_load(
    bench: _ModelBench, competitors: int = 1, passes: int = 2, max_batches: int = 16
) -> dict[str, Any]:
    """Training steps of ``bench`` (fast path) on the same batches, idle and beside
    ``competitors`` busy processes, alternating idle and loaded blocks ``passes`` times.

    ``ratio``: median loaded step over median idle step. A machine that degrades gracefully
    stays well under 2 with one competitor on two cores (threads that spin or wait for a
    thread without a core make it much larger)."""
    batches = list(
        fast_loader(
            bench.train_split, bench.tokenizer, bench.cfg, True, _epoch_generator(bench.cfg, 20_000)
        )
    )[:max_batches]

    def steps() -> list[float]:
        return [
            _timed(
                lambda: fast_train_epoch(
                    bench.fast,
                    [b],
                    bench.fast_opt,
                    bench.trainable,
                    bench.tokenizer,
                    bench.cfg,
                    bench.device,
                    0,
                ),
                bench.device,
            )
            for b in batches
        ]

    idle: list[float] = []
    loaded: list[float] = []
    for _ in range(passes):
        idle += steps()
        with busy_processes(competitors):
            loaded += steps()
    idle_ms, loaded_ms = _stats([t * 1000 for t in idle]), _stats([t * 1000 for t in loaded])
    return {
        "model": bench.name,
        "competitors": competitors,
        "competitor": "a spinning Python process (while True: pass) per competitor",
        "batches": len(batches),
        "passes": passes,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get(WAIT_POLICY_VAR, "(unset: OpenMP's default)"),
        "step_ms_idle": idle_ms,
        "step_ms_loaded": loaded_ms,
        "ratio": round(loaded_ms["median"] / idle_ms["median"], 3),
    }


def run_benchmark(
    cfg: Config,
    models: Iterable[str] = DEFAULT_MODELS,
    repeats: int = 3,
    warmup_steps: int = 3,
    memory_steps: int = 3,
    measure_memory_peak: bool = True,
    command: str = "",
    progress: bool = True,
    load_competitors: int = 1,
    phase_epochs: int = 1,
    timing: bool = True,
    flops: bool = True,
) -> dict[str, Any]:
    """Time the fast and naive paths of ``models`` side by side; returns the JSON record.

    ``load_competitors``: busy processes of the under-load measurement (0: none).
    ``phase_epochs`` > 0: the record also holds ``phases``, each model's CPU-seconds by phase
    over a training run of that many epochs with its evaluations and a small noise grid
    (``ambcore.bench.phases``). ``timing=False``: only the machine and the phases.
    ``flops``: each model's ``flops`` (one training epoch, one evaluation pass; ``count_flops``)
    and ``achieved`` GFLOP/s beside the probe x threads (``achieved``)."""
    models = list(models)
    unknown = [m for m in models if m not in BENCH_MODELS]
    if unknown:
        raise AmbError(f"unknown benchmark model(s) {unknown}; known: {', '.join(BENCH_MODELS)}")
    if repeats < 1:
        raise AmbError(f"--repeats must be >= 1, got {repeats}")
    device = resolve_device(cfg.device)
    record: dict[str, Any] = {
        "benchmark": "ambcore bench",
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "preset": cfg.preset,
        **_environment(device),
    }
    dataset, tokenizer = _load_data(cfg)
    record.update(
        data=dataset.name,
        is_synthetic=dataset.is_synthetic,
        plm=cfg.plm + (" (random init)" if cfg.plm_random_init else ""),
        n_train=len(dataset["train"]),
        n_valid=len(dataset["valid"]),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        max_text_len=cfg.max_text_len,
        repeats=repeats,
        warmup_steps=warmup_steps,
        fast_path=FAST_PATH,
        naive_path=NAIVE_PATH,
    )
    if phase_epochs > 0:
        record["phases"] = phase_breakdown(cfg, models, phase_epochs, progress)
    if not timing:
        return record
    benches = {}
    for name in tqdm(models, desc="build models", disable=not progress, leave=False):
        benches[name] = _ModelBench(name, bench_config(cfg, name), dataset, tokenizer, device)
        benches[name].warm_up(warmup_steps)
    for r in tqdm(range(repeats), desc="timed rounds", disable=not progress, leave=False):
        for name in models:
            benches[name].round(epoch=r + 1)
    if "amb" in benches and "amb-ft" in benches:
        record["paired_steps"] = paired_steps(benches["amb"], benches["amb-ft"])
    if load_competitors > 0:
        record["under_load"] = under_load(benches[models[0]], load_competitors)
    record["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    memory: dict[str, dict[str, Any]] = {name: {} for name in models}
    if measure_memory_peak:
        jobs = [(n, p) for n in models for p in ("fast", "naive")]
        for name, path in tqdm(jobs, desc="peak memory", disable=not progress, leave=False):
            memory[name][path] = _memory_in_subprocess(benches[name].cfg, path, memory_steps)
    if flops:
        for name in tqdm(models, desc="count FLOPs", disable=not progress, leave=False):
            benches[name].count_flops(epoch=1)
    record["models"] = {name: benches[name].report(memory[name]) for name in models}
    probe = (record.get("machine") or {}).get("probe", {}).get("gflops")
    for res in record["models"].values():
        if "flops" in res:
            res["achieved"] = achieved(
                res["flops"], res["fast"], probe, record["torch_threads"], record["device"]
            )
    record["targets"] = _targets(record["models"], record.get("paired_steps"))
    return record


def phase_breakdown(
    cfg: Config, models: Iterable[str], epochs: int = 1, progress: bool = True
) -> dict[str, Any]:
    """CPU-seconds by phase of one short training run per model (``ambcore.bench.phases``),
    each in a fresh temporary folder, ``epochs`` epochs without early stopping."""
    out: dict[str, Any] = {}
    for name in tqdm(list(models), desc="phases", disable=not progress, leave=False):
        run_cfg = replace(bench_config(cfg, name), max_epochs=epochs, patience=epochs + 1)
        with tempfile.TemporaryDirectory(prefix="amb-phases-") as folder:
            out[name] = profile_training_run(run_cfg, Path(folder) / "run")
    return out


def phases_frame(record: dict[str, Any]):
    """CPU-seconds by phase (rows) and model (columns) of a record's ``phases``, with the
    share of each phase in the model's total; an empty frame for a record without phases."""
    phases = record.get("phases") or {}
    if not phases:
        return pd.DataFrame()
    frame = pd.DataFrame({m: p["cpu_s_by_phase"] for m, p in phases.items()}).fillna(0.0)
    frame.loc["total"] = [p["cpu_s_total"] for p in phases.values()]
    frame.index.name = "phase (CPU s)"
    return frame.reset_index()


def machine_frame(block: dict[str, Any] | None = None):
    """The machine block (``ambcore.runs.machine_block``; this machine's when None) as a
    two-column table: CPU model, cores, the calibration probe and the load when measured."""
    if block is None:
        block = machine_block()
    probe = block.get("probe") or {}
    load = probe.get("load_average_1_5_15min")
    rows = [
        ("CPU", block.get("cpu_model")),
        ("CPU cores", block.get("cpu_count")),
        ("usable cores", block.get("usable_cores")),
        ("probe: fp32 matmul, 1 thread (GFLOP/s)", probe.get("gflops")),
        ("probe: median chunk (GFLOP/s)", probe.get("gflops_median")),
        ("load average 1/5/15 min at the probe", ", ".join(map(str, load)) if load else "–"),
        ("probe measured", probe.get("measured", "–")),
    ]
    return pd.DataFrame(rows, columns=["what", "value"]).astype({"value": str})


def _record_files(folder: Path) -> list[Path]:
    """Benchmark records: ``bench*.json``, ``*_bench*.json`` and the per-phase records
    ``phases*.json`` (``python -m ambcore bench --phases-only``)."""
    patterns = ("bench*.json", "*_bench*.json", "phases*.json")
    return sorted({p for pattern in patterns for p in folder.glob(pattern)})


def _read_records(results_dir: str | os.PathLike | None) -> list[tuple[Path, Any]]:
    """``(path, parsed JSON)`` of every benchmark record under ``results_dir`` (default: the
    project's ``results/``); files that cannot be read or parsed are left out."""
    records = []
    for path in _record_files(Path(results_dir or PROJECT_ROOT / "results")):
        try:
            records.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return records


def record_machines(results_dir: str | os.PathLike | None = None):
    """One row per benchmark record under ``results_dir``: the machine that produced it and
    its probe (records written before the machine block was recorded show "–")."""
    rows = []
    for path, payload in _read_records(results_dir):
        block = payload.get("machine") or {} if isinstance(payload, dict) else {}
        probe = block.get("probe") or {}
        rows.append(
            {
                "record": path.name,
                "CPU": block.get("cpu_model", "–"),
                "cores": block.get("cpu_count", "–"),
                "probe (GFLOP/s)": probe.get("gflops", "–"),
                "load at probe": probe.get("load_average_1_5_15min", "–"),
                "per-phase CPU time": "yes" if payload.get("phases") else "no",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "record",
            "CPU",
            "cores",
            "probe (GFLOP/s)",
            "load at probe",
            "per-phase CPU time",
        ],
    )


def record_phases(results_dir: str | os.PathLike | None = None) -> list[tuple[str, Any]]:
    """``(file name, phases_frame)`` of every benchmark record under ``results_dir`` that holds
    a per-phase breakdown (the phases of a record's ``phases_before``, if any, come first)."""
    out = []
    for path, payload in _read_records(results_dir):
        if not isinstance(payload, dict):
            continue
        if payload.get("phases_before"):
            before = payload["phases_before"]
            out.append(
                (
                    f"{path.name} ({before.get('label', 'before')})",
                    phases_frame({"phases": before["phases"]}),
                )
            )
        if payload.get("phases"):
            out.append((path.name, phases_frame(payload)))
    return out


def _target(median: float, minimum: float, limit: float, noisy: bool) -> dict[str, Any]:
    """A ratio target by two estimators: the median over rounds and the ratio of the fastest
    rounds (noise on a shared machine only adds time, so the minimum is the least disturbed)."""
    return {
        "median": round(median, 3),
        "of_minimums": round(minimum, 3),
        "limit": limit,
        "met_median": bool(median <= limit),
        "met_of_minimums": bool(minimum <= limit),
        "noisy": noisy,
    }


def _noisy(*stats: dict[str, float]) -> bool:
    """Rounds of the same work differ by more than 1.5x: the machine was busy with other work."""
    return any(st["max"] > 1.5 * st["min"] for st in stats)


def _targets(results: dict[str, Any], paired: dict[str, Any] | None = None) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    limit = TARGETS["train_epoch_fast_over_naive"]
    for name, res in results.items():
        fast, naive = res["fast"]["train_epoch_s"], res["naive"]["train_epoch_s"]
        targets[f"{name}: fast/naive training epoch <= {limit}"] = _target(
            res["ratio_fast_over_naive"]["train_epoch"]["median"],
            fast["min"] / naive["min"],
            limit,
            _noisy(fast, naive),
        )
    if "amb" in results and "amb-ft" in results:
        limit = TARGETS["amb_over_amb_ft_train_step"]
        amb, ft = results["amb"]["fast"], results["amb-ft"]["fast"]
        per_step = lambda r, key: r["train_epoch_s"][key] / max(r["train_steps_per_epoch"], 1)
        if paired is not None:  # the same batches, step by step (see paired_steps)
            r, ms = paired["ratio"], paired["step_ms"]
            targets[f"amb/amb-ft training step, same batches (fast path) <= {limit}"] = {
                **_target(
                    r["median"],
                    ms["amb"]["min"] / ms["amb-ft"]["min"],
                    limit,
                    noisy=r["q3"] - r["q1"] > 0.2 * r["median"],
                ),
                "pairs": int(r["n"]),
            }
        targets[f"amb/amb-ft training step from epoch times (fast path) <= {limit}"] = _target(
            amb["train_step_ms"] / ft["train_step_ms"],
            per_step(amb, "min") / per_step(ft, "min"),
            limit,
            _noisy(amb["train_epoch_s"], ft["train_epoch_s"]),
        )
        if amb["peak_memory_mib"] is not None and ft["peak_memory_mib"] is not None:
            targets["amb peak memory < amb-ft peak memory (fast path)"] = {
                "amb_mib": round(amb["peak_memory_mib"], 1),
                "amb_ft_mib": round(ft["peak_memory_mib"], 1),
                "met": bool(amb["peak_memory_mib"] < ft["peak_memory_mib"]),
            }
    return targets


def summary_frame(record: dict[str, Any]):
    """One row per model and path of a benchmark record (e.g. for the book's status page)."""
    rows = []
    for name, res in record["models"].items():
        for path in ("fast", "naive"):
            r = res[path]
            epoch = r["train_epoch_s"]
            rows.append(
                {
                    "model": name,
                    "path": path,
                    "train epoch (s)": epoch["median"],
                    "train epoch min–max (s)": f"{epoch['min']:.2f}–{epoch['max']:.2f}",
                    "train (samples/s)": r["train_samples_per_s"],
                    "train step (ms)": r["train_step_ms"],
                    "eval (samples/s)": r["eval_samples_per_s"],
                    "peak memory (MiB)": r["peak_memory_mib"],
                    "trainable params": res["trainable_params"],
                    "fast/naive epoch": res["ratio_fast_over_naive"]["train_epoch"]["median"]
                    if path == "fast"
                    else None,
                }
            )
    return pd.DataFrame(rows)


def efficiency_frame(record: dict[str, Any]):
    """One row per model of a benchmark record that counted FLOPs: GFLOP of a training epoch
    and of an evaluation pass, achieved GFLOP/s (fast path) and the share of probe x threads;
    empty for a record without FLOPs."""
    rows = []
    for name, res in (record.get("models") or {}).items():
        if "flops" not in res or "achieved" not in res:
            continue
        f, a = res["flops"], res["achieved"]
        share = a.get("train_fraction_of_probe_x_threads")
        rows.append(
            {
                "model": name,
                "train epoch (GFLOP)": f["train_epoch"] / 1e9,
                "eval pass (GFLOP)": f["eval_pass"] / 1e9,
                "train (GFLOP/s)": a["train_gflop_per_s"],
                "eval (GFLOP/s)": a["eval_gflop_per_s"],
                "threads": a["threads"],
                "probe × threads (GFLOP/s)": a.get("probe_x_threads_gflop_per_s"),
                "train % of probe × threads": None if share is None else 100 * share,
            }
        )
    return pd.DataFrame(rows)


def targets_frame(record: dict[str, Any]):
    """The record's targets, one row each: the limit, what each estimator measured, met or not."""
    rows = []
    for text, t in record.get("targets", {}).items():
        if "median" in t:
            rows.append(
                {
                    "target": text,
                    "median": t["median"],
                    "met (median)": t["met_median"],
                    "fastest": t["of_minimums"],
                    "met (fastest)": t["met_of_minimums"],
                    "noisy": t["noisy"],
                }
            )
        else:
            rows.append(
                {
                    "target": text,
                    "median": f"{t['amb_mib']} vs {t['amb_ft_mib']} MiB",
                    "met (median)": t["met"],
                    "fastest": None,
                    "met (fastest)": None,
                    "noisy": None,
                }
            )
    return pd.DataFrame(
        rows, columns=["target", "median", "met (median)", "fastest", "met (fastest)", "noisy"]
    )


def _machine_line(record: dict[str, Any]) -> str:
    block = record.get("machine") or {}
    probe = block.get("probe") or {}
    return (
        f"machine: {block.get('cpu_model', '?')}, {block.get('cpu_count', '?')} cores, probe "
        f"{probe.get('gflops', '?')} GFLOP/s (fp32 matmul, 1 thread; load "
        f"{probe.get('load_average_1_5_15min')})"
    )


def _phase_lines(record: dict[str, Any]) -> list[str]:
    frame = phases_frame(record)
    if frame.empty:
        return []
    epochs = {m: p["epochs"] for m, p in record["phases"].items()}
    return [
        "",
        f"CPU seconds by phase (one training run of {epochs} epochs, its evaluations "
        "and a small noise grid; ambcore.bench.phases):",
        frame.to_string(index=False, float_format=lambda x: f"{x:.2f}"),
    ]


def format_report(record: dict[str, Any]) -> str:
    """A plain-text table of a benchmark record (the timings, the machine, the phases)."""
    if "models" not in record:  # phases only (run_benchmark(timing=False))
        return "\n".join(
            [
                f"ambcore bench: preset {record['preset']}, {record['data']}, PLM {record['plm']}",
                _machine_line(record),
                *_phase_lines(record),
            ]
        )
    return "\n".join([_format_timings(record), _machine_line(record), *_phase_lines(record)])


def _format_timings(record: dict[str, Any]) -> str:
    lines = [
        f"ambcore bench: preset {record['preset']}, {record['data']}, PLM {record['plm']}",
        f"device {record['device']} ({record['device_name']}), torch {record['torch']}, "
        f"{record['cpu_count']} CPUs, {record['torch_threads']} threads, load "
        f"{record['load_average_1_5_15min']} -> {record.get('load_average_end')}",
        f"{record['n_train']} training / {record['n_valid']} validation utterances, "
        f"batch {record['batch_size']}, median of {record['repeats']} rounds [min, max]",
        "",
        f"{'model':<18}{'path':<7}{'train samp/s':>13}{'step ms':>9}{'epoch s [min, max]':>22}"
        f"{'eval samp/s':>13}{'peak MiB':>10}{'trainable':>12}",
    ]
    for name, res in record["models"].items():
        for path in ("fast", "naive"):
            r = res[path]
            e = r["train_epoch_s"]
            peak = "–" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}"
            lines.append(
                f"{name:<18}{path:<7}{r['train_samples_per_s']:>13.1f}{r['train_step_ms']:>9.1f}"
                f"{e['median']:>8.2f} [{e['min']:.2f}, {e['max']:.2f}]".ljust(67)
                + f"{r['eval_samples_per_s']:>13.1f}{peak:>10}{res['trainable_params']:>12,}"
            )
        ratio = res["ratio_fast_over_naive"]
        lines.append(
            f"{'':<18}fast/naive: training epoch {ratio['train_epoch']['median']:.2f} "
            f"[{ratio['train_epoch']['min']:.2f}, {ratio['train_epoch']['max']:.2f}], "
            f"evaluation {ratio['eval']['median']:.2f}"
        )
        if "achieved" in res:
            a, f = res["achieved"], res["flops"]
            share = a["train_fraction_of_probe_x_threads"]
            lines.append(
                f"{'':<18}FLOPs: training epoch {f['train_epoch'] / 1e9:.2f} GFLOP at "
                f"{a['train_gflop_per_s']:.1f} GFLOP/s"
                + (f" ({100 * share:.0f} % of probe x {a['threads']} threads)" if share else "")
                + f", evaluation {f['eval_pass'] / 1e9:.2f} GFLOP at {a['eval_gflop_per_s']:.1f} GFLOP/s"
            )
    lines.append("")
    word = lambda met: "met" if met else "MISSED"
    for text, t in record["targets"].items():
        if "median" in t and "pairs" in t:
            lines.append(
                f"target {text}: median of {t['pairs']} paired steps {t['median']} "
                f"({word(t['met_median'])}), fastest steps {t['of_minimums']} "
                f"({word(t['met_of_minimums'])})"
                + (" [noisy: quartiles of the ratios differ > 20 %]" if t["noisy"] else "")
            )
        elif "median" in t:
            lines.append(
                f"target {text}: median {t['median']} ({word(t['met_median'])}), fastest rounds "
                f"{t['of_minimums']} ({word(t['met_of_minimums'])})"
                + (" [noisy: rounds differ > 1.5x]" if t["noisy"] else "")
            )
        else:
            lines.append(
                f"target {text}: {t['amb_mib']} vs {t['amb_ft_mib']} MiB ({word(t['met'])})"
            )
    if record.get("under_load"):
        lines.append(_under_load_line(record["under_load"]))
    return "\n".join(lines)


def _under_load_line(u: dict[str, Any]) -> str:
    return (
        f"under load ({u['model']}, {u['competitors']} busy process(es), {u['torch_threads']} "
        f"thread(s), OMP_WAIT_POLICY {u['omp_wait_policy']}): step "
        f"{u['step_ms_loaded']['median']:.1f} ms vs {u['step_ms_idle']['median']:.1f} ms idle, "
        f"ratio {u['ratio']:.2f}"
    )


# ---- worker entry point (peak memory in a fresh process) --------------------------------------


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ambcore.bench")
    parser.add_argument("mode", choices=["memory"])
    parser.add_argument("--path", choices=["fast", "naive"], required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--config", required=True, help="Config.to_json()")
    args = parser.parse_args(argv)
    cfg = config_from_dict(json.loads(args.config))
    print(json.dumps(measure_memory(cfg, args.path, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
