"""Run folders: the single source of truth for every table and figure (thesis 6.3.1, "Setup").

A training run (``ambcore.train.train_and_evaluate``) owns one folder::

    <run_dir>/
      config.json            the resolved Config (``config_from_dict`` rebuilds it)
      env.json               python/torch/transformers versions, device, git revision (+ dirty
                             flag), data fingerprint, PLM reference, hostname, CPU count
      history.csv            one row per finished epoch (losses, valid MAE/Acc-7/Corr, seconds);
                             NaN is written as an empty field
      metrics.json           best checkpoint on valid and test, plus data name, is_synthetic, PLM
      test_predictions.csv   id, y_true, y_pred for every test utterance
      best/                  the best checkpoint (the model's ``save_pretrained``)
      last/                  resume state after the latest finished epoch (see below)
      DONE                   written last; a folder with DONE is never trained again
      DIVERGED               written instead of DONE when a training loss or validation MAE
                             is not finite (JSON: epoch, train_loss, valid_mae, best_epoch,
                             message); best/ and last/ keep the last good epoch, and the
                             folder is never resumed (the same config diverges again)
      .train.lock            held (``fcntl.flock``) by the one ``train`` process working in
                             the folder; it holds that process' pid (``lock_holder``)

Run status (``run_status``): "done", "diverged", "unfinished" or "empty". A sweep that finds a
DONE folder checks it with ``verify_finished(run_dir)`` before it adopts it: every file present
and readable, ``history.csv`` one row per epoch, the best checkpoint's weights matching their
SHA-256 (``ambcore.models.checkpoint``) and ``best/config.json`` equal to ``config.json``.

Every file is written atomically: the bytes go to a temporary file in the same folder, which
is flushed, fsync'ed and then renamed over the target with ``os.replace``. A crash (even
``kill -9``) leaves either the previous file or the new one, never a partial file.

Resume state (``last/``) holds only tensors in safetensors files and scalars in JSON (never a
pickle): the trainable weights, the optimizer state, the RNG states of python, numpy and torch,
the epoch, the best validation MAE so far and the patience counter. The tensor files carry the
epoch in their names and ``last/state.json`` is written after them, so ``state.json`` always
points to complete files; files of older epochs are removed afterwards. ``history.csv`` is
written before ``state.json`` and rebuilt from ``state.json`` on resume, so a crash between the
two never leaves a finished run with a missing row. Temporary files left by a crash
(``*.tmp``) are removed when training starts or resumes (under the lock).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

try:
    import fcntl
except ImportError:  # not POSIX: FileLock takes no lock
    fcntl = None

from ambcore.atomic import (
    RunWriteError,
    _fsync_dir,
    _write_error,
    atomic_file,
    atomic_write_bytes,
    atomic_write_text,
)
from ambcore.config import PRESETS, Config, config_from_dict, get_config, saved_values
from ambcore.errors import AmbError
from ambcore.models.checkpoint import WEIGHTS_FILE, read_checkpoint, saved_config, write_model_card
from ambcore.paths import PROJECT_ROOT, runs_dir

__all__ = [
    "HISTORY_COLUMNS",
    "RunPaths",
    "RunFolder",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "read_json_object",
    "write_csv",
    "save_tensors",
    "load_tensors",
    "collect_env",
    "cpu_model",
    "machine_block",
    "matmul_probe",
    "read_config",
    "read_metrics",
    "read_history",
    "is_done",
    "default_run_dir",
    "ResumeState",
    "save_resume_state",
    "load_resume_state",
    "save_optimizer_state",
    "load_optimizer_state",
    "capture_rng_state",
    "restore_rng_state",
    "replace_dir",
    "recover_dir_swap",
    "RunWriteError",
    "RunLockedError",
    "FileLock",
    "run_lock",
    "lock_holder",
    "clean_temp_files",
    "mark_diverged",
    "read_diverged",
    "run_status",
    "config_diff",
    "format_config_diff",
    "check_best_config",
    "verify_finished",
]

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",  # the task loss (cfg.loss) averaged over training utterances
    "train_aux_loss",  # the model's auxiliary loss (MISA), 0 for AMB
    "valid_loss",
    "valid_mae",
    "valid_acc7",
    "valid_corr",
    "seconds",
    "lr",  # the learning rate at the end of the epoch (warm-up, halvings)
)


@dataclass(frozen=True)
class RunPaths:
    """The paths inside one run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def test_predictions(self) -> Path:
        return self.root / "test_predictions.csv"

    @property
    def best(self) -> Path:
        return self.root / "best"

    @property
    def last(self) -> Path:
        return self.root / "last"

    @property
    def done(self) -> Path:
        return self.root / "DONE"

    @property
    def diverged(self) -> Path:
        return self.root / "DIVERGED"

    @property
    def lock(self) -> Path:
        return self.root / ".train.lock"


class RunLockedError(AmbError):
    """Another process is training in the same run folder."""


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (strict JSON); numpy scalars become python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON (sorted keys, NaN written as null so that any JSON reader accepts it)."""
    text = json.dumps(_json_safe(obj), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AmbError(f"{path}: not valid JSON ({exc})") from None


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Atomic CSV with the given column order (floats at full precision, NaN as empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {}
        for col in columns:
            value = row.get(col)
            if isinstance(value, (float, np.floating)):
                value = repr(float(value)) if math.isfinite(value) else ""
            out[col] = value
        writer.writerow(out)
    return atomic_write_text(path, buf.getvalue())


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Atomic safetensors file (tensors moved to the CPU and made contiguous)."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return st_load(Path(path).read_bytes())


def replace_dir(target: str | Path, write: Any) -> Path:
    """Fill a fresh folder with ``write(folder)`` and swap it in place of ``target``.

    The swap is ``target.new`` (complete, marked by a ``.complete`` file) -> rename ``target``
    to ``target.old`` -> rename ``target.new`` to ``target`` -> delete ``target.old``. A crash at
    any point is repaired by ``recover_dir_swap`` (called first here and by readers).
    """
    target = Path(target)
    recover_dir_swap(target)
    new, old = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    write(new)
    atomic_write_text(new / ".complete", "")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    (target / ".complete").unlink(missing_ok=True)
    return target


def recover_dir_swap(target: str | Path) -> None:
    """Finish or undo a ``replace_dir`` interrupted by a crash."""
    target = Path(target)
    new, old = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
    if new.exists():
        if (new / ".complete").exists() and not target.exists():
            os.replace(new, target)
        else:
            shutil.rmtree(new, ignore_errors=True)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # crashed after moving target away and before moving new in: new was incomplete
            os.replace(old, target)


# ---- environment ---------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_env(
    device: torch.device | str,
    data_fingerprint: str = "",
    data_name: str = "",
    is_synthetic: bool | None = None,
    plm: Mapping[str, Any] | None = None,
    world_size: int = 1,
) -> dict[str, Any]:
    """What produced a run: versions, machine, device, code revision, data and PLM identity."""
    device = torch.device(device)
    revision = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            name: _version(name)
            for name in (
                "torch",
                "transformers",
                "tokenizers",
                "safetensors",
                "numpy",
                "scikit-learn",
                "ambcore",
            )
        },
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        ),
        "world_size": world_size,
        "git_revision": revision,
        "git_dirty": (bool(status) if status is not None else None),
        "data_name": data_name,
        "data_fingerprint": data_fingerprint,
        "is_synthetic": is_synthetic,
        "plm": dict(plm or {}),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    env["machine"] = machine_block()
    return env


# ---- the machine: CPU model, cores, calibration probe -------------------------------------

PROBE_ENV = "AMB_MACHINE_PROBE"  # the probe of this process tree (JSON), measured once
PROBE_SECONDS = 2.0  # how long the calibration probe runs
PROBE_SIZE = 256  # the probe's square fp32 matrices


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def matmul_probe(seconds: float = PROBE_SECONDS, size: int = PROBE_SIZE) -> dict[str, Any]:
    """The machine's single-thread fp32 matmul rate in GFLOP/s (a calibration probe).

    ``size`` x ``size`` products (2 size^3 flops each) run for about ``seconds`` in chunks of
    ten, with one thread; each chunk's rate divides its flops by the thread's CPU time, so
    that time the scheduler gives to other processes on a shared machine does not count. The
    fastest chunk is the probe (``gflops``, the least disturbed), the median is kept beside it,
    with the load average when it was measured."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        for _ in range(3):  # warm-up
            torch.mm(a, b, out=out)
        rates: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(rates) < 3:
            start = time.thread_time()
            for _ in range(10):
                torch.mm(a, b, out=out)
            used = max(time.thread_time() - start, 1e-9)
            rates.append(10 * 2 * size**3 / used / 1e9)
    finally:
        torch.set_num_threads(threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "gflops": round(max(rates), 2),
        "gflops_median": round(float(np.median(rates)), 2),
        "chunks": len(rates),
        "what": f"single-thread fp32 {size}x{size} matmul, GFLOP/s per CPU-second (best chunk)",
        "load_average_1_5_15min": [round(x, 2) for x in load] if load else None,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine_block(probe: bool = True) -> dict[str, Any]:
    """The machine that produced a time: CPU model, core counts, and the calibration probe
    (``matmul_probe``), measured once per process tree: the first measurement is kept in the
    environment variable ``AMB_MACHINE_PROBE``, which child processes (sweep workers, chapter
    kernels started later) inherit and reuse. ``probe=False``: without the probe."""
    block: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "machine": platform.machine(),
    }
    if probe:
        cached = os.environ.get(PROBE_ENV)
        try:
            block["probe"] = json.loads(cached) if cached else None
        except json.JSONDecodeError:
            block["probe"] = None
        if not block["probe"]:
            block["probe"] = matmul_probe()
            os.environ[PROBE_ENV] = json.dumps(block["probe"])
    return block


# ---- readers used by notebooks, reports and the CLI ----------------------------------------


def read_config(run_dir: str | Path) -> Config:
    path = RunPaths(run_dir).config
    if not path.exists():
        raise AmbError(f"{run_dir}: not a run folder (no config.json)")
    return config_from_dict(read_json(path))


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = RunPaths(run_dir).metrics
    if not path.exists():
        raise AmbError(f"{run_dir}: no metrics.json (the run has not finished)")
    return read_json(path)


def read_history(run_dir: str | Path):
    """history.csv as a pandas DataFrame (one row per finished epoch)."""
    return pd.read_csv(RunPaths(run_dir).history)


def is_done(run_dir: str | Path) -> bool:
    return RunPaths(run_dir).done.exists()


def default_run_dir(cfg: Config, name: str | None = None) -> Path:
    """``<runs>/<preset>/<name>-seed<seed>[-<hash>]``: where chapters put and find a run.

    ``name`` defaults to the model (``amb``, ``misa``, ``mag-bert``). Configs that differ from
    their preset only in ``seed`` and ``data`` get the plain name (so the training chapter's
    run is found by the later chapters); any other difference adds a short hash of the changed
    fields, so that two different configs never share a folder.
    """
    base = get_config(cfg.preset) if cfg.preset in PRESETS else Config()
    wanted, default = cfg.to_dict(), base.to_dict()
    changed = {k: v for k, v in wanted.items() if k not in ("seed", "data") and v != default[k]}
    if name is None:
        name = cfg.model
        changed.pop("model", None)
    folder = f"{name}-seed{cfg.seed}"
    if changed:
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        folder += f"-{digest}"
    return runs_dir() / cfg.preset / folder


# ---- RNG state as tensors + JSON scalars -----------------------------------------------------


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The python, numpy and torch (CPU and CUDA) generator states, without pickling."""
    tensors: dict[str, torch.Tensor] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    version, mt_state, gauss_next = random.getstate()
    tensors["python_mt"] = torch.tensor(mt_state, dtype=torch.int64)
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors["numpy_mt"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    scalars = {
        "python_version": version,
        "python_gauss_next": gauss_next,
        "numpy_kind": kind,
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached_gaussian": float(cached_gaussian),
    }
    return tensors, scalars


def restore_rng_state(tensors: Mapping[str, torch.Tensor], scalars: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(
        (
            scalars["python_version"],
            tuple(int(v) for v in tensors["python_mt"].tolist()),
            scalars["python_gauss_next"],
        )
    )
    np.random.set_state(
        (
            scalars["numpy_kind"],
            tensors["numpy_mt"].numpy().astype(np.uint32),
            scalars["numpy_pos"],
            scalars["numpy_has_gauss"],
            scalars["numpy_cached_gaussian"],
        )
    )


# ---- resume state ----------------------------------------------------------------------------


@dataclass
class ResumeState:
    """Everything needed to continue training after epoch ``epoch`` exactly as if uninterrupted."""

    epoch: int  # the last finished epoch (1-based)
    model: dict[str, torch.Tensor]  # trainable parameters by name
    optimizer: dict[str, Any]  # torch optimizer.state_dict() (tensors inside)
    rng_tensors: dict[str, torch.Tensor]
    rng_scalars: dict[str, Any]
    best_valid_mae: float
    best_epoch: int
    epochs_since_best: int  # the patience counter
    history: list[dict[str, Any]]  # the history.csv rows so far
    config_json: str  # the resolved config, to refuse resuming a different run
    scheduler: dict[str, Any] | None = None  # the LR schedule's state_dict (warm-up), if any
    lr_halvings_done: int = 0  # cfg.lr_halvings used so far


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, per_param in state["state"].items():
        entry = {}
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value
            else:
                entry[key] = value
        scalars["state"][str(idx)] = entry
    return tensors, scalars


def _join_optimizer_state(tensors: Mapping[str, torch.Tensor], scalars: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in scalars["state"].items()}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_resume_state(last_dir: str | Path, rs: ResumeState) -> None:
    """Write the tensors (epoch-tagged), then ``state.json`` (the commit), then prune."""
    last_dir = Path(last_dir)
    tag = f"e{rs.epoch:04d}"
    files = {
        "model": f"model-{tag}.safetensors",
        "optimizer": f"optimizer-{tag}.safetensors",
        "rng": f"rng-{tag}.safetensors",
    }
    opt_tensors, opt_scalars = _split_optimizer_state(rs.optimizer)
    save_tensors(last_dir / files["model"], rs.model)
    save_tensors(last_dir / files["optimizer"], opt_tensors)
    save_tensors(last_dir / files["rng"], rs.rng_tensors)
    write_json(
        last_dir / "state.json",
        {
            "epoch": rs.epoch,
            "files": files,
            "optimizer": opt_scalars,
            "rng": rs.rng_scalars,
            "best_valid_mae": rs.best_valid_mae,
            "best_epoch": rs.best_epoch,
            "epochs_since_best": rs.epochs_since_best,
            "history": rs.history,
            "config": json.loads(rs.config_json),
            "scheduler": rs.scheduler,
            "lr_halvings_done": rs.lr_halvings_done,
        },
    )
    keep = set(files.values()) | {"state.json"}
    for path in last_dir.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)


OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"


def save_optimizer_state(folder: str | Path, state: dict[str, Any]) -> None:
    """An optimizer ``state_dict()`` as ``optimizer.safetensors`` + ``optimizer.json`` in
    ``folder`` (next to the best weights when ``cfg.lr_halvings`` restores them)."""
    tensors, scalars = _split_optimizer_state(state)
    save_tensors(Path(folder) / OPTIMIZER_TENSORS, tensors)
    write_json(Path(folder) / OPTIMIZER_JSON, scalars)


def load_optimizer_state(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    missing = [n for n in (OPTIMIZER_TENSORS, OPTIMIZER_JSON) if not (folder / n).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: no saved optimizer state ({', '.join(missing)})")
    return _join_optimizer_state(
        load_tensors(folder / OPTIMIZER_TENSORS), read_json(folder / OPTIMIZER_JSON)
    )


def load_resume_state(last_dir: str | Path) -> ResumeState | None:
    """The state committed by the latest ``save_resume_state``, or None if there is none."""
    last_dir = Path(last_dir)
    state_path = last_dir / "state.json"
    if not state_path.exists():
        return None
    meta = read_json(state_path)
    files = meta["files"]
    best = meta["best_valid_mae"]
    return ResumeState(
        epoch=int(meta["epoch"]),
        model=load_tensors(last_dir / files["model"]),
        optimizer=_join_optimizer_state(
            load_tensors(last_dir / files["optimizer"]), meta["optimizer"]
        ),
        rng_tensors=load_tensors(last_dir / files["rng"]),
        rng_scalars=meta["rng"],
        best_valid_mae=float("inf") if best is None else float(best),
        best_epoch=int(meta["best_epoch"]),
        epochs_since_best=int(meta["epochs_since_best"]),
        history=list(meta["history"]),
        config_json=json.dumps(meta["config"], sort_keys=True),
        scheduler=meta.get("scheduler"),
        lr_halvings_done=int(meta.get("lr_halvings_done", 0)),
    )


# ---- lock, crash leftovers, divergence, verification ------------------------------------------


class FileLock:
    """An exclusive ``fcntl.flock`` on one file: the one lock of the package (a run folder's
    ``.train.lock``, a sweep cell's ``.lock``, a tuning journal's ``.flock``).

    ``acquire()`` waits for the lock; ``acquire(blocking=False)`` returns False at once when
    another holder has it. The holder writes its pid into the file (``holder``). The kernel
    releases the lock when the holder exits, even on ``kill -9``, so nothing is left for the
    next process to wait out. The lock belongs to one open file: a second ``FileLock`` on the
    same path in the same process does not get it either. Where ``fcntl`` is missing (not
    POSIX) there is no lock and ``acquire`` always succeeds. The object also serves as
    Optuna's journal lock (``acquire``/``release``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        if fcntl is None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the lock

    def holder(self) -> int | None:
        """The pid written by the process holding the lock (-1 if unreadable), or None when
        nobody holds it (or there is no such file)."""
        if fcntl is None or not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(pid) if pid.isdigit() else -1
            return None
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


_HELD_LOCKS: set[str] = set()  # run folders whose lock this process holds (re-entry is a no-op)


@contextlib.contextmanager
def run_lock(root: str | Path, enabled: bool = True):
    """Hold the ``FileLock`` on ``<root>/.train.lock`` (creating ``root``).

    A second holder fails at once with ``RunLockedError`` naming the folder and the holder's
    pid. Re-entering in the process that holds it is a no-op (a sweep may lock a cell's folder
    and then train in it); ``enabled=False`` (the non-zero ranks of a distributed run) takes no
    lock. A folder that this call created and left empty is removed again.
    """
    path = RunPaths(root).lock
    key = os.path.realpath(path)
    if not enabled or fcntl is None or key in _HELD_LOCKS:
        yield
        return
    created = not path.parent.exists()
    lock = FileLock(path)
    if not lock.acquire(blocking=False):
        pid = lock.holder()
        raise RunLockedError(
            f"{path.parent} is in use by another train process "
            f"(pid {'unknown' if pid in (None, -1) else pid}); wait for it to finish or choose "
            "another folder"
        )
    _HELD_LOCKS.add(key)
    try:
        yield
    finally:
        _HELD_LOCKS.discard(key)
        if created and [p.name for p in path.parent.iterdir()] == [path.name]:
            path.unlink(missing_ok=True)  # nothing was written: leave no folder behind
            path.parent.rmdir()
        lock.release()


def lock_holder(root: str | Path) -> int | None:
    """The pid of the process training in ``root`` (holding its lock), or None."""
    return FileLock(RunPaths(root).lock).holder()


class RunFolder:
    """One training run's folder, behind one call per event of the run (``ambcore.train``)::

        folder = RunFolder(run_dir, cfg)
        with folder.claim(resume):          # refuse what cannot be trained; hold the lock
            if folder.reused: ...           # DONE (of this config): read it back
            folder.start(new_env)           # config.json, env.json; crash leftovers removed
            folder.best(save)               # a better epoch becomes best/
            folder.best_state()             # ... and is read back (MISA's lr halvings)
            folder.epoch(resume_state)      # history.csv, then last/ (the commit)
            folder.diverged(info)           # the DIVERGED marker
            folder.best_checkpoint()        # best/, checked to be this run's
            folder.finish(metrics, model, predictions)   # ..., DONE

    ``main=False`` (the non-zero ranks of a distributed run): nothing is written and no lock
    is taken; ``barrier`` is called where every rank must have seen rank 0's writes."""

    def __init__(
        self,
        root: str | Path,
        cfg: Config,
        main: bool = True,
        barrier: Callable[[], None] = lambda: None,
    ):
        self.paths = RunPaths(Path(root))
        self.cfg = cfg
        self.main = main
        self.barrier = barrier
        self.reused = False  # the folder was DONE with this config: read back, not trained
        self.resume_state: ResumeState | None = None  # what a resumed run continues from

    # -- start ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self, resume: bool = False) -> Iterator[RunFolder]:
        """Open the folder for one training call. A DONE folder (of this config; another one
        is refused) sets ``reused`` and takes no lock, so a finished run in a read-only place
        can be read back. Otherwise the lock is held for the block (``run_lock``) and a
        folder that cannot be trained is refused: DIVERGED, an unfinished run without
        ``resume``, another config; with ``resume`` its ``resume_state`` is loaded."""
        root = self.paths.root
        if root.exists() and not root.is_dir():
            raise AmbError(f"{root} exists and is not a folder; the run folder must be a folder")
        if self._finished():
            yield self
            return
        with run_lock(root, enabled=self.main):
            if not self._finished():  # finished by another process before the lock was taken
                self._refuse_untrainable(resume)
                self.resume_state = load_resume_state(self.paths.last) if resume else None
            yield self

    def _finished(self) -> bool:
        if self.paths.done.exists():
            self._check_same_config()
            self.reused = True
        return self.reused

    def _refuse_untrainable(self, resume: bool) -> None:
        paths = self.paths
        diverged = read_diverged(paths.root)
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
            self._check_same_config()

    def _check_same_config(self) -> None:
        diff = config_diff(config_from_dict(read_json(self.paths.config)).to_dict(), self.cfg)
        if diff:
            raise AmbError(
                f"{self.paths.root} holds a run with a different config "
                f"({format_config_diff(diff)}); choose another folder for this config"
            )

    def start(self, new_env: Callable[[], dict[str, Any]]) -> None:
        """Training starts: crash leftovers go (a half-swapped best/, ``*.tmp``), then
        config.json and env.json (``new_env()``). A resumed run keeps its env.json, which gains a
        ``resumed`` entry, and its history.csv is rebuilt from the resume state."""
        paths, state = self.paths, self.resume_state
        if self.main:
            paths.root.mkdir(parents=True, exist_ok=True)
            recover_dir_swap(paths.best)
            clean_temp_files(paths.root)
            if state is None:
                paths.history.unlink(missing_ok=True)  # rows of a run that committed no epoch
                write_json(paths.config, self.cfg.to_dict())
                env = new_env()
            else:
                write_csv(paths.history, state.history, HISTORY_COLUMNS)
                env = read_json(paths.env)
                env.setdefault("resumed", []).append(
                    {
                        "after_epoch": state.epoch,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "hostname": socket.gethostname(),
                    }
                )
            write_json(paths.env, env)
        self.barrier()

    # -- every epoch ---------------------------------------------------------------------------

    def best(self, save: Callable[[Path], None]) -> None:
        """A better epoch: ``save(folder)`` fills a fresh folder swapped in as best/."""
        if self.main:
            replace_dir(self.paths.best, save)

    def best_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """best/'s weights and optimizer state, read back once every rank is here."""
        self.barrier()
        recover_dir_swap(self.paths.best)
        weights = load_tensors(self.paths.best / WEIGHTS_FILE)
        return weights, load_optimizer_state(self.paths.best)

    def epoch(self, state: ResumeState) -> None:
        """An epoch is finished: history.csv, then the resume state (``last/state.json`` is the
        commit): a crash between the two resumes from the previous epoch, whose state
        rebuilds the history."""
        if self.main:
            write_csv(self.paths.history, state.history, HISTORY_COLUMNS)
            save_resume_state(self.paths.last, state)
        self.barrier()

    def diverged(self, info: Mapping[str, Any]) -> None:
        """The run diverged: the ``DIVERGED`` marker (best/ and last/ keep the good epochs)."""
        if self.main:
            mark_diverged(self.paths.root, info)

    # -- finish --------------------------------------------------------------------------------

    def best_checkpoint(self) -> Path:
        """best/, once its config.json is checked to be the run's own (``check_best_config``)."""
        check_best_config(self.paths.root)
        return self.paths.best

    def finish(self, metrics: Mapping[str, Any], best_model: Any, test_predictions=None) -> None:
        """The run is finished: test_predictions.csv (none for a valid-only run), metrics.json,
        best/'s model card (data, metrics, intervals) and DONE, in that order."""
        paths = self.paths
        if self.main:
            if test_predictions is not None:
                write_csv(
                    paths.test_predictions,
                    test_predictions.to_dict("records"),
                    ("id", "y_true", "y_pred"),
                )
            write_json(paths.metrics, metrics)
            write_model_card(paths.best, best_model, metrics, test_predictions)
            write_json(paths.done, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.barrier()


def clean_temp_files(root: str | Path) -> list[Path]:
    """Remove the ``*.tmp`` files that crashed writes left anywhere in a run folder."""
    removed = []
    for path in sorted(Path(root).rglob("*.tmp")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def mark_diverged(run_dir: str | Path, info: Mapping[str, Any]) -> Path:
    """Write the ``DIVERGED`` marker (JSON: epoch, losses, best epoch kept, message)."""
    return write_json(RunPaths(run_dir).diverged, dict(info))


def read_diverged(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``DIVERGED`` marker of a run folder, or None when the run did not diverge."""
    path = RunPaths(run_dir).diverged
    return read_json(path) if path.exists() else None


def run_status(run_dir: str | Path) -> str:
    """ "done", "diverged", "unfinished" (a config.json, no marker) or "empty"."""
    paths = RunPaths(run_dir)
    if paths.diverged.exists():
        return "diverged"
    if paths.done.exists():
        return "done"
    return "unfinished" if paths.config.exists() else "empty"


def config_diff(
    saved: Mapping[str, Any], wanted: Config | Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """The keys of ``wanted`` (a ``Config`` or its ``to_dict()``) whose value ``saved`` (a
    config's ``to_dict()``, or a ``config.json`` as read) does not hold, missing ones included:
    ``{key: (saved value, wanted value)}`` in key order. The one comparison of two configs
    (a run folder's against a resumed or reused run's, ``best/``'s against its run's, a sweep
    cell's against its folder's)."""
    wanted = wanted.to_dict() if isinstance(wanted, Config) else wanted
    saved = saved_values(dict(saved))  # a field added since it was saved: its earlier value
    return {k: (saved.get(k), v) for k, v in sorted(wanted.items()) if saved.get(k) != v}


def format_config_diff(diff: Mapping[str, tuple[Any, Any]], limit: int = 8, sep: str = "->") -> str:
    """``config_diff`` in one line: ``key: saved SEP wanted`` for the first ``limit`` keys."""
    return ", ".join(f"{k}: {a!r} {sep} {b!r}" for k, (a, b) in list(diff.items())[:limit])


def check_best_config(run_dir: str | Path) -> None:
    """``best/config.json`` must be the run's ``config.json``: a best/ folder swapped in from
    another seed or configuration is refused (one line naming the differing keys)."""
    paths = RunPaths(run_dir)
    run_cfg = read_config(run_dir).to_dict()
    best_path = paths.best / "config.json"
    if not best_path.is_file():
        raise AmbError(f"{paths.best}: no config.json (not a checkpoint of this run)")
    best_cfg = config_from_dict(saved_config(paths.best)).to_dict()
    diff = config_diff(run_cfg, best_cfg)
    if diff:
        raise AmbError(
            f"{best_path} is not this run's configuration ({format_config_diff(diff, 6, 'vs')}); "
            "the checkpoint belongs to another run"
        )


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object; one ``AmbError`` line naming the file otherwise."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise AmbError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def verify_finished(run_dir: str | Path) -> dict[str, Any]:
    """Check a finished (DONE) run folder before its results are used; returns its metrics.

    Refuses, with one ``AmbError`` line naming the file: no DONE or a DIVERGED marker, a missing
    or unreadable ``config.json`` / ``metrics.json`` / ``history.csv`` /
    ``test_predictions.csv`` (not for a valid-only tuning trial), a history without one row per epoch, a best checkpoint whose
    weights do not match their SHA-256, do not parse or are not finite, and a ``best/config.json``
    other than the run's. Nothing is written.
    """
    paths = RunPaths(run_dir)
    if read_diverged(run_dir) is not None:
        raise AmbError(f"{paths.root}: the run diverged (see {paths.diverged.name})")
    if not paths.done.exists():
        raise AmbError(f"{paths.root}: not a finished run (no DONE)")
    read_config(run_dir)
    metrics = read_metrics(run_dir)
    if not isinstance(metrics, dict):
        metrics = {}
    valid_only = metrics.get("valid_only") is True  # a tuning trial: no test split was given
    required = ("valid", "best_epoch", "epochs_run") + (() if valid_only else ("test",))
    missing = [k for k in required if k not in metrics]
    if missing:
        raise AmbError(f"{paths.metrics}: incomplete (missing {', '.join(missing) or 'all'})")
    rows = _csv_rows(paths.history)
    if rows != metrics["epochs_run"]:
        raise AmbError(
            f"{paths.history}: {rows} row(s), expected one per epoch ({metrics['epochs_run']})"
        )
    if not valid_only:
        _csv_rows(paths.test_predictions)
    read_checkpoint(paths.best)
    check_best_config(run_dir)
    return metrics


def _csv_rows(path: Path) -> int:
    """The number of data rows of a CSV file written by ``write_csv``."""
    if not path.is_file():
        raise AmbError(f"{path}: missing")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AmbError(f"{path}: not a readable CSV file ({exc})") from None
