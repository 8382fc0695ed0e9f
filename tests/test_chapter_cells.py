"""Chapters narrate and call: no code cell of a chapter's source is longer than 15 lines.

A chapter (``notebooks/NN_name.py``, jupytext percent format) explains, then calls ``ambcore``;
logic long enough to need a cell of its own belongs in a documented, tested function there.
Blank lines do not count; markdown cells and the papermill ``parameters`` cell are left out.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MAX_LINES = 15

# Cells longer than MAX_LINES that are known and left for now: (chapter file, the cell's first
# line) -> its length when listed. None today.
ALLOWED: dict[tuple[str, str], int] = {}


def long_cells(path: Path, max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    """``(first line, non-blank lines)`` of every code cell of ``path`` longer than ``max_lines``,
    except the ``parameters`` cell."""
    notebook = jupytext.read(path, fmt="py:percent")
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        lines = [line for line in cell.source.splitlines() if line.strip()]
        if len(lines) > max_lines:
            found.append((lines[0], len(lines)))
    return found


CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def test_every_chapter_is_checked():
    assert [p.name[:2] for p in CHAPTERS] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_long_code_cell(path):
    too_long = [
        f"{path.name}: cell starting {first!r} has {n} non-blank lines (at most {MAX_LINES})"
        for first, n in long_cells(path)
        if n > ALLOWED.get((path.name, first), MAX_LINES)
    ]
    assert not too_long, "move the logic into ambcore and call it:\n" + "\n".join(too_long)


def test_long_cells_are_found(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(16))
    source = (
        '# %% tags=["parameters"]\n' + body + "\n\n"
        "# %% [markdown]\n" + "\n".join(f"# line {i}" for i in range(20)) + "\n\n"
        "# %%\nshort = 1\n\n"
        '# %% tags=["hide-input"]\n' + body.replace("x15 = 15", "\n\nx15 = 15") + "\n\n"
        "# %%\n" + "\n".join(body.splitlines()[:15]) + "\n"
    )
    path = tmp_path / "99_example.py"
    path.write_text(source)
    assert long_cells(path) == [("x0 = 0", 16)]
