"""Command-line entry point: ``ambcore <command> ...`` (or ``python -m ambcore <command> ...``).

Each command lives in a module under ``ambcore.commands`` exposing ``register(subparsers)``; a
command sets ``func`` to a callable taking the parsed args and returning an exit code. Only the
module of the command being run is imported: ``--help``, ``--version`` and ``data inspect`` load
neither torch nor transformers (``COMMANDS`` holds the one-line help of the others).

Exit status:

- 0: done;
- 1: the command failed: an error of the user's input (``AmbError``: a dataset, a run folder,
  a spec or a ``--set`` value that cannot be used), a file that cannot be read or written
  (``OSError``: a read-only folder, a full disk) or a pickle refused by torch; one ``error:``
  line, no traceback;
- 2: a usage error: the command line itself does not parse (argparse: an unknown command or
  option, a missing argument, a value outside an option's choices);
- 130 / 143: interrupted by Ctrl-C (SIGINT) / SIGTERM.

The usage line names the command as it was invoked (``ambcore`` from the console script,
``python -m ambcore`` otherwise; ``command_name``).

The commands that train or evaluate take ``--threads N`` (default ``AMB_THREADS``, else every
core the process may use), applied before the command runs (``ambcore.threads``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import signal
import sys

from ambcore import __version__
from ambcore.errors import AmbError
from ambcore.interrupt import EXIT_CODES, interrupt_on_signals
from ambcore.threads import apply_threads

# command -> (the module that registers it, its one-line help in the top-level --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("ambcore.commands.data", "inspect datasets, write the synthetic one"),
    "model": ("ambcore.commands.model", "inspect models"),
    "train": (
        "ambcore.commands.train",
        "train one model into a run folder and evaluate its best checkpoint",
    ),
    "evaluate": ("ambcore.commands.train", "metrics of a run's best checkpoint on valid and test"),
    "predict": ("ambcore.commands.train", "predictions for every utterance of a dataset file"),
    "sweep": (
        "ambcore.commands.sweep",
        "train a grid of models x variants x seeds, skipping finished cells",
    ),
    "tune": (
        "ambcore.commands.tune",
        "tune every cell's hyper-parameters on validation (Optuna), resuming a killed study",
    ),
    "bench": (
        "ambcore.commands.bench",
        "training/evaluation throughput and peak memory, fast path vs naive path",
    ),
    "book": (
        "ambcore.commands.book",
        "execute every chapter with papermill and build the jupyter-book",
    ),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))

# Commands that train or evaluate on the CPU: they take --threads.
THREADED_COMMANDS = ("train", "evaluate", "predict", "sweep", "tune", "bench", "book")

EXIT_RUNTIME, EXIT_USAGE = 1, 2


def command_name(argv0: str | None = None) -> str:
    """How this program was invoked: ``ambcore`` from the console script, else
    ``python -m ambcore`` (what the usage line and the resume hints print)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    base = os.path.basename(argv0 or "")
    return "ambcore" if base in ("ambcore", "ambcore.exe") else "python -m ambcore"


def _version() -> str:
    return f"ambcore {__version__}"


def _add_threads_option(sub) -> None:
    for name in THREADED_COMMANDS:
        parser = sub.choices.get(name)
        if parser is not None and parser.get_default("func") is not None:
            parser.add_argument(
                "--threads",
                default=None,
                metavar="N",
                help="CPU threads of this process (default: $AMB_THREADS, else every core it "
                "may use; parallel workers share the cores out, one thread each on two)",
            )


def _wanted_command(argv: list[str] | None) -> str | None:
    """The command named on the command line (its first word), or None (``--help`` alone...)."""
    first = next((a for a in argv if not a.startswith("-")), None) if argv else None
    return first if first in COMMANDS else None


def build_parser(argv: list[str] | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the module of the command it names is imported (the
    other commands are listed by name and help). Without ``argv`` every command is built."""
    parser = argparse.ArgumentParser(
        prog=prog or command_name(),
        description="Adapted Multimodal BERT: data, models, training, sweeps and the book.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if argv is None:
        modules = COMMAND_MODULES
    else:
        wanted = _wanted_command(argv)
        modules = () if wanted is None else (COMMANDS[wanted][0],)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    for name, (_, help_text) in COMMANDS.items():  # listed, not built: never run
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    _add_threads_option(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (argparse: 2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    # SIGTERM ends the command like Ctrl-C (exit 143); off the main thread (a command called
    # in-process from a worker thread) nothing changes.
    with interrupt_on_signals() as received:
        try:
            apply_threads(getattr(args, "threads", None))
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            sig = signal.Signals(received[-1] if received else signal.SIGINT)
            print(f"interrupted by {sig.name}", file=sys.stderr, flush=True)
            return EXIT_CODES[sig]
        except AmbError as exc:
            return _error(str(exc))
        except FileNotFoundError as exc:
            return _error(f"file not found: {exc.filename or exc}")
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return _error(f"{where}{exc.strerror or exc}")
        except pickle.UnpicklingError as exc:
            return _error(f"a pickled file was refused ({exc})")


def _error(message: str, code: int = EXIT_RUNTIME) -> int:
    """Print ``error: <message>`` on one line (a multi-line message is joined); return ``code``."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
