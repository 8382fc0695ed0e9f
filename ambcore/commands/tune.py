"""``tune`` command: one Optuna study per cell of a tuning spec, on validation only
(see ``ambcore.tune``).

    python -m ambcore tune SPEC [--runs-dir DIR] [--record FILE] [--retune] [--max-trials N]

A killed study started again keeps its finished trials and runs only the missing ones. The
spec's ``runs_dir`` stays inside the runs folder (as a sweep's), and a spec of more than
``MAX_TRIALS`` trials per cell is refused unless ``--max-trials`` allows it.
"""

from __future__ import annotations

import argparse

from ambcore import interrupt
from ambcore.tune import MAX_TRIALS, load_tune_spec, set_aside, trials_frame, tune, write_record


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tune",
        help="tune every cell's hyper-parameters on validation (Optuna), resuming a killed study",
        description="Run or resume one Optuna study per cell of SPEC (YAML): the same trials and "
        "epochs for every model, the test split never read.",
    )
    p.add_argument("spec", help="the tuning spec file (e.g. experiments/tune_smoke.yaml)")
    p.add_argument("--runs-dir", default=None, help="where the studies go (overrides the spec)")
    p.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="write the tuning record (JSON: revision, date, machine, every trial)",
    )
    p.add_argument(
        "--retune",
        action="store_true",
        help="start every study afresh (the old study folders are set aside)",
    )
    p.add_argument(
        "--max-trials",
        type=int,
        default=MAX_TRIALS,
        metavar="N",
        help=f"refuse a spec of more trials per cell than this (default {MAX_TRIALS})",
    )
    p.set_defaults(func=_tune)


@interrupt.interruptible(interrupt.same_command)  # finished trials are kept; the rest rerun
def _tune(args: argparse.Namespace) -> int:
    spec = load_tune_spec(args.spec, runs_dir=args.runs_dir, max_trials=args.max_trials)
    print(
        f"tune {spec.name}: {len(spec.cells)} cell(s) x {spec.n_trials} trial(s), "
        f"max_epochs {spec.cells[0][1].max_epochs} -> {spec.runs_dir}"
    )
    if args.retune:
        for folder in set_aside(spec):
            print(f"set aside: {folder}")
    studies = tune(spec)
    frame = trials_frame(studies)
    shown = [c for c in frame.columns if c not in ("valid_mae_by_epoch",)]
    print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.record:
        print(f"record: {write_record(spec, studies, args.record)}")
    return 0
