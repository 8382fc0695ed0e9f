"""Sweeps: the many training runs behind the ablation and robustness chapters (thesis 6.3.3-6.3.4).

A sweep spec is a small YAML, TOML or JSON file (or a dict)::

    name: ablation                 # default: the file name
    preset: embedded               # the preset every cell starts from
    runs_dir: ablation             # under the runs root (AMB_RUNS, default <root>/runs),
                                   # or an absolute path; default: the sweep's name
    seeds: [0, 1, 2]
    overrides: {max_epochs: 8}     # optional, applied to every cell
    cells:                         # either a list of named cells ...
      - {name: amb, overrides: {model: amb}}
      - {name: amb-text-only, overrides: {model: amb, variant: text-only}}
    grid:                          # ... or a grid: one cell per combination, named by its values
      model: [amb, misa]           #     ("amb_full", "amb_text-only", ...); "preset" may vary too
      variant: [full, text-only]
    submitit: {timeout_min: 240, slurm_partition: gpu}   # optional, for --backend submitit

Every (cell, seed) trains into its own folder ``<runs_dir>/<cell>/seed<seed>`` with
``ambcore.train.train_and_evaluate``. A folder marked DONE is skipped; a folder holding an
unfinished run (killed, preempted) is resumed from its last finished epoch. Running the same
spec again therefore only does the work that is missing. Each run folder also gets a
``sweep.json`` naming its cell, which ``ambcore.report`` uses to group seeds.

Backends
--------
- ``local`` (default): the cells one after another in this process (one GPU or the CPU).
- ``submitit``: each cell is a job of `submitit <https://github.com/facebookincubator/submitit>`_,
  ``cluster="slurm"`` for SLURM clusters (job arrays; the spec's ``submitit`` section gives
  ``timeout_min``, ``gpus_per_node``, ``slurm_partition``, ``slurm_array_parallelism``, ...),
  ``cluster="local"`` for subprocesses on this machine, one cell per visible GPU at a time
  (or ``max_parallel`` on the CPU; of the ``submitit`` section only ``timeout_min`` applies).

A per-run lock (``flock`` on ``<run>/.lock``) keeps two processes from training the same
folder, e.g. when a sweep is restarted while its SLURM jobs still run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import tomllib
import traceback
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd
from tqdm.auto import tqdm

from ambcore import paths, runs
from ambcore.config import Config, ConfigError, get_config
from ambcore.errors import AmbError

__all__ = [
    "BACKENDS",
    "CLUSTERS",
    "SweepSpec",
    "SweepCell",
    "CellOutcome",
    "SweepResult",
    "load_spec",
    "plan",
    "run_sweep",
]

BACKENDS = ("local", "submitit")
CLUSTERS = ("local", "slurm")
SPEC_KEYS = ("name", "preset", "runs_dir", "seeds", "overrides", "cells", "grid", "submitit")
CELL_FILE = "sweep.json"
LOCK_FILE = ".lock"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")

# train_fn(cfg, run_dir, resume=True) trains one cell; the default is train_and_evaluate.
TrainFn = Callable[..., Any]


# ---- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring for the file format)."""

    name: str
    preset: str
    runs_dir: Path
    seeds: tuple[int, ...]
    cells: tuple[tuple[str, dict[str, Any]], ...]  # (cell name, overrides incl. common ones)
    submitit: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"  # the spec file, for error messages


def _read_spec_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise AmbError(f"{path}: unknown sweep spec format {suffix!r}; use .yaml, .toml or .json")
    except AmbError:
        raise
    except Exception as exc:  # the parsers' own errors name line and column
        raise AmbError(f"{path}: cannot parse the sweep spec ({exc})") from None
    if not isinstance(data, dict):
        raise AmbError(f"{path}: a sweep spec is a mapping, got {type(data).__name__}")
    return data


def load_spec(
    spec: str | os.PathLike | Mapping[str, Any],
    runs_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Parse and validate a spec file or dict; every cell's config is built once to check it.

    ``runs_dir`` replaces the spec's; ``overrides`` apply to every cell, after the spec's own.
    """
    if isinstance(spec, Mapping):
        data, source, default_name = dict(spec), "<dict>", "sweep"
    else:
        path = Path(spec)
        if not path.exists():
            raise AmbError(f"sweep spec {path} does not exist")
        data, source, default_name = _read_spec_file(path), str(path), path.stem
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise AmbError(f"{source}: unknown sweep spec key(s) {unknown}; valid: {list(SPEC_KEYS)}")

    name = str(data.get("name") or default_name)
    preset = str(data.get("preset", "embedded"))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise AmbError(f"{source}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise AmbError(f"{source}: 'seeds' has duplicates: {seeds}")
    common = {**_mapping(data.get("overrides", {}), source, "overrides"), **dict(overrides or {})}

    if ("cells" in data) == ("grid" in data):
        raise AmbError(f"{source}: give exactly one of 'cells' (a list) or 'grid' (a mapping)")
    if "cells" in data:
        cells = _cells_from_list(data["cells"], source)
    else:
        cells = _cells_from_grid(data["grid"], source)
    cells = [(cell, {**common, **over}) for cell, over in cells]

    for cell, over in cells:
        if "seed" in over:
            raise AmbError(f"{source}: cell {cell!r} sets 'seed'; list seeds under 'seeds'")
        _build_config(preset, over, seeds[0], source, cell)  # fail now, not hours later

    if runs_dir is not None:
        root = Path(runs_dir)
    else:
        given = data.get("runs_dir") or name
        root = Path(given) if Path(given).is_absolute() else paths.runs_dir() / given
    return SweepSpec(
        name=name,
        preset=preset,
        runs_dir=root,
        seeds=tuple(seeds),
        cells=tuple(cells),
        submitit=_mapping(data.get("submitit", {}), source, "submitit"),
        source=source,
    )


def _mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise AmbError(f"{source}: '{key}' must be a mapping, got {value!r}")
    return dict(value)


def _check_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise AmbError(
            f"{source}: cell name {name!r} is not a valid folder name "
            "(letters, digits and . _ + = - only, not starting with a symbol)"
        )
    return name


def _cells_from_list(cells: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(cells, list) or not cells:
        raise AmbError(f"{source}: 'cells' must be a non-empty list of {{name, overrides}}")
    out = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, Mapping) or "name" not in cell:
            raise AmbError(f"{source}: cells[{i}] must be a mapping with a 'name', got {cell!r}")
        extra = sorted(set(cell) - {"name", "overrides"})
        if extra:
            raise AmbError(f"{source}: cells[{i}] has unknown key(s) {extra}; valid: name, overrides")
        name = _check_name(cell["name"], source)
        out.append((name, _mapping(cell.get("overrides", {}), source, f"cells[{i}].overrides")))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AmbError(f"{source}: duplicate cell name(s) {dupes}")
    return out


def _cells_from_grid(grid: Any, source: str) -> list[tuple[str, dict[str, Any]]]:
    grid = _mapping(grid, source, "grid")
    if not grid:
        raise AmbError(f"{source}: 'grid' is empty")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise AmbError(f"{source}: grid key {key!r} must list its values, got {values!r}")
    keys = list(grid)
    out = []
    for combo in product(*(grid[k] for k in keys)):
        name = _check_name("_".join(str(v) for v in combo), source)
        out.append((name, dict(zip(keys, combo))))
    return out


def _build_config(preset: str, overrides: Mapping[str, Any], seed: int, source: str, cell: str) -> Config:
    over = dict(overrides)
    cell_preset = str(over.pop("preset", preset))
    try:
        return get_config(cell_preset, **over, seed=seed)
    except ConfigError as exc:
        raise AmbError(f"{source}: cell {cell!r}: {exc}") from None


# ---- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepCell:
    """One (cell, seed): its config and its run folder."""

    name: str
    seed: int
    cfg: Config
    run_dir: Path
    overrides: dict[str, Any]

    @property
    def status(self) -> str:
        """``done`` (DONE marker), ``running`` (locked by another process), ``partial``
        (an unfinished run to resume) or ``new``."""
        if runs.is_done(self.run_dir):
            return "done"
        if _is_locked(self.run_dir):
            return "running"
        if runs.RunPaths(self.run_dir).config.exists():
            return "partial"
        return "new"


def plan(spec: SweepSpec) -> list[SweepCell]:
    """Every (cell, seed) of ``spec``, cells in spec order, seeds within each cell."""
    return [
        SweepCell(
            name=cell,
            seed=seed,
            cfg=_build_config(spec.preset, over, seed, spec.source, cell),
            run_dir=spec.runs_dir / cell / f"seed{seed}",
            overrides=over,
        )
        for cell, over in spec.cells
        for seed in spec.seeds
    ]


def plan_frame(cells: Sequence[SweepCell]) -> pd.DataFrame:
    """The plan as a table: cell, seed, status, run folder, overrides (what ``--dry-run`` shows)."""
    return pd.DataFrame(
        [
            {
                "cell": c.name,
                "seed": c.seed,
                "status": c.status,
                "run_dir": str(c.run_dir),
                "overrides": ", ".join(f"{k}={v}" for k, v in c.overrides.items()),
            }
            for c in cells
        ],
        columns=["cell", "seed", "status", "run_dir", "overrides"],
    )


# ---- running one cell ------------------------------------------------------------------------------


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``<run_dir>/.lock``; yields False if another process has it."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _is_locked(run_dir: Path) -> bool:
    if not (run_dir / LOCK_FILE).exists():
        return False
    with _run_lock(run_dir) as acquired:
        return not acquired


def default_train_fn(cfg: Config, run_dir: Path, resume: bool = True) -> Any:
    """``ambcore.train.train_and_evaluate`` without its own progress bars."""
    from ambcore.train import train_and_evaluate

    return train_and_evaluate(cfg, run_dir, progress=False, resume=resume)


def run_cell(
    cfg_dict: dict[str, Any],
    run_dir: str,
    cell: str,
    overrides: dict[str, Any],
    sweep_name: str,
    train_fn: TrainFn | None = None,
) -> dict[str, Any]:
    """Train one cell into ``run_dir`` (skip if DONE, resume if unfinished). Plain arguments,
    so that it can run in another process or on another machine (submitit pickles it).

    Returns ``{"outcome": "skipped"|"trained"|"resumed"|"busy", "seconds": float}``.
    """
    from ambcore.config import config_from_dict

    cfg = config_from_dict(cfg_dict)
    run_path = Path(run_dir)
    start = time.perf_counter()
    if runs.is_done(run_path):
        return {"outcome": "skipped", "seconds": 0.0}
    with _run_lock(run_path) as acquired:
        if not acquired:
            return {"outcome": "busy", "seconds": 0.0}
        if runs.is_done(run_path):  # finished while we waited for the lock
            return {"outcome": "skipped", "seconds": 0.0}
        resuming = runs.RunPaths(run_path).config.exists()
        runs.write_json(
            run_path / CELL_FILE,
            {"sweep": sweep_name, "cell": cell, "seed": cfg.seed, "overrides": overrides},
        )
        (train_fn or default_train_fn)(cfg, run_path, resume=True)
    if not runs.is_done(run_path):
        raise AmbError(f"{run_path}: training returned but the run has no DONE marker")
    return {"outcome": "resumed" if resuming else "trained", "seconds": time.perf_counter() - start}


# ---- running a sweep -------------------------------------------------------------------------------


@dataclass
class CellOutcome:
    cell: str
    seed: int
    run_dir: Path
    status_before: str  # the plan's status: done | running | partial | new
    outcome: str  # skipped | trained | resumed | busy | failed
    seconds: float = 0.0
    error: str = ""  # the exception (with its traceback's last lines) when failed


@dataclass
class SweepResult:
    spec: SweepSpec
    outcomes: list[CellOutcome]

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.outcome == "failed"]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([o.__dict__ for o in self.outcomes])


def run_sweep(
    spec: SweepSpec | str | os.PathLike | Mapping[str, Any],
    backend: str = "local",
    *,
    cluster: str = "local",
    max_parallel: int | None = None,
    train_fn: TrainFn | None = None,
    fail_fast: bool = False,
    progress: bool = True,
    runs_dir: str | os.PathLike | None = None,
    cost: Callable[[SweepCell], float] | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` that is not DONE; see the module docstring for the backends.

    ``train_fn(cfg, run_dir, resume=True)`` replaces ``train_and_evaluate`` (tests, custom
    loops). A failing cell is recorded (``SweepResult.failed``) and the others still run,
    unless ``fail_fast``. ``cost(cell)``: an estimate of a cell's run time; local parallel
    runs then start with the costliest cells, so that the last run to finish is a short one.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, runs_dir=runs_dir)
    if backend not in BACKENDS:
        raise AmbError(f"unknown sweep backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if cluster not in CLUSTERS:
        raise AmbError(f"unknown submitit cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    cells = plan(spec)
    for cell in cells:
        _adopt(cell, spec.name)
    todo = [c for c in cells if c.status != "done"]
    outcomes = {
        (c.name, c.seed): CellOutcome(c.name, c.seed, c.run_dir, "done", "skipped")
        for c in cells
        if c.status == "done"
    }
    bar = tqdm(total=len(cells), initial=len(outcomes), desc=f"sweep {spec.name}",
               unit="run", disable=not progress)  # fmt: skip

    def record(cell: SweepCell, status: str, result: dict | None, error: str = "") -> None:
        outcome = CellOutcome(cell.name, cell.seed, cell.run_dir, status,
                              result["outcome"] if result else "failed",
                              result["seconds"] if result else 0.0, error)  # fmt: skip
        outcomes[(cell.name, cell.seed)] = outcome
        bar.update(1)
        bar.set_postfix_str(f"{cell.name} seed {cell.seed}: {outcome.outcome}")
        if outcome.outcome == "failed":
            tqdm.write(f"[sweep] {cell.run_dir}: failed\n{error}")
            if fail_fast:
                raise AmbError(f"sweep {spec.name}: {cell.run_dir} failed (fail_fast):\n{error}")

    try:
        if backend == "local":
            for cell in todo:
                status = cell.status
                try:
                    result = run_cell(*_cell_args(cell, spec), train_fn=train_fn)
                except Exception:  # noqa: BLE001 - recorded, the sweep goes on
                    record(cell, status, None, _short_traceback())
                else:
                    record(cell, status, result)
        else:
            _run_submitit(spec, todo, cluster, max_parallel, train_fn, record, cost)
    finally:
        bar.close()
    ordered = [outcomes[(c.name, c.seed)] for c in cells if (c.name, c.seed) in outcomes]
    return SweepResult(spec, ordered)


def _adopt(cell: SweepCell, sweep_name: str) -> None:
    """A finished run trained outside the sweep (e.g. by the training chapter into the cell's
    folder) gets its ``sweep.json``, so that ``ambcore.report`` groups it with the other seeds."""
    if runs.is_done(cell.run_dir) and not (cell.run_dir / CELL_FILE).exists():
        saved = runs.read_config(cell.run_dir).to_dict()
        diff = sorted(k for k, v in cell.cfg.to_dict().items() if saved.get(k) != v)
        if diff:
            raise AmbError(
                f"{cell.run_dir}: a finished run with another config than cell {cell.name!r} "
                f"(differs in {', '.join(diff[:8])}); move it away or choose another runs_dir"
            )
        runs.write_json(
            cell.run_dir / CELL_FILE,
            {"sweep": sweep_name, "cell": cell.name, "seed": cell.seed,
             "overrides": cell.overrides, "adopted": True},
        )  # fmt: skip


def _cell_args(cell: SweepCell, spec: SweepSpec) -> tuple:
    return (cell.cfg.to_dict(), str(cell.run_dir), cell.name, cell.overrides, spec.name)


def _short_traceback(limit: int = 12) -> str:
    lines = traceback.format_exc().rstrip().splitlines()
    return "\n".join(lines[-limit:])


def _visible_gpus() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU jobs
        return []


def _run_submitit(
    spec: SweepSpec,
    todo: list[SweepCell],
    cluster: str,
    max_parallel: int | None,
    train_fn: TrainFn | None,
    record: Callable[..., None],
    cost: Callable[[SweepCell], float] | None = None,
) -> None:
    """Dispatch the cells as submitit jobs and record each as it completes."""
    import submitit

    folder = spec.runs_dir / "_submitit" / "%j"
    timeout_min = spec.submitit.get("timeout_min", 24 * 60)
    if cluster == "slurm":  # the spec's submitit section: generic and slurm_* parameters
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            **{"name": f"ambcore-{spec.name}", **spec.submitit, "timeout_min": timeout_min}
        )
    else:  # GPUs are assigned per job below; only the time limit applies here
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=timeout_min)
    statuses = {(c.name, c.seed): c.status for c in todo}

    def collect(job, cell: SweepCell) -> None:
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - the job's traceback is in the message
            last_lines = "\n".join(str(exc).rstrip().splitlines()[-12:])
            record(cell, statuses[(cell.name, cell.seed)], None,
                   f"{last_lines}\n(job logs: {job.paths.folder})")  # fmt: skip
        else:
            record(cell, statuses[(cell.name, cell.seed)], result)

    if cluster == "slurm":  # one job array; SLURM queues it (slurm_array_parallelism)
        with executor.batch():
            jobs = [executor.submit(run_cell, *_cell_args(c, spec), train_fn) for c in todo]
        by_job = {id(j): c for j, c in zip(jobs, todo)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=30):
            collect(job, by_job[id(job)])
        return

    # Local subprocesses: at most one cell per GPU at a time (or max_parallel on the CPU).
    gpus = _visible_gpus()
    slots: list[int | None] = list(gpus) if gpus else [None] * (max_parallel or 1)
    if max_parallel:
        slots = slots[:max_parallel]
    queue = sorted(todo, key=cost, reverse=True) if cost else list(todo)  # stable: spec order
    running: list[tuple[Any, SweepCell, int | None]] = []
    while queue or running:
        while queue and slots:
            gpu = slots.pop(0)
            cell = queue.pop(0)
            if gpu is None:
                executor.update_parameters(gpus_per_node=0)
            else:
                executor.update_parameters(gpus_per_node=1, visible_gpus=[gpu])
            job = executor.submit(run_cell, *_cell_args(cell, spec), train_fn)
            running.append((job, cell, gpu))
        time.sleep(0.2)
        for entry in [r for r in running if r[0].done()]:
            running.remove(entry)
            job, cell, gpu = entry
            slots.append(gpu)
            collect(job, cell)
