"""Store fresh outputs in the cells that nbval compares (``# NBVAL_CHECK_OUTPUT``).

The committed ``notebooks/NN_*.ipynb`` keep outputs only in those cells; after a change that
alters what such a cell prints (a new config field, a new cell of the sweep), run

    AMB_PRESET=smoke OMP_NUM_THREADS=1 .venv/bin/python scripts/refresh_checked_outputs.py 04_ablation

It executes each named notebook with papermill (smoke preset, runs and results in a temporary
folder), copies the outputs of the checked cells into the committed notebook and leaves every
other cell as it was. Review the diff before committing: the outputs are what the tests will
demand from now on.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[1]
MARK = "NBVAL_CHECK_OUTPUT"


def refresh(name: str, workdir: Path) -> int:
    target = ROOT / "notebooks" / f"{name}.ipynb"
    if not target.exists():
        raise SystemExit(f"no notebook {target}")
    executed = workdir / target.name
    papermill.execute_notebook(
        str(target),
        str(executed),
        parameters={"preset": "smoke"},
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    ran = nbformat.read(executed, as_version=4)
    committed = nbformat.read(target, as_version=4)
    fresh = {c.source: c.outputs for c in ran.cells if c.cell_type == "code" and MARK in c.source}
    changed = 0
    for cell in committed.cells:
        if cell.cell_type == "code" and MARK in cell.source:
            if cell.source not in fresh:
                raise SystemExit(f"{target.name}: a checked cell was not found in the run")
            outputs = [o for o in fresh[cell.source] if o.get("name") != "stderr"]
            for o in outputs:
                o.pop("execution_count", None)
            if outputs != cell.outputs:
                cell.outputs, changed = outputs, changed + 1
    nbformat.write(committed, target)
    return changed


def main(names: list[str]) -> None:
    if not names:
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AMB_PRESET", "smoke")
        os.environ["AMB_RUNS"] = str(Path(tmp) / "runs")
        os.environ["AMB_RESULTS"] = str(Path(tmp) / "results")
        for name in names:
            print(f"{name}: {refresh(name, Path(tmp))} checked cell(s) updated")


if __name__ == "__main__":
    main(sys.argv[1:])
