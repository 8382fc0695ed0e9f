"""What a run of a local sweep costs besides its epochs: a fresh process per run against
persistent workers (``ambcore.sweep_workers``), side by side on the same grid (thesis 6.3.3).

    python -m ambcore.bench.workers [--preset embedded] [--cells amb,misa] [--seeds 0,1]
                                    [--max-epochs 1] [--rounds 1] [--out FILE]

Each round trains the grid once per way, one run at a time (one slot, so that the two ways
do not compete for the cores), the ways in alternating order from round to round. A run's
overhead is its share of the sweep's wall time minus its epochs (``history.csv`` seconds):
process start, imports, the PLM's load, data set-up, the test evaluation, the files. Both ways
must compute the same numbers (checked: metrics and history, bit for bit). On a shared
machine the figures are noisy: read the two ways of one round against each other.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ambcore.runs import machine_block
from ambcore.sweep import run_sweep

__all__ = ["measure_overhead", "main"]

WAYS = ("fresh", "persistent")


def _numbers(run_dir: Path) -> tuple:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = pd.read_csv(run_dir / "history.csv").drop(columns=["seconds"], errors="ignore")
    return ({k: metrics.get(k) for k in ("test", "valid")}, history.to_dict(orient="list"))


def measure_overhead(
    preset: str = "embedded",
    cells: Sequence[str] = ("amb", "misa"),
    seeds: Sequence[int] = (0, 1),
    max_epochs: int = 1,
    rounds: int = 1,
    root: Path | None = None,
) -> dict[str, Any]:
    """The grid ``cells`` x ``seeds`` of ``preset`` trained per way (``WAYS``) and round;
    returns per way the medians over rounds of wall, epoch and overhead seconds per run."""
    root = Path(root or tempfile.mkdtemp(prefix="amb-workers-bench-"))
    spec = {
        "name": "workers-bench",
        "preset": preset,
        "seeds": list(seeds),
        "overrides": {"max_epochs": max_epochs, "patience": max_epochs},
        "cells": [{"name": c, "overrides": {"model": c}} for c in cells],
    }
    rows, numbers = [], {}
    for r in range(rounds):
        for way in WAYS if r % 2 == 0 else WAYS[::-1]:
            t0 = time.perf_counter()
            result = run_sweep(
                spec, runs_dir=root / f"{way}-{r}", workers=way, max_parallel=1, progress=False
            )
            wall = time.perf_counter() - t0
            if result.failed:
                raise RuntimeError(f"{way}: {result.failed[0].error}")
            dirs = [o.run_dir for o in result.outcomes]
            epochs = sum(float(pd.read_csv(d / "history.csv")["seconds"].sum()) for d in dirs)
            n = len(dirs)
            rows.append(
                {
                    "round": r,
                    "way": way,
                    "runs": n,
                    "wall_s_per_run": wall / n,
                    "epochs_s_per_run": epochs / n,
                    "overhead_s_per_run": (wall - epochs) / n,
                }
            )
            numbers[(way, r)] = [_numbers(d) for d in dirs]
    same = all(v == numbers[("fresh", 0)] for v in numbers.values())
    summary = {}
    for way in WAYS:
        mine = [row for row in rows if row["way"] == way]
        summary[way] = {
            k: statistics.median(row[k] for row in mine)
            for k in ("wall_s_per_run", "epochs_s_per_run", "overhead_s_per_run")
        }
    fresh, kept = (
        summary["fresh"]["overhead_s_per_run"],
        summary["persistent"]["overhead_s_per_run"],
    )
    return {
        "preset": preset,
        "cells": list(cells),
        "seeds": list(seeds),
        "max_epochs": max_epochs,
        "rounds": rounds,
        "threads": __import__("torch").get_num_threads(),
        "machine": machine_block(),
        "rows": rows,
        "summary": summary,
        "overhead_saved_s_per_run": fresh - kept,
        "overhead_ratio_persistent_to_fresh": kept / fresh if fresh > 0 else None,
        "same_numbers": same,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ambcore.bench.workers", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--preset", default="embedded")
    p.add_argument("--cells", default="amb,misa", help="models, one cell each (comma-separated)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--max-epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default=None, help="write the record here (JSON); default: stdout")
    args = p.parse_args(argv)
    record = measure_overhead(
        args.preset,
        args.cells.split(","),
        [int(s) for s in args.seeds.split(",")],
        args.max_epochs,
        args.rounds,
    )
    text = json.dumps(record, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if not args.out else json.dumps(record["summary"], indent=2))
    return 0 if record["same_numbers"] else 1


if __name__ == "__main__":
    sys.exit(main())
