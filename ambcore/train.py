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
- One ``train`` at a time per run folder: the folder's ``.lock`` is held (``fcntl.flock``) for
  the whole call; a second process fails at once naming the holder's pid.
- A training loss or validation prediction that is not finite stops the run with
  ``DivergedError`` ("diverged at epoch N"): the epoch is not committed, ``best/`` and ``last/``
  keep the last good epochs and a ``DIVERGED`` marker (``ambcore.runs``) tells sweeps why.
- The best checkpoint is read back through its SHA-256 check, and only when its
  ``config.json`` is the run's own (``runs.check_best_config``).

``train_and_evaluate`` reads as its steps: refuse what cannot be trained, take the lock, set up
(seed, data, model, optimizer, resume state), write the run's header files, train the epochs,
evaluate the best checkpoint and finish.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ambcore import runs
from ambcore.config import Config, config_from_dict
from ambcore.data.types import Batch, MultimodalDataset, Split
from ambcore.errors import AmbError, DataError, ModelConfigError
from ambcore.metrics import sentiment_metrics
from ambcore.models.inference import autocast, run_batches
from ambcore.seeding import seed_everything

if TYPE_CHECKING:
    from ambcore.models.text_cache import TextCache

__all__ = [
    "DivergedError",
    "TrainResult",
    "Evaluation",
    "Predictions",
    "train_and_evaluate",
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


def _restore_best(
    model: nn.Module, optimizer: torch.optim.Optimizer, paths: runs.RunPaths, device: torch.device
) -> None:
    """Put the best epoch's trainable weights and optimizer state back (``cfg.lr_halvings``)."""
    from ambcore.models.checkpoint import WEIGHTS_FILE

    runs.recover_dir_swap(paths.best)
    saved = runs.load_tensors(paths.best / WEIGHTS_FILE)
    params = _check_trainable_tensors(saved, model, paths.best, "the best weights")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value.to(device))
    optimizer.load_state_dict(runs.load_optimizer_state(paths.best))


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
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def _make_loader(split: Split, tokenizer, cfg: Config, shuffle: bool, generator=None):
    from ambcore.data.collate import make_loader

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
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaNs are explained in "notes"
        return sentiment_metrics(pred.y_pred, pred.y_true)


# ---- training ---------------------------------------------------------------------------------


def _check_same_config(paths: runs.RunPaths, cfg: Config) -> None:
    diff = runs.config_diff(config_from_dict(runs.read_json(paths.config)).to_dict(), cfg)
    if diff:
        raise AmbError(
            f"{paths.root} holds a run with a different config ({runs.format_config_diff(diff)}); "
            "choose another folder for this config"
        )


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
    One process at a time trains in a folder (``runs.run_lock``); a training loss or validation
    MAE that is not finite stops the run (``DivergedError``, a ``DIVERGED`` marker).
    ``dataset``: the data instead of ``cfg.data``; one without a test split (the tuner's,
    ``ambcore.tune``) gives a run with no test metric and no test predictions (``valid_only``).
    """
    start_time = time.perf_counter()
    paths = runs.RunPaths(Path(run_dir))
    _check_run_folder(paths)
    if paths.done.exists():
        return _reuse_finished(paths, cfg, start_time)
    with runs.run_lock(paths.root, enabled=_is_rank_zero()):
        if paths.done.exists():  # finished by another process before the lock was taken
            return _reuse_finished(paths, cfg, start_time)
        _check_can_train(paths, cfg, resume)
        setup = _set_up(cfg, paths, resume, dataset)
        _write_run_header(setup)
        loop = _train_epochs(setup, progress, on_epoch_end)
        _evaluate_best_and_finish(setup, loop)
        result = _result_from_folder(paths, time.perf_counter() - start_time, reused=False)
    result.resumed_from_epoch = setup.state.epoch if setup.state else 0
    return result


class DivergedError(AmbError):
    """A training loss or validation MAE that is not finite; the run folder is marked DIVERGED."""


@dataclass
class _Setup:
    """Everything one training call works with, built by ``_set_up`` in a fixed order."""

    cfg: Config
    paths: runs.RunPaths
    dist: _Dist
    device: torch.device
    dataset: MultimodalDataset
    tokenizer: Any
    model: nn.Module
    trainable: list[nn.Parameter]
    n_trainable: int
    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch LR scheduler or None
    plm_ref: dict[str, Any]
    state: runs.ResumeState | None  # what a resumed run continues from


@dataclass
class _Loop:
    """The epoch loop's counters; a resumed run starts from the saved ones."""

    history: list[dict[str, Any]]
    best_mae: float = math.inf
    best_epoch: int = 0
    since_best: int = 0  # the patience counter
    halvings_done: int = 0
    stopped_early: bool = False

    @classmethod
    def start(cls, state: runs.ResumeState | None) -> _Loop:
        if state is None:
            return cls(history=[])
        return cls(
            list(state.history),
            state.best_valid_mae,
            state.best_epoch,
            state.epochs_since_best,
            state.lr_halvings_done,
        )


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _check_run_folder(paths: runs.RunPaths) -> None:
    if paths.root.exists() and not paths.root.is_dir():
        raise AmbError(f"{paths.root} exists and is not a folder; the run folder must be a folder")


def _reuse_finished(paths: runs.RunPaths, cfg: Config, start_time: float) -> TrainResult:
    _check_same_config(paths, cfg)
    return _result_from_folder(paths, time.perf_counter() - start_time, reused=True)


def _check_can_train(paths: runs.RunPaths, cfg: Config, resume: bool) -> None:
    diverged = runs.read_diverged(paths.root)
    if diverged is not None:
        raise AmbError(
            f"{paths.root}: the run diverged at epoch {diverged.get('epoch')} (see DIVERGED); "
            "the same config would diverge again: choose another folder or config"
        )
    if paths.config.exists():
        if not resume:
            raise AmbError(
                f"{paths.root} holds an unfinished run; continue it with --resume "
                "(resume=True) or choose another folder"
            )
        _check_same_config(paths, cfg)


def _set_up(
    cfg: Config, paths: runs.RunPaths, resume: bool, dataset: MultimodalDataset | None = None
) -> _Setup:
    """Seed, then data, tokenizer, model, optimizer and schedule; the resume state restored."""
    from ambcore.data import load_dataset
    from ambcore.models import build_model
    from ambcore.models.plm import load_tokenizer, resolve_plm_path

    dist = _init_distributed()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, dist.local_rank)
    dataset = dataset if dataset is not None else load_dataset(cfg.data, cfg)
    tokenizer = load_tokenizer(cfg)
    with _pickled_plm_refused(cfg):
        model = build_model(cfg, dataset.visual_dim, dataset.acoustic_dim).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg, device, pretrained_parameters(model))
    scheduler = None
    if cfg.warmup_ratio > 0:  # created before a resumed optimizer state is loaded (initial_lr)
        steps = len(_epoch_loader(dataset["train"], tokenizer, cfg, 1, dist))
        scheduler = make_scheduler(optimizer, cfg, steps)
    plm_ref = {
        "name": cfg.plm,
        "resolved": resolve_plm_path(cfg.plm),
        "random_init": bool(cfg.plm_random_init or cfg.plm == "tiny-random"),
    }
    state = runs.load_resume_state(paths.last) if resume else None
    if state is not None:
        _check_state(state, model, paths)
        model.load_state_dict(state.model, strict=False)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        runs.restore_rng_state(state.rng_tensors, state.rng_scalars)
    n_trainable = sum(p.numel() for p in trainable)
    return _Setup(
        cfg,
        paths,
        dist,
        device,
        dataset,
        tokenizer,
        model,
        trainable,
        n_trainable,
        optimizer,
        scheduler,
        plm_ref,
        state,
    )


@contextlib.contextmanager
def _pickled_plm_refused(cfg: Config):
    """torch's weights-only refusal of a PLM's pickled weights, as one line naming the PLM."""
    try:
        yield
    except pickle.UnpicklingError:
        from ambcore.models.plm import resolve_plm_path

        raise ModelConfigError(
            f"PLM {cfg.plm!r} ({resolve_plm_path(cfg.plm)}): torch.load refused its pickled "
            "weights file (pytorch_model.bin holds objects outside torch's weights-only "
            "allow-list); use a folder with model.safetensors"
        ) from None


def _write_run_header(setup: _Setup) -> None:
    """config.json and env.json (a resumed run: its env gains a ``resumed`` entry and its
    history.csv is rebuilt from the resume state); crash leftovers are removed first."""
    paths, state, dist = setup.paths, setup.state, setup.dist
    if dist.main:
        paths.root.mkdir(parents=True, exist_ok=True)
        runs.recover_dir_swap(paths.best)
        runs.clean_temp_files(paths.root)
        if state is None:
            paths.history.unlink(missing_ok=True)  # rows of a run that never committed an epoch
            runs.write_json(paths.config, setup.cfg.to_dict())
            env = _new_env(setup)
        else:
            runs.write_csv(paths.history, state.history, runs.HISTORY_COLUMNS)
            env = runs.read_json(paths.env)
            env.setdefault("resumed", []).append(
                {
                    "after_epoch": state.epoch,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "hostname": runs.collect_env(setup.device)["hostname"],
                }
            )
        runs.write_json(paths.env, env)
    dist.barrier()


def _new_env(setup: _Setup) -> dict[str, Any]:
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


def _training_model(setup: _Setup) -> nn.Module:
    """The model as the training steps call it: compiled on CUDA, wrapped by DDP on >1 rank."""
    train_model: nn.Module = setup.model
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


def _train_epochs(setup: _Setup, progress: bool, on_epoch_end) -> _Loop:
    """Epochs until ``max_epochs`` or patience runs out; each one committed to ``last/``."""
    cfg, dist = setup.cfg, setup.dist
    train_model = _training_model(setup)
    loop = _Loop.start(setup.state)
    valid_loader = _make_loader(setup.dataset["valid"], setup.tokenizer, cfg, shuffle=False)
    loop.stopped_early = loop.since_best >= cfg.patience
    first_epoch = setup.state.epoch + 1 if setup.state else 1
    epochs = range(first_epoch, cfg.max_epochs + 1) if not loop.stopped_early else range(0)
    bar = tqdm(
        epochs,
        desc=f"train {cfg.model} ({cfg.preset}, seed {cfg.seed})",
        disable=not (progress and dist.main),
    )
    for epoch in bar:
        t0 = time.perf_counter()
        loader = _epoch_loader(setup.dataset["train"], setup.tokenizer, cfg, epoch, dist)
        train_loss, train_aux = _train_one_epoch(
            train_model,
            loader,
            setup.tokenizer,
            setup.optimizer,
            setup.trainable,
            cfg,
            setup.device,
            dist,
            epoch,
            progress,
            scheduler=setup.scheduler,
        )
        valid_pred = predict_split(
            setup.model,
            setup.dataset["valid"],
            setup.tokenizer,
            cfg,
            setup.device,
            loader=valid_loader,
        )
        _stop_if_diverged(setup, loop, epoch, train_loss, valid_pred)
        valid = _metrics(valid_pred)
        _track_best(setup, loop, epoch, valid["mae"])
        _halve_lr_if_patience_ran_out(setup, loop)
        loop.history.append(
            _history_row(
                epoch,
                train_loss,
                train_aux,
                valid_pred,
                valid,
                time.perf_counter() - t0,
                setup.optimizer,
            )
        )
        _commit_epoch(setup, loop, epoch)
        bar.set_postfix(
            train_loss=f"{train_loss:.3f}",
            valid_mae=f"{valid['mae']:.3f}",
            best_epoch=loop.best_epoch,
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if loop.since_best >= cfg.patience:
            loop.stopped_early = True
            break
    bar.close()
    return loop


def _stop_if_diverged(
    setup: _Setup, loop: _Loop, epoch: int, train_loss: float, valid_pred: Predictions
) -> None:
    """A non-finite training loss or validation prediction ends the run: ``DIVERGED`` is written,
    best/ and last/ keep the last good epochs (this epoch is not committed)."""
    if math.isfinite(train_loss) and bool(np.isfinite(valid_pred.y_pred).all()):
        return
    valid_mae = float(np.mean(np.abs(valid_pred.y_pred - valid_pred.y_true)))
    kept = (
        f"best/ keeps epoch {loop.best_epoch}, last/ epoch {epoch - 1}"
        if loop.best_epoch
        else "no earlier epoch was kept"
    )
    message = (
        f"{setup.paths.root}: diverged at epoch {epoch} (training loss {train_loss:.4g}, "
        f"validation MAE {valid_mae:.4g}); {kept}; try a lower lr or grad_clip"
    )
    if setup.dist.main:
        runs.mark_diverged(
            setup.paths.root,
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "valid_mae": valid_mae,
                "best_epoch": loop.best_epoch,
                "last_epoch": epoch - 1,
                "message": message,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    raise DivergedError(message)


def _track_best(setup: _Setup, loop: _Loop, epoch: int, valid_mae: float) -> None:
    """A better validation MAE resets patience and becomes ``best/``."""
    if valid_mae < loop.best_mae:
        loop.best_mae, loop.best_epoch, loop.since_best = valid_mae, epoch, 0
        if setup.dist.main:
            runs.replace_dir(
                setup.paths.best,
                lambda folder: _save_best(setup.model, setup.optimizer, setup.cfg, folder),
            )
    else:
        loop.since_best += 1


def _halve_lr_if_patience_ran_out(setup: _Setup, loop: _Loop) -> None:
    """MISA's recipe (``cfg.lr_halvings``): back to the best epoch (weights and optimizer
    state), half the learning rate in use, patience afresh. Before the resume state is
    written, so a resumed run continues from the restored weights."""
    cfg, optimizer, scheduler = setup.cfg, setup.optimizer, setup.scheduler
    if not (loop.since_best >= cfg.patience and loop.halvings_done < cfg.lr_halvings):
        return
    in_use = [group["lr"] for group in optimizer.param_groups]
    setup.dist.barrier()
    _restore_best(setup.model, optimizer, setup.paths, setup.device)
    for group, lr in zip(optimizer.param_groups, in_use):
        group["lr"] = lr * 0.5
    if scheduler is not None:
        scheduler.base_lrs = [lr * 0.5 for lr in scheduler.base_lrs]
    loop.halvings_done += 1
    loop.since_best = 0


def _history_row(
    epoch: int,
    train_loss: float,
    train_aux: float,
    valid_pred: Predictions,
    valid: dict[str, Any],
    seconds: float,
    optimizer,
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_aux_loss": train_aux,
        "valid_loss": valid_pred.loss,
        "valid_mae": valid["mae"],
        "valid_acc7": valid["acc7"],
        "valid_corr": valid["corr"],
        "seconds": seconds,
        "lr": optimizer.param_groups[0]["lr"],
    }


def _commit_epoch(setup: _Setup, loop: _Loop, epoch: int) -> None:
    """history.csv, then the resume state (``last/state.json`` is the commit): a crash between
    the two is resumed from the previous epoch, whose state rebuilds the history."""
    if setup.dist.main:
        runs.write_csv(setup.paths.history, loop.history, runs.HISTORY_COLUMNS)
        rng_tensors, rng_scalars = runs.capture_rng_state()
        scheduler = setup.scheduler
        runs.save_resume_state(
            setup.paths.last,
            runs.ResumeState(
                epoch=epoch,
                model={
                    n: p.detach()
                    for n, p in _unwrap(setup.model).named_parameters()
                    if p.requires_grad
                },
                optimizer=setup.optimizer.state_dict(),
                rng_tensors=rng_tensors,
                rng_scalars=rng_scalars,
                best_valid_mae=loop.best_mae,
                best_epoch=loop.best_epoch,
                epochs_since_best=loop.since_best,
                history=loop.history,
                config_json=setup.cfg.to_json(),
                scheduler=None if scheduler is None else scheduler.state_dict(),
                lr_halvings_done=loop.halvings_done,
            ),
        )
    setup.dist.barrier()


def _evaluate_best_and_finish(setup: _Setup, loop: _Loop) -> None:
    """The best checkpoint, read back from disk (the reported numbers are those of the files),
    on valid and test; then test_predictions.csv, metrics.json, best/'s model card (data,
    metrics, intervals) and DONE."""
    from ambcore.models import load_pretrained
    from ambcore.models.checkpoint import write_model_card

    cfg, dataset, paths = setup.cfg, setup.dataset, setup.paths
    if loop.best_epoch == 0:
        raise AmbError(
            f"{paths.root}: no epoch has a validation MAE to select "
            f"(max_epochs={cfg.max_epochs}, patience={cfg.patience})"
        )
    runs.check_best_config(paths.root)
    with _pickled_plm_refused(cfg):
        best_model = load_pretrained(paths.best).to(setup.device)
    valid_pred = predict_split(best_model, dataset["valid"], setup.tokenizer, cfg, setup.device)
    valid_only = "test" not in dataset.splits  # a tuning trial: the test split is not given
    test_pred = (
        None
        if valid_only
        else predict_split(best_model, dataset["test"], setup.tokenizer, cfg, setup.device)
    )
    train_mean = float(np.mean(dataset["train"].labels))
    metrics = _metrics_record(setup, loop, valid_pred, test_pred, train_mean)
    if setup.dist.main:
        if test_pred is not None:
            runs.write_csv(
                paths.test_predictions,
                test_pred.frame().to_dict("records"),
                ("id", "y_true", "y_pred"),
            )
        runs.write_json(paths.metrics, metrics)
        write_model_card(
            paths.best, best_model, metrics, None if test_pred is None else test_pred.frame()
        )
        runs.write_json(paths.done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    setup.dist.barrier()


def _metrics_record(
    setup: _Setup,
    loop: _Loop,
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
        "best_epoch": loop.best_epoch,
        "epochs_run": len(loop.history),
        "stopped_early": loop.stopped_early,
        "lr_halvings_done": loop.halvings_done,
        "n_trainable_params": setup.n_trainable,
        "device": str(setup.device),
        "world_size": setup.dist.world_size,
    }
    if test_pred is not None:
        record["test"] = _metrics(test_pred)
        record["test_baseline_train_mean"] = mean_label(test_pred)
    return record


def _save_best(model: nn.Module, optimizer, cfg: Config, folder: Path) -> None:
    _unwrap(model).save_pretrained(folder)
    if cfg.lr_halvings > 0:  # restored with the weights when patience runs out
        runs.save_optimizer_state(folder, optimizer.state_dict())


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


def _check_state(state: runs.ResumeState, model: nn.Module, paths: runs.RunPaths) -> None:
    _check_trainable_tensors(state.model, model, paths.last, "the resume state's tensors")


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


def _train_one_epoch(
    model,
    loader,
    tokenizer,
    optimizer,
    trainable,
    cfg,
    device,
    dist,
    epoch,
    progress,
    scheduler=None,
):
    """One pass over ``loader``; returns the mean task loss and mean auxiliary loss per sample.

    The losses are summed on the device and read once at the end (and every ``LOG_EVERY``
    steps for the progress bar): no host-device synchronisation inside a step.
    """
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    total_aux = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    augment = None
    if cfg.noise_augment_rate > 0:  # noise-augmented training (ambcore.noise; beyond the thesis)
        from ambcore.noise import TokenizerInfo, noise_augment

        info = TokenizerInfo.from_tokenizer(tokenizer)
        # Its own stream, a function of (seed, epoch, rank): resuming repeats the same draws.
        noise_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed + 7919, epoch) + dist.rank)

        def augment(batch: Batch) -> Batch:
            return noise_augment(batch, cfg.noise_augment_rate, noise_gen, info).batch

    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not (progress and dist.main))
    for step, batch in enumerate(bar, start=1):
        if augment is not None:
            batch = augment(batch)  # on the CPU, before the batch moves to the device
        batch: Batch = batch.to(device, non_blocking=True)
        with autocast(cfg, device):
            out = model(batch)
        task = _task_loss(cfg, out.prediction, batch.labels)  # ()
        loss = task if out.aux_loss is None else task + out.aux_loss.float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _clip_gradients(trainable, cfg)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(batch)
        total += task.detach().double() * n
        if out.aux_loss is not None:
            total_aux += out.aux_loss.detach().double() * n
        count += n
        if step % LOG_EVERY == 0 and not bar.disable:
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    total, total_aux, count = dist.sum(total.item(), total_aux.item(), float(count), device=device)
    return total / max(count, 1), total_aux / max(count, 1)


# ---- using a finished run ----------------------------------------------------------------------


def _load_run_model(run_dir: Path, device: torch.device):
    from ambcore.models import load_pretrained

    paths = runs.RunPaths(run_dir)
    runs.recover_dir_swap(paths.best)
    if not (paths.best).is_dir():
        raise AmbError(f"{run_dir}: no best/ checkpoint (the run never finished an epoch)")
    runs.check_best_config(run_dir)  # a best/ of another seed or config is refused
    with _pickled_plm_refused(runs.read_config(run_dir)):
        return load_pretrained(paths.best).to(device)


def _load_data_for_run(run_dir: Path, cfg: Config, data: str | None) -> MultimodalDataset:
    from ambcore.data import load_dataset

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
    from ambcore.models.plm import load_tokenizer

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
    from ambcore.data.types import SPLITS
    from ambcore.models.plm import load_tokenizer

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
