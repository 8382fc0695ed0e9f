"""The thesis' reported numbers on CMU-MOSEI (tables 6.1 and 6.2), as data, never as prose.

``thesis_tables.csv`` holds every row of both tables as printed in the thesis (chapter 6.3):
MAE, Pearson correlation, Acc-7, Acc-2 and F1 (the thesis reports one binary accuracy / F1
without naming the convention) and trainable parameters in millions. ``rerun_here`` marks the
models this project re-runs; the other rows are cited literature numbers that the thesis itself
copied from the papers named in ``source``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["THESIS_TABLES_CSV", "thesis_table"]

THESIS_TABLES_CSV = Path(__file__).with_name("thesis_tables.csv")


def thesis_table(table: str | None = None):
    """Rows of thesis table ``"6.1"`` or ``"6.2"`` (both when None) as a pandas DataFrame."""
    import pandas as pd

    frame = pd.read_csv(THESIS_TABLES_CSV, dtype={"table": str})
    if table is None:
        return frame
    if table not in set(frame["table"]):
        raise ValueError(f"no thesis table {table!r} in {THESIS_TABLES_CSV}; tables: 6.1, 6.2")
    return frame[frame["table"] == table].reset_index(drop=True)
