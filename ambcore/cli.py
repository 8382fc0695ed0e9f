"""Command-line entry point: ``python -m ambcore <command> ...``.

Each command lives in its own module under ``ambcore.commands`` exposing
``register(subparsers)``; a command sets ``func`` to a callable taking the parsed args and
returning an exit code. Errors of the user's input (``AmbError``), files that cannot be read
or written (``OSError``: a read-only folder, a full disk) and pickles refused by torch print
one ``error:`` line (no traceback) and exit 2.

The commands that train or evaluate take ``--threads N`` (default ``AMB_THREADS``, else every
core the process may use), applied before the command runs (``ambcore.threads``).
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys

from ambcore.errors import AmbError
from ambcore.threads import apply_threads

COMMAND_MODULES = (
    "ambcore.commands.data",  # data inspect | data synth | data from-sdk
    "ambcore.commands.model",  # model summary
    "ambcore.commands.train",  # train | evaluate | predict
    "ambcore.commands.sweep",  # sweep
    "ambcore.commands.tune",  # tune
    "ambcore.commands.bench",  # bench
    "ambcore.commands.book",  # book (the main job)
)

# Commands that train or evaluate on the CPU: they take --threads.
THREADED_COMMANDS = ("train", "evaluate", "predict", "sweep", "tune", "bench", "book")


def _add_threads_option(sub) -> None:
    for name in THREADED_COMMANDS:
        if name in sub.choices:
            sub.choices[name].add_argument(
                "--threads", default=None, metavar="N",
                help="CPU threads of this process (default: $AMB_THREADS, else every core it "
                     "may use; parallel workers share the cores out, one thread each on two)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ambcore",
        description="Adapted Multimodal BERT: data, models, training, sweeps and the book.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command not written yet
            if exc.name == name:
                continue
            raise
        module.register(sub)
    _add_threads_option(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except AmbError as exc:
        return _error(str(exc))
    except FileNotFoundError as exc:
        return _error(f"file not found: {exc.filename or exc}")
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except pickle.UnpicklingError as exc:
        return _error(f"a pickled file was refused ({exc})")


def _error(message: str) -> int:
    """Print ``error: <message>`` on one line (a multi-line message is joined) and return 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
