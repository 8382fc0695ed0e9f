"""``bench``: the fast training/evaluation path against the naive reference (``ambcore.bench``).

python -m ambcore bench [--preset NAME] [--models amb,amb-ft,misa,mag-bert] [--repeats N]
                        [--set k=v ...] [--json] [--out results/bench-<preset>.json]
                        [--paper-geometry PLM_DIR [--paper-models amb,amb-ft]]
python -m ambcore bench --numerics [--preset NAME] [--seeds 0,1,2,3,4] [--parallel N]
                        [--set k=v ...] [--out results/numerics-<preset>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ambcore.bench import (
    BENCH_MODELS,
    DEFAULT_MODELS,
    NAIVE_PAD_TO,
    default_output,
    format_report,
    run_benchmark,
)
from ambcore.bench.numerics import default_output as default_numerics_output
from ambcore.bench.numerics import format_numerics, run_numerics
from ambcore.bench.paper import format_lines, paper_geometry
from ambcore.config import PRESETS, ConfigError, apply_overrides, get_config
from ambcore.overrides import parse_assignments
from ambcore.runs import write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="training/evaluation throughput and peak memory, fast path vs naive path",
        description="Train and evaluate each model on the same synthetic batches along the fast "
        "path and a naive reference path (fixed padding, no bucketing or caching, fp32, "
        "gradients for frozen weights), side by side in one process; peak memory in a fresh "
        "process per model and path. Writes a JSON record (see ambcore.bench).",
    )
    p.add_argument(
        "--preset",
        default=os.environ.get("AMB_PRESET", "embedded"),
        help=f"one of: {', '.join(PRESETS)} (default: $AMB_PRESET or embedded)",
    )
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from: {', '.join(BENCH_MODELS)}",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=3,
        help="untimed training steps per path before timing (default 3)",
    )
    p.add_argument(
        "--memory-steps",
        type=int,
        default=3,
        help="training steps of the peak-memory subprocesses (default 3)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--phase-epochs",
        type=int,
        default=1,
        help="epochs of the per-phase CPU-time run of each model (0: no phases)",
    )
    p.add_argument(
        "--phases-only",
        action="store_true",
        help="only the machine block and the per-phase CPU times (no timed rounds)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config field (repeatable); max_text_len defaults to "
        f"{NAIVE_PAD_TO}, the naive path's fixed length",
    )
    p.add_argument("--json", action="store_true", help="print the JSON record instead of a table")
    p.add_argument(
        "--out",
        default=None,
        help="where to write the JSON record (default results/bench-<preset>.json)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--load-competitors",
        type=int,
        default=1,
        metavar="N",
        help="busy processes beside the under-load training steps of the first "
        "model (default 1; 0 skips the measurement)",
    )
    p.add_argument(
        "--paper-geometry",
        default=None,
        metavar="PLM_DIR",
        help="also time one training step and one evaluation batch of the paper "
        "preset at the geometry of PLM_DIR (python -m ambcore model standin "
        "--out DIR) and count the FLOPs of a MOSEI epoch (ambcore.bench.paper)",
    )
    p.add_argument(
        "--paper-models",
        default="amb,amb-ft",
        help="models of --paper-geometry (default amb,amb-ft)",
    )
    p.add_argument(
        "--numerics",
        action="store_true",
        help="instead: train AMB on the same seeds in fp32 and under bf16 autocast and compare "
        "the two with the verdicts' test (ambcore.bench.numerics; record "
        "results/numerics-<preset>.json)",
    )
    p.add_argument(
        "--seeds",
        default="0,1,2,3,4",
        help="--numerics: the seeds of each arm, comma-separated (default 0,1,2,3,4)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="--numerics: runs at once (0: one per core, one thread each; 1: in this process)",
    )
    p.set_defaults(func=_bench)


def _numerics(args: argparse.Namespace, command: str) -> int:
    pairs = parse_assignments(args.overrides)
    cfg = get_config(args.preset, **pairs)  # typed and range-checked
    overrides = {k: getattr(cfg, k) for k in pairs}
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds {args.seeds!r}: expected integers separated by commas"
        ) from None
    record = run_numerics(
        args.preset,
        seeds,
        overrides,
        parallel=args.parallel,
        progress=not args.no_progress,
        command=command,
    )
    out = Path(args.out) if args.out else default_numerics_output(args.preset)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(json.dumps(record, indent=2) if args.json else format_numerics(record))
    print(f"written: {out}", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    command = "python -m ambcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.numerics:
        return _numerics(args, command)
    cfg = get_config(args.preset, max_text_len=NAIVE_PAD_TO)
    cfg = apply_overrides(cfg, args.overrides)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    record = run_benchmark(
        cfg,
        models,
        repeats=args.repeats,
        warmup_steps=args.warmup_steps,
        memory_steps=args.memory_steps,
        measure_memory_peak=not args.no_memory,
        command=command,
        progress=not args.no_progress,
        load_competitors=args.load_competitors,
        phase_epochs=args.phase_epochs,
        timing=not args.phases_only,
    )
    if args.paper_geometry:
        paper_models = [m.strip() for m in args.paper_models.split(",") if m.strip()]
        record["paper_geometry"] = paper_geometry(
            args.paper_geometry, paper_models, device=str(record["device"])
        )
    out = Path(args.out) if args.out else default_output(cfg.preset)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print("\n".join([format_report(record), *format_lines(record.get("paper_geometry"))]))
    print(f"written: {out}", file=sys.stderr)
    return 0
