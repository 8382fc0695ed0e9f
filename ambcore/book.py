"""The main job: execute the book's chapters with papermill and build it with jupyter-book.

The book (``book/``, configured by the top-level ``_config.yml``) renders papermill-executed copies
of ``notebooks/NN_name.ipynb``; it never executes anything itself. ``run_book`` is the main job:

1. bring each chapter's ``.ipynb`` up to date with its jupytext ``.py`` source (``sync_notebook``),
2. run the preset's tuning studies when no record matches their spec (``tuning_step``), so that
   the chapters' runs take the values they chose,
3. execute the chapters in order with papermill (parameters ``preset``, ``data``, ``plm``,
   ``seed``; kernel ``python3``) into ``book/executed/``, timing each one (``_execute_chapter``),
4. write ``book/executed/timings.json`` (read by the Status page, ``ambcore.status``),
5. run ``jupyter-book build book/`` (``build_book``).

A chapter whose notebook does not exist yet gets a placeholder page saying so (and is listed as
missing on the Status page) so that the book builds while chapters are being written. Ctrl-C or
SIGTERM stops every process the job started (``ambcore.interrupt``) and says how to resume.

What the chapters display (banners, numbered tables) is in ``ambcore.pages``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import html
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
import yaml
from jupytext.combine import combine_inputs_with_outputs

from ambcore import paths, runs, tune
from ambcore.config import CELL_TIMEOUT_S, Config
from ambcore.config import cell_timeout as preset_cell_timeout
from ambcore.errors import AmbError
from ambcore.interrupt import interrupt_on_signals, kill_tree, watched
from ambcore.overrides import ENV_VAR as SET_VAR
from ambcore.overrides import encode, from_env, parse_assignments
from ambcore.pages import config_from_parameters, describe_data, describe_plm
from ambcore.threads import child_env, environment, process_threads

try:
    import resource  # POSIX: the CPU time of the finished kernels
except ImportError:  # Windows
    resource = None

__all__ = [
    "CHAPTERS",
    "Chapter",
    "BookError",
    "BookInterrupted",
    "BookOptions",
    "BookResult",
    "select_chapters",
    "sync_notebook",
    "notebooks_agree",
    "hide_parameter_cells",
    "tuning_step",
    "run_book",
    "build_book",
]


class BookError(AmbError):
    """A chapter that failed to execute, or a book that failed to build."""


# ---- chapters -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chapter:
    """One page of the book that is produced by executing ``notebooks/<name>.ipynb``."""

    name: str  # "01_data": the notebook stem and the page name under book/executed/
    title: str
    thesis_section: str
    trains: bool = False  # its runs take the tuning record's values (tuning_step runs first)

    def source(self, notebooks_dir: Path) -> Path:
        return notebooks_dir / f"{self.name}.py"

    def notebook(self, notebooks_dir: Path) -> Path:
        return notebooks_dir / f"{self.name}.ipynb"


# Exactly the notebook pages of book/_toc.yml, in execution order (tests check the two agree).
# Results and Status read what the five chapters wrote, so they run last.
CHAPTERS: tuple[Chapter, ...] = (
    Chapter("01_data", "Data", "6.3.1"),
    Chapter("02_model", "Model", "6.2"),
    Chapter("03_train", "Training", "6.3.1", trains=True),
    Chapter("04_ablation", "Ablation", "6.3.2-6.3.3", trains=True),
    Chapter("05_robustness", "Robustness", "6.3.4", trains=True),
    Chapter("06_results", "Results", "6.3"),
    Chapter("07_beyond", "Beyond the thesis", "7.2", trains=True),
    Chapter("08_status", "Status", "-"),
)

PLACEHOLDER_MARK = "amb-missing-chapter"  # a CSS class in placeholder pages; tests look for it


def default_book_dir() -> Path:
    return paths.PROJECT_ROOT / "book"


def default_notebooks_dir() -> Path:
    return paths.PROJECT_ROOT / "notebooks"


def default_timings_path(book_dir: Path | None = None) -> Path:
    return (book_dir or default_book_dir()) / "executed" / "timings.json"


def select_chapters(spec: str | Iterable[str] | None) -> list[Chapter]:
    """``"01,03"`` or ``["01_data", "3"]`` -> chapters; ``None`` -> all, in order."""
    if spec is None:
        return list(CHAPTERS)
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    chosen = []
    for item in items:
        key = item.zfill(2) if item.isdigit() else item
        match = [c for c in CHAPTERS if c.name == key or c.name.split("_", 1)[0] == key]
        if not match:
            valid = ", ".join(c.name for c in CHAPTERS)
            raise BookError(f"unknown chapter {item!r}; valid chapters: {valid}")
        chosen.extend(c for c in match if c not in chosen)
    return [c for c in CHAPTERS if c in chosen]


# ---- the main job ---------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[book] {message}", flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def sync_notebook(chapter: Chapter, notebooks_dir: Path, log: Callable[[str], None] = _log) -> Path:
    """Make ``NN.ipynb`` carry the cells of ``NN.py`` (the source of truth); return the .ipynb.

    Nothing is written when the pair already agrees; outputs of the .ipynb are kept (jupytext
    ``--update``); a new or kernel-less .ipynb gets the ``python3`` kernelspec that papermill
    needs.
    """
    py, nb = chapter.source(notebooks_dir), chapter.notebook(notebooks_dir)
    if not py.exists():
        return nb
    if nb.exists() and notebooks_agree(py, nb) and _has_kernelspec(jupytext.read(nb)):
        return nb
    log(f"{chapter.name}: updating {nb.name} from {py.name} (jupytext)")
    jupytext.write(_notebook_from_source(chapter, notebooks_dir), nb)
    return nb


def _has_kernelspec(notebook) -> bool:
    return bool(notebook.metadata.get("kernelspec", {}).get("name"))


def _notebook_from_source(chapter: Chapter, notebooks_dir: Path):
    """The chapter as a notebook object: the .py's cells (outputs of the .ipynb kept), with a
    kernelspec. The .ipynb alone when there is no .py."""
    py, nb = chapter.source(notebooks_dir), chapter.notebook(notebooks_dir)
    if py.exists():
        notebook = jupytext.read(py)
        if nb.exists():
            notebook = combine_inputs_with_outputs(notebook, jupytext.read(nb))
    else:
        notebook = jupytext.read(nb)
    if not _has_kernelspec(notebook):
        notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    return notebook


def _cells_signature(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def notebooks_agree(py: Path, nb: Path) -> bool:
    """Whether a jupytext ``.py`` and its ``.ipynb`` have the same cells (types and sources)."""
    return _cells_signature(jupytext.read(py)) == _cells_signature(jupytext.read(nb))


def _write_placeholder(chapter: Chapter, out_dir: Path, reason: str) -> Path:
    page = out_dir / f"{chapter.name}.md"
    (out_dir / f"{chapter.name}.ipynb").unlink(missing_ok=True)
    about = (
        f" It covers thesis section {chapter.thesis_section}."
        if chapter.thesis_section != "-"
        else ""
    )
    page.write_text(
        f"# {chapter.title}\n\n"
        f'<div class="admonition warning {PLACEHOLDER_MARK}">'
        f'<p class="admonition-title">Chapter not in this build</p>'
        f"<p>{html.escape(reason + about)}</p></div>\n"
    )
    return page


PARAMETER_TAGS = ("parameters", "injected-parameters")  # papermill's parameter cells


def hide_parameter_cells(path: Path) -> None:
    """Tag papermill's parameter cells of an executed notebook ``remove-cell``: the notebook
    keeps them (what ran, with which values), the rendered page does not show them."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if any(tag in tags for tag in PARAMETER_TAGS) and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(notebook, path)


def _format_failure(chapter: Chapter, nb: Path, exc: Exception, kept: Path) -> str:
    cell = getattr(exc, "cell_index", None)
    count = getattr(exc, "exec_count", None)
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    first = source[0] if source else ""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = f"cell {cell} (In [{count}]: {first!r})" if cell is not None else "before any cell ran"
    return (
        f"chapter {chapter.name} failed: {nb} {where}: {ename}: {evalue}; "
        f"the partially executed notebook is kept at {kept}"
    )


def _children_cpu_seconds() -> float:
    """User + system CPU time of this process' finished child processes (the kernels).

    On a shared machine wall time depends on the load; CPU time much less."""
    if resource is None:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kernel_thread_env() -> dict[str, str]:
    """The kernels' CPU threads (``ambcore.threads``): this process' count (``--threads``,
    ``AMB_THREADS``, an inherited ``OMP_NUM_THREADS``, else every core) and OpenMP's passive
    wait policy, which a kernel must have before it imports torch."""
    return child_env(process_threads())


def overrides_env(overrides: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--set``) as the kernels' ``AMB_SET`` (``ambcore.overrides``);
    an ``AMB_SET`` of the caller's environment comes first, ``--set`` wins."""
    pairs = {**from_env(), **parse_assignments(list(overrides))}
    return {SET_VAR: encode(pairs)} if pairs else {}


def parse_chapter_params(items: Iterable[str]) -> dict[str, Any]:
    """``["NAME=VALUE", ...]`` (``--param``) -> papermill parameters; values are YAML
    (``n_seeds=1``, ``rates=[0.0, 1.0]``, ``collect_only=true``), as papermill's ``-y``."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise BookError(f"--param {item!r}: expected NAME=VALUE with a parameter name")
        try:
            params[name.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise BookError(f"--param {item!r}: the value is not valid YAML ({exc})") from None
    reserved = sorted(set(params) & {"preset", "data", "plm", "seed"})
    if reserved:
        raise BookError(f"--param {', '.join(reserved)}: use --preset/--data/--plm/--seed")
    return params


@dataclass
class BookResult:
    executed: list[str]
    missing: list[str]
    timings_path: Path
    html_dir: Path | None


class BookInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the main job; ``resume`` is the command that continues it."""

    def __init__(self, message: str, resume: str, signum: int | None = None):
        super().__init__(message)
        self.resume = resume
        self.signum = signum


@dataclass(frozen=True)
class BookOptions:
    """The arguments of one main job (``run_book``), folders resolved."""

    preset: str
    data: str | None
    plm: str | None
    seed: int | None
    build: bool
    warnings_as_errors: bool
    sync: bool
    results_dir: Path | None
    book_dir: Path
    out_dir: Path
    notebooks_dir: Path
    set_env: dict[str, str] = field(default_factory=dict)  # AMB_SET from --set (ambcore.overrides)
    chapter_params: dict[str, Any] = field(default_factory=dict)  # --param NAME=VALUE
    cell_timeout: float | None = None  # seconds a cell may run; None: the preset's; 0: no limit

    @property
    def cell_limit(self) -> float | None:
        """The seconds a cell may run (None: no limit)."""
        if self.cell_timeout is None:
            return CELL_TIMEOUT_S.get(self.preset)
        return self.cell_timeout or None

    def command(self, chapters: Iterable[Chapter] | None = None) -> str:
        """The ``python -m ambcore book`` command line of these options (for resume hints)."""
        args = ["--preset", self.preset]
        for flag, value in (
            ("--data", self.data),
            ("--plm", self.plm),
            ("--seed", self.seed),
            ("--results-dir", self.results_dir),
        ):
            if value not in (None, ""):
                args += [flag, str(value)]
        if self.book_dir != default_book_dir().resolve():
            args += ["--book-dir", str(self.book_dir)]
        if self.out_dir != self.book_dir / "executed":
            args += ["--out", str(self.out_dir)]
        args += [
            flag
            for flag, on in (
                ("--no-build", not self.build),
                ("-W", self.warnings_as_errors),
                ("--no-sync", not self.sync),
            )
            if on
        ]
        for key, value in from_env(self.set_env).items():
            args += ["--set", f"{key}={value}"]
        for name, value in self.chapter_params.items():
            args += ["--param", f"{name}={json.dumps(value)}"]
        if self.cell_timeout is not None:
            args += ["--cell-timeout", f"{self.cell_timeout:g}"]
        if chapters is not None:
            args += ["--chapters", ",".join(c.name[:2] for c in chapters)]
        return "python -m ambcore book " + shlex.join(args)


@dataclass
class _Job:
    """What every chapter of one main job shares: options, papermill parameters, the kernels'
    environment, the timings record, and what has been executed so far."""

    options: BookOptions
    parameters: dict[str, Any]
    kernel_env: dict[str, str]
    timings: dict[str, Any]
    log: Callable[[str], None]
    executed: list[str]
    missing: list[str]
    selected: list[Chapter]

    @property
    def timings_path(self) -> Path:
        return self.options.out_dir / "timings.json"

    @property
    def chapter_times(self) -> dict[str, Any]:
        return self.timings.setdefault("chapters", {})

    def save_timings(self) -> None:
        runs.write_json(self.timings_path, self.timings)


def run_book(
    preset: str,
    data: str | None = None,
    plm: str | None = None,
    seed: int | None = None,
    chapters: str | Iterable[str] | None = None,
    build: bool = True,
    warnings_as_errors: bool = False,
    sync: bool = True,
    results_dir: Path | None = None,
    book_dir: Path | None = None,
    out_dir: Path | None = None,
    notebooks_dir: Path | None = None,
    log: Callable[[str], None] = _log,
    overrides: Iterable[str] = (),
    chapter_params: Iterable[str] = (),
    retune: bool = False,
    cell_timeout: float | str | None = None,
) -> BookResult:
    """Execute the chapters with papermill and build the book (the main job; see module doc).

    ``sync``: bring notebooks/NN.ipynb up to date with NN.py first (else the .py's cells run
    from a private copy and notebooks/ is not written). ``results_dir``: where the chapters
    that declare a ``results_dir`` parameter write and read results files (default results/).
    ``overrides``: ``KEY=VALUE`` config values for every chapter and run (``AMB_SET``);
    ``chapter_params``: ``NAME=VALUE`` papermill parameters for the chapters that declare them.
    ``retune``: run the preset's tuning studies afresh before the chapters (``tuning_step``).
    ``cell_timeout``: the seconds a cell may run (default ``$AMB_CELL_TIMEOUT``, else the
    preset's ``ambcore.config.CELL_TIMEOUT_S``; 0: no limit). A cell that runs longer stops
    the book: every process the chapter started is stopped, the partial notebook kept, and a
    ``BookError`` names the chapter, the cell and the limit.

    Ctrl-C or SIGTERM stops every process the job started (``ambcore.interrupt.kill_tree``),
    records the chapter as interrupted and raises ``BookInterrupted`` naming the command that
    resumes.
    """
    options = _book_options(
        preset,
        data,
        plm,
        seed,
        build,
        warnings_as_errors,
        sync,
        results_dir,
        book_dir,
        out_dir,
        notebooks_dir,
    )
    options = dataclasses.replace(
        options,
        set_env=overrides_env(overrides),
        chapter_params=parse_chapter_params(chapter_params),
        cell_timeout=_cell_timeout(preset, cell_timeout),
    )
    cfg = _checked_config(options)
    selected = select_chapters(chapters)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    job = _start_job(options, cfg, selected, log)
    t_book = time.perf_counter()
    with interrupt_on_signals(stop_first=True) as received, watched():  # workers end with the job
        first = next((c for c in job.selected if c.trains), None)
        _resumable(job, first, received, lambda: tuning_step(job, retune))
        for index, chapter in enumerate(CHAPTERS, 1):
            _resumable(job, chapter, received, lambda: _chapter_step(job, chapter, index))
        _finish_timings(job, time.perf_counter() - t_book)
        html_dir = None
        if build:
            html_dir = _resumable(
                job,
                None,
                received,
                lambda: build_book(
                    options.book_dir, warnings_as_errors=warnings_as_errors, log=log
                ),
            )
    return BookResult(
        executed=job.executed, missing=job.missing, timings_path=job.timings_path, html_dir=html_dir
    )


def _cell_timeout(preset: str, given: float | str | None) -> float | None:
    """``BookOptions.cell_timeout`` from ``run_book``'s argument (``ambcore.config.cell_timeout``:
    the argument, else ``$AMB_CELL_TIMEOUT``): None when it is the preset's, 0 for no limit."""
    limit = preset_cell_timeout(preset, given)
    return None if limit == CELL_TIMEOUT_S.get(preset) else float(limit or 0)


def _book_options(
    preset,
    data,
    plm,
    seed,
    build,
    warnings_as_errors,
    sync,
    results_dir,
    book_dir,
    out_dir,
    notebooks_dir,
) -> BookOptions:
    """Resolve the folders; the book reads executed notebooks only from BOOK_DIR/executed."""
    book_dir = Path(book_dir or default_book_dir()).resolve()
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    out_dir = Path(out_dir or book_dir / "executed").resolve()
    if build and out_dir != book_dir / "executed":
        raise BookError(
            f"the book reads executed notebooks from {book_dir / 'executed'}, not {out_dir}; "
            "use --no-build to execute the chapters elsewhere"
        )
    return BookOptions(
        preset=preset,
        data=data,
        plm=plm,
        seed=seed,
        build=build,
        warnings_as_errors=warnings_as_errors,
        sync=sync,
        results_dir=Path(results_dir).resolve() if results_dir is not None else None,
        book_dir=book_dir,
        out_dir=out_dir,
        notebooks_dir=notebooks_dir,
    )


def _checked_config(options: BookOptions) -> Config:
    """The job's config (validates preset and seed early); a missing dataset file is an error."""
    with environment(options.set_env):
        cfg = config_from_parameters(options.preset, options.data, options.plm, options.seed)
    if cfg.data != "synthetic":
        data_path = cfg.data or paths.data_from_env()
        if not data_path:
            raise BookError(
                f"preset {options.preset!r} needs a dataset file: pass --data PATH or set AMB_DATA"
            )
        if not Path(data_path).exists():
            raise BookError(f"dataset file not found: {data_path}")
    return cfg


def _papermill_parameters(options: BookOptions) -> dict[str, Any]:
    parameters: dict[str, Any] = {"preset": options.preset}
    if options.data:
        parameters["data"] = options.data
    if options.plm:
        parameters["plm"] = options.plm
    if options.seed is not None:
        parameters["seed"] = int(options.seed)
    return parameters


def _kernel_environment(options: BookOptions) -> dict[str, str]:
    """The kernels inherit this environment: one switch for the whole book, including code that
    reads AMB_* itself. Figures must render inline (a parent MPLBACKEND=Agg would hide them)."""
    env = {"AMB_PRESET": options.preset, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if options.data:
        env["AMB_DATA"] = options.data
    if options.plm:
        env["AMB_PLM"] = options.plm
    env.update(kernel_thread_env())
    env.update(options.set_env)
    if options.results_dir:  # where the chapters find the tuning record (ambcore.tune)
        env["AMB_RESULTS"] = str(Path(options.results_dir).resolve())
    return env


def _start_job(
    options: BookOptions, cfg: Config, selected: list[Chapter], log: Callable[[str], None]
) -> _Job:
    """The job's shared state, with the timings record of this build started (on top of an
    earlier build's, whose chapters not selected keep their times)."""
    earlier = options.out_dir / "timings.json"
    timings = runs.read_json_object(earlier) if earlier.exists() else {}
    timings["book"] = {
        "preset": options.preset,
        "data": describe_data(cfg.data)[0],
        "plm": describe_plm(cfg.plm, cfg.plm_random_init),
        "seed": options.seed,
        "started": _now(),
        "finished": None,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else "",
        "overrides": options.set_env.get("AMB_SET", ""),  # --set: sizes of a dry run, for example
        "chapter_params": dict(options.chapter_params),
    }
    timings.setdefault("chapters", {})
    return _Job(
        options=options,
        parameters=_papermill_parameters(options),
        kernel_env=_kernel_environment(options),
        timings=timings,
        log=log,
        executed=[],
        missing=[],
        selected=selected,
    )


def _finish_timings(job: _Job, seconds: float) -> None:
    job.timings["book"]["finished"] = _now()
    job.timings["book"]["execute_seconds"] = round(seconds, 2)
    job.save_timings()
    if job.missing:
        job.log(f"missing chapters (placeholder pages): {', '.join(job.missing)}")


def tuning_step(job: _Job, retune: bool = False) -> str:
    """Before the chapters: the preset's tuning record (``ambcore.tune``), whose chosen values
    every chapter's runs take (``experiments.cell_overrides``). A record that matches the spec
    is kept; a missing or stale one is produced by ``python -m ambcore tune`` (its studies
    resume from their journals), and ``retune`` starts them afresh. Returns what happened."""
    options = job.options
    if not any(chapter.trains for chapter in job.selected):
        return "tuning: no selected chapter trains"
    spec = tune.spec_for_preset(options.preset)
    record = _results_dir(options) / tune.record_name(options.preset)
    with environment({"AMB_RESULTS": str(_results_dir(options))}):
        current = tune.current_record(options.preset) if spec.exists() else None
    if not spec.exists():
        said = (
            f"tuning: no spec for the {options.preset} preset; the cells keep their recipes' values"
        )
    elif current is not None and not retune:
        said = f"tuning: {record.name} matches {spec.name}; its chosen values are used"
    else:
        why = "--retune" if retune else f"no record matching {spec.name}"
        job.log(f"tuning ({why}): python -m ambcore tune {spec.name} (resumable)")
        command = [sys.executable, "-m", "ambcore", "tune", str(spec), "--record", str(record)]
        with environment(job.kernel_env):
            subprocess.run(command + (["--retune"] if retune else []), check=True)
        said = f"tuning: {record.name} written; its chosen values are used"
    job.log(said)
    return said


def _results_dir(options: BookOptions) -> Path:
    return Path(options.results_dir or paths.results_dir()).resolve()


def _chapter_step(job: _Job, chapter: Chapter, index: int) -> None:
    """One chapter of the job: a placeholder when it has no notebook, its last executed copy
    when it is not selected, else executed with papermill."""
    prefix = f"[{index}/{len(CHAPTERS)}] {chapter.name}"
    notebooks_dir = job.options.notebooks_dir
    if not (chapter.source(notebooks_dir).exists() or chapter.notebook(notebooks_dir).exists()):
        _record_missing(job, chapter, prefix)
    elif chapter not in job.selected:
        _keep_last_copy(job, chapter, prefix)
    else:
        _execute_chapter(job, chapter, prefix)


def _record_missing(job: _Job, chapter: Chapter, prefix: str) -> None:
    job.missing.append(chapter.name)
    job.chapter_times[chapter.name] = {"status": "missing", "seconds": None, "finished": _now()}
    _write_placeholder(
        chapter,
        job.options.out_dir,
        f"The notebook notebooks/{chapter.name}.py of this chapter does not exist yet.",
    )
    job.log(f"{prefix}: MISSING (notebooks/{chapter.name}.py does not exist)")
    job.save_timings()


def _keep_last_copy(job: _Job, chapter: Chapter, prefix: str) -> None:
    """A chapter not selected keeps the executed copy of an earlier build (else a placeholder)."""
    times = job.chapter_times
    if (job.options.out_dir / f"{chapter.name}.ipynb").exists():
        times.setdefault(chapter.name, {"status": "ok", "seconds": None})
        times[chapter.name]["earlier_build"] = True
        job.log(f"{prefix}: not selected, keeping its last executed copy")
        return
    times[chapter.name] = {"status": "not executed", "seconds": None, "finished": _now()}
    _write_placeholder(
        chapter,
        job.options.out_dir,
        f"This chapter was not executed in this build (run `python -m ambcore book "
        f"--chapters {chapter.name[:2]}`).",
    )
    job.log(f"{prefix}: not selected and never executed")


def _execute_chapter(job: _Job, chapter: Chapter, prefix: str) -> None:
    """Run the chapter's .py cells with papermill into BOOK/executed/NN.ipynb, timed."""
    source_nb, params = _prepare_input(job, chapter)
    out_dir = job.options.out_dir
    running = out_dir / f".{chapter.name}.running.ipynb"
    shown = _shown_source(chapter, job.options.notebooks_dir)
    job.log(
        f"{prefix}: executing {shown.relative_to(job.options.notebooks_dir.parent)} "
        f"with {', '.join(f'{k}={v}' for k, v in params.items())}"
    )
    job.save_timings()
    t0, cpu0 = time.perf_counter(), _children_cpu_seconds()
    try:
        _papermill(job, source_nb, running, params)
    except BaseException as exc:  # keep the partial notebook, also on Ctrl-C
        _record_failure(job, chapter, exc, time.perf_counter() - t0, source_nb, running, shown)
    seconds = time.perf_counter() - t0
    cpu_seconds = _children_cpu_seconds() - cpu0  # the kernel's, once it has exited
    source_nb.unlink(missing_ok=True)
    hide_parameter_cells(running)
    (out_dir / f"{chapter.name}.md").unlink(missing_ok=True)
    (out_dir / f"{chapter.name}.failed.ipynb").unlink(missing_ok=True)
    os.replace(running, out_dir / f"{chapter.name}.ipynb")
    book = job.timings["book"]
    job.chapter_times[chapter.name] = {
        "status": "ok",
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "finished": _now(),
        "preset": job.options.preset,
        "data": book["data"],
        "plm": book["plm"],
    }
    job.save_timings()
    job.executed.append(chapter.name)
    job.log(f"{prefix}: done in {seconds:.1f} s (kernel CPU time {cpu_seconds:.1f} s)")


def _shown_source(chapter: Chapter, notebooks_dir: Path) -> Path:
    py = chapter.source(notebooks_dir)
    return py if py.exists() else chapter.notebook(notebooks_dir)


def _prepare_input(job: _Job, chapter: Chapter) -> tuple[Path, dict[str, Any]]:
    """The notebook papermill runs and its parameters.

    What runs is the .py's cells: written back to NN.ipynb with sync, else only to a private
    input copy (notebooks/ untouched). Parameters the notebook does not declare are noted.
    """
    options = job.options
    if options.sync:
        sync_notebook(chapter, options.notebooks_dir, job.log)
    source_nb = options.out_dir / f".{chapter.name}.input.ipynb"
    jupytext.write(_notebook_from_source(chapter, options.notebooks_dir), source_nb)
    params = dict(job.parameters)
    declared = set(papermill.inspect_notebook(str(source_nb)))
    if "timings_path" in declared:
        params["timings_path"] = str(job.timings_path)
    if options.results_dir is not None and "results_dir" in declared:
        params["results_dir"] = str(options.results_dir)
    params.update({k: v for k, v in options.chapter_params.items() if k in declared})
    undeclared = sorted(set(params) - declared - {"preset"})
    if undeclared:
        job.log(f"{chapter.name}: note: the notebook does not declare {', '.join(undeclared)}")
    return source_nb, params


def _papermill(job: _Job, source_nb: Path, running: Path, params: dict[str, Any]) -> None:
    with environment(job.kernel_env), CellClock(job.options.cell_limit) as clock:
        try:
            papermill.execute_notebook(
                str(source_nb),
                str(running),
                parameters=params,
                kernel_name="python3",
                language="python",
                cwd=str(job.options.notebooks_dir),
                progress_bar=True,
                log_output=False,
                on_cell_execute=clock.on_cell_execute,
                on_cell_executed=clock.on_cell_executed,
            )
        except Exception as exc:
            if clock.fired is not None:  # the kernel died because the clock stopped it
                raise CellTimedOut(clock.fired, clock.limit) from exc
            raise


class CellTimedOut(Exception):
    """A cell ran past the book's cell time limit (``CellClock``)."""

    def __init__(self, cell_index: int, limit: float):
        super().__init__(f"cell {cell_index} ran past {limit:g} s")
        self.cell_index, self.limit = cell_index, limit


class CellClock:
    """The cell time limit of a chapter: papermill's client reports each cell's start and end
    (``on_cell_execute``, ``on_cell_executed``); a thread stops the kernel and every process
    it started (``ambcore.interrupt.kill_tree``: SIGTERM, then SIGKILL) once a cell has run
    ``limit`` seconds, and papermill then fails on the dead kernel. Stopping the kernel from
    outside, rather than with nbclient's own timeout (which interrupts the kernel and shuts it
    down through its sockets), leaves no kernel traceback on the terminal and no process of
    the chapter behind, one in a session of its own that ignores SIGTERM included. The client's
    log lines about the dead kernel are dropped once the clock has fired. ``limit`` None: no
    limit."""

    PERIOD_S = 0.2

    def __init__(self, limit: float | None):
        self.limit = limit
        self.fired: int | None = None  # the index of the cell that ran too long
        self._cell: int | None = None
        self._since: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def on_cell_execute(self, cell=None, cell_index: int = 0, **_: Any) -> None:
        with self._lock:
            self._cell, self._since = cell_index, time.monotonic()

    def on_cell_executed(self, **_: Any) -> None:
        with self._lock:
            self._since = None

    def _watch(self) -> None:
        while not self._done.wait(self.PERIOD_S):
            with self._lock:
                late = self._since is not None and time.monotonic() - self._since > self.limit
                if late and self.fired is None:
                    self.fired = self._cell
            if late:
                kill_tree()  # the kernel and what it started: this process's descendants
                return

    def filter(self, record) -> bool:  # a logging filter on papermill's logger
        return self.fired is None

    def __enter__(self) -> CellClock:
        if self.limit:
            logging.getLogger("papermill").addFilter(self)
            self._thread = threading.Thread(target=self._watch, name="amb-cell-clock", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            logging.getLogger("papermill").removeFilter(self)


def _record_failure(
    job: _Job,
    chapter: Chapter,
    exc: BaseException,
    seconds: float,
    source_nb: Path,
    running: Path,
    shown: Path,
) -> None:
    """Keep the partial notebook as NN.failed.ipynb, record the chapter, and raise: a
    ``BookError`` naming notebook and cell, or the interruption itself."""
    source_nb.unlink(missing_ok=True)
    kept = job.options.out_dir / f"{chapter.name}.failed.ipynb"
    if running.exists():
        os.replace(running, kept)
    interrupted = isinstance(exc, KeyboardInterrupt)
    timed_out = isinstance(exc, CellTimedOut)
    status = "interrupted" if interrupted else "timed out" if timed_out else "failed"
    job.chapter_times[chapter.name] = {
        "status": status,
        "seconds": round(seconds, 2),
        "finished": _now(),
        "preset": job.options.preset,
        "error": f"{getattr(exc, 'ename', type(exc).__name__)}",
    }
    job.timings["book"]["finished"] = _now()
    job.save_timings()
    if not isinstance(exc, Exception):
        raise exc
    if timed_out:
        raise BookError(_format_timeout(chapter, shown, exc, job.options, kept)) from None
    raise BookError(_format_failure(chapter, shown, exc, kept)) from exc


def _format_timeout(
    chapter: Chapter, nb: Path, exc: CellTimedOut, options: BookOptions, kept: Path
) -> str:
    """One line: the chapter, the cell that ran past the limit (its first line, from the kept
    notebook), the limit and where it comes from."""
    where = f"cell {exc.cell_index}"
    with contextlib.suppress(Exception):
        lines = nbformat.read(kept, as_version=4).cells[exc.cell_index].source.strip().splitlines()
        where += f" ({(lines[0] if lines else '')!r})"
    limit, preset = exc.limit, CELL_TIMEOUT_S.get(options.preset, 0)
    return (
        f"chapter {chapter.name} stopped: {nb} {where} ran past the cell time limit of "
        f"{limit:g} s (the {options.preset} preset's is {preset:g} s; "
        f"--cell-timeout or AMB_CELL_TIMEOUT sets it); every process the chapter started was "
        f"stopped; the partially executed notebook is kept at {kept}"
    )


def _resumable(job: _Job, chapter: Chapter | None, received: list[int], step: Callable[[], Any]):
    """Run ``step``; an interruption becomes ``BookInterrupted`` with the command that resumes
    (the selected chapters from ``chapter`` on, or the same command when the build was
    interrupted)."""
    try:
        return step()
    except BookInterrupted:
        raise
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
    again = job.options.command()
    if chapter is None:
        where, resume, hint = (
            "while building the book",
            again,
            f"run the same command again: {again}",
        )
    else:
        where = f"during chapter {chapter.name}"
        rest = [c for c in job.selected if CHAPTERS.index(c) >= CHAPTERS.index(chapter)]
        resume = job.options.command(rest or [chapter])
        hint = (
            f"resume with: {resume} (or the same command again: {again}; finished runs are "
            "reused and unfinished ones continue from their last finished epoch)"
        )
    message = (
        f"interrupted ({signal.Signals(signum).name}) {where}; every process it started "
        f"was stopped; {hint}"
    )
    job.log(message)
    raise BookInterrupted(message, resume=resume, signum=int(signum)) from None


def jupyter_book_executable() -> str:
    local = Path(sys.executable).with_name("jupyter-book")
    found = str(local) if local.exists() else shutil.which("jupyter-book")
    if not found:
        raise BookError(
            'jupyter-book is not installed (the book extra: pip install -e ".[book]" '
            "-c constraints.txt, which scripts/setup.sh runs)"
        )
    return found


def build_book(
    book_dir: Path | None = None,
    warnings_as_errors: bool = False,
    log: Callable[[str], None] = _log,
) -> Path:
    """``jupyter-book build BOOK_DIR`` (``-W --keep-going`` with warnings_as_errors); the HTML dir."""
    book_dir = Path(book_dir or default_book_dir())
    cmd = [jupyter_book_executable(), "build", str(book_dir)]
    if warnings_as_errors:
        cmd += ["-W", "--keep-going"]
    log("building: " + " ".join(["jupyter-book", *cmd[1:]]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BookError(f"jupyter-book build {book_dir} failed (exit {proc.returncode}):\n{tail}")
    html_dir = book_dir / "_build" / "html"
    log(f"built in {time.perf_counter() - t0:.1f} s: {html_dir / 'index.html'}")
    return html_dir
