"""``train``, ``evaluate`` and ``predict`` commands (thesis 6.3.1).

    python -m ambcore train --preset NAME --seed N [--out DIR] [--set k=v ...] [--resume]
    python -m ambcore evaluate RUN_DIR [--data PATH]
    python -m ambcore predict RUN_DIR --data PATH --out preds.csv

Several GPUs: launch ``train`` with torchrun (see ``ambcore.train``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
from pathlib import Path

from ambcore import interrupt
from ambcore.cli import command_name
from ambcore.config import PRESETS, apply_overrides, get_config
from ambcore.data import load_dataset
from ambcore.data.types import SPLITS
from ambcore.errors import AmbError, DataError
from ambcore.paths import runs_dir

_TABLE_KEYS = ("mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one model into a run folder and evaluate its best checkpoint",
        description="Train one model (config = preset + --set overrides) into --out.",
    )
    p.add_argument(
        "--preset",
        default=os.environ.get("AMB_PRESET", "embedded"),
        choices=list(PRESETS),
        help=f"one of: {', '.join(PRESETS)} (default: $AMB_PRESET or embedded)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        default=None,
        help="the run folder (default: RUNS/train-PRESET/MODEL-seedN, RUNS being "
        "$AMB_RUNS, else runs/ of the checkout or of the current folder)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable), e.g. --set lr=1e-4",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run in --out from its last finished epoch",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "evaluate",
        help="metrics of a run's best checkpoint on valid and test",
        description="Evaluate RUN_DIR's best checkpoint (on its own data or on --data).",
    )
    p.add_argument("run_dir")
    p.add_argument("--data", default=None, help="a dataset path (default: the run's own data)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "predict",
        help="predictions for every utterance of a dataset file",
        description="Write split,id,y_true,y_pred for every utterance of --data to --out.",
    )
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="a dataset path, or 'synthetic'")
    p.add_argument("--out", required=True, help="the CSV file to write")
    p.set_defaults(func=_predict)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _print_table(title: str, splits: dict[str, dict]) -> None:
    print(title)
    print(f"{'split':<6} " + " ".join(f"{k:>9}" for k in _TABLE_KEYS))
    for name, m in splits.items():
        print(f"{name:<6} " + " ".join(f"{_fmt(m.get(k)):>9}" for k in _TABLE_KEYS))
        for note in m.get("notes") or []:
            print(f"  note ({name}): {note}")


def _data_label(name: str, is_synthetic: bool) -> str:
    return f"{'SYNTHETIC' if is_synthetic else 'real'} data: {name}"


def default_run_dir(cfg):
    """Where ``train`` writes without ``--out``: ``<runs>/train-<preset>/<model>-seed<N>``."""
    return runs_dir() / f"train-{cfg.preset}" / f"{cfg.model}-seed{cfg.seed}"


def _resume_command(args: argparse.Namespace) -> str:
    argv = [
        *command_name().split(),
        "train",
        "--preset",
        args.preset,
        "--seed",
        str(args.seed),
        *(["--out", args.out] if args.out else []),
        *[a for item in args.overrides for a in ("--set", item)],
    ]
    return shlex.join(argv + ["--resume"])


@interrupt.interruptible(_resume_command)  # Ctrl-C / SIGTERM: resumable, with the command to do so
def _train(args: argparse.Namespace) -> int:
    # lazy: torch and transformers load only when the command runs; `train --help` stays light
    from ambcore.train import train_and_evaluate

    cfg = apply_overrides(get_config(args.preset, seed=args.seed), args.overrides)
    if args.out is None:
        args.out = str(default_run_dir(cfg))
    result = train_and_evaluate(cfg, args.out, progress=not args.no_progress, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    state = (
        "already finished (DONE); not retrained"
        if result.reused
        else (
            f"trained {result.epochs_run} epoch(s), best epoch {result.best_epoch}, "
            f"{result.seconds:.1f} s"
        )
    )
    print(f"{result.run_dir}: {state}")
    _print_table(
        f"{cfg.model} | PLM {result.plm} | {_data_label(result.data_name, result.is_synthetic)}",
        {"valid": result.valid, "test": result.test},
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    # lazy: torch and transformers load only when the command runs; `train --help` stays light
    from ambcore.train import evaluate_run

    ev = evaluate_run(args.run_dir, data=args.data, progress=True)
    if args.json:
        print(
            json.dumps(
                {
                    "data": ev.data_name,
                    "is_synthetic": ev.is_synthetic,
                    "valid": ev.valid,
                    "test": ev.test,
                },
                indent=2,
                default=str,
            )
        )
    else:
        _print_table(
            f"{ev.run_dir} | {_data_label(ev.data_name, ev.is_synthetic)}",
            {"valid": ev.valid, "test": ev.test},
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    """The run's best checkpoint (``ambcore.from_pretrained``) on every split of ``--data``,
    through ``model.predict`` (the library's call on raw inputs)."""
    # lazy: torch and transformers load only when the command runs; `train --help` stays light
    from ambcore import runs
    from ambcore.models import from_pretrained
    from ambcore.train import resolve_device

    if Path(args.out).is_dir():
        raise AmbError(f"{args.out} is a folder; the predictions go to a CSV file path")
    model = from_pretrained(args.run_dir)
    cfg = model.cfg
    dataset = load_dataset(args.data or cfg.data, cfg)
    if (dataset.visual_dim, dataset.acoustic_dim) != (model.visual_dim, model.acoustic_dim):
        raise DataError(
            f"{dataset.source}: visual/acoustic feature dims are ({dataset.visual_dim}, "
            f"{dataset.acoustic_dim}); the model in {args.run_dir} was trained on "
            f"({model.visual_dim}, {model.acoustic_dim})"
        )
    model.to(resolve_device(cfg.device))
    rows, counts = [], []
    for name in (s for s in SPLITS if s in dataset.splits):
        split = dataset[name]
        scores = model.predict(
            split.texts, split.visual, split.acoustic, words=split.words, progress=True
        )
        rows += [
            {"split": name, "id": i, "y_true": float(y), "y_pred": float(p)}
            for i, y, p in zip(split.ids, split.labels, scores)
        ]
        counts.append(f"{name} {len(split)}")
    runs.write_csv(args.out, rows, ("split", "id", "y_true", "y_pred"))
    print(f"wrote {len(rows)} predictions ({', '.join(counts)}) to {args.out}")
    return 0
