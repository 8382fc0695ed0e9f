"""Sweeps: the many training runs behind the ablation and robustness chapters (thesis 6.3.3-6.3.4).

A sweep spec is a small YAML, TOML or JSON file (or a dict)::

    name: ablation                 # default: the file name
    preset: embedded               # the preset every cell starts from
    runs_dir: ablation             # a folder inside the runs root (AMB_RUNS, default
                                   # <root>/runs); default: the sweep's name
    seeds: [0, 1, 2]               # integers from 0 to 2**32 - 1
    overrides: {max_epochs: 8}     # optional, applied to every cell
    cells:                         # either a list of named cells ...
      - {name: amb, overrides: {model: amb}}
      - {name: amb-text-only, overrides: {model: amb, variant: text-only}}
    grid:                          # ... or a grid: one cell per combination, named by its values
      model: [amb, misa]           #     ("amb_full", "amb_text-only", ...); "preset" may vary too
      variant: [full, text-only]
    submitit: {timeout_min: 240, slurm_partition: gpu}   # optional, for --backend submitit

Every (cell, seed) trains into its own folder ``<runs_dir>/<cell>/seed<seed>`` with
``ambcore.train.train_and_evaluate``. A folder marked DONE is skipped once its files check out
(``_finished_ok``: its config is the cell's and ``ambcore.runs.verify_finished`` accepts it:
complete metrics and history, best weights that match their SHA-256); a DONE folder that does not is moved aside
(``seed<seed>.corrupt-<n>``, its DONE renamed) and trained again. A folder holding an
unfinished run (killed, preempted, interrupted) is resumed from its last finished epoch.
Running the same spec again therefore only does the work that is missing. A cell that fails
(an exception, a diverged run) is reported in one line and the other cells go on. Each run
folder also gets a ``sweep.json`` naming its cell, which ``ambcore.report`` uses to group seeds.

A spec file is untrusted input: it is read only up to ``MAX_SPEC_BYTES``, YAML aliases are
refused (an alias "bomb" expands a few lines into gigabytes), names and ``runs_dir`` must stay
inside the runs folder (no ``..``, no absolute path, no symlink leading out), and a spec of
more than ``MAX_CELLS`` (cell, seed) pairs is refused before anything is expanded
(``max_cells``, CLI ``--max-cells``). A spec given as a dict (from code) may name an absolute
``runs_dir``.

Backends
--------
- ``local`` (default): this machine. With one slot (``max_parallel`` unset or 1) the cells run
  one after another in this process. With more (``max_parallel`` > 1), each slot gets a
  persistent worker process (``ambcore.sweep_workers``) that imports once, loads each PLM once
  and trains cell after cell; ``workers="fresh"`` starts a fresh process per run instead
  (submitit's local executor, the path of ``submitit`` with ``cluster="local"``), and
  ``workers="persistent"`` asks for worker processes even with one slot. The metrics are the
  same bit for bit on every path (``tests/test_sweep_workers.py``).
- ``submitit``: each cell is a job of `submitit <https://github.com/facebookincubator/submitit>`_,
  ``cluster="slurm"`` for SLURM clusters (job arrays; the spec's ``submitit`` section gives
  ``timeout_min``, ``gpus_per_node``, ``slurm_partition``, ``slurm_array_parallelism``, ...),
  ``cluster="local"`` for subprocesses on this machine, one cell per visible GPU at a time
  (or ``max_parallel`` on the CPU; of the ``submitit`` section only ``timeout_min`` applies).

A per-run lock (``runs.FileLock`` on ``<run>/.lock``) keeps two processes from training the
same folder, e.g. when a sweep is restarted while its SLURM jobs still run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import reprlib
import signal
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from ambcore import interrupt, paths, runs
from ambcore.config import Config, ConfigError, config_from_dict, get_config
from ambcore.errors import AmbError
from ambcore.sweep_workers import run_on_workers

__all__ = [
    "BACKENDS",
    "CLUSTERS",
    "WORKERS",
    "SweepSpec",
    "SweepCell",
    "CellOutcome",
    "SweepResult",
    "load_spec",
    "plan",
    "run_sweep",
    "MAX_CELLS",
    "read_spec_file",
    "confined_runs_dir",
    "check_name",
    "check_inside",
    "show",
]

BACKENDS = ("local", "submitit")
WORKERS = ("here", "persistent", "fresh")  # the local backend: this process, or worker processes
CLUSTERS = ("local", "slurm")
SPEC_KEYS = ("name", "preset", "runs_dir", "seeds", "overrides", "cells", "grid", "submitit")
CELL_FILE = "sweep.json"
LOCK_FILE = ".lock"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
MAX_CELLS = 1000  # (cell, seed) pairs in one spec; the paper's grids have < 100
MAX_SPEC_BYTES = 1 << 20  # a spec file is a few kilobytes
MAX_SEED = 2**32 - 1  # numpy's seed range
_repr = reprlib.Repr()  # keyword arguments only from Python 3.12
_repr.maxlevel, _repr.maxlist, _repr.maxdict, _repr.maxstring, _repr.maxother = 2, 6, 6, 60, 60


def show(value: Any) -> str:
    """A bounded one-line repr of user input for error messages."""
    return " ".join(_repr.repr(value).split())[:200]


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


def _yaml_without_aliases(text: str, path: Path, kind: str = "sweep spec") -> Any:
    """``yaml.safe_load`` that refuses aliases (``*name``, ``<<: *name``): a few lines of
    nested aliases expand into gigabytes wherever the value is later copied or printed."""

    class SpecLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise AmbError(
                    f"{path}: line {event.start_mark.line + 1}: YAML alias *{event.anchor} is "
                    f"not allowed in a {kind}; write the value out"
                )
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - a SafeLoader subclass


def read_spec_file(path: Path, kind: str = "sweep spec") -> dict[str, Any]:
    """A spec file (YAML without aliases, TOML or JSON) as a mapping, at most
    ``MAX_SPEC_BYTES``; ``kind`` names it in the errors (``ambcore.tune`` reads its specs so)."""
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise AmbError(f"{path}: {size} bytes; a {kind} may have at most {MAX_SPEC_BYTES}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = _yaml_without_aliases(text, path, kind)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise AmbError(f"{path}: unknown {kind} format {suffix!r}; use .yaml, .toml or .json")
    except AmbError:
        raise
    except Exception as exc:  # the parsers' own errors name line and column
        message = " ".join(str(exc).split())[:300]  # one line
        raise AmbError(f"{path}: cannot parse the {kind} ({message})") from None
    if not isinstance(data, dict):
        raise AmbError(f"{path}: a {kind} is a mapping, got {type(data).__name__} {show(data)}")
    return data


def load_spec(
    spec: str | os.PathLike | Mapping[str, Any],
    runs_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    max_cells: int = MAX_CELLS,
) -> SweepSpec:
    """Parse and validate a spec file or dict; every cell's config is built once to check it.

    ``runs_dir`` replaces the spec's; ``overrides`` apply to every cell, after the spec's own.
    ``max_cells``: the most (cell, seed) pairs accepted, checked before the cells are expanded.
    """
    if isinstance(spec, Mapping):
        data, source, default_name = dict(spec), "<dict>", "sweep"
    else:
        path = Path(spec)
        if not path.is_file():
            raise AmbError(f"sweep spec {path} does not exist")
        data, source, default_name = read_spec_file(path), str(path), path.stem
    unknown = sorted(map(str, set(data) - set(SPEC_KEYS)))
    if unknown:
        raise AmbError(
            f"{source}: unknown sweep spec key(s) {show(unknown)}; valid: {list(SPEC_KEYS)}"
        )

    name = check_name(data.get("name") or default_name, source, "name")
    preset = str(data.get("preset", "embedded"))
    if type(max_cells) is not int or max_cells < 1:
        raise AmbError(f"max_cells must be a positive integer, got {show(max_cells)}")
    seeds = data.get("seeds", [0])
    if isinstance(seeds, list):
        _check_count(1, len(seeds), max_cells, source)
    seeds = _check_seeds(seeds, source)
    common = {**_mapping(data.get("overrides", {}), source, "overrides"), **dict(overrides or {})}

    if ("cells" in data) == ("grid" in data):
        raise AmbError(f"{source}: give exactly one of 'cells' (a list) or 'grid' (a mapping)")
    if "cells" in data:
        cells = _cells_from_list(data["cells"], source, len(seeds), max_cells)
    else:
        cells = _cells_from_grid(data["grid"], source, len(seeds), max_cells)
    cells = [(cell, {**common, **over}) for cell, over in cells]

    for cell, over in cells:
        if "seed" in over:
            raise AmbError(f"{source}: cell {cell!r} sets 'seed'; list seeds under 'seeds'")
        _build_config(preset, over, seeds[0], source, cell)  # fail now, not hours later

    root = confined_runs_dir(data, name, source, runs_dir)
    check_inside(root, [c for c, _ in cells], seeds, source)
    return SweepSpec(
        name=name,
        preset=preset,
        runs_dir=root,
        seeds=tuple(seeds),
        cells=tuple(cells),
        submitit=_mapping(data.get("submitit", {}), source, "submitit"),
        source=source,
    )


def _check_seeds(seeds: Any, source: str) -> list[int]:
    allowed = f"'seeds' must be a non-empty list of integers from 0 to {MAX_SEED}"
    if not isinstance(seeds, list) or not seeds:
        raise AmbError(f"{source}: {allowed}, got {show(seeds)}")
    for i, seed in enumerate(seeds):
        if type(seed) is not int or not 0 <= seed <= MAX_SEED:  # bools and floats are refused
            raise AmbError(f"{source}: seeds[{i}] = {show(seed)}: {allowed}")
    if len(set(seeds)) != len(seeds):
        raise AmbError(f"{source}: 'seeds' has duplicates: {show(seeds)}")
    return seeds


def confined_runs_dir(
    data: Mapping[str, Any], name: str, source: str, runs_dir: str | os.PathLike | None
) -> Path:
    """The sweep's folder: ``runs_dir`` if given, else the spec's ``runs_dir`` (or its name)
    inside the runs folder. Only a spec given as a dict may name an absolute folder. The tuner
    (``ambcore.tune``) confines its studies with the same function."""
    if runs_dir is not None:
        return Path(runs_dir)
    given = data.get("runs_dir") or name
    root = paths.runs_dir()
    if isinstance(given, (str, os.PathLike)) and Path(given).is_absolute() and source == "<dict>":
        return Path(given)
    parts = PurePosixPath(given).parts if isinstance(given, str) else ()
    if not parts or not all(_NAME_OK.match(part) for part in parts):
        raise AmbError(
            f"{source}: runs_dir {show(given)} is not allowed; give a folder inside the runs "
            f"folder {root} (relative, each part letters, digits and . _ + = -, no '..')"
        )
    folder = root.joinpath(*parts)
    if not _is_inside(folder, root):
        raise AmbError(
            f"{source}: runs_dir {given!r} leads out of the runs folder {root} "
            f"(a symlink to {folder.resolve()})"
        )
    return folder


def _is_inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def check_inside(
    root: Path, cells: Sequence[str], seeds: Sequence[int], source: str, owner: str = "sweep"
) -> None:
    """No cell folder leads out of the ``owner``'s folder through a symlink (``seeds`` empty:
    the cell folders only, as the tuner's studies)."""
    for cell in cells:
        for folder in [root / cell] + [root / cell / f"seed{s}" for s in seeds]:
            if folder.is_symlink() and not _is_inside(folder, root):
                raise AmbError(
                    f"{source}: cell {cell!r}: {folder} is a symlink out of the "
                    f"{owner}'s folder {root} (to {folder.resolve()})"
                )


def _mapping(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise AmbError(f"{source}: '{key}' must be a mapping, got {show(value)}")
    return dict(value)


def check_name(name: Any, source: str, key: str = "cell name") -> str:
    if not isinstance(name, str) or not _NAME_OK.match(name):
        raise AmbError(
            f"{source}: {key} {show(name)} is not a valid folder name "
            "(letters, digits and . _ + = - only, not starting with a symbol)"
        )
    return name


def _check_count(n_cells: int, n_seeds: int, max_cells: int, source: str) -> None:
    if n_cells * n_seeds > max_cells:
        raise AmbError(
            f"{source}: {n_cells} cell(s) x {n_seeds} seed(s) = {n_cells * n_seeds} runs; at most "
            f"{max_cells} allowed (raise it with max_cells / --max-cells if this is intended)"
        )


def _cells_from_list(
    cells: Any, source: str, n_seeds: int, max_cells: int
) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(cells, list) or not cells:
        raise AmbError(f"{source}: 'cells' must be a non-empty list of {{name, overrides}}")
    _check_count(len(cells), n_seeds, max_cells, source)
    out = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, Mapping) or "name" not in cell:
            raise AmbError(
                f"{source}: cells[{i}] must be a mapping with a 'name', got {show(cell)}"
            )
        extra = sorted(map(str, set(cell) - {"name", "overrides"}))
        if extra:
            raise AmbError(
                f"{source}: cells[{i}] has unknown key(s) {show(extra)}; valid: name, overrides"
            )
        name = check_name(cell["name"], source)
        out.append((name, _mapping(cell.get("overrides", {}), source, f"cells[{i}].overrides")))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AmbError(f"{source}: duplicate cell name(s) {dupes}")
    return out


def _cells_from_grid(
    grid: Any, source: str, n_seeds: int, max_cells: int
) -> list[tuple[str, dict[str, Any]]]:
    grid = _mapping(grid, source, "grid")
    if not grid:
        raise AmbError(f"{source}: 'grid' is empty")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise AmbError(
                f"{source}: grid key {show(key)} must list its values, got {show(values)}"
            )
    # counted before product() expands anything
    _check_count(math.prod(len(v) for v in grid.values()), n_seeds, max_cells, source)
    keys = list(grid)
    out = []
    for combo in product(*(grid[k] for k in keys)):
        name = check_name("_".join(str(v) for v in combo), source)
        out.append((name, dict(zip(keys, combo))))
    return out


def _build_config(
    preset: str, overrides: Mapping[str, Any], seed: int, source: str, cell: str
) -> Config:
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


# ---- run folders: the lock and the check of a finished run ------------------------------------------


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold the ``runs.FileLock`` on ``<run_dir>/.lock``; yields False if another holder has it."""
    lock = runs.FileLock(run_dir / LOCK_FILE)
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        lock.release()


def _is_locked(run_dir: Path) -> bool:
    return runs.FileLock(run_dir / LOCK_FILE).holder() is not None


# finished_ok(run_dir, cfg) -> None when the DONE folder checks out, else what is wrong (one line)
FinishedCheck = Callable[[Path, Config], "str | None"]


def _finished_ok(run_dir: Path, cfg: Config) -> str | None:
    """Does the DONE folder ``run_dir`` hold ``cfg``'s finished run, whole? None if so, else the
    first problem: ``config.json`` missing, unreadable or another config than ``cfg``, or what
    ``ambcore.runs.verify_finished`` finds (incomplete ``metrics.json``, a history without one
    row per epoch, best weights that do not match their SHA-256 or another config's ``best/``)."""
    problem = _config_problem(runs.RunPaths(run_dir).config, cfg)
    if problem:
        return problem
    try:
        runs.verify_finished(run_dir)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reason to train again
        text = str(exc) if isinstance(exc, AmbError) else f"{type(exc).__name__}: {exc}"
        return " ".join(text.replace(f"{run_dir}/", "").replace(f"{run_dir}: ", "").split())[:300]
    return None


def _config_only(run_dir: Path, cfg: Config) -> str | None:
    """The check for a custom ``train_fn``, whose folder layout the sweep does not know."""
    return _config_problem(runs.RunPaths(run_dir).config, cfg)


def _read_config_json(path: Path) -> tuple[Any, str | None]:
    """(the parsed file, None) or (None, what is wrong with it)."""
    try:
        return json.loads(path.read_bytes()), None
    except FileNotFoundError:
        return None, f"no {path.name}"
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{path.name} is not valid JSON ({type(exc).__name__})"


def _config_problem(path: Path, cfg: Config) -> str | None:
    saved, problem = _read_config_json(path)
    if problem or not isinstance(saved, dict):
        return problem or f"{path.name} is not a JSON object"
    diff = list(runs.config_diff(saved, cfg))
    return f"{path.name} is another config (differs in {', '.join(diff[:8])})" if diff else None


def _set_aside(run_dir: Path, problem: str) -> Path | None:
    """Move a DONE folder that does not check out to ``<run_dir>.corrupt-<n>`` (its DONE
    renamed, so that reports skip it) and return the new path; None if another process
    holds the folder or it is no longer DONE."""
    with _run_lock(run_dir) as acquired:
        if not acquired or not runs.is_done(run_dir):
            return None
        n = 1
        while (aside := run_dir.with_name(f"{run_dir.name}.corrupt-{n}")).exists():
            n += 1
        os.replace(run_dir, aside)
    os.replace(aside / "DONE", aside / "DONE.rejected")
    runs.write_json(aside / "REJECTED.json", {"reason": problem, "run_dir": str(run_dir)})
    return aside


# ---- running one cell ------------------------------------------------------------------------------


def default_train_fn(cfg: Config, run_dir: Path, resume: bool = True) -> Any:
    """``ambcore.train.train_and_evaluate`` without its own progress bars."""
    # lazy: the trainer (transformers) loads only where a cell trains, not in a dispatching sweep
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
    interrupt.die_with_parent(parent=False)  # a worker ends with the sweep that started it
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
    status_before: str  # the plan's status: done | running | partial | new, or corrupt (set aside)
    outcome: str  # skipped | trained | resumed | busy | failed
    seconds: float = 0.0
    error: str = ""  # when failed: one line, the exception (and where a job's logs are)
    details: str = ""  # when failed: the traceback's last lines


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
    finished_ok: FinishedCheck | None = None,
    max_cells: int = MAX_CELLS,
    workers: str | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` that is not DONE; see the module docstring for the backends.

    ``train_fn(cfg, run_dir, resume=True)`` replaces ``train_and_evaluate`` (tests, custom
    loops). A failing cell is recorded (``SweepResult.failed``, one line on the console) and
    the others still run, unless ``fail_fast``. ``cost(cell)``: an estimate of a cell's run
    time; local parallel runs then start with the costliest cells, so that the last run to
    finish is a short one. ``finished_ok(run_dir, cfg)``: when a DONE folder counts as
    finished (default: ``_finished_ok``, or only its config for a custom ``train_fn``). An
    interruption (Ctrl-C, SIGTERM) stops the local jobs it started before it propagates.
    ``workers`` (local backend): ``here`` (this process), ``persistent`` (one worker process
    per slot, for every cell) or ``fresh`` (one process per run); default: ``here`` with one
    slot, ``persistent`` with ``max_parallel`` > 1.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, runs_dir=runs_dir, max_cells=max_cells)
    if backend not in BACKENDS:
        raise AmbError(f"unknown sweep backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if cluster not in CLUSTERS:
        raise AmbError(f"unknown submitit cluster {cluster!r}; valid: {', '.join(CLUSTERS)}")
    mode = _local_mode(backend, workers, max_parallel)
    cells = plan(spec)
    check = finished_ok or (_finished_ok if train_fn is None else _config_only)
    set_aside = {(c.name, c.seed) for c in cells if _adopt(c, spec.name, check)}
    todo = [c for c in cells if c.status != "done"]
    outcomes = {
        (c.name, c.seed): CellOutcome(c.name, c.seed, c.run_dir, "done", "skipped")
        for c in cells
        if c.status == "done"
    }
    bar = tqdm(
        total=len(cells),
        initial=len(outcomes),
        desc=f"sweep {spec.name}",
        unit="run",
        disable=not progress,
    )

    def record(
        cell: SweepCell, status: str, result: dict | None, error: str = "", details: str = ""
    ) -> None:
        status = "corrupt" if (cell.name, cell.seed) in set_aside else status
        outcome = CellOutcome(
            cell.name,
            cell.seed,
            cell.run_dir,
            status,
            result["outcome"] if result else "failed",
            result["seconds"] if result else 0.0,
            error,
            details,
        )
        outcomes[(cell.name, cell.seed)] = outcome
        bar.update(1)
        bar.set_postfix_str(f"{cell.name} seed {cell.seed}: {outcome.outcome}")
        if outcome.outcome == "failed":
            tqdm.write(f"[sweep] FAILED {cell.name} seed {cell.seed} ({cell.run_dir}): {error}")
            if fail_fast:
                raise AmbError(f"sweep {spec.name}: {cell.run_dir} failed (fail_fast): {error}")

    try:
        if mode == "here":
            _run_here(spec, todo, train_fn, record)
        elif mode == "persistent":
            _run_persistent(spec, todo, max_parallel, train_fn, record, cost)
        elif mode == "fresh":
            _run_submitit(spec, todo, "local", max_parallel, train_fn, record, cost)
        else:
            _run_submitit(spec, todo, cluster, max_parallel, train_fn, record, cost)
    finally:
        bar.close()
    ordered = [outcomes[(c.name, c.seed)] for c in cells if (c.name, c.seed) in outcomes]
    return SweepResult(spec, ordered)


def _local_mode(backend: str, workers: str | None, max_parallel: int | None) -> str | None:
    """How the local backend runs its cells (``WORKERS``); None for the submitit backend."""
    if workers is not None and workers not in WORKERS:
        raise AmbError(f"unknown sweep workers {workers!r}; valid: {', '.join(WORKERS)}")
    if backend != "local":
        if workers is not None:
            raise AmbError(
                f"workers={workers!r} is an option of the local backend, not of {backend!r}"
            )
        return None
    if workers is not None:
        return workers
    return "persistent" if max_parallel is not None and max_parallel > 1 else "here"


def _slots(max_parallel: int | None) -> list[int | None]:
    """One slot per visible GPU (at most ``max_parallel``), else ``max_parallel`` CPU slots."""
    gpus = _visible_gpus()
    slots: list[int | None] = list(gpus) if gpus else [None] * (max_parallel or 1)
    return slots[:max_parallel] if max_parallel else slots


def _run_persistent(
    spec: SweepSpec,
    todo: list[SweepCell],
    max_parallel: int | None,
    train_fn: TrainFn | None,
    record: Callable[..., None],
    cost: Callable[[SweepCell], float] | None,
) -> None:
    """The local backend with worker processes: one per slot, each for cell after cell
    (``ambcore.sweep_workers``), costliest cells first when ``cost`` is given."""
    statuses = {(c.name, c.seed): c.status for c in todo}
    queue = sorted(todo, key=cost, reverse=True) if cost else list(todo)  # stable: spec order

    def report(cell: SweepCell, outcome: tuple) -> None:
        status = statuses[(cell.name, cell.seed)]
        if outcome[0] == "ok":
            record(cell, status, outcome[1])
        else:
            record(cell, status, None, outcome[1], outcome[2])

    run_on_workers(
        queue,
        run_cell,
        lambda cell: _cell_args(cell, spec),
        {"train_fn": train_fn},
        _slots(max_parallel),
        spec.runs_dir / "_workers",
        report,
    )


def _run_here(
    spec: SweepSpec, todo: list[SweepCell], train_fn: TrainFn | None, record: Callable[..., None]
) -> None:
    """The local backend: one cell after another in this process."""
    for cell in todo:
        status = cell.status
        try:
            result = run_cell(*_cell_args(cell, spec), train_fn=train_fn)
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            message = " ".join(traceback.format_exception_only(exc)[-1].split())
            record(cell, status, None, message[:400], _short_traceback())
        else:
            record(cell, status, result)


def _adopt(cell: SweepCell, sweep_name: str, finished_ok: FinishedCheck) -> bool:
    """Check a DONE folder before the sweep skips it. One that does not check out is set
    aside (and the cell trained again): returns True. A finished run trained outside the sweep
    (e.g. by the training chapter into the cell's folder) gets its ``sweep.json``, so that
    ``ambcore.report`` groups it with the other seeds; one of another config is refused."""
    if not runs.is_done(cell.run_dir):
        return False
    saved, _ = _read_config_json(runs.RunPaths(cell.run_dir).config)
    diff = list(runs.config_diff(saved, cell.cfg)) if isinstance(saved, dict) else []
    if diff:
        raise AmbError(
            f"{cell.run_dir}: a finished run with another config than cell {cell.name!r} "
            f"(differs in {', '.join(diff[:8])}); move it away or choose another runs_dir"
        )
    problem = finished_ok(cell.run_dir, cell.cfg)
    if problem:
        aside = _set_aside(cell.run_dir, problem)
        if aside is not None:
            tqdm.write(
                f"[sweep] {cell.run_dir}: marked DONE but {problem}; "
                f"moved to {aside.name}, training it again"
            )
        return aside is not None
    if not (cell.run_dir / CELL_FILE).exists():
        runs.write_json(
            cell.run_dir / CELL_FILE,
            {
                "sweep": sweep_name,
                "cell": cell.name,
                "seed": cell.seed,
                "overrides": cell.overrides,
                "adopted": True,
            },
        )
    return False


def _cell_args(cell: SweepCell, spec: SweepSpec) -> tuple:
    return (cell.cfg.to_dict(), str(cell.run_dir), cell.name, cell.overrides, spec.name)


def _short_traceback(limit: int = 12) -> str:
    lines = traceback.format_exc().rstrip().splitlines()
    return "\n".join(lines[-limit:])


def _job_error_line(message: str) -> str:
    """The exception line of a submitit job's error: the last line of the trace between its
    dashed rules, else the message's first line."""
    lines = [line.strip() for line in message.splitlines()]
    rules = [i for i, line in enumerate(lines) if len(line) > 3 and set(line) == {"-"}]
    body = lines[rules[0] + 1 : rules[1]] if len(rules) >= 2 else lines[:1]
    body = [line for line in body if line]
    return (body[-1] if body else "the job failed")[:400]


def _visible_gpus() -> list[int]:
    try:
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
    # lazy: only the submitit backend needs submitit; every sweep worker imports this module
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
            details = "\n".join(str(exc).rstrip().splitlines()[-12:])
            error = f"{_job_error_line(str(exc))} (job logs: {job.paths.folder})"
            record(cell, statuses[(cell.name, cell.seed)], None, error, details)
        else:
            record(cell, statuses[(cell.name, cell.seed)], result)

    if cluster == "slurm":  # one job array; SLURM queues it (slurm_array_parallelism)
        with interrupt.unwatched(), executor.batch():  # the jobs outlive this process
            jobs = [executor.submit(run_cell, *_cell_args(c, spec), train_fn) for c in todo]
        by_job = {id(j): c for j, c in zip(jobs, todo)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=30):
            collect(job, by_job[id(job)])
        return
    with interrupt.watched():  # the jobs end with this process, even after a kill -9
        _run_local_jobs(spec, executor, todo, max_parallel, train_fn, collect, cost)


def _run_local_jobs(
    spec: SweepSpec,
    executor: Any,
    todo: list[SweepCell],
    max_parallel: int | None,
    train_fn: TrainFn | None,
    collect: Callable[..., None],
    cost: Callable[[SweepCell], float] | None,
) -> None:
    """Local subprocesses: at most one cell per GPU at a time (or max_parallel on the CPU).
    Whatever ends this early (Ctrl-C, SIGTERM, fail_fast) first stops the running jobs."""
    slots = _slots(max_parallel)
    queue = sorted(todo, key=cost, reverse=True) if cost else list(todo)  # stable: spec order
    running: list[tuple[Any, SweepCell, int | None]] = []
    try:
        while queue or running:
            while queue and slots:
                gpu = slots.pop(0)
                cell = queue.pop(0)
                if gpu is None:
                    executor.update_parameters(gpus_per_node=0)
                else:
                    executor.update_parameters(gpus_per_node=1, visible_gpus=[gpu])
                with interrupt.signals_ignored([signal.SIGINT]):  # inherited: see there
                    job = executor.submit(run_cell, *_cell_args(cell, spec), train_fn)
                running.append((job, cell, gpu))
            time.sleep(0.2)
            for entry in [r for r in running if r[0].done()]:
                running.remove(entry)
                job, cell, gpu = entry
                slots.append(gpu)
                collect(job, cell)
    except BaseException:
        controllers = [p.pid for job, _, _ in running if (p := getattr(job, "_process", None))]
        with interrupt.signals_ignored():  # submitit's tasks ignore SIGTERM: a short grace
            interrupt.kill_tree(controllers, include_root=True, grace=0.5)
        raise
