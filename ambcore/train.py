"""Training and evaluation (thesis 6.3.1, "Implementation Details").

``train_and_evaluate(cfg, run_dir)`` trains one model end to end, as the thesis does: Adam over
the trainable parameters only (adapters, encoders, fusion, predictor; the PLM stays frozen),
the L1 loss on the sentiment score (plus the model's auxiliary losses, e.g. MISA's), dropout
inside the model, early stopping on the validation MAE, and finally the best checkpoint
restored from disk and evaluated on the validation and test splits with
``ambcore.metrics.sentiment_metrics``. Everything lands in the run folder (``ambcore.runs``).

The baselines train with their own recipes, expressed as config values (all off by default):
MISA clips every gradient value (``grad_clip_mode="value"``) and, when patience runs out,
returns to its best epoch's weights and optimizer state with half the learning rate
(``lr_halvings``); MAG-BERT uses AdamW without decay on biases and normalisation weights
(``optimizer="adamw"``) and a linear warm-up and decay (``warmup_ratio``). ``history.csv``
records the learning rate of every epoch.

Reproducibility
---------------
- One seeding call (``ambcore.seeding.seed_everything``) before the model is built; the order
  of the training data in epoch ``e`` comes from a generator seeded with ``(seed, e)`` only.
  The same seed and preset give bit-identical metrics on the same CPU machine.
- After every epoch the resume state (trainable weights, optimizer state, RNG states, epoch,
  best validation MAE, patience counter) is committed atomically to ``last/``. A run killed at
  any point (even ``kill -9``) continues with ``resume=True`` (CLI ``--resume``) from the last
  finished epoch and ends with the same metrics as an uninterrupted run. A run folder with a
  ``DONE`` marker is never trained again: its results are read back.
- One ``train`` at a time per run folder: the folder's ``.train.lock`` is held
  (``runs.FileLock``) for the whole call; a second process fails at once naming the holder's
  pid.
- A training loss or validation prediction that is not finite stops the run with
  ``DivergedError`` ("diverged at epoch N"): the epoch is not committed, ``best/`` and ``last/``
  keep the last good epochs and a ``DIVERGED`` marker (``ambcore.runs``) tells sweeps why.
- The best checkpoint is read back through its SHA-256 check, and only when its
  ``config.json`` is the run's own (``runs.check_best_config``).

The loop
--------
As in flax's examples, the loop comes first, in the order it runs, over a small
``TrainState`` (the model, its optimizer and schedule, the epoch, the best validation MAE so
far and the patience counter) and a ``TrainSetup`` (config, device, data, tokenizer):
``train_step`` (one batch), ``train_epoch`` (one pass over the training split), ``evaluate``
(the validation split) and ``train_and_evaluate``, which reads as its steps. Everything about
the run folder (the lock, refusing what cannot be trained, resuming, the DIVERGED marker, the
best checkpoint, the config check, the files of a finished run) sits behind
``runs.RunFolder``, one call per event: ``claim``, ``start``, ``best``, ``epoch``,
``diverged``, ``finish``.

Devices
-------
``cfg.device="auto"`` picks CUDA when present, else the CPU. On CUDA the forward pass runs
under bf16 autocast (``cfg.bf16``); evaluation always runs under ``torch.inference_mode``.
Several GPUs are used through PyTorch's DistributedDataParallel, launched with the standard
launcher, e.g. on one machine with 4 GPUs::

    torchrun --standalone --nproc_per_node=4 -m ambcore train --preset paper --seed 0 \\
        --out runs/paper/amb-seed0 --set data=/path/to/aligned_50.pkl

Each process trains on its shard of every epoch's permutation (the same number of batches on
every rank), gradients are averaged by DDP, every rank evaluates (so early stopping agrees),
and only rank 0 writes to the run folder. Note that the effective batch size is
``world_size * cfg.batch_size``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ambcore import runs
from ambcore.config import Config
from ambcore.data import load_dataset
from ambcore.data.collate import make_loader
from ambcore.data.types import SPLITS, Batch, MultimodalDataset, Split
from ambcore.errors import AmbError, DataError, ModelConfigError
from ambcore.metrics import sentiment_metrics
from ambcore.models import build_model, load_pretrained
from ambcore.models.inference import autocast, run_batches
from ambcore.models.plm import load_tokenizer, resolve_plm_path
from ambcore.noise import TokenizerInfo, noise_augment
from ambcore.seeding import seed_everything

if TYPE_CHECKING:
    from ambcore.models.text_cache import TextCache

__all__ = [
    "TrainState",
    "TrainSetup",
    "train_step",
    "train_epoch",
    "evaluate",
    "train_and_evaluate",
    "set_up",
    "create_train_state",
    "DivergedError",
    "TrainResult",
    "Evaluation",
    "Predictions",
    "evaluate_run",
    "predict",
    "predict_split",
    "resolve_device",
    "epoch_seed",
    "make_optimizer",
    "make_scheduler",
]

# Training steps between two progress-bar updates: each update reads the running loss from the
# device (a host-device sync), so it is not done after every step.
LOG_EVERY = 20


# ---- the training loop ------------------------------------------------------------------------


@dataclass
class TrainSetup:
    """What a training run works with and does not change: the config, the device, the data,
    the tokenizer, the processes of a distributed run (built by ``set_up``)."""

    cfg: Config
    device: torch.device
    dataset: MultimodalDataset | None = None
    tokenizer: Any = None  # needed by noise-augmented training (cfg.noise_augment_rate)
    dist: _Dist = field(default_factory=lambda: _Dist())
    plm_ref: dict[str, Any] = field(default_factory=dict)  # env.json's "plm"


@dataclass
class TrainState:
    """What training changes, epoch after epoch: the trainable weights (through the optimizer
    and the schedule) and the early-stopping counters. A resumed run starts from the saved
    ones (``create_train_state``, from ``runs.ResumeState``)."""

    model: nn.Module  # the model itself: what is saved and evaluated
    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # torch LR scheduler (cfg.warmup_ratio > 0), else None: constant
    train_model: nn.Module | None = None  # as the steps call it (compiled, DDP); None: model
    trainable: list[nn.Parameter] = field(default_factory=list)  # empty: model's trainable ones
    epoch: int = 0  # the last finished epoch (1-based)
    best_mae: float = math.inf  # the best validation MAE so far ...
    best_epoch: int = 0  # ... and its epoch (0: none yet)
    since_best: int = 0  # epochs since then: the patience counter
    halvings_done: int = 0  # cfg.lr_halvings used so far
    stopped_early: bool = False  # patience ran out
    history: list[dict[str, Any]] = field(default_factory=list)  # history.csv's rows

    def __post_init__(self) -> None:
        if self.train_model is None:
            self.train_model = self.model
        if not self.trainable:
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]


def train_step(
    state: TrainState, batch: Batch, setup: TrainSetup
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step on ``batch`` (on the device): the forward pass, the task loss plus the
    model's auxiliary loss (MISA's), backward, gradient clipping, the optimizer's and the
    schedule's steps. Returns the task and auxiliary losses, detached and left on the device
    (reading them would synchronise host and device)."""
    cfg = setup.cfg
    with autocast(cfg, setup.device):
        out = state.train_model(batch)
    task = _task_loss(cfg, out.prediction, batch.labels)  # ()
    loss = task if out.aux_loss is None else task + out.aux_loss.float()
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    _clip_gradients(state.trainable, cfg)
    state.optimizer.step()
    if state.scheduler is not None:
        state.scheduler.step()
    return task.detach(), None if out.aux_loss is None else out.aux_loss.detach()


def train_epoch(
    state: TrainState, setup: TrainSetup, epoch: int, progress: bool = False, loader=None
) -> tuple[float, float]:
    """One pass over epoch ``epoch``'s training batches (``loader``, by default the training
    split in the epoch's order); returns the mean task loss and the mean
    auxiliary loss per utterance (summed over the ranks of a distributed run).

    The losses are summed on the device and read once at the end (and every ``LOG_EVERY``
    steps for the progress bar): no host-device synchronisation inside a step.
    """
    cfg, device, dist = setup.cfg, setup.device, setup.dist
    if loader is None:
        loader = _epoch_loader(setup.dataset["train"], setup.tokenizer, cfg, epoch, dist)
    augment = _noise_augmenter(setup, epoch)
    state.train_model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    total_aux = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not (progress and dist.main))
    for step, batch in enumerate(bar, start=1):
        if augment is not None:
            batch = augment(batch)  # on the CPU, before the batch moves to the device
        batch: Batch = batch.to(device, non_blocking=True)
        task, aux = train_step(state, batch, setup)
        n = len(batch)
        total += task.double() * n
        if aux is not None:
            total_aux += aux.double() * n
        count += n
        if step % LOG_EVERY == 0 and not bar.disable:
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    total, total_aux, count = dist.sum(total.item(), total_aux.item(), float(count), device=device)
    return total / max(count, 1), total_aux / max(count, 1)


def evaluate(state: TrainState, setup: TrainSetup, loader=None) -> Predictions:
    """The model's predictions on the validation split (early stopping's measure)."""
    valid = setup.dataset["valid"]
    return predict_split(
        state.model, valid, setup.tokenizer, setup.cfg, setup.device, loader=loader
    )


def train_and_evaluate(
    cfg: Config,
    run_dir: str | os.PathLike,
    progress: bool = True,
    resume: bool = False,
    on_epoch_end: Callable[[int], None] | None = None,
    dataset: MultimodalDataset | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` and evaluate the best checkpoint on valid and test.

    ``resume``: continue an unfinished run in ``run_dir`` from its last finished epoch (without
    it, a folder holding an unfinished run is refused). A folder marked DONE is read back, not
    retrained. ``on_epoch_end(epoch)`` is called after each epoch's state has been committed.
    One process at a time trains in a folder (``runs.RunFolder.claim``); a training loss or
    validation MAE that is not finite stops the run (``DivergedError``, a ``DIVERGED`` marker).
    ``dataset``: the data instead of ``cfg.data``; one without a test split (the tuner's,
    ``ambcore.tune``) gives a run with no test metric and no test predictions (``valid_only``).
    """
    start_time = time.perf_counter()
    dist = _init_distributed()
    folder = runs.RunFolder(run_dir, cfg, main=dist.main, barrier=dist.barrier)
    with folder.claim(resume):
        if folder.reused:
            return _result_from_folder(folder.paths, time.perf_counter() - start_time, True)
        setup = set_up(cfg, dist, dataset)
        state = create_train_state(setup, folder.resume_state, folder.paths.last)
        folder.start(lambda: _new_env(setup))
        valid_loader = _make_loader(setup.dataset["valid"], setup.tokenizer, cfg, shuffle=False)
        bar = _epoch_bar(state, setup, progress)
        for epoch in bar:
            t0 = time.perf_counter()
            train_loss, train_aux = train_epoch(state, setup, epoch, progress)
            valid_pred = evaluate(state, setup, valid_loader)
            if _diverged(train_loss, valid_pred):
                raise _stop_diverged(folder, state, epoch, train_loss, valid_pred)
            valid = _metrics(valid_pred)
            if _improves(state, epoch, valid["mae"]):
                folder.best(lambda best: _save_best(state.model, state.optimizer, cfg, best))
            if state.since_best >= cfg.patience and state.halvings_done < cfg.lr_halvings:
                _halve_lr(state, folder, setup.device)
            state.epoch = epoch
            state.history.append(
                _history_row(epoch, train_loss, train_aux, valid_pred, valid, t0, state)
            )
            folder.epoch(_resume_state(state, cfg))
            bar.set_postfix(
                train_loss=f"{train_loss:.3f}",
                valid_mae=f"{valid['mae']:.3f}",
                best_epoch=state.best_epoch,
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if state.since_best >= cfg.patience:
                state.stopped_early = True
                break
        bar.close()
        best_model, metrics, test_pred = _evaluate_best(folder, state, setup)
        folder.finish(metrics, best_model, None if test_pred is None else test_pred.frame())
        result = _result_from_folder(folder.paths, time.perf_counter() - start_time, False)
    result.resumed_from_epoch = folder.resume_state.epoch if folder.resume_state else 0
    return result


class DivergedError(AmbError):
    """A training loss or validation MAE that is not finite; the run folder is marked DIVERGED."""


# ---- setting up: data, model, optimizer, the resume state -------------------------------------


def set_up(cfg: Config, dist: _Dist, dataset: MultimodalDataset | None = None) -> TrainSetup:
    """Seed everything (before anything random is drawn), then the device, the data (``cfg.data``
    unless ``dataset`` is given) and the tokenizer."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, dist.local_rank)
    dataset = dataset if dataset is not None else load_dataset(cfg.data, cfg)
    tokenizer = load_tokenizer(cfg)
    plm_ref = {
        "name": cfg.plm,
        "resolved": resolve_plm_path(cfg.plm),
        "random_init": bool(cfg.plm_random_init or cfg.plm == "tiny-random"),
    }
    return TrainSetup(cfg, device, dataset, tokenizer, dist, plm_ref)


def create_train_state(
    setup: TrainSetup, saved: runs.ResumeState | None = None, saved_in: Path | None = None
) -> TrainState:
    """The model, its optimizer and schedule; with ``saved`` (a resumed run, read from
    ``saved_in``) its weights, optimizer, schedule, RNG states and counters put back."""
    cfg, dataset, device = setup.cfg, setup.dataset, setup.device
    with _pickled_plm_refused(cfg):
        model = build_model(cfg, dataset.visual_dim, dataset.acoustic_dim).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg, device, pretrained_parameters(model))
    scheduler = None
    if cfg.warmup_ratio > 0:  # created before a resumed optimizer state is loaded (initial_lr)
        steps = len(_epoch_loader(dataset["train"], setup.tokenizer, cfg, 1, setup.dist))
        scheduler = make_scheduler(optimizer, cfg, steps)
    state = TrainState(model, optimizer, scheduler, trainable=trainable)
    if saved is not None:
        _check_trainable_tensors(saved.model, model, saved_in, "the resume state's tensors")
        model.load_state_dict(saved.model, strict=False)
        optimizer.load_state_dict(saved.optimizer)
        if scheduler is not None and saved.scheduler is not None:
            scheduler.load_state_dict(saved.scheduler)
        runs.restore_rng_state(saved.rng_tensors, saved.rng_scalars)
        state.epoch, state.history = saved.epoch, list(saved.history)
        state.best_mae, state.best_epoch = saved.best_valid_mae, saved.best_epoch
        state.since_best, state.halvings_done = saved.epochs_since_best, saved.lr_halvings_done
    state.stopped_early = state.since_best >= cfg.patience  # a resumed run killed before DONE
    state.train_model = _training_model(model, setup)
    return state


# ---- typed results ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``train_and_evaluate`` returns (the same numbers as the run folder's files)."""

    run_dir: Path
    valid: dict[str, Any]  # sentiment_metrics of the best checkpoint on the validation split
    test: dict[str, Any] | None  # ... and on the test split (None: a valid-only tuning run)
    best_epoch: int  # 1-based epoch of the best validation MAE
    epochs_run: int  # epochs trained in total (over all resumptions)
    stopped_early: bool
    history: pd.DataFrame  # history.csv
    data_name: str
    is_synthetic: bool
    plm: str
    n_trainable_params: int
    seconds: float  # wall time of this call
    reused: bool = False  # the folder was already DONE: nothing was trained
    resumed_from_epoch: int = 0  # 0: started from scratch


@dataclass
class Predictions:
    """Per-utterance predictions of one split, in the split's order."""

    split: str
    ids: list[str]
    y_true: np.ndarray  # (N,)
    y_pred: np.ndarray  # (N,)
    loss: float  # cfg.loss averaged over utterances

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"split": self.split, "id": self.ids, "y_true": self.y_true, "y_pred": self.y_pred}
        )


@dataclass
class Evaluation:
    """Metrics of a run's best checkpoint on the valid and test splits of some dataset."""

    run_dir: Path
    data_name: str
    is_synthetic: bool
    valid: dict[str, Any]
    test: dict[str, Any]


# ---- small pieces --------------------------------------------------------------------------


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: CUDA if available, else the CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise AmbError("config key 'device'='cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def make_optimizer(
    params, cfg: Config, device: torch.device, pretrained: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """The optimizer over ``params`` (the trainable ones); the fused CUDA kernel on a GPU, the
    multi-tensor (``foreach``) loop elsewhere.

    ``cfg.optimizer="adam"``: Adam, the thesis' optimizer (6.3.1). ``"adamw"``: AdamW with
    ``cfg.weight_decay`` on matrices only; biases and normalisation weights (fewer than two
    dimensions) are not decayed, which is what MAG-BERT's name-based groups amount to.
    ``cfg.new_params_lr`` > 0: the parameters not in ``pretrained`` (the PLM's own weights that
    train) learn at that rate, the pretrained ones at ``cfg.lr``.
    """
    params = list(params)
    fused = (device.type == "cuda" and cfg.fast_path) or None
    # Elsewhere the multi-tensor loop: bitwise the single-tensor one's numbers, with less Python
    # per step (Adam over AMB-FT's 17 M trainable weights: 121 against 141 ms a step, one
    # thread). CPU's fused kernel would be 6x faster but rounds differently (|d| ~ 2e-7).
    foreach = None if fused else True
    old = {id(p) for p in pretrained}
    by_rate = [(params, cfg.lr)]
    if cfg.new_params_lr > 0:
        by_rate = [
            ([p for p in params if id(p) in old], cfg.lr),
            ([p for p in params if id(p) not in old], cfg.new_params_lr),
        ]
    groups = []
    for members, lr in by_rate:
        if cfg.optimizer == "adamw":
            groups += [
                {
                    "params": [p for p in members if p.ndim >= 2],
                    "weight_decay": cfg.weight_decay,
                    "lr": lr,
                },
                {"params": [p for p in members if p.ndim < 2], "weight_decay": 0.0, "lr": lr},
            ]
        else:
            groups.append({"params": members, "lr": lr})
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused, foreach=foreach)
    return torch.optim.Adam(
        groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused, foreach=foreach
    )


def pretrained_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The PLM's own weights among ``model``'s trainable parameters (component "plm")."""
    component_of = getattr(model, "component_of", None)
    if component_of is None:
        return []
    return [p for n, p in model.named_parameters() if p.requires_grad and component_of(n) == "plm"]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int):
    """The learning-rate schedule, stepped after every optimizer step, or None (constant).

    ``cfg.warmup_ratio`` > 0: linear warm-up from 0 over that fraction of all
    ``cfg.max_epochs * steps_per_epoch`` steps, then linear decay to 0 at the last step
    (MAG-BERT's schedule, transformers' ``get_linear_schedule_with_warmup``)."""
    if cfg.warmup_ratio <= 0:
        return None
    total = max(1, cfg.max_epochs * steps_per_epoch)
    warm = max(1, int(cfg.warmup_ratio * total))

    def factor(step: int) -> float:
        if step < warm:
            return step / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _clip_gradients(trainable, cfg: Config) -> None:
    if cfg.grad_clip <= 0:
        return
    if cfg.grad_clip_mode == "value":  # MISA: every gradient value into [-clip, clip]
        torch.nn.utils.clip_grad_value_(trainable, cfg.grad_clip)
    else:
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)


def _task_loss(cfg: Config, prediction: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    prediction = prediction.float().reshape(-1)  # (B,)
    labels = labels.float().reshape(-1)  # (B,)
    if cfg.loss == "l1":
        return F.l1_loss(prediction, labels)
    return F.mse_loss(prediction, labels)


def _subset(split: Split, index: list[int]) -> Split:
    return Split(
        name=split.name,
        ids=[split.ids[i] for i in index],
        texts=[split.texts[i] for i in index],
        visual=[split.visual[i] for i in index],
        acoustic=[split.acoustic[i] for i in index],
        labels=split.labels[index],
        words=None if split.words is None else [split.words[i] for i in index],
    )


@dataclass
class _Dist:
    """torch.distributed state when launched by torchrun (WORLD_SIZE > 1), else one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def sum(self, *values: float, device: torch.device) -> list[float]:
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def _init_distributed() -> _Dist:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Dist()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return _Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank)


def _make_loader(split: Split, tokenizer, cfg: Config, shuffle: bool, generator=None):
    return make_loader(split, tokenizer, cfg, shuffle=shuffle, generator=generator)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model itself, without DDP or torch.compile wrappers (what is saved)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ---- evaluation ------------------------------------------------------------------------------


def predict_split(
    model: nn.Module,
    split: Split,
    tokenizer,
    cfg: Config,
    device: torch.device | str = "cpu",
    progress: bool = False,
    loader=None,
    text_cache: TextCache | None = None,
) -> Predictions:
    """Predict every utterance of ``split`` (batches of ``cfg.eval_batch_size``, no shuffling).

    Reusable by other chapters (e.g. noise sweeps pass their own ``loader`` of perturbed
    batches); the model is put in eval mode and run under ``torch.inference_mode``
    (``torch.no_grad`` with ``cfg.fast_path=False``, the benchmark's reference path).
    ``text_cache`` (``ambcore.models.text_cache.TextCache`` of ``model``): each batch's text
    features come from it, computed on its first pass and reused by later passes whose text
    is unchanged (the robustness curves' visual/acoustic noise, thesis 6.3.4).
    """
    if text_cache is not None and text_cache.model is not model:
        raise ValueError("predict_split: text_cache belongs to another model")
    device = torch.device(device)
    if loader is None:
        loader = _make_loader(split, tokenizer, cfg, shuffle=False)
    ids, preds, labels = run_batches(
        model, loader, cfg, device, progress, desc=f"predict {split.name}", text_cache=text_cache
    )
    # One device-to-host copy for the whole split (no sync per batch).
    y_pred = preds.cpu().numpy().astype(np.float64)
    y_true = labels.cpu().numpy().astype(np.float64)
    # Loaders may bucket by length: put the predictions back in the split's order.
    if ids != list(split.ids):
        position = {uid: i for i, uid in enumerate(ids)}
        if len(position) != len(ids) or set(position) != set(split.ids):
            raise DataError(
                f"split {split.name!r}: the loader returned {len(ids)} ids that are not the "
                f"split's {len(split.ids)} ids (duplicate or missing ids)"
            )
        order = [position[uid] for uid in split.ids]
        ids, y_pred, y_true = [ids[i] for i in order], y_pred[order], y_true[order]
    if cfg.loss == "l1":
        loss = float(np.mean(np.abs(y_pred - y_true)))
    else:
        loss = float(np.mean((y_pred - y_true) ** 2))
    return Predictions(split.name, list(ids), y_true, y_pred, loss)


def _metrics(pred: Predictions) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaNs are explained in "notes"
        return sentiment_metrics(pred.y_pred, pred.y_true)


# ---- the steps of train_and_evaluate ------------------------------------------------------------


def _result_from_folder(paths: runs.RunPaths, seconds: float, reused: bool) -> TrainResult:
    metrics = runs.read_json(paths.metrics)
    return TrainResult(
        run_dir=paths.root,
        valid=metrics["valid"],
        test=metrics.get("test"),  # None for a valid-only (tuning) run
        best_epoch=metrics["best_epoch"],
        epochs_run=metrics["epochs_run"],
        stopped_early=metrics["stopped_early"],
        history=runs.read_history(paths.root),
        data_name=metrics["data"],
        is_synthetic=metrics["is_synthetic"],
        plm=metrics["plm"],
        n_trainable_params=metrics["n_trainable_params"],
        seconds=seconds,
        reused=reused,
        resumed_from_epoch=0,
    )


@contextlib.contextmanager
def _pickled_plm_refused(cfg: Config):
    """torch's weights-only refusal of a PLM's pickled weights, as one line naming the PLM."""
    try:
        yield
    except pickle.UnpicklingError:
        raise ModelConfigError(
            f"PLM {cfg.plm!r} ({resolve_plm_path(cfg.plm)}): torch.load refused its pickled "
            "weights file (pytorch_model.bin holds objects outside torch's weights-only "
            "allow-list); use a folder with model.safetensors"
        ) from None


def _new_env(setup: TrainSetup) -> dict[str, Any]:
    """env.json of a new run: what produced it (``runs.collect_env``) and its data."""
    dataset = setup.dataset
    env = runs.collect_env(
        setup.device,
        dataset.fingerprint,
        dataset.name,
        dataset.is_synthetic,
        setup.plm_ref,
        setup.dist.world_size,
    )
    env["data_source"] = dataset.source
    env["data_dims"] = {"visual": dataset.visual_dim, "acoustic": dataset.acoustic_dim}
    env["data_repairs"] = dataset.repairs
    env["resumed"] = []
    return env


def _training_model(model: nn.Module, setup: TrainSetup) -> nn.Module:
    """The model as the training steps call it: compiled on CUDA, wrapped by DDP on >1 rank."""
    train_model: nn.Module = model
    if setup.cfg.compile and setup.device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)  # the compiler's flag too
        train_model = torch.compile(train_model)
    if setup.dist.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model,
            device_ids=[setup.dist.local_rank] if setup.device.type == "cuda" else None,
            find_unused_parameters=True,  # variants (text-only, no-text) leave branches unused
        )
    return train_model


def _epoch_bar(state: TrainState, setup: TrainSetup, progress: bool):
    """The epochs left to train (none when patience already ran out), as a progress bar."""
    cfg = setup.cfg
    epochs = range(state.epoch + 1, cfg.max_epochs + 1) if not state.stopped_early else range(0)
    return tqdm(
        epochs,
        desc=f"train {cfg.model} ({cfg.preset}, seed {cfg.seed})",
        disable=not (progress and setup.dist.main),
    )


def _epoch_loader(split: Split, tokenizer, cfg: Config, epoch: int, dist: _Dist):
    """Epoch ``epoch``'s training batches; the order depends on (seed, epoch) only."""
    generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    if dist.world_size == 1:
        return _make_loader(split, tokenizer, cfg, shuffle=True, generator=generator)
    # One permutation shared by all ranks, padded to a multiple of the world size so that every
    # rank runs the same number of steps (as torch's DistributedSampler does).
    perm = torch.randperm(len(split), generator=generator).tolist()
    perm += perm[: (-len(perm)) % dist.world_size]
    shard = perm[dist.rank :: dist.world_size]
    return _make_loader(_subset(split, shard), tokenizer, cfg, shuffle=True, generator=generator)


def _noise_augmenter(setup: TrainSetup, epoch: int) -> Callable[[Batch], Batch] | None:
    """Noise-augmented training (``cfg.noise_augment_rate`` > 0; ``ambcore.noise``, beyond the
    thesis): each training batch perturbed, from a stream of its own, a function of (seed,
    epoch, rank), so that a resumed run repeats the same draws. None: no augmentation."""
    cfg = setup.cfg
    if cfg.noise_augment_rate <= 0:
        return None

    info = TokenizerInfo.from_tokenizer(setup.tokenizer)
    noise_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed + 7919, epoch) + setup.dist.rank)

    def augment(batch: Batch) -> Batch:
        return noise_augment(batch, cfg.noise_augment_rate, noise_gen, info).batch

    return augment


def _diverged(train_loss: float, valid_pred: Predictions) -> bool:
    return not (math.isfinite(train_loss) and bool(np.isfinite(valid_pred.y_pred).all()))


def _stop_diverged(
    folder: runs.RunFolder, state: TrainState, epoch: int, train_loss: float, valid_pred
) -> DivergedError:
    """A non-finite training loss or validation prediction ends the run: ``DIVERGED`` is written,
    best/ and last/ keep the last good epochs (this epoch is not committed). Returns the error
    to raise."""
    valid_mae = float(np.mean(np.abs(valid_pred.y_pred - valid_pred.y_true)))
    kept = (
        f"best/ keeps epoch {state.best_epoch}, last/ epoch {epoch - 1}"
        if state.best_epoch
        else "no earlier epoch was kept"
    )
    message = (
        f"{folder.paths.root}: diverged at epoch {epoch} (training loss {train_loss:.4g}, "
        f"validation MAE {valid_mae:.4g}); {kept}; try a lower lr or grad_clip"
    )
    folder.diverged(
        {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_mae": valid_mae,
            "best_epoch": state.best_epoch,
            "last_epoch": epoch - 1,
            "message": message,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    return DivergedError(message)


def _improves(state: TrainState, epoch: int, valid_mae: float) -> bool:
    """A better validation MAE resets patience (and becomes best/); else patience counts."""
    if valid_mae < state.best_mae:
        state.best_mae, state.best_epoch, state.since_best = valid_mae, epoch, 0
        return True
    state.since_best += 1
    return False


def _save_best(model: nn.Module, optimizer, cfg: Config, folder: Path) -> None:
    _unwrap(model).save_pretrained(folder)
    if cfg.lr_halvings > 0:  # restored with the weights when patience runs out
        runs.save_optimizer_state(folder, optimizer.state_dict())


def _halve_lr(state: TrainState, folder: runs.RunFolder, device: torch.device) -> None:
    """MISA's recipe (``cfg.lr_halvings``), when patience runs out: back to the best epoch
    (weights and optimizer state), half the learning rate in use, patience afresh. Before the
    resume state is written, so a resumed run continues from the restored weights."""
    optimizer, scheduler = state.optimizer, state.scheduler
    in_use = [group["lr"] for group in optimizer.param_groups]
    weights, optimizer_state = folder.best_state()
    params = _check_trainable_tensors(weights, state.model, folder.paths.best, "the best weights")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(device))
    optimizer.load_state_dict(optimizer_state)
    for group, lr in zip(optimizer.param_groups, in_use):
        group["lr"] = lr * 0.5
    if scheduler is not None:
        scheduler.base_lrs = [lr * 0.5 for lr in scheduler.base_lrs]
    state.halvings_done += 1
    state.since_best = 0


def _history_row(
    epoch: int,
    train_loss: float,
    train_aux: float,
    valid_pred: Predictions,
    valid: dict[str, Any],
    start: float,
    state: TrainState,
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_aux_loss": train_aux,
        "valid_loss": valid_pred.loss,
        "valid_mae": valid["mae"],
        "valid_acc7": valid["acc7"],
        "valid_corr": valid["corr"],
        "seconds": time.perf_counter() - start,
        "lr": state.optimizer.param_groups[0]["lr"],
    }


def _resume_state(state: TrainState, cfg: Config) -> runs.ResumeState:
    """What ``last/`` keeps after epoch ``state.epoch``: the trainable weights, the optimizer and
    schedule, the RNG states and the counters."""
    rng_tensors, rng_scalars = runs.capture_rng_state()
    scheduler = state.scheduler
    return runs.ResumeState(
        epoch=state.epoch,
        model={
            n: p.detach() for n, p in _unwrap(state.model).named_parameters() if p.requires_grad
        },
        optimizer=state.optimizer.state_dict(),
        rng_tensors=rng_tensors,
        rng_scalars=rng_scalars,
        best_valid_mae=state.best_mae,
        best_epoch=state.best_epoch,
        epochs_since_best=state.since_best,
        history=state.history,
        config_json=cfg.to_json(),
        scheduler=None if scheduler is None else scheduler.state_dict(),
        lr_halvings_done=state.halvings_done,
    )


def _evaluate_best(folder: runs.RunFolder, state: TrainState, setup: TrainSetup):
    """The best checkpoint, read back from disk (the reported numbers are those of the files),
    on valid and test (none for a valid-only run: the tuner's); returns the model, the
    metrics.json record and the test predictions (or None)."""
    cfg, dataset = setup.cfg, setup.dataset
    if state.best_epoch == 0:
        raise AmbError(
            f"{folder.paths.root}: no epoch has a validation MAE to select "
            f"(max_epochs={cfg.max_epochs}, patience={cfg.patience})"
        )
    best_dir = folder.best_checkpoint()
    with _pickled_plm_refused(cfg):
        best_model = load_pretrained(best_dir).to(setup.device)
    valid_pred = predict_split(best_model, dataset["valid"], setup.tokenizer, cfg, setup.device)
    valid_only = "test" not in dataset.splits  # a tuning trial: the test split is not given
    test_pred = (
        None
        if valid_only
        else predict_split(best_model, dataset["test"], setup.tokenizer, cfg, setup.device)
    )
    train_mean = float(np.mean(dataset["train"].labels))
    metrics = _metrics_record(setup, state, valid_pred, test_pred, train_mean)
    return best_model, metrics, test_pred


def _metrics_record(
    setup: TrainSetup,
    state: TrainState,
    valid_pred: Predictions,
    test_pred: Predictions | None,
    train_mean: float,
) -> dict[str, Any]:
    """metrics.json: the best checkpoint's numbers, the mean-label predictor's (the mean of the
    training labels: a run that does not beat it on valid has learnt nothing), and what produced
    them. A valid-only run (no test split given) has no test entries."""
    cfg, dataset = setup.cfg, setup.dataset

    def mean_label(pred: Predictions) -> dict[str, Any]:
        return _metrics(dataclasses.replace(pred, y_pred=np.full_like(pred.y_true, train_mean)))

    record = {
        "valid": _metrics(valid_pred),
        "valid_baseline_train_mean": mean_label(valid_pred),
        "valid_only": test_pred is None,
        "data": dataset.name,
        "data_source": dataset.source,
        "is_synthetic": dataset.is_synthetic,
        "plm": cfg.plm,
        "model": cfg.model,
        "variant": cfg.variant,
        "text_adaptation": cfg.text_adaptation,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "best_epoch": state.best_epoch,
        "epochs_run": len(state.history),
        "stopped_early": state.stopped_early,
        "lr_halvings_done": state.halvings_done,
        "n_trainable_params": sum(p.numel() for p in state.trainable),
        "device": str(setup.device),
        "world_size": setup.dist.world_size,
    }
    if test_pred is not None:
        record["test"] = _metrics(test_pred)
        record["test_baseline_train_mean"] = mean_label(test_pred)
    return record


def _check_trainable_tensors(
    saved: Mapping[str, torch.Tensor], model: nn.Module, source: Path, what: str
) -> dict[str, nn.Parameter]:
    """``saved`` must hold exactly the model's trainable parameters (names and shapes); returns
    those parameters by name. Shared by the resume state and the best-epoch restore."""
    params = {n: p for n, p in _unwrap(model).named_parameters() if p.requires_grad}
    if set(saved) != set(params) or any(
        tuple(saved[n].shape) != tuple(p.shape) for n, p in params.items()
    ):
        raise AmbError(
            f"{source}: {what} do not match the model's trainable parameters "
            f"({len(saved)} saved, {len(params)} expected)"
        )
    return params


# ---- using a finished run ----------------------------------------------------------------------


def _load_run_model(run_dir: Path, device: torch.device):
    paths = runs.RunPaths(run_dir)
    runs.recover_dir_swap(paths.best)
    if not (paths.best).is_dir():
        raise AmbError(f"{run_dir}: no best/ checkpoint (the run never finished an epoch)")
    runs.check_best_config(run_dir)  # a best/ of another seed or config is refused
    with _pickled_plm_refused(runs.read_config(run_dir)):
        return load_pretrained(paths.best).to(device)


def _load_data_for_run(run_dir: Path, cfg: Config, data: str | None) -> MultimodalDataset:
    dataset = load_dataset(data or cfg.data, cfg)
    dims = runs.read_json(runs.RunPaths(run_dir).env).get("data_dims")
    if dims and (dataset.visual_dim, dataset.acoustic_dim) != (dims["visual"], dims["acoustic"]):
        raise DataError(
            f"{dataset.source}: visual/acoustic feature dims are "
            f"({dataset.visual_dim}, {dataset.acoustic_dim}); the model in {run_dir} was trained "
            f"on ({dims['visual']}, {dims['acoustic']})"
        )
    return dataset


def evaluate_run(
    run_dir: str | os.PathLike, data: str | None = None, progress: bool = False
) -> Evaluation:
    """Metrics of ``run_dir``'s best checkpoint on the valid and test splits of ``data``.

    ``data`` defaults to the run's own dataset (``config.json``'s ``data``); nothing in the
    run folder is modified.
    """
    run_dir = Path(run_dir)
    cfg = runs.read_config(run_dir)
    device = resolve_device(cfg.device)
    dataset = _load_data_for_run(run_dir, cfg, data)
    model = _load_run_model(run_dir, device)
    tokenizer = load_tokenizer(cfg)
    preds = {
        name: predict_split(model, dataset[name], tokenizer, cfg, device, progress=progress)
        for name in ("valid", "test")
    }
    return Evaluation(
        run_dir=run_dir,
        data_name=dataset.name,
        is_synthetic=dataset.is_synthetic,
        valid=_metrics(preds["valid"]),
        test=_metrics(preds["test"]),
    )


def predict(
    run_dir: str | os.PathLike,
    data_path: str,
    out_csv: str | os.PathLike,
    progress: bool = False,
) -> pd.DataFrame:
    """Predictions of ``run_dir``'s best checkpoint for every utterance of every split.

    Writes ``out_csv`` (columns split, id, y_true, y_pred; atomically) and returns the frame.
    """
    run_dir = Path(run_dir)
    if Path(out_csv).is_dir():
        raise AmbError(f"{out_csv} is a folder; the predictions go to a CSV file path")
    cfg = runs.read_config(run_dir)
    device = resolve_device(cfg.device)
    dataset = _load_data_for_run(run_dir, cfg, data_path)
    model = _load_run_model(run_dir, device)
    tokenizer = load_tokenizer(cfg)
    frames = [
        predict_split(model, dataset[name], tokenizer, cfg, device, progress=progress).frame()
        for name in SPLITS
        if name in dataset.splits
    ]
    frame = pd.concat(frames, ignore_index=True)
    runs.write_csv(out_csv, frame.to_dict("records"), ("split", "id", "y_true", "y_pred"))
    return frame
