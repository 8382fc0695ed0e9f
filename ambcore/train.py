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

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ambcore import runs
from ambcore.config import Config, config_from_dict
from ambcore.data.types import Batch, MultimodalDataset, Split
from ambcore.errors import AmbError, DataError
from ambcore.metrics import sentiment_metrics
from ambcore.seeding import seed_everything

__all__ = [
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
    test: dict[str, Any]  # ... and on the test split
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


def make_optimizer(params, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over ``params`` (the trainable ones); the fused CUDA kernel on a GPU.

    ``cfg.optimizer="adam"``: Adam, the thesis' optimizer (6.3.1). ``"adamw"``: AdamW with
    ``cfg.weight_decay`` on matrices only; biases and normalisation weights (fewer than two
    dimensions) are not decayed, which is what MAG-BERT's name-based groups amount to.
    """
    params = list(params)
    fused = (device.type == "cuda" and cfg.fast_path) or None
    if cfg.optimizer == "adamw":
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, fused=fused)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


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


def _restore_best(model: nn.Module, optimizer: torch.optim.Optimizer, paths: runs.RunPaths,
                  device: torch.device) -> None:
    """Put the best epoch's trainable weights and optimizer state back (``cfg.lr_halvings``)."""
    from ambcore.models.checkpoint import WEIGHTS_FILE

    runs.recover_dir_swap(paths.best)
    saved = runs.load_tensors(paths.best / WEIGHTS_FILE)
    params = {n: p for n, p in _unwrap(model).named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        raise AmbError(f"{paths.best}: the best weights do not match the model's trainable "
                       f"parameters ({len(saved)} saved, {len(params)} expected)")  # fmt: skip
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


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training/evaluation step: bf16 on CUDA with ``cfg.bf16``, else
    None (fp32; autocast is never used on the CPU)."""
    return torch.bfloat16 if device.type == "cuda" and cfg.bf16 else None


def _autocast(cfg: Config, device: torch.device):
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)  # fmt: skip


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
) -> Predictions:
    """Predict every utterance of ``split`` (batches of ``cfg.eval_batch_size``, no shuffling).

    Reusable by other chapters (e.g. noise sweeps pass their own ``loader`` of perturbed
    batches); the model is put in eval mode and run under ``torch.inference_mode``
    (``torch.no_grad`` with ``cfg.fast_path=False``, the benchmark's reference path).
    """
    device = torch.device(device)
    if loader is None:
        loader = _make_loader(split, tokenizer, cfg, shuffle=False)
    model.eval()
    ids: list[str] = []
    preds: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    no_grad = torch.inference_mode() if cfg.fast_path else torch.no_grad()
    with no_grad:
        for batch in tqdm(loader, desc=f"predict {split.name}", leave=False, disable=not progress):
            batch = batch.to(device, non_blocking=True)
            with _autocast(cfg, device):
                out = model(batch)
            preds.append(out.prediction.float().reshape(-1))  # (B,) stays on the device
            labels.append(batch.labels.float().reshape(-1))  # (B,)
            ids.extend(batch.ids)
    # One device-to-host copy for the whole split (no sync per batch).
    y_pred = torch.cat(preds).cpu().numpy().astype(np.float64)
    y_true = torch.cat(labels).cpu().numpy().astype(np.float64)
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
    saved = config_from_dict(runs.read_json(paths.config)).to_dict()
    wanted = cfg.to_dict()
    diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if diff:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in diff[:8])
        raise AmbError(
            f"{paths.root} holds a run with a different config ({changes}); "
            "choose another folder for this config"
        )


def _result_from_folder(paths: runs.RunPaths, seconds: float, reused: bool) -> TrainResult:
    metrics = runs.read_json(paths.metrics)
    return TrainResult(
        run_dir=paths.root,
        valid=metrics["valid"],
        test=metrics["test"],
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
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` and evaluate the best checkpoint on valid and test.

    ``resume``: continue an unfinished run in ``run_dir`` from its last finished epoch (without
    it, a folder holding an unfinished run is refused). A folder marked DONE is read back, not
    retrained. ``on_epoch_end(epoch)`` is called after each epoch's state has been committed.
    """
    from ambcore.data import load_dataset
    from ambcore.models import build_model, load_pretrained
    from ambcore.models.plm import load_tokenizer, resolve_plm_path

    start_time = time.perf_counter()
    paths = runs.RunPaths(Path(run_dir))
    if paths.done.exists():
        _check_same_config(paths, cfg)
        return _result_from_folder(paths, time.perf_counter() - start_time, reused=True)
    if paths.config.exists():
        if not resume:
            raise AmbError(
                f"{paths.root} holds an unfinished run; continue it with --resume "
                "(resume=True) or choose another folder"
            )
        _check_same_config(paths, cfg)

    dist = _init_distributed()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device, dist.local_rank)
    dataset: MultimodalDataset = load_dataset(cfg.data, cfg)
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, dataset.visual_dim, dataset.acoustic_dim).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    optimizer = make_optimizer(trainable, cfg, device)
    scheduler = None
    if cfg.warmup_ratio > 0:  # created before a resumed optimizer state is loaded (initial_lr)
        steps = len(_epoch_loader(dataset["train"], tokenizer, cfg, 1, dist))
        scheduler = make_scheduler(optimizer, cfg, steps)
    plm_ref = {"name": cfg.plm, "resolved": resolve_plm_path(cfg.plm),
               "random_init": bool(cfg.plm_random_init or cfg.plm == "tiny-random")}  # fmt: skip

    state = runs.load_resume_state(paths.last) if resume else None
    if state is not None:
        _check_state(state, model, paths)
        model.load_state_dict(state.model, strict=False)
        optimizer.load_state_dict(state.optimizer)
        if scheduler is not None and state.scheduler is not None:
            scheduler.load_state_dict(state.scheduler)
        runs.restore_rng_state(state.rng_tensors, state.rng_scalars)
    history: list[dict[str, Any]] = list(state.history) if state else []
    first_epoch = state.epoch + 1 if state else 1
    best_mae = state.best_valid_mae if state else math.inf
    best_epoch = state.best_epoch if state else 0
    since_best = state.epochs_since_best if state else 0
    halvings_done = state.lr_halvings_done if state else 0

    if dist.main:
        paths.root.mkdir(parents=True, exist_ok=True)
        runs.recover_dir_swap(paths.best)
        if state is None:
            runs.write_json(paths.config, cfg.to_dict())
            env = runs.collect_env(device, dataset.fingerprint, dataset.name,
                                   dataset.is_synthetic, plm_ref, dist.world_size)  # fmt: skip
            env["data_source"] = dataset.source
            env["data_dims"] = {"visual": dataset.visual_dim, "acoustic": dataset.acoustic_dim}
            env["data_repairs"] = dataset.repairs
            env["resumed"] = []
        else:
            env = runs.read_json(paths.env)
            env.setdefault("resumed", []).append(
                {"after_epoch": state.epoch, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "hostname": runs.collect_env(device)["hostname"]}  # fmt: skip
            )
        runs.write_json(paths.env, env)
    dist.barrier()

    train_model: nn.Module = model
    if cfg.compile and device.type == "cuda":
        train_model = torch.compile(train_model)
    if dist.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model,
            device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=True,  # variants (text-only, no-text) leave branches unused
        )

    train_split, valid_split = dataset["train"], dataset["valid"]
    valid_loader = _make_loader(valid_split, tokenizer, cfg, shuffle=False)
    stopped_early = since_best >= cfg.patience
    epochs = range(first_epoch, cfg.max_epochs + 1) if not stopped_early else range(0)
    bar = tqdm(epochs, desc=f"train {cfg.model} ({cfg.preset}, seed {cfg.seed})",
               disable=not (progress and dist.main))  # fmt: skip
    for epoch in bar:
        t0 = time.perf_counter()
        loader = _epoch_loader(train_split, tokenizer, cfg, epoch, dist)
        train_loss, train_aux = _train_one_epoch(
            train_model, loader, tokenizer, optimizer, trainable, cfg, device, dist, epoch, progress,
            scheduler=scheduler,
        )
        valid_pred = predict_split(model, valid_split, tokenizer, cfg, device, loader=valid_loader)
        valid = _metrics(valid_pred)
        if valid["mae"] < best_mae:
            best_mae, best_epoch, since_best = valid["mae"], epoch, 0
            if dist.main:
                runs.replace_dir(paths.best, lambda folder: _save_best(model, optimizer, cfg, folder))
        else:
            since_best += 1
        if since_best >= cfg.patience and halvings_done < cfg.lr_halvings:
            # MISA's recipe: back to the best epoch (weights and optimizer state), half the
            # learning rate in use, patience afresh. Before the resume state is written, so a
            # resumed run continues from the restored weights.
            in_use = [group["lr"] for group in optimizer.param_groups]
            dist.barrier()
            _restore_best(model, optimizer, paths, device)
            for group, lr in zip(optimizer.param_groups, in_use):
                group["lr"] = lr * 0.5
            if scheduler is not None:
                scheduler.base_lrs = [lr * 0.5 for lr in scheduler.base_lrs]
            halvings_done += 1
            since_best = 0
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_aux_loss": train_aux,
                "valid_loss": valid_pred.loss,
                "valid_mae": valid["mae"],
                "valid_acc7": valid["acc7"],
                "valid_corr": valid["corr"],
                "seconds": time.perf_counter() - t0,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if dist.main:
            rng_tensors, rng_scalars = runs.capture_rng_state()
            runs.save_resume_state(
                paths.last,
                runs.ResumeState(
                    epoch=epoch,
                    model={n: p.detach() for n, p in _unwrap(model).named_parameters()
                           if p.requires_grad},  # fmt: skip
                    optimizer=optimizer.state_dict(),
                    rng_tensors=rng_tensors,
                    rng_scalars=rng_scalars,
                    best_valid_mae=best_mae,
                    best_epoch=best_epoch,
                    epochs_since_best=since_best,
                    history=history,
                    config_json=cfg.to_json(),
                    scheduler=None if scheduler is None else scheduler.state_dict(),
                    lr_halvings_done=halvings_done,
                ),
            )
            runs.write_csv(paths.history, history, runs.HISTORY_COLUMNS)
        dist.barrier()
        bar.set_postfix(train_loss=f"{train_loss:.3f}", valid_mae=f"{valid['mae']:.3f}",
                        best_epoch=best_epoch)  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if since_best >= cfg.patience:
            stopped_early = True
            break
    bar.close()

    if best_epoch == 0:
        raise AmbError(f"{paths.root}: no epoch was trained (max_epochs={cfg.max_epochs})")
    # The best checkpoint, read back from disk: the reported numbers are those of the files.
    best_model = load_pretrained(paths.best).to(device)
    valid_pred = predict_split(best_model, valid_split, tokenizer, cfg, device, progress=False)
    test_pred = predict_split(best_model, dataset["test"], tokenizer, cfg, device, progress=False)
    valid, test = _metrics(valid_pred), _metrics(test_pred)
    mean_pred = dataclasses.replace(
        test_pred, y_pred=np.full_like(test_pred.y_true, float(np.mean(train_split.labels)))
    )
    metrics = {
        "valid": valid,
        "test": test,
        "test_baseline_train_mean": _metrics(mean_pred),
        "data": dataset.name,
        "data_source": dataset.source,
        "is_synthetic": dataset.is_synthetic,
        "plm": cfg.plm,
        "model": cfg.model,
        "variant": cfg.variant,
        "text_adaptation": cfg.text_adaptation,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "lr_halvings_done": halvings_done,
        "n_trainable_params": n_trainable,
        "device": str(device),
        "world_size": dist.world_size,
    }
    if dist.main:
        runs.write_csv(paths.test_predictions, test_pred.frame().to_dict("records"),
                       ("id", "y_true", "y_pred"))  # fmt: skip
        runs.write_json(paths.metrics, metrics)
        runs.write_json(paths.done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    dist.barrier()
    result = _result_from_folder(paths, time.perf_counter() - start_time, reused=False)
    result.resumed_from_epoch = state.epoch if state else 0
    return result


def _save_best(model: nn.Module, optimizer, cfg: Config, folder: Path) -> None:
    _unwrap(model).save_pretrained(folder)
    if cfg.lr_halvings > 0:  # restored with the weights when patience runs out
        runs.save_optimizer_state(folder, optimizer.state_dict())


def _check_state(state: runs.ResumeState, model: nn.Module, paths: runs.RunPaths) -> None:
    expected = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    if set(state.model) != set(expected) or any(
        tuple(state.model[n].shape) != tuple(s) for n, s in expected.items()
    ):
        raise AmbError(
            f"{paths.last}: the resume state's tensors do not match the model's trainable "
            f"parameters ({len(state.model)} saved, {len(expected)} expected)"
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


def _train_one_epoch(
    model, loader, tokenizer, optimizer, trainable, cfg, device, dist, epoch, progress,
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
        with _autocast(cfg, device):
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

