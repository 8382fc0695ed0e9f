"""``python -m ambcore book``: execute the chapters with papermill and build the book (the main job)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ambcore import paths
from ambcore.config import CELL_TIMEOUT_S
from ambcore.errors import AmbError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "book",
        help="execute every chapter with papermill and build the jupyter-book",
        description=(
            "Execute notebooks/NN_*.ipynb in order with papermill (parameters preset, data, plm, "
            "seed) into book/executed/, record the wall time of each chapter, then run "
            "`jupyter-book build book/`. AMB_PRESET, AMB_DATA and AMB_PLM give the defaults."
        ),
    )
    p.add_argument(
        "--preset",
        default=os.environ.get("AMB_PRESET") or "embedded",
        help="smoke | embedded | paper (default: $AMB_PRESET or embedded)",
    )
    p.add_argument(
        "--data",
        default=os.environ.get("AMB_DATA") or None,
        help="dataset: 'synthetic' or a pickle path (default: $AMB_DATA or the preset's)",
    )
    p.add_argument(
        "--plm",
        default=os.environ.get("AMB_PLM") or None,
        help="language model: embedded | tiny-random | a local folder or hub name "
        "(default: $AMB_PLM or the preset's)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed passed to every chapter")
    p.add_argument(
        "--chapters",
        default=None,
        help="comma-separated chapters to execute, e.g. 01,02 (default: all); the "
        "others keep their last executed copy",
    )
    p.add_argument(
        "--no-sync",
        dest="sync",
        action="store_false",
        help="do not write notebooks/NN.ipynb from NN.py (the .py's cells still run)",
    )
    p.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="only execute the notebooks, do not run jupyter-book",
    )
    p.add_argument(
        "-W",
        "--strict",
        action="store_true",
        help="build with warnings as errors (jupyter-book build -W --keep-going)",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="results folder for the chapters that write or read results files (default: results/)",
    )
    p.add_argument("--book-dir", type=Path, default=None, help="the book folder (default: book/)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where executed notebooks go (default: BOOK_DIR/executed, where the book "
        "reads them; another folder needs --no-build)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value for every chapter and every run, over the preset and "
        "the baselines' recipes (repeatable; the kernels read it as AMB_SET), "
        "e.g. --set max_epochs=1 for a dry run",
    )
    p.add_argument(
        "--param",
        dest="chapter_params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a papermill parameter (YAML value) for the chapters that declare it "
        "(repeatable), e.g. --param n_seeds=1 --param 'rates=[0.0, 1.0]'",
    )
    p.add_argument(
        "--retune",
        action="store_true",
        help="run the preset's tuning studies afresh (experiments/tune_<preset>.yaml) "
        "before the chapters; without it a matching results/tuning_<preset>.json "
        "is used and a missing one is produced",
    )

    presets = ", ".join(f"{name} {seconds:g}" for name, seconds in CELL_TIMEOUT_S.items())
    p.add_argument(
        "--cell-timeout",
        default=None,
        metavar="SECONDS",
        help="the seconds one cell may run before the book stops (default: "
        f"$AMB_CELL_TIMEOUT, else the preset's: {presets}; 0: no limit)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # lazy: ambcore.book loads papermill and torch; `book --help` stays light
    from ambcore.book import BookInterrupted, run_book

    if not paths.IN_CHECKOUT:
        raise AmbError(
            "the book needs a checkout of the project (notebooks/, book/, _config.yml); "
            "installed, ambcore has the library and its specs only: run the book in a "
            "clone with `bash scripts/run_book.sh`"
        )

    try:
        result = run_book(
            preset=args.preset,
            data=args.data,
            plm=args.plm,
            seed=args.seed,
            chapters=args.chapters,
            build=args.build,
            warnings_as_errors=args.strict,
            sync=args.sync,
            results_dir=args.results_dir,
            book_dir=args.book_dir,
            out_dir=args.out,
            overrides=args.overrides,
            chapter_params=args.chapter_params,
            retune=args.retune,
            cell_timeout=args.cell_timeout,
        )
    except BookInterrupted as exc:  # the job printed what was stopped and how to resume
        # Every file is written; exit now. A normal interpreter exit would wait seconds on the
        # stopped kernels' ZeroMQ sockets (messages for a kernel that is gone).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + (exc.signum or 2))
    if result.html_dir is not None:
        print(f"[book] open {result.html_dir / 'index.html'}")
    return 0
