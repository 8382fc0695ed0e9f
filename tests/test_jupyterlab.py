"""The design card's `jupyter lab`: installed by the set-up; jupytext opens `.py` chapters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ambcore.paths import PROJECT_ROOT

BIN = Path(sys.executable).parent


def _run(*args: str) -> str:
    proc = subprocess.run(
        [str(BIN / "jupyter"), *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_jupyter_lab_runs_at_the_pinned_version():
    lines = (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
    pinned = next(
        d.split("#")[0].split("==")[1].strip() for d in lines if d.startswith("jupyterlab==")
    )
    assert _run("lab", "--version").strip().splitlines()[-1] == pinned


def test_jupytext_extension_is_enabled_in_jupyter_server_and_lab():
    assert "jupyterlab_jupytext" in _run("server", "extension", "list")
    assert "jupyterlab-jupytext" in _run("labextension", "list")


@pytest.mark.parametrize("chapter", ["03_train.py", "01_data.py"])
def test_a_py_chapter_opens_as_a_notebook(chapter):
    """What JupyterLab asks the server for when a .py chapter is opened as a notebook."""
    from jupytext import TextFileContentsManager

    manager = TextFileContentsManager(root_dir=str(PROJECT_ROOT / "notebooks"))
    model = manager.get(chapter, content=True, type="notebook")
    notebook = model["content"]
    assert model["type"] == "notebook" and notebook.nbformat == 4
    tags = [c.metadata.get("tags", []) for c in notebook.cells]
    assert any("parameters" in t for t in tags)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
