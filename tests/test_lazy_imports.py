"""Imports sit at the top of their module, so that its dependencies read at a glance; an import
inside a function is there because its laziness is the point (a heavy library kept off a light
path, an optional dependency, a module that imports this one), and a comment on its line, or
on the lines just above its block of imports, says so."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ambcore"


def unexplained_imports(source: str) -> list[int]:
    """Line numbers of the imports inside functions of ``source`` with no comment on their
    line, and none on the lines just above the run of imports they belong to."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if not isinstance(sub, (ast.Import, ast.ImportFrom)):
                continue
            if any("#" in lines[i - 1] for i in range(sub.lineno, sub.end_lineno + 1)):
                continue
            above = sub.lineno - 2  # index of the line above the import
            while above >= 0 and (
                _part_of_imports(lines[above])
                or (not lines[above].strip() and above > 0 and _part_of_imports(lines[above - 1]))
            ):
                above -= 1  # the imports of the same block (its groups a blank line apart)
            if above < 0 or not lines[above].strip().startswith("#"):
                found.append(sub.lineno)
    return found


def _part_of_imports(line: str) -> bool:
    """An import line, or a line of a parenthesised one (``    name,`` or ``)``)."""
    text = line.strip()
    if text.startswith(("import ", "from ", ")")):
        return True
    return bool(text) and text.rstrip(",").replace("_", "").replace(" as ", "").isalnum()


def test_every_import_inside_a_function_says_why_it_is_there():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line in unexplained_imports(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not problems, (
        "imports inside functions without a comment saying why they are not at the top:\n"
        + "\n".join(problems)
    )


def test_the_check_sees_an_unexplained_import_and_accepts_explained_ones():
    source = """
def plain():
    import json
    return json


def explained_above():
    # lazy: torch is heavy and the command line's --help does not need it
    import torch
    from ambcore import train
    return torch, train


def explained_on_the_line():
    import pandas as pd  # lazy: only the table needs pandas
    return pd


def explained_block():
    # lazy: transformers loads only with a model
    from transformers import (
        AutoConfig,
        AutoModel,
    )

    from ambcore.models import plm
    return AutoConfig, AutoModel, plm
"""
    assert unexplained_imports(source) == [3]
