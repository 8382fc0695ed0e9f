"""Run ``python -m ambcore data inspect`` on many files in one child process (the CLI's imports
take seconds), under an address-space limit, recording for each file its exit code, stdout,
stderr and the growth of the peak resident memory.

Used by the bad-input tests: ``run_batch(paths) -> {path: Result}``. A file that kills the
child (a segfault) leaves the rest without a result.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_LIMIT = 3 << 30  # the CLI imports torch and sklearn (~1 GiB of address space)

_CHILD = r"""
import contextlib, io, json, resource, sys, traceback
from ambcore.cli import main
results = {}
progress = open(sys.argv[1], "a")
for path in sys.argv[2:]:
    progress.write(path + "\n"); progress.flush()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["data", "inspect", path])
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = 1
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results[path] = dict(code=code, out=out.getvalue(), err=err.getvalue(), growth_kb=after - before)
json.dump(results, sys.stdout)
"""


@dataclass
class Result:
    code: int | None  # None: the child died before this file finished (e.g. SIGSEGV)
    out: str
    err: str
    growth_kb: int


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_LIMIT, ADDRESS_LIMIT))


def run_batch(paths: list[Path], workdir: Path) -> dict[str, Result]:
    progress = workdir / "progress.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(progress), *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_memory,
        timeout=600,
    )
    try:
        found = json.loads(child.stdout)
    except json.JSONDecodeError:
        found = {}
    died = f"child exited {child.returncode} while reading this file: {child.stderr[-400:]}"
    return {
        str(p): Result(**found[str(p)]) if str(p) in found else Result(None, "", died, 0)
        for p in paths
    }
