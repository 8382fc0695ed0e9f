"""`pytest --nbval` (strict) on the notebooks: which cells are compared, and what is sanitised.

nbval compares a cell's fresh outputs with the stored ones unless the stored cell was never run
(no execution count) or is marked ``# NBVAL_IGNORE_OUTPUT``. The committed notebooks store
outputs only in cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic on the smoke preset;
``scripts/refresh_checked_outputs.py`` writes them); every other cell is stored unrun, so its
timings, figures and progress bars are not compared. These tests keep it that way.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from ambcore.paths import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SANITIZE = PROJECT_ROOT / "tests" / "nbval_sanitize.cfg"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_are_stored_run(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        checked = "NBVAL_CHECK_OUTPUT" in cell.source
        stored_run = cell.execution_count is not None or bool(cell.outputs)
        assert stored_run == checked, f"{path.name} cell {index}: " + (
            "marked NBVAL_CHECK_OUTPUT but stored without outputs (run "
            "scripts/refresh_checked_outputs.py)"
            if checked
            else "stored with outputs but not marked NBVAL_CHECK_OUTPUT: strict nbval would "
            "compare it"
        )


def test_test_script_runs_strict_nbval_with_the_sanitizer():
    text = (PROJECT_ROOT / "scripts" / "test.sh").read_text()
    assert "--nbval-lax" not in text
    assert re.search(r"--nbval\b", text) and "nbval_sanitize.cfg" in text


def _patterns() -> list[tuple[str, str]]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(SANITIZE)
    return [(parser[s]["regex"], parser[s]["replace"]) for s in parser.sections()]


def test_sanitizer_masks_paths_durations_and_times():
    text = (
        "written: /tmp/ambcore-test-runs.Ab12/results/x.csv in 12.5 s at 2026-11-27T10:00:01+00:00"
    )
    for regex, replace in _patterns():
        text = re.sub(regex, replace, text)
    assert text == "written: TMPPATH in N s at TIMESTAMP"
