"""``bench``: the fast training/evaluation path against the naive reference (``ambcore.bench``).

python -m ambcore bench [--preset NAME] [--models amb,amb-ft,misa,mag-bert] [--repeats N]
                        [--set k=v ...] [--json] [--out results/bench-<preset>.json]
                        [--paper-geometry PLM_DIR [--paper-models amb,amb-ft]]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from ambcore.config import PRESETS, apply_overrides, get_config


def register(subparsers: argparse._SubParsersAction) -> None:
    from ambcore.bench import BENCH_MODELS, DEFAULT_MODELS, NAIVE_PAD_TO

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
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ambcore.bench import NAIVE_PAD_TO, default_output, format_report, run_benchmark
    from ambcore.runs import write_json

    cfg = get_config(args.preset, max_text_len=NAIVE_PAD_TO)
    cfg = apply_overrides(cfg, args.overrides)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    command = "python -m ambcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
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
        from ambcore.bench.paper import paper_geometry

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
        from ambcore.bench.paper import format_lines

        print("\n".join([format_report(record), *format_lines(record.get("paper_geometry"))]))
    print(f"written: {out}", file=sys.stderr)
    return 0
