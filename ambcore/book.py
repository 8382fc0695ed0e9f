"""The research book: its chapters, the main job that executes them, and the provenance banners.

The book (``book/``, configured by the top-level ``_config.yml``) renders papermill-executed copies
of ``notebooks/NN_name.ipynb``; it never executes anything itself. ``run_book`` is the main job:

1. bring each chapter's ``.ipynb`` up to date with its jupytext ``.py`` source,
2. execute the chapters in order with papermill (parameters ``preset``, ``data``, ``plm``,
   ``seed``; kernel ``python3``) into ``book/executed/``, timing each one,
3. write ``book/executed/timings.json`` (read by the Status page),
4. run ``jupyter-book build book/``.

A chapter whose notebook does not exist yet gets a placeholder page saying so (and is listed as
missing on the Status page) so that the book builds while chapters are being written.

Every page that shows results displays ``banner(cfg)`` first: the dataset and the language
model that produced the numbers, so a build on synthetic data can never be read as CMU-MOSEI
(thesis section 6.3.1 describes the real setup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import html
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ambcore.config import CELL_TIMEOUT_S, Config, get_config
from ambcore.config import cell_timeout as preset_cell_timeout
from ambcore.errors import AmbError
from ambcore.interrupt import watched
from ambcore.paths import PROJECT_ROOT, data_from_env

__all__ = [
    "CHAPTERS",
    "Chapter",
    "BookError",
    "Banner",
    "banner",
    "describe_data",
    "describe_plm",
    "config_from_parameters",
    "run_book",
    "BookInterrupted",
    "hide_parameter_cells",
    "stop_descendants",
    "stop_descendants_on_signals",
    "build_book",
    "environment_report",
    "revision_label",
    "device_label",
    "build_provenance_table",
    "load_timings",
    "timings_table",
    "benchmark_tables",
    "results_csvs",
    "results_table",
    "numbered_table",
    "missing_note",
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
    Chapter("07_status", "Status", "-"),
)

PLACEHOLDER_MARK = "amb-missing-chapter"  # a CSS class in placeholder pages; tests look for it


def default_book_dir() -> Path:
    return PROJECT_ROOT / "book"


def default_notebooks_dir() -> Path:
    return PROJECT_ROOT / "notebooks"


def default_results_dir() -> Path:
    """Where chapters write and read results files: ``AMB_RESULTS`` or the project's results/."""
    from ambcore.paths import results_dir

    return results_dir()


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


# ---- provenance: which data, which language model ------------------------------------------


def describe_data(data: str) -> tuple[str, bool]:
    """A human description of a config's ``data`` value and whether it is synthetic."""
    if data == "synthetic":
        return "SYNTHETIC MOSEI-shaped dataset generated by ambcore (planted signal)", True
    if not data:
        env = data_from_env()
        if not env:
            return "none given (set --data or AMB_DATA)", False
        data = env
    return f"dataset file {Path(data).name} ({data})", False


def describe_plm(plm: str, random_init: bool = False) -> str:
    """A human description of a config's ``plm`` value."""
    names = {
        "embedded": "all-MiniLM-L6-v2 (bundled; 6 layers, hidden 384) in place of bert-base-uncased",
        "tiny-random": "a tiny randomly initialised BERT (smoke test; not a trained language model)",
    }
    text = names.get(plm, plm)
    if random_init and plm != "tiny-random":
        text += " with RANDOM weights (architecture only)"
    return text


@dataclass(frozen=True)
class Banner:
    """What produced the numbers on a page; displays as an admonition in the book."""

    data: str
    plm: str
    preset: str
    synthetic: bool

    @property
    def title(self) -> str:
        if self.synthetic:
            return "Synthetic data: these are not CMU-MOSEI results"
        return "Data and language model of this page"

    @property
    def lines(self) -> list[str]:
        lines = [f"Data: {self.data}", f"Language model: {self.plm}", f"Preset: {self.preset}"]
        if self.synthetic:
            lines.append(
                "The dataset's signal was planted by design: these numbers validate the pipeline "
                "and say nothing about CMU-MOSEI."
            )
        return lines

    def _repr_html_(self) -> str:
        kind = "warning" if self.synthetic else "note"
        body = "".join(f"<p>{html.escape(line)}</p>" for line in self.lines)
        return (
            f'<div class="admonition {kind} amb-banner">'
            f'<p class="admonition-title">{html.escape(self.title)}</p>{body}</div>'
        )

    def _repr_markdown_(self) -> str:
        body = "\n".join(f"> {line}  " for line in self.lines)
        return f"> **{self.title}**  \n{body}\n"

    def __str__(self) -> str:
        return "\n".join([self.title.upper(), *self.lines])

    def __repr__(self) -> str:  # what a terminal and nbval see
        return str(self)


def _config_like(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Config):
        return source.to_dict()
    if isinstance(source, Mapping):
        return source
    if isinstance(source, (str, Path)):  # a run folder or its config.json
        path = Path(source)
        path = path / "config.json" if path.is_dir() or not path.suffix else path
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BookError(f"{path}: cannot read the run's config ({exc})") from None
    raise TypeError(f"banner() takes a Config, a config dict or a run folder, not {type(source)}")


def banner(source: Any) -> Banner:
    """The data/PLM banner for a Config, a config dict, or a run folder (its ``config.json``).

    Notebooks display it at the top of every page and above every results table::

        display(banner(cfg))
    """
    values = _config_like(source)
    data, synthetic = describe_data(str(values.get("data", "")))
    plm = describe_plm(str(values.get("plm", "")), bool(values.get("plm_random_init", False)))
    return Banner(data=data, plm=plm, preset=str(values.get("preset", "?")), synthetic=synthetic)


def config_from_parameters(
    preset: str,
    data: str | None = "",
    plm: str | None = "",
    seed: int | None = None,
    tuned_for: str | None = None,
    **overrides,
) -> Config:
    """The chapters' config from their papermill parameters (empty values keep the preset's).

    ``AMB_PLM`` switches the language model when ``plm`` is empty, as ``AMB_DATA`` does for the
    data of the paper preset; ``AMB_PRESET`` is read by the notebooks' parameter defaults.
    ``tuned_for`` (a model): the values the preset's tuning record chose for it
    (``experiments.tuned_values``) apply on top of the preset. ``AMB_SET`` (``python -m ambcore
    book --set``; ``ambcore.overrides``) applies over those, below the chapter's own parameters.
    """
    from ambcore.experiments import tuned_values
    from ambcore.overrides import from_env

    chosen = tuned_values(tuned_for, preset) if tuned_for else {}
    values = {**chosen, **from_env(), **overrides}
    if data:
        values["data"] = data
    plm = plm or os.environ.get("AMB_PLM", "")
    if plm:
        values["plm"] = plm
    if seed is not None and seed != "":
        values["seed"] = seed
    return get_config(preset, **values)


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
    import jupytext

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
    import jupytext

    py, nb = chapter.source(notebooks_dir), chapter.notebook(notebooks_dir)
    if py.exists():
        notebook = jupytext.read(py)
        if nb.exists():
            notebook = _update_inputs(jupytext.read(nb), notebook)
    else:
        notebook = jupytext.read(nb)
    if not _has_kernelspec(notebook):
        notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    return notebook


def _cells_signature(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def notebooks_agree(py: Path, nb: Path) -> bool:
    """Whether a jupytext ``.py`` and its ``.ipynb`` have the same cells (types and sources)."""
    import jupytext

    return _cells_signature(jupytext.read(py)) == _cells_signature(jupytext.read(nb))


def _update_inputs(old, new):
    from jupytext.combine import combine_inputs_with_outputs

    return combine_inputs_with_outputs(new, old)


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
    import nbformat

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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _children_cpu_seconds() -> float:
    """User + system CPU time of this process' finished child processes (the kernels).

    On a shared machine wall time depends on the load; CPU time much less."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _environment(values: Mapping[str, str]):
    """Set environment variables for the kernels started inside the block, then restore
    (``ambcore.threads.environment``)."""
    from ambcore.threads import environment

    return environment(values)


def kernel_thread_env() -> dict[str, str]:
    """The kernels' CPU threads (``ambcore.threads``): this process' count (``--threads``,
    ``AMB_THREADS``, an inherited ``OMP_NUM_THREADS``, else every core) and OpenMP's passive
    wait policy, which a kernel must have before it imports torch."""
    from ambcore.threads import child_env, process_threads

    return child_env(process_threads())


def overrides_env(overrides: Iterable[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--set``) as the kernels' ``AMB_SET`` (``ambcore.overrides``);
    an ``AMB_SET`` of the caller's environment comes first, ``--set`` wins."""
    from ambcore.overrides import ENV_VAR, encode, from_env, parse_assignments

    pairs = {**from_env(), **parse_assignments(list(overrides))}
    return {ENV_VAR: encode(pairs)} if pairs else {}


def parse_chapter_params(items: Iterable[str]) -> dict[str, Any]:
    """``["NAME=VALUE", ...]`` (``--param``) -> papermill parameters; values are YAML
    (``n_seeds=1``, ``rates=[0.0, 1.0]``, ``collect_only=true``), as papermill's ``-y``."""
    import yaml

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
        import shlex

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
        from ambcore.overrides import from_env

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
        _write_json_atomic(self.timings_path, self.timings)


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

    Ctrl-C or SIGTERM stops every process the job started (``stop_descendants``), records the
    chapter as interrupted and raises ``BookInterrupted`` naming the command that resumes.
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
    with stop_descendants_on_signals() as received, watched():  # workers end with the job
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
    with _environment(options.set_env):
        cfg = config_from_parameters(options.preset, options.data, options.plm, options.seed)
    if cfg.data != "synthetic":
        data_path = cfg.data or data_from_env()
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
    """The job's shared state, with the timings record of this build started."""
    timings = _read_json(options.out_dir / "timings.json")
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
    from ambcore import tune

    options = job.options
    if not any(chapter.trains for chapter in job.selected):
        return "tuning: no selected chapter trains"
    spec = tune.spec_for_preset(options.preset)
    record = _results_dir(options) / tune.record_name(options.preset)
    with _environment({"AMB_RESULTS": str(_results_dir(options))}):
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
        with _environment(job.kernel_env):
            subprocess.run(command + (["--retune"] if retune else []), check=True)
        said = f"tuning: {record.name} written; its chosen values are used"
    job.log(said)
    return said


def _results_dir(options: BookOptions) -> Path:
    return Path(options.results_dir or default_results_dir()).resolve()


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
    import jupytext
    import papermill

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
    import papermill

    with _environment(job.kernel_env), CellClock(job.options.cell_limit) as clock:
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
        from ambcore.interrupt import kill_tree

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
        import logging

        if self.limit:
            logging.getLogger("papermill").addFilter(self)
            self._thread = threading.Thread(target=self._watch, name="amb-cell-clock", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import logging

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
    import nbformat

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


# ---- interruption: stop every process the job started ------------------------------------------


def stop_descendants(grace: float = 2.0) -> list[int]:
    """Stop every descendant process of this one (kernels and the workers they started):
    ``ambcore.interrupt.kill_tree`` (the tree read before anything is signalled, SIGTERM, then
    SIGKILL after ``grace`` seconds for workers that ignore SIGTERM). Returns the PIDs signalled.
    """
    from ambcore.interrupt import kill_tree

    return kill_tree(grace=grace)


@contextlib.contextmanager
def stop_descendants_on_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """Inside the block, SIGINT and SIGTERM stop every descendant process (``stop_descendants``)
    and then raise ``KeyboardInterrupt`` in the main thread; yields the signals received.

    Kernels run in sessions of their own, so a terminal's Ctrl-C reaches only this process;
    it has to stop them. Outside the main thread the block changes nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received:  # already stopping
            return
        received.append(signum)
        stop_descendants()
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


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


# ---- the Status page ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


# Beyond the training packages that a run folder's env.json records.
BOOK_PACKAGES = (
    "pandas",
    "matplotlib",
    "jupyter-book",
    "myst-nb",
    "sphinx",
    "papermill",
    "jupytext",
)


def environment_report() -> dict[str, Any]:
    """Machine, device, package versions and git revision of the calling process.

    The same record a run folder's ``env.json`` holds (``ambcore.runs.collect_env``), plus the
    CPU model, the memory and the versions of the packages that build the book.
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from ambcore.runs import collect_env

    env = collect_env("cuda" if torch.cuda.is_available() else "cpu")
    for name in BOOK_PACKAGES:
        try:
            env["versions"][name] = version(name)
        except PackageNotFoundError:
            env["versions"][name] = None
    if torch.cuda.is_available():
        env["device_count"] = torch.cuda.device_count()
    env["cpu_model"] = _cpu_model()
    env["memory_gib"] = _memory_gib()
    return env


def revision_label(env: Mapping[str, Any]) -> str:
    """The git revision of ``env`` (``environment_report``) as the Status page names it:
    "unknown" outside a checkout, "(with uncommitted changes)" appended when the tree is dirty."""
    revision = env["git_revision"] or "unknown"
    return revision + " (with uncommitted changes)" if env["git_dirty"] else revision


def device_label(env: Mapping[str, Any]) -> str:
    """The device of ``env`` (``environment_report``), with its name where it has one:
    ``cuda (NVIDIA H100)``, ``cpu``."""
    return env["device"] + (f" ({env['device_name']})" if env["device_name"] else "")


def build_provenance_table(env: Mapping[str, Any], cfg: Config):
    """What produced this build of the book, one row each (columns ``what``, ``value``): the
    preset, data and language model of ``cfg`` (as ``banner`` names them), the git revision,
    the device and the machine of ``env`` (``environment_report``), the python and platform."""
    import pandas as pd

    shown = banner(cfg)
    rows = [
        ("preset", cfg.preset),
        ("data", shown.data),
        ("language model", shown.plm),
        ("git revision", revision_label(env)),
        ("device", env["device"]),
        ("device name", env["device_name"] or "–"),
        ("CPU", env["cpu_model"]),
        ("CPU cores", env["cpu_count"]),
        ("torch threads", env["torch_threads"]),
        ("memory (GiB)", env["memory_gib"]),
        ("python", env["python"]),
        ("platform", env["platform"]),
    ]
    return pd.DataFrame(rows, columns=["what", "value"])


def load_timings(path: Path | str | None = None) -> dict | None:
    """The main job's timings JSON, or None when there is none (a notebook run on its own)."""
    path = Path(path) if path else default_timings_path()
    return _read_json(path) or None if path.exists() else None


def timings_table(timings: Mapping[str, Any] | None):
    """One row per chapter of the book: status and wall time (s)."""
    import pandas as pd

    chapters = (timings or {}).get("chapters", {})
    rows = []
    for chapter in CHAPTERS:
        entry = chapters.get(chapter.name, {})
        status = entry.get("status", "not run")
        if entry.get("earlier_build"):
            status += " (earlier build)"
        rows.append(
            {
                "chapter": chapter.name,
                "title": chapter.title,
                "status": status,
                "wall time (s)": entry.get("seconds"),
                "CPU time (s)": entry.get("cpu_seconds"),
                "preset": entry.get("preset", ""),
                "finished (UTC)": entry.get("finished", ""),
            }
        )
    return pd.DataFrame(rows)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        flat = {}
        for i, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{i}]"))
        return flat
    if isinstance(value, list):
        return {prefix: ", ".join(map(str, value))}
    return {prefix: value}


@dataclass(frozen=True)
class BenchmarkRecord:
    """One benchmark file under results/, as a table with a caption naming its device."""

    name: str
    caption: str
    table: Any  # pandas DataFrame
    targets: Any = None  # pandas DataFrame of an ``ambcore bench`` record's targets, else None
    efficiency: Any = None  # its FLOPs and achieved GFLOP/s (``ambcore.bench.efficiency_frame``)
    paper: Any = None  # its paper-geometry step (``ambcore.bench.paper.paper_geometry_frame``)

    def tables(self) -> list[tuple[Any, str]]:
        """(frame, caption) of every table the Status page shows for this record, in order."""
        shown = [(self.table, f"Benchmark {self.caption}")]
        if self.efficiency is not None and not self.efficiency.empty:
            shown.append(
                (
                    self.efficiency,
                    f"FLOPs and achieved rate of {self.name}: one training "
                    "epoch and one evaluation pass (fast path), counted by FlopCounterMode, "
                    "against the probe × threads",
                )
            )
        if self.paper is not None and not self.paper.empty:
            shown.append(
                (
                    self.paper,
                    f"The paper preset at bert-base geometry, {self.name}: one "
                    "training step and one evaluation batch here, and a MOSEI epoch (the "
                    "seconds at a given TFLOP/s are an ESTIMATE, not a measurement)",
                )
            )
        if self.targets is not None and not self.targets.empty:
            shown.append(
                (
                    self.targets,
                    f"Targets of {self.name}: the ratio by each estimator "
                    "(median of rounds or pairs; fastest rounds or steps)",
                )
            )
        return shown


def benchmark_tables(results_dir: Path | str | None = None) -> list[BenchmarkRecord]:
    """Every benchmark JSON under results/ (``bench*.json``, ``*_bench*.json``).

    Records of ``python -m ambcore bench`` become one row per model and path
    (``ambcore.bench.summary_frame``); any other record (the SDK alignment benchmark) a
    key/value table.
    """
    import pandas as pd

    results_dir = Path(results_dir or default_results_dir())
    files = sorted({*results_dir.glob("bench*.json"), *results_dir.glob("*_bench*.json")})
    records = []
    for path in files:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            table = pd.DataFrame([{"key": "error", "value": f"unreadable: {exc}"}])
            records.append(BenchmarkRecord(path.name, f"results/{path.name} (unreadable)", table))
            continue
        where = ", ".join(
            f"{key} {payload[key]}"
            for key in ("device", "device_name", "preset", "data")
            if isinstance(payload, Mapping) and payload.get(key)
        )
        caption = f"results/{path.name}" + (f" ({where})" if where else "")
        targets = efficiency = paper = None
        if isinstance(payload, Mapping) and isinstance(payload.get("models"), Mapping):
            from ambcore.bench import efficiency_frame, summary_frame, targets_frame

            table = summary_frame(payload)
            targets = targets_frame(payload)
            efficiency = efficiency_frame(payload)
            from ambcore.bench.paper import paper_geometry_frame

            paper = paper_geometry_frame(payload)
        else:
            flat = _flatten(payload)
            table = pd.DataFrame(
                [{"key": k, "value": v} for k, v in flat.items()], columns=["key", "value"]
            )
        records.append(BenchmarkRecord(path.name, caption, table, targets, efficiency, paper))
    return records


# ---- the Results page -----------------------------------------------------------------------


def results_csvs(results_dir: Path | str | None = None) -> dict[str, Path]:
    """The results CSV files written by the ablation and robustness chapters, by file stem."""
    results_dir = Path(results_dir or default_results_dir())
    return {p.stem: p for p in sorted(results_dir.glob("*.csv"))}


def results_table(table: str, found: Mapping[str, Path]) -> tuple[list[Any], str]:
    """Thesis table ``table`` ("6.1" or "6.2", thesis 6.3.2-6.3.3) as the Results page shows it:
    what to display, in order, and a status line for the page's prose.

    ``found``: the results files by stem (``results_csvs``). With ``table_6_1.csv`` (for "6.1")
    among them: the file as a numbered table (the thesis' row, ours beside it), and a status
    that counts our rows and gives AMB's paired test against each row
    (``report.verdicts_from_table``). Without it: a note naming the chapter that writes the
    file, the thesis' rows alone (the report's table of no runs), and "not run yet".
    """
    import tempfile

    import pandas as pd

    from ambcore import report

    if table not in ("6.1", "6.2"):
        raise BookError(f"results_table: no thesis table {table!r}; expected '6.1' or '6.2'")
    stem = "table_" + table.replace(".", "_")
    if stem in found:
        frame = pd.read_csv(found[stem])
        is_ours = frame["Source"].astype(str).str.startswith("this book")
        ours, theirs = frame[is_ours].reset_index(drop=True), frame[~is_ours].reset_index(drop=True)
        shown = [
            numbered_table(
                report.compact_table(ours),
                report.table_caption(ours, f"Our runs of the rows of thesis table {table}"),
                name=f"tbl-results-{stem}",
            ),
            numbered_table(
                report.compact_table(theirs).drop(
                    columns=["Seeds", "ΔMAE vs AMB [95 % CI]", "p (Holm)"]
                ),
                f"Thesis table {table} as published (CMU-MOSEI, {report.THESIS_PLM}; "
                "cited rows: their own text features)",
                name=f"tbl-results-thesis-{stem}",
            ),
        ]
        said = "; ".join(report.verdicts_from_table(frame)) or "no paired test in the file"
        if ours["Data"].astype(str).str.upper().str.contains("SYNTHETIC").any():
            said += (
                ". On synthetic data only AMB against AMB text-only and AMB no-text test "
                "what the generator planted; the other comparisons are no evidence about "
                "CMU-MOSEI either way"
            )
        return (
            shown,
            f"{len(ours)} row(s) of ours from results/{stem}.csv. AMB against each row: {said}",
        )
    with tempfile.TemporaryDirectory() as empty:
        no_runs = report.summarize(report.collect_runs(empty))
    note = missing_note(
        f"results/{stem}.csv",
        "The Ablation chapter (notebooks/04_ablation.py) writes it; until then only the "
        "thesis' numbers are shown.",
    )
    thesis_only = numbered_table(
        report.compact_table(getattr(report, stem)(no_runs)),
        f"Thesis table {table} as printed (CMU-MOSEI, {report.THESIS_PLM}; no runs of ours yet)",
        name=f"tbl-results-{stem}",
    )
    return [note, thesis_only], f"not run yet (results/{stem}.csv is missing)"


# ---- tables that the book numbers -----------------------------------------------------------


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class NumberedTable:
    """A DataFrame shown as a MyST ``{table}`` with a caption: the book numbers it (Table 6.1)
    and ``{numref}`` can refer to it by ``name``. Displays as markdown (the book renders
    notebook markdown outputs as MyST, see ``nb_render_markdown_format`` in ``_config.yml``)."""

    markdown: str
    text: str

    def _repr_markdown_(self) -> str:
        return self.markdown

    def __repr__(self) -> str:
        return self.text


def numbered_table(
    frame, caption: str, name: str | None = None, digits: int | Mapping[str, int] = 3
) -> NumberedTable:
    """``frame`` as a numbered, captioned table for the book (see ``NumberedTable``).

    ``digits``: decimals of float cells, for all columns or per column name (default 3).
    """
    columns = [str(c) for c in frame.columns]
    per_column = [digits.get(c, 3) if isinstance(digits, Mapping) else digits for c in columns]
    lines = [
        "| " + " | ".join(_cell(c, 0) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, d) for v, d in zip(row, per_column)) + " |")
    header = (
        f":::{{table}} {caption}\n" + (f":name: {name}\n" if name else "") + ":align: center\n\n"
    )
    return NumberedTable(markdown=header + "\n".join(lines) + "\n:::\n", text=f"{caption}\n{frame}")


def file_preview(frame, max_columns: int = 12, max_rows: int = 40):
    """A results file as a reader can take it in on one page (chapter 06's listings), and a note
    of what is left out.

    At most ``max_rows`` rows. A file with more than ``max_columns`` columns is turned on its side
    when its rows fit (one row per column of the file, one column per row of the file, headed by
    the file's first column); otherwise its first ``max_columns`` columns are shown. The note
    says how many rows or columns the file has beyond those shown (empty when nothing is left out).
    """
    shown = frame.head(max_rows)
    left_out = []
    if len(frame) > len(shown):
        left_out.append(f"{len(frame) - len(shown)} more row(s)")
    if len(shown.columns) > max_columns:
        if len(shown) <= max_columns:
            first = str(shown.columns[0])
            sideways = shown.set_index(first).T.reset_index()
            sideways.columns = [first, *[str(c) for c in sideways.columns[1:]]]
            return sideways, "; ".join(left_out + ["shown on its side (one row per column)"])
        left_out.append(f"{len(shown.columns) - max_columns} more column(s)")
        shown = shown.iloc[:, :max_columns]
    return shown, "; ".join(left_out)


def missing_note(what: str, how: str) -> Notice:
    """An admonition saying which input a page lacks and which chapter or command writes it."""
    return Notice(title=f"Missing: {what}", lines=[how])


@dataclass(frozen=True)
class Notice:
    """A plain admonition (warning style) for notebook pages."""

    title: str
    lines: list[str]

    def _repr_html_(self) -> str:
        body = "".join(f"<p>{html.escape(line)}</p>" for line in self.lines)
        return (
            f'<div class="admonition warning amb-notice">'
            f'<p class="admonition-title">{html.escape(self.title)}</p>{body}</div>'
        )

    def __repr__(self) -> str:
        return "\n".join([self.title, *self.lines])
