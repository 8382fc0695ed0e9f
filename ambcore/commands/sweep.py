"""``sweep`` command: every cell of a sweep spec into its own run folder (see ``ambcore.sweep``).

    python -m ambcore sweep SPEC [--dry-run] [--backend local|submitit] [--cluster local|slurm]
                                 [--runs-dir DIR] [--max-parallel N] [--workers here|persistent|fresh]
                                 [--set k=v ...] [--fail-fast] [--max-cells N]

Finished cells (DONE, whose files check out) are skipped and unfinished ones resumed, so
re-running a sweep after a crash, a preemption or an interruption only trains what is missing.
A failed cell is one line on the console and in the summary; the others go on. Exit status 1
when a cell failed; Ctrl-C or SIGTERM stops every process the sweep started, prints the
command that resumes it and exits with 130 or 143.
"""

from __future__ import annotations

import argparse
import shlex

from ambcore import interrupt
from ambcore.config import apply_overrides, get_config
from ambcore.sweep import (
    BACKENDS,
    CLUSTERS,
    MAX_CELLS,
    WORKERS,
    load_spec,
    plan,
    plan_frame,
    run_sweep,
)
from ambcore.threads import child_environment, threads_per_process


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="train a grid of models x variants x seeds, skipping finished cells",
        description="Run every (cell, seed) of SPEC (YAML, TOML or JSON) into its own run folder.",
    )
    p.add_argument("spec", help="the sweep spec file (.yaml, .toml or .json)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the cells, their run folders and status; train nothing",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: this machine, in this process or in worker processes (see "
        "--max-parallel, --workers; default); submitit: one job per cell "
        "(see --cluster)",
    )
    p.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default="local",
        help="for --backend submitit: local subprocesses (one per GPU) or SLURM",
    )
    p.add_argument("--runs-dir", default=None, help="where the run folders go (overrides the spec)")
    p.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="cells at once (local: worker processes, each for cell after cell; "
        "submitit local: default one per visible GPU, else 1)",
    )
    p.add_argument(
        "--workers",
        choices=WORKERS,
        default=None,
        help="--backend local: 'here' (this process), 'persistent' (one worker "
        "process per slot for every cell) or 'fresh' (a new process per run); "
        "default: here with one slot, persistent with --max-parallel > 1",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field in every cell (repeatable)",
    )
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--max-cells",
        type=int,
        default=MAX_CELLS,
        help=f"refuse a spec of more (cell, seed) runs than this (default {MAX_CELLS})",
    )
    p.set_defaults(func=_sweep)


def _resume_command(args: argparse.Namespace) -> str:
    """The same sweep again: finished cells are skipped, interrupted ones resumed."""
    argv = ["python", "-m", "ambcore", "sweep", args.spec]
    for flag, value in (
        ("--backend", args.backend),
        ("--cluster", args.cluster),
        ("--runs-dir", args.runs_dir),
        ("--max-parallel", args.max_parallel),
        ("--workers", args.workers),
        ("--max-cells", args.max_cells if args.max_cells != MAX_CELLS else None),
    ):
        if value is not None and not (flag in ("--backend", "--cluster") and value == "local"):
            argv += [flag, str(value)]
    for item in args.overrides:
        argv += ["--set", item]
    return shlex.join(argv + (["--fail-fast"] if args.fail_fast else []))


@interrupt.interruptible(_resume_command)
def _sweep(args: argparse.Namespace) -> int:
    # --set values are parsed and type-checked like `train --set` (against a throwaway config).
    overrides = {}
    if args.overrides:
        checked = apply_overrides(get_config("smoke"), args.overrides)
        keys = [item.split("=", 1)[0].strip() for item in args.overrides]
        overrides = {k: getattr(checked, k) for k in keys}
    spec = load_spec(
        args.spec, runs_dir=args.runs_dir, overrides=overrides, max_cells=args.max_cells
    )
    cells = plan(spec)
    print(
        f"sweep {spec.name}: {len(spec.cells)} cell(s) x {len(spec.seeds)} seed(s) "
        f"-> {spec.runs_dir}"
    )
    if args.dry_run:
        print(plan_frame(cells).to_string(index=False))
        return 0

    # Parallel cells share the cores out (one thread each on two cores, or --threads).
    slots = args.max_parallel or 1
    with child_environment(threads_per_process(slots, getattr(args, "threads", None))):
        result = run_sweep(
            spec,
            backend=args.backend,
            cluster=args.cluster,
            max_parallel=args.max_parallel,
            workers=args.workers,
            fail_fast=args.fail_fast,
            progress=not args.no_progress,
        )
    frame = result.frame()[["cell", "seed", "status_before", "outcome", "seconds", "run_dir"]]
    print(frame.to_string(index=False, float_format=lambda s: f"{s:.1f}"))
    for failure in result.failed:
        print(f"FAILED {failure.cell} seed {failure.seed} ({failure.run_dir}): {failure.error}")
    return 1 if result.failed else 0
