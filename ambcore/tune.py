"""Hyper-parameter tuning on the validation split only, the same budget for every model
(thesis 6.3.1, "Setup"; the thesis tuned AMB and took the baselines' published settings).

One Optuna study per cell of a sweep spec: a TPE sampler proposes values from the model's
search space (``experiments/search_space.yaml``: ranges with a reason each, the learning rate
log-uniform around the cell's recipe value), a median pruner stops a trial whose validation MAE
after an epoch is worse than the median of the earlier trials at that epoch, and every cell gets
the same number of trials and the same epoch budget (checked: the cells' ``max_epochs`` and
``patience`` must agree).

**The test split is never read while tuning.** The objective receives a dataset that holds
only the train and validation splits (``train_valid_only``); the trainer, given no test split,
writes no test metric and no test predictions (``metrics.json`` says ``valid_only``). A trial's
score is its best validation MAE.

**Resuming.** The study lives in a journal file under the runs folder
(``<runs_dir>/<cell>/study.journal``, Optuna's ``JournalStorage``): a killed study, started
again, keeps its finished trials (complete or pruned) and runs only the missing ones, up to
``n_trials`` finished. A trial that was running in a process that no longer exists (same host,
dead pid) is marked failed and its values are queued again; its run folder is named by its
values, so the repeated trial resumes the killed run from its last epoch. Several processes or
machines can work on one study (a shared journal file), each counting towards ``n_trials``.

Spec file (YAML)::

    name: tune_smoke
    sweep: ablation_smoke.yaml   # the cells (and their recipes), relative to this file
    cells: [amb, amb-ft, misa]   # optional: a subset of the sweep's cells
    space: search_space.yaml     # search spaces per model, relative to this file
    n_trials: 3                  # finished trials per cell (complete or pruned)
    seed: 100                    # the training seed of every trial and the sampler's seed:
                                 # never one of the sweep's (evaluation) seeds
    runs_dir: smoke-tune         # relative to the runs folder (AMB_RUNS)
    pruner: {n_startup_trials: 2, n_warmup_steps: 1}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ambcore import paths, runs
from ambcore.config import Config, config_from_dict
from ambcore.data import load_dataset
from ambcore.errors import AmbError
from ambcore.sweep import (
    MAX_SEED,
    check_inside,
    check_name,
    confined_runs_dir,
    load_spec,
    plan,
    read_spec_file,
    show,
)

__all__ = [
    "SPEC_KEYS",
    "MAX_TRIALS",
    "Range",
    "TuneSpec",
    "load_tune_spec",
    "load_space",
    "train_valid_only",
    "suggest",
    "run_study",
    "tune",
    "trials_frame",
    "write_record",
    "fingerprint",
    "ensure_record",
    "set_aside",
    "check_journal",
    "check_trial_values",
    "optuna_log",
    "JournalLock",
    "record_summary",
    "trials_figure",
    "spec_for_preset",
    "book_record",
    "record_name",
    "record_status",
    "current_record",
    "chosen_values",
]

# Bumped when the way trials are chosen changes (a record of an older tuner is stale):
# 2 = the recipe's own values are every study's first trial;
# 3 = that first trial is the recipe exactly (every parameter, none left to the sampler), and a
#     cell may have a search space of its own (``cells:`` in the space file).
TUNER_VERSION = 3
SPEC_KEYS = ("name", "sweep", "cells", "space", "n_trials", "seed", "runs_dir", "pruner")
PRUNER_KEYS = ("n_startup_trials", "n_warmup_steps")
MAX_TRIALS = 1000  # finished trials per cell; a study of the paper has a few dozen
STUDY_FILE = "study.journal"
FINGERPRINT_FILE = "study.fingerprint"  # the spec's fingerprint, beside its journal
LOG_FILE = "optuna.log"  # Optuna's messages of a study (the terminal gets one line per cell)


# ---- the spec and the search spaces ----------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """One hyper-parameter's range: ``[low, high]`` or, with ``factor``, ``[recipe / factor,
    recipe * factor]`` around the cell's own value (the recipe's); ``log``: log-uniform."""

    name: str
    low: float | None
    high: float | None
    log: bool
    factor: float | None
    reason: str

    def bounds(self, cfg: Config) -> tuple[float, float]:
        if self.factor is None:
            return float(self.low), float(self.high)
        centre = recipe_value(cfg, self.name)
        return centre / self.factor, centre * self.factor


def recipe_value(cfg: Config, name: str) -> float:
    """The value of ``name`` that ``cfg`` trains with: its field, except ``new_params_lr`` = 0,
    which means "the same as ``lr``" (``ambcore.train.make_optimizer``) and is ``cfg.lr``."""
    if name == "new_params_lr" and float(cfg.new_params_lr) == 0:
        return float(cfg.lr)
    return float(getattr(cfg, name))


def space_of(
    space: Mapping[str, Mapping[str, Range]], cell: str, cfg: Config
) -> Mapping[str, Range]:
    """The search space of ``cell``: its own (``cells:`` of the space file), else its model's."""
    return space[cell] if cell in space else space[cfg.model]


@dataclass(frozen=True)
class TuneSpec:
    name: str
    preset: str
    cells: tuple[tuple[str, Config], ...]  # (cell, its config at the tuning seed)
    space: dict[str, dict[str, Range]]  # model -> parameter -> range
    n_trials: int
    seed: int
    runs_dir: Path
    pruner: dict[str, int] = field(default_factory=dict)
    source: str = "<dict>"


def load_space(path: str | os.PathLike) -> dict[str, dict[str, Range]]:
    """``model or cell -> {parameter: Range}`` from a search-space file; every range needs a
    reason. ``models:`` holds a space per model; ``cells:`` (optional) a space for one cell
    that trains parameters its model's other cells do not (AMB-FT's fine-tuned PLM layers,
    MISA-Adapters' adapters). A cell's own space wins over its model's (``space_of``). A value
    of the wrong type (a file that is not a mapping, a bound that is not a number, a parameter
    that is not a numeric config field) is one error naming file, key and value."""
    path = Path(path)
    if not path.is_file():
        raise AmbError(f"search space {path} does not exist")
    data = read_spec_file(path, kind="search space")
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        raise AmbError(
            f"{path}: expected a mapping 'models: {{model: {{parameter: range}}}}', "
            f"got models = {show(models)}"
        )
    cells = data.get("cells") or {}
    if not isinstance(cells, Mapping):
        raise AmbError(
            f"{path}: cells = {show(cells)}: expected a mapping {{cell: {{parameter: range}}}}"
        )
    clash = sorted(set(models) & set(cells))
    if clash:
        raise AmbError(f"{path}: {clash} named under both 'models' and 'cells'")
    space: dict[str, dict[str, Range]] = {}
    for section, owner, params in [
        *(("models", m, p) for m, p in models.items()),
        *(("cells", c, p) for c, p in cells.items()),
    ]:
        if params is not None and not isinstance(params, Mapping):
            raise AmbError(
                f"{path}: {section}.{owner} = {show(params)}: expected a mapping "
                "{parameter: range}"
            )
        space[str(owner)] = {}
        for name, spec in (params or {}).items():
            space[str(owner)][name] = _range(name, spec, f"{path}: {section}.{owner}.{name}")
    return space


_RANGE_KEYS = ("low", "high", "factor", "log", "reason")


def _range(name: Any, spec: Any, where: str) -> Range:
    """One range of a search-space file, checked (``where`` names file and key)."""
    default = Config()
    if name not in Config.__dataclass_fields__:
        raise AmbError(f"{where}: not a config field")
    value = getattr(default, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AmbError(
            f"{where}: config field {name!r} is not a number ({show(value)}); only "
            "numeric fields can be tuned"
        )
    if (
        not isinstance(spec, Mapping)
        or not isinstance(spec.get("reason"), str)
        or not spec["reason"].strip()
    ):
        raise AmbError(
            f"{where}: a range needs 'reason' (why this range) and bounds, got {show(spec)}"
        )
    unknown = sorted(map(str, set(spec) - set(_RANGE_KEYS)))
    if unknown:
        raise AmbError(f"{where}: unknown key(s) {unknown}; valid: {list(_RANGE_KEYS)}")
    low, high, factor = (_bound(spec.get(k), f"{where}.{k}") for k in ("low", "high", "factor"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise AmbError(f"{where}.log = {show(log)}: expected true or false")
    if factor is None and (low is None or high is None or not low < high):
        raise AmbError(
            f"{where}: give low < high, or factor (around the recipe's value); got "
            f"low = {show(spec.get('low'))}, high = {show(spec.get('high'))}"
        )
    if factor is not None and (low is not None or high is not None):
        raise AmbError(f"{where}: give either low and high or factor, not both")
    if factor is not None and factor <= 1:
        raise AmbError(f"{where}: factor must be > 1, got {spec['factor']}")
    if log and factor is None and low <= 0:
        raise AmbError(f"{where}: a log range needs low > 0, got low = {show(spec['low'])}")
    return Range(name, low, high, log, factor, spec["reason"].strip())


def _bound(value: Any, where: str) -> float | None:
    """A finite number (YAML 1.1 reads ``1e-5`` as a string: numeric strings are numbers)."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise AmbError(f"{where} = {show(value)}: expected a number") from None
    if not math.isfinite(number):
        raise AmbError(f"{where} = {show(value)}: expected a finite number")
    return number


def load_tune_spec(
    path: str | os.PathLike, runs_dir: str | os.PathLike | None = None, max_trials: int = MAX_TRIALS
) -> TuneSpec:
    """Parse and check a tuning spec (module docstring): cells, spaces, the common budget.

    ``runs_dir`` replaces the spec's (the command's ``--runs-dir``); the spec's own must stay
    inside the runs folder, exactly as a sweep's (``ambcore.sweep.confined_runs_dir``).
    ``max_trials``: the most trials per cell accepted (``--max-trials``)."""
    path = Path(path)
    if not path.is_file():
        raise AmbError(f"tuning spec {path} does not exist")
    data = _read_tune_spec(path)
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise AmbError(f"{path}: unknown tuning spec key(s) {unknown}; valid: {list(SPEC_KEYS)}")
    for key in ("sweep", "space", "n_trials"):
        if key not in data:
            raise AmbError(f"{path}: missing key {key!r}")
    _check_spec_fields(data, path, max_trials)
    n_trials, seed = data["n_trials"], data.get("seed", 0)
    sweep = load_spec(path.parent / data["sweep"])
    if int(seed) in sweep.seeds:
        raise AmbError(
            f"{path}: seed {seed} is one of the evaluation seeds of {data['sweep']} "
            f"({list(sweep.seeds)}); the tuning seed must be another, or the chosen "
            "trial is the very run the tables then report"
        )
    by_cell = {c.name: c.cfg for c in plan(sweep) if c.seed == sweep.seeds[0]}
    wanted = data.get("cells") or list(by_cell)
    missing = [c for c in wanted if c not in by_cell]
    if missing:
        raise AmbError(
            f"{path}: cell(s) {missing} are not in {data['sweep']}; it has {list(by_cell)}"
        )
    cells = tuple((c, config_from_dict({**by_cell[c].to_dict(), "seed": seed})) for c in wanted)
    space = load_space(path.parent / data["space"])
    _check_budget(cells, space, path)
    _check_ranges(cells, space, path)
    name = str(data.get("name") or path.stem)
    root = _confined_root(data, name, path, runs_dir, [c for c, _ in cells])
    return TuneSpec(
        name,
        sweep.preset,
        cells,
        space,
        n_trials,
        int(seed),
        root,
        dict(data.get("pruner") or {}),
        str(path),
    )


def _read_tune_spec(path: Path) -> dict[str, Any]:
    """The spec file as a mapping: bounded in size, YAML without aliases (``ambcore.sweep``)."""
    return read_spec_file(path, kind="tuning spec")


def _check_spec_fields(data: Mapping[str, Any], source: Path, max_trials: int) -> None:
    """Every field of a tuning spec of the type it needs, in one line naming file, key and value
    (``runs_dir`` is checked by ``_confined_root``)."""
    if type(max_trials) is not int or max_trials < 1:
        raise AmbError(f"max_trials must be a positive integer, got {show(max_trials)}")
    if "name" in data:
        check_name(data["name"], str(source), "name")
    for key in ("sweep", "space"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise AmbError(
                f"{source}: {key} = {show(data[key])}: expected a file name (relative to the spec)"
            )
    cells = data.get("cells")
    if cells is not None:
        if not isinstance(cells, list) or not cells or not all(isinstance(c, str) for c in cells):
            raise AmbError(
                f"{source}: cells = {show(cells)}: expected a non-empty list of cell names"
            )
        repeated = sorted({c for c in cells if cells.count(c) > 1})
        if repeated:
            raise AmbError(f"{source}: cells = {show(cells)}: {repeated} listed twice")
    n_trials = data["n_trials"]
    if type(n_trials) is not int or n_trials < 1:  # bools and floats are refused
        raise AmbError(f"{source}: n_trials = {show(n_trials)}: expected a positive integer")
    if n_trials > max_trials:
        raise AmbError(
            f"{source}: n_trials = {n_trials}: at most {max_trials} trials per cell "
            "allowed (raise it with --max-trials if this is intended)"
        )
    seed = data.get("seed", 0)
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise AmbError(f"{source}: seed = {show(seed)}: expected an integer from 0 to {MAX_SEED}")
    pruner = data.get("pruner") or {}
    if not isinstance(pruner, Mapping):
        raise AmbError(
            f"{source}: pruner = {show(pruner)}: expected a mapping {{{', '.join(PRUNER_KEYS)}}}"
        )
    for key, value in pruner.items():
        if key not in PRUNER_KEYS:
            raise AmbError(f"{source}: pruner.{key}: unknown key; valid: {list(PRUNER_KEYS)}")
        if type(value) is not int or value < 0:
            raise AmbError(
                f"{source}: pruner.{key} = {show(value)}: expected a non-negative integer"
            )


def _confined_root(
    data: Mapping[str, Any],
    name: str,
    source: Path,
    runs_dir: str | os.PathLike | None,
    cells: list[str],
) -> Path:
    """The studies' folder, confined as a sweep's: ``runs_dir`` (the command line's) if given,
    else the spec's ``runs_dir`` (or its name) inside the runs folder (no ``..``, no absolute
    path, no symlink leading out); no cell's study folder a symlink out of it."""
    root = confined_runs_dir(data, name, str(source), runs_dir)
    check_inside(root, cells, [], str(source), owner="study")
    return root


def _check_budget(cells, space, source) -> None:
    """The same epoch budget for every cell, and a search space for each cell's model."""
    budgets = {(cfg.max_epochs, cfg.patience) for _, cfg in cells}
    if len(budgets) > 1:
        listed = ", ".join(
            f"{c}: max_epochs={g.max_epochs} patience={g.patience}" for c, g in cells
        )
        raise AmbError(
            f"{source}: the cells have different epoch budgets ({listed}); tuning "
            "compares models only on the same budget"
        )
    for cell, cfg in cells:
        if cell not in space and cfg.model not in space:
            raise AmbError(f"{source}: no search space for model {cfg.model!r} (cell {cell!r})")
        for name, rng in space_of(space, cell, cfg).items():
            low, high = rng.bounds(cfg)
            value = recipe_value(cfg, name)
            if not low <= value <= high:
                raise AmbError(
                    f"{source}: cell {cell!r}: its recipe's {name}={value:g} lies outside "
                    f"its range [{low:g}, {high:g}]; the first trial is the recipe, so "
                    "the range must contain it"
                )


def _check_ranges(cells, space, source) -> None:
    """Each cell's ranges are usable at its own values: a ``factor`` range around a recipe
    value of 0 (or below) is empty, a log range needs positive bounds."""
    for cell, cfg in cells:
        for name, rng in space_of(space, cell, cfg).items():
            low, high = rng.bounds(cfg)
            if not low < high or (rng.log and low <= 0):
                raise AmbError(
                    f"{source}: cell {cell!r}: the range of {name} is [{low:g}, "
                    f"{high:g}] at its value {getattr(cfg, name)!r}; give low and "
                    "high for it in the search space"
                )


# ---- one study -------------------------------------------------------------------------------


def train_valid_only(dataset):
    """The dataset without its test split: what the tuner's objective receives."""
    return replace(dataset, splits={k: dataset.splits[k] for k in ("train", "valid")})


def suggest(trial, space: Mapping[str, Range], cfg: Config) -> dict[str, float]:
    """The trial's values for every parameter of ``space`` (bounds from ``cfg`` where relative)."""
    values = {}
    for name, r in space.items():
        low, high = r.bounds(cfg)
        values[name] = trial.suggest_float(name, low, high, log=r.log)
    return values


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(worker: str | None) -> bool:
    """Whether ``worker`` (host:pid) ran on this host and its process is gone."""
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _requeue_stale(study) -> int:
    """Trials of killed processes on this host (left RUNNING) are marked failed; those and the
    trials that Ctrl-C or SIGTERM stopped (failed, marked ``interrupted``) are queued again,
    once, with their values and their recipe mark. Returns how many were queued."""
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    stale = [
        t for t in trials if t.state == state.RUNNING and _dead_here(t.user_attrs.get("worker"))
    ]
    for t in stale:
        study.tell(t.number, state=state.FAIL)
    queued = {t.user_attrs.get("requeued_from") for t in trials}
    stopped = [t for t in trials if t.state == state.FAIL and t.user_attrs.get("interrupted")]
    again = [t for t in stale + stopped if t.number not in queued]
    for t in again:
        recipe = {"recipe": True} if t.user_attrs.get("recipe") else {}
        study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number, **recipe})
    return len(again)


def _open_study(spec: TuneSpec, cell: str, cell_dir: Path):
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    cell_dir.mkdir(parents=True, exist_ok=True)
    check_journal(spec, cell_dir)
    storage = _load_journal(cell_dir)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=int(spec.pruner.get("n_startup_trials", 2)),
        n_warmup_steps=int(spec.pruner.get("n_warmup_steps", 1)),
    )
    # The sampler's seed depends on the trials already in the study: a resumed study does not
    # propose the values of its first trials again, and the same history gives the same values.
    known = optuna.create_study(
        storage=storage, study_name=cell, direction="minimize", load_if_exists=True
    )
    seed = (
        spec.seed
        + zlib.crc32(cell.encode()) % 10_000
        + 10_007 * len(known.get_trials(deepcopy=False))
    )
    return optuna.create_study(
        storage=storage,
        study_name=cell,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
        load_if_exists=True,
    )


# ---- the journal: its lock, its fingerprint, damage ------------------------------------------


class JournalLock(runs.FileLock):
    """The journal's lock: the ``runs.FileLock`` on ``<journal>.flock``, held while a process
    appends.

    The kernel releases it when its holder dies, so a ``kill -9`` during an append leaves
    nothing for the next process to wait out (Optuna's default lock, a symlink, is waited on
    for 30 s and then broken). Linux NFS clients map ``flock`` to NFS byte-range locks, so
    processes on several machines sharing a journal still exclude each other."""

    def __init__(self, journal: str | os.PathLike):
        super().__init__(f"{journal}.flock")


def _say(message: str) -> None:
    """One line on stderr: what the tuner repaired or set aside."""
    print(f"tune: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _journal_storage(journal: Path):
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalLock(journal)))


def check_journal(spec: TuneSpec, cell_dir: Path, say: Callable[[str], None] = _say) -> str:
    """Before a cell's study is opened: its journal is of this spec and readable.

    - A journal whose stored fingerprint (``study.fingerprint``, the record's ``fingerprint``
      of the spec that made it) is not this spec's, or that has none, is set aside with its
      trial folders (``study.journal.stale-N``, ``trial-*.stale-N``): it is never extended.
    - A last line without its newline (what a process killed during an append leaves) is
      dropped; the trial it described is then unfinished and runs again.
    - A journal with a line that is not a journal entry is set aside (``study.journal.corrupt-N``)
      and the study starts afresh; its trial folders stay (a trial with the same values reads
      its finished folder back).

    Each is one line through ``say``. Returns ``"new"``, ``"ok"``, ``"stale"``, ``"cut"`` or
    ``"corrupt"``. Runs under the journal's lock, so a live process's append is never cut."""
    journal, stamp = cell_dir / STUDY_FILE, cell_dir / FINGERPRINT_FILE
    wanted = fingerprint(spec)
    with JournalLock(journal):
        if not journal.exists() or journal.stat().st_size == 0:
            outcome = "new"
        else:
            found = stamp.read_text(encoding="utf-8").strip() if stamp.exists() else None
            if found != wanted:
                aside = _set_journal_aside(cell_dir, "stale", trials=True)
                say(
                    f"{journal}: made for another spec (fingerprint {found or 'not stored'}, "
                    f"this spec's {wanted}); set aside as {aside.name} with its trial folders; "
                    "the study starts afresh"
                )
                outcome = "stale"
            else:
                outcome = _repair_journal(journal, say)
        if not stamp.exists() or stamp.read_text(encoding="utf-8").strip() != wanted:
            runs.atomic_write_text(stamp, wanted + "\n")
    return outcome


def _repair_journal(journal: Path, say: Callable[[str], None]) -> str:
    """``"ok"``, or drop a cut last line (``"cut"``), or set an unreadable journal aside
    (``"corrupt"``). The caller holds the lock."""
    data = journal.read_bytes()
    end = data.rfind(b"\n") + 1
    body, tail = data[:end], data[end:]
    for number, line in enumerate(body.splitlines(), 1):
        problem = _entry_problem(line)
        if problem:
            return _journal_corrupt(journal, f"line {number} {problem}", say)
    if not tail:
        return "ok"
    if not tail.startswith(b"{"):
        why = f"its last line is not a journal entry ({tail[:40]!r})"
        return _journal_corrupt(journal, why, say)
    with open(journal, "r+b") as fh:
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
    say(
        f"{journal}: its last line was cut ({len(tail)} bytes without an end: a process stopped "
        "during a write); dropped it; the trial it described runs again"
    )
    return "cut"


def _entry_problem(line: bytes) -> str | None:
    """Why ``line`` is not an entry of Optuna's journal (a JSON object with an ``op_code``)."""
    try:
        entry = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"is not JSON ({' '.join(str(exc).split())[:80]})"
    if not isinstance(entry, dict) or "op_code" not in entry:
        return f"is not a journal entry ({line[:40]!r})"
    return None


def _journal_corrupt(journal: Path, why: str, say: Callable[[str], None]) -> str:
    aside = _set_journal_aside(journal.parent, "corrupt", trials=False)
    say(
        f"{journal}: cannot be read ({why}); set aside as {aside.name}; the study starts afresh "
        "(its trial folders stay: a trial of the same values reads its finished folder back)"
    )
    return "corrupt"


def _set_journal_aside(cell_dir: Path, kind: str, trials: bool) -> Path:
    """Rename the journal (with ``trials`` also its fingerprint and the trial folders, which
    belong to another spec) to ``<name>.<kind>-N``, the first N free for all of them. Returns
    the journal's new path."""
    moving = [cell_dir / STUDY_FILE]
    if trials:
        moving.append(cell_dir / FINGERPRINT_FILE)
        moving += sorted(p for p in cell_dir.glob("trial-*") if p.is_dir() and "." not in p.name)
    moving = [p for p in moving if p.exists()]
    n = 1
    while any(
        p.with_name(f"{p.name}.{kind}-{n}").exists() for p in [*moving, cell_dir / STUDY_FILE]
    ):
        n += 1
    for p in moving:
        os.replace(p, p.with_name(f"{p.name}.{kind}-{n}"))
    return cell_dir / f"{STUDY_FILE}.{kind}-{n}"


def _load_journal(cell_dir: Path):
    """The journal's storage; a journal whose entries Optuna cannot replay (lines of JSON that
    are no valid history) is set aside as corrupt and a new one started, in one line."""
    journal = cell_dir / STUDY_FILE
    try:
        return _journal_storage(journal)
    except OSError:  # a file that cannot be read or written is not a damaged journal
        raise
    except Exception as exc:  # noqa: BLE001 - Optuna's replay raises what the entries cause
        with JournalLock(journal):
            _journal_corrupt(journal, f"Optuna cannot replay it: {type(exc).__name__}: {exc}", _say)
        return _journal_storage(journal)


def recipe_point(space: Mapping[str, Range], cfg: Config) -> dict[str, float]:
    """The cell's own values (its recipe's, or the preset's for AMB) of every parameter of
    ``space``: the first trial of every study, so that the chosen values are never worse on
    validation than the starting point. The trial trains exactly the recipe (``recipe_value``:
    a ``new_params_lr`` of 0 is ``lr``, the same optimizer); ``load_tune_spec`` has checked
    that every value lies in its range."""
    return {name: recipe_value(cfg, name) for name in space}


def _enqueue_recipe(study, space: Mapping[str, Range], cfg: Config) -> None:
    """Queue ``recipe_point`` as the study's first trial (once: not when the study has any)."""
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(recipe_point(space, cfg), user_attrs={"recipe": True})


def _finished(study) -> int:
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_study(
    spec: TuneSpec,
    cell: str,
    cfg: Config,
    train_fn: Callable | None = None,
    dataset=None,
    stop_after: int | None = None,
):
    """Run (or resume) the study of ``cell`` until it has ``spec.n_trials`` finished trials.

    ``train_fn`` defaults to ``ambcore.train.train_and_evaluate``; ``dataset`` to ``cfg.data``,
    loaded and stripped of its test split here. ``stop_after``: run at most this many trials in
    this call (the resume test stops a study on purpose). Returns the Optuna study.
    """
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    if train_fn is None:
        # lazy: the trainer (transformers) loads only when a trial trains
        from ambcore.train import train_and_evaluate as train_fn
    if dataset is None:
        dataset = load_dataset(cfg.data, cfg)
    data = train_valid_only(dataset)
    cell_dir = spec.runs_dir / cell
    cell_dir.mkdir(parents=True, exist_ok=True)
    with optuna_log(cell_dir):
        study = _open_study(spec, cell, cell_dir)
        _requeue_stale(study)
        space = space_of(spec.space, cell, cfg)
        _enqueue_recipe(study, space, cfg)

        def objective(trial) -> float:
            return _objective(trial, cfg, space, cell_dir, data, train_fn)

        remaining = spec.n_trials - _finished(study)
        if remaining > 0:
            budget = remaining if stop_after is None else min(remaining, stop_after)
            states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            study.optimize(
                objective,
                n_trials=budget,
                catch=(),
                callbacks=[optuna.study.MaxTrialsCallback(spec.n_trials, states=states)],
            )
    return study


@contextlib.contextmanager
def optuna_log(cell_dir: Path) -> Iterator[Path]:
    """Inside the block Optuna's messages (every trial's outcome; the traceback of a trial that
    Ctrl-C or SIGTERM stopped) go to ``<cell>/optuna.log``, not to the terminal, which gets the
    tuner's own lines and the command's one-line resume hint."""
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    path = cell_dir / LOG_FILE
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("optuna")
    level = optuna.logging.get_verbosity()
    optuna.logging.disable_default_handler()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        optuna.logging.set_verbosity(max(level, optuna.logging.WARNING))
        optuna.logging.enable_default_handler()


def _objective(trial, base: Config, space, cell_dir: Path, data, train_fn) -> float:
    """Train one trial on train, score it on valid (``data`` has no test split)."""
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    values = suggest(trial, space, base)
    trial.set_user_attr("worker", _worker())
    cfg = config_from_dict({**base.to_dict(), **values})
    key = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    run_dir = cell_dir / f"trial-{key}"
    trial.set_user_attr("run_dir", run_dir.name)
    reported: set[int] = set()

    def on_epoch_end(epoch: int) -> None:
        history = runs.read_history(run_dir)
        for e, mae in zip(history["epoch"], history["valid_mae"]):
            if int(e) not in reported:
                trial.report(float(mae), int(e))
                reported.add(int(e))
        if trial.should_prune():
            raise optuna.TrialPruned(f"valid MAE at epoch {epoch} is behind the median")

    try:
        result = train_fn(
            cfg, run_dir, progress=False, resume=True, on_epoch_end=on_epoch_end, dataset=data
        )
    except KeyboardInterrupt:  # Optuna marks the trial failed; the next run queues it again
        trial.set_user_attr("interrupted", True)
        raise
    return float(result.valid["mae"])


# ---- all cells, and the record ---------------------------------------------------------------


def tune(
    spec: TuneSpec, train_fn: Callable | None = None, dataset=None, progress: bool = True
) -> dict[str, Any]:
    """Every cell's study (run or resumed). Returns ``{cell: study}``."""
    studies = {}
    for cell, cfg in spec.cells:
        t0 = time.perf_counter()
        studies[cell] = run_study(spec, cell, cfg, train_fn=train_fn, dataset=dataset)
        if progress:
            best = _best(studies[cell])
            print(
                f"tune {cell}: {_finished(studies[cell])} finished trial(s), best valid MAE "
                f"{best['value']:.4f} at {best['params']} ({time.perf_counter() - t0:.0f} s)"
            )
    return studies


def _best(study) -> dict[str, Any]:
    try:
        t = study.best_trial
    except ValueError:
        return {"value": float("nan"), "params": {}, "number": None}
    return {"value": float(t.value), "params": dict(t.params), "number": t.number}


def trials_frame(studies: Mapping[str, Any]) -> pd.DataFrame:
    """One row per trial of every study: cell, number, state, value (best valid MAE; for a pruned
    trial its last reported one), epochs reported, the parameters, the run folder."""
    rows = []
    for cell, study in studies.items():
        for t in study.get_trials(deepcopy=False):
            steps = t.intermediate_values
            value = t.value if t.value is not None else (steps[max(steps)] if steps else None)
            rows.append(
                {
                    "cell": cell,
                    "number": t.number,
                    "state": t.state.name,
                    "value": value,
                    "epochs": len(steps),
                    "valid_mae_by_epoch": json.dumps({int(k): v for k, v in steps.items()}),
                    **{f"param_{k}": v for k, v in t.params.items()},
                    "recipe": bool(t.user_attrs.get("recipe", False)),
                    "run_dir": t.user_attrs.get("run_dir", ""),
                }
            )
    return pd.DataFrame(rows)


def _changed_fields(cfg: Config) -> dict[str, Any]:
    """The config's values that differ from ``Config()``'s: a new field with a default does
    not change a fingerprint, a changed value does."""
    default = Config()
    return {k: v for k, v in cfg.to_dict().items() if v != getattr(default, k)}


def fingerprint(spec: TuneSpec) -> str:
    """What a record must match to be reused: the tuner's version, preset, data, PLM, the cells' configs at the
    tuning seed (their values that differ from the defaults), the search spaces, the number of
    trials and the pruner. (The git revision is recorded but not compared: every commit would
    otherwise invalidate a committed record.)"""
    content = {
        "tuner": TUNER_VERSION,
        "preset": spec.preset,
        "n_trials": spec.n_trials,
        "seed": spec.seed,
        "pruner": spec.pruner,
        "cells": {c: _changed_fields(cfg) for c, cfg in spec.cells},
        "space": {
            m: {n: [r.low, r.high, r.factor, r.log] for n, r in ps.items()}
            for m, ps in spec.space.items()
        },
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def write_record(spec: TuneSpec, studies: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The tuning record (JSON): git revision, date, machine, preset, data, PLM, the budget, the
    search spaces with their reasons, and every trial; the chosen values per cell. Each
    finished trial's value is first checked against its own folder (``check_trial_values``)."""
    check_trial_values(spec, studies)
    cfg = spec.cells[0][1]
    record = {
        "spec": spec.name,
        "fingerprint": fingerprint(spec),
        "preset": spec.preset,
        "data": cfg.data,
        "plm": cfg.plm,
        "models": {cell: c.model for cell, c in spec.cells},
        "git": {
            "revision": runs._git("rev-parse", "HEAD"),
            "dirty": bool(runs._git("status", "--porcelain")),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"hostname": socket.gethostname(), "cpus": os.cpu_count()},
        "n_trials": spec.n_trials,
        "max_epochs": cfg.max_epochs,
        "patience": cfg.patience,
        "seed": spec.seed,
        "space": {
            m: {
                n: {
                    "low": r.low,
                    "high": r.high,
                    "factor": r.factor,
                    "log": r.log,
                    "reason": r.reason,
                }
                for n, r in ps.items()
            }
            for m, ps in spec.space.items()
        },
        "chosen": {cell: _best(study) for cell, study in studies.items()},
        "trials": trials_frame(studies).to_dict("records"),
    }
    return runs.atomic_write_text(Path(path), json.dumps(record, indent=1, default=str) + "\n")


def check_trial_values(spec: TuneSpec, studies: Mapping[str, Any]) -> None:
    """Every finished trial's values in the journal against its trial folder's own
    ``history.csv``: each reported epoch's validation MAE must be that epoch's row, a complete
    trial's value the best validation MAE of its history, a pruned trial's value (Optuna's:
    its last reported one) that epoch's row. A journal that says
    otherwise (edited, or of other runs) is one ``AmbError`` naming the cell and the trial:
    the record would otherwise choose values the runs never reached."""
    # lazy: optuna (heavy) loads only to run or read a study; the tuning records do without
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for cell, study in studies.items():
        for trial in study.get_trials(deepcopy=False, states=finished):
            folder = spec.runs_dir / cell / str(trial.user_attrs.get("run_dir", ""))
            problem = _trial_value_problem(trial, folder)
            if problem:
                raise AmbError(
                    f"{spec.runs_dir / cell / STUDY_FILE}: cell {cell!r} trial "
                    f"{trial.number} ({folder.name or 'no folder'}): {problem}; the "
                    "record is not written (start the study afresh with --retune)"
                )


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _trial_value_problem(trial, folder: Path) -> str | None:
    if not trial.user_attrs.get("run_dir") or not (folder / "history.csv").is_file():
        return "its folder has no history.csv to check its value against"
    try:
        history = runs.read_history(folder)
        by_epoch = {int(e): float(m) for e, m in zip(history["epoch"], history["valid_mae"])}
    except Exception as exc:  # noqa: BLE001 - pandas' errors for a damaged CSV vary
        return f"its history.csv cannot be read ({type(exc).__name__}: {exc})"
    for epoch, value in sorted(trial.intermediate_values.items()):
        if epoch not in by_epoch:
            return (
                f"the journal reports validation MAE {value:.6g} at epoch {epoch}, which its "
                "history.csv does not have"
            )
        if not _close(float(value), by_epoch[epoch]):
            return (
                f"the journal reports validation MAE {value:.6g} at epoch {epoch}, its "
                f"history.csv {by_epoch[epoch]:.6g}"
            )
    if trial.state.name == "PRUNED":  # Optuna gives a pruned trial its last reported value
        last = max(trial.intermediate_values, default=None)
        if (
            trial.value is not None
            and last is not None
            and not _close(float(trial.value), by_epoch[last])
        ):
            return (
                f"the journal says value {trial.value:.6g} for a trial pruned at epoch {last}, "
                f"its history.csv {by_epoch[last]:.6g}"
            )
        return None
    if trial.value is not None:
        finite = {e: m for e, m in by_epoch.items() if math.isfinite(m)}
        if not finite:
            return (
                f"the journal says value {trial.value:.6g}, its history.csv has no finite "
                "validation MAE"
            )
        epoch = min(finite, key=finite.get)
        if not _close(float(trial.value), finite[epoch]):
            return (
                f"the journal says value {trial.value:.6g}, its history.csv's best "
                f"validation MAE is {finite[epoch]:.6g} (epoch {epoch})"
            )
    return None


def set_aside(spec: TuneSpec) -> list[Path]:
    """Move each cell's study folder (journal and trial runs) to ``<cell>.<time>.old`` so that
    the next run starts new studies and trains every trial anew."""
    moved = []
    for cell, _ in spec.cells:
        folder = spec.runs_dir / cell
        if folder.exists():
            target = folder.with_name(f"{cell}.{time.strftime('%Y%m%d-%H%M%S')}.old")
            os.replace(folder, target)
            moved.append(target)
    return moved


def ensure_record(
    spec_path: str | os.PathLike,
    record_path: str | os.PathLike,
    retune: bool = False,
    runs_dir: str | os.PathLike | None = None,
    progress: bool = False,
    train_fn: Callable | None = None,
    dataset=None,
) -> tuple[dict[str, Any], str]:
    """The tuning record of ``spec_path``: read from ``record_path`` when it matches the spec
    (``fingerprint``), else produced by running (or resuming) the studies and written there.
    ``retune``: start the studies afresh (their journals are set aside). Returns the record and
    ``"read"`` or ``"tuned"``."""
    spec = load_tune_spec(spec_path, runs_dir=runs_dir)
    record_path = Path(record_path)
    if record_path.exists() and not retune:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("fingerprint") == fingerprint(spec):
            return record, "read"
    if retune:
        set_aside(spec)
    write_record(
        spec, tune(spec, train_fn=train_fn, dataset=dataset, progress=progress), record_path
    )
    return json.loads(record_path.read_text(encoding="utf-8")), "tuned"


def record_status(record: Mapping[str, Any], said: str) -> str:
    """``said`` (where the record came from) with what produced it: git revision, date, host,
    CPUs, data, PLM and the budget."""
    dirty = " with uncommitted changes" if record["git"].get("dirty") else ""
    return (
        f"{said} (git {str(record['git']['revision'])[:10]}{dirty}, {record['date']}, "
        f"{record['machine']['hostname']}, {record['machine']['cpus']} CPUs; data "
        f"{record.get('data', '?')}, PLM {record.get('plm', '?')}; {record['n_trials']} "
        f"trials of at most {record['max_epochs']} epochs)"
    )


def record_summary(record: Mapping[str, Any]) -> pd.DataFrame:
    """Per cell of a record: model, finished / pruned / failed trials, the chosen values, the
    validation MAE of the recipe's own values (the study's first trial) and of the chosen ones."""
    trials = pd.DataFrame(record["trials"])
    if "recipe" not in trials:
        trials["recipe"] = False
    rows = []
    for cell, chosen in record["chosen"].items():
        mine = trials[trials["cell"] == cell]
        recipe = mine[mine["recipe"].fillna(False).astype(bool)]["value"]
        rows.append(
            {
                "cell": cell,
                "model": record.get("models", {}).get(cell, ""),
                "trials": int(mine["state"].isin(["COMPLETE", "PRUNED"]).sum()),
                "pruned": int((mine["state"] == "PRUNED").sum()),
                "failed": int((mine["state"] == "FAIL").sum()),
                "chosen": ", ".join(f"{k}={v:.3g}" for k, v in chosen["params"].items()),
                "recipe's valid MAE": float(recipe.iloc[0]) if len(recipe) else float("nan"),
                "best valid MAE": chosen["value"],
            }
        )
    return pd.DataFrame(rows)


def trials_figure(record: Mapping[str, Any]):
    """Validation MAE against trial number, one panel per cell (pruned trials hollow, at their
    last reported epoch; the chosen trial starred)."""
    # lazy: matplotlib loads only for this figure
    import matplotlib.pyplot as plt

    trials = pd.DataFrame(record["trials"])
    cells = list(record["chosen"])
    fig, axes = plt.subplots(1, len(cells), figsize=(4 * len(cells), 3.2), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        mine = trials[(trials["cell"] == cell) & trials["value"].notna()]
        for state, style in (
            ("COMPLETE", dict(marker="o")),
            ("PRUNED", dict(marker="o", facecolors="none", edgecolors="C1")),
        ):
            part = mine[mine["state"] == state]
            ax.scatter(part["number"], part["value"], label=state.lower(), **style)
        best = record["chosen"][cell]
        if best["number"] is not None:
            ax.scatter(
                [best["number"]], [best["value"]], marker="*", s=200, color="C3", label="chosen"
            )
        ax.set(title=cell, xlabel="trial", ylabel="best validation MAE")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def record_name(preset: str) -> str:
    return f"tuning_{preset}.json"


_RECORDS: dict[tuple, tuple[dict, Path] | None] = {}


def current_record(preset: str) -> dict[str, Any] | None:
    """The tuning record of ``preset`` that matches its spec (``experiments/tune_<preset>.yaml``):
    the one in the results folder (``AMB_RESULTS``), else the project's committed one; None
    when there is no spec or no matching record (then the cells train at their recipes'
    values)."""
    found = _current_with_path(preset)
    return None if found is None else found[0]


def _current_with_path(preset: str) -> tuple[dict[str, Any], Path] | None:
    spec_path = spec_for_preset(preset)
    if not spec_path.exists():
        return None
    folders = dict.fromkeys(
        [paths.results_dir().resolve(), (paths.PROJECT_ROOT / "results").resolve()]
    )
    candidates = [folder / record_name(preset) for folder in folders]
    inputs = [
        *candidates,
        spec_path,
        *sorted(spec_path.parent.glob("*.yaml")),
    ]  # spec, sweeps, spaces
    key = (preset, *((str(p), p.stat().st_mtime_ns if p.exists() else None) for p in inputs))
    if key not in _RECORDS:
        wanted = fingerprint(load_tune_spec(spec_path))
        found = ((runs.read_json_object(p), p) for p in candidates if p.exists())
        _RECORDS[key] = next((r for r in found if r[0].get("fingerprint") == wanted), None)
    return _RECORDS[key]


def chosen_values(
    record: Mapping[str, Any] | None, cell: str, model: str | None = None
) -> dict[str, Any]:
    """The values a record chose for ``cell``: its own study's when the record tuned that cell,
    else those of the study of ``model`` (the cell named like the model: AMB's variants and
    design alternatives take ``amb``'s values); {} when the record is None or tuned neither."""
    if not record:
        return {}
    chosen = record.get("chosen", {})
    if cell in chosen:
        return dict(chosen[cell].get("params") or {})
    model = model or cell
    tuned = record.get("models", {})
    for name in sorted(tuned, key=lambda c: c != model):  # the cell named like the model first
        if tuned[name] == model:
            return dict(chosen[name].get("params") or {})
    return {}


def spec_for_preset(preset: str) -> Path:
    """The committed tuning spec of ``preset`` (``experiments/tune_<preset>.yaml``)."""
    return paths.PROJECT_ROOT / "experiments" / f"tune_{preset}.yaml"


def book_record(preset: str) -> tuple[dict | None, str]:
    """The record the Ablation chapter shows (``current_record``: the one the runs use) and a
    sentence saying where it came from, or why there is none."""
    spec_path = spec_for_preset(preset)
    if not spec_path.exists():
        return None, f"no tuning spec for the {preset} preset ({spec_path.name} does not exist)"
    found = _current_with_path(preset)
    if found is None:
        return None, (
            f"no record matching experiments/{spec_path.name}: the cells train at "
            f"their recipes' values; `python -m ambcore tune experiments/"
            f"{spec_path.name} --record results/{record_name(preset)}` produces one"
        )
    record, path = found
    where = (
        "the project's results/"
        if path.parent == (paths.PROJECT_ROOT / "results").resolve()
        else "the results folder"
    )
    return record, f"read from {path.name} in {where}"
