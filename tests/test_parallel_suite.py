"""The suite on every core (pytest-xdist, ``scripts/test.sh``): the notebooks stay one unit of
work in chapter order, each test file is one unit, and the tests that cannot share the machine
run in a pass of their own."""

from __future__ import annotations

import os
import re

from conftest import NOTEBOOKS_SCOPE, scope_of

from ambcore.paths import PROJECT_ROOT

SCRIPT = (PROJECT_ROOT / "scripts" / "test.sh").read_text()


def test_every_notebook_cell_is_in_one_unit_and_a_test_in_its_file():
    assert {
        scope_of("notebooks/01_data.ipynb::Cell 0"),
        scope_of("notebooks/06_results.ipynb::Cell 12"),
        scope_of("notebooks/03_train::ipynb::Cell 2"),
    } == {NOTEBOOKS_SCOPE}
    assert scope_of("tests/test_sweep.py::test_plan[a-b]") == "tests/test_sweep.py"
    assert (
        scope_of("tests/bad_inputs/test_bad_runs.py::test_x") == "tests/bad_inputs/test_bad_runs.py"
    )


def test_the_script_runs_the_parallel_pass_then_the_lone_tests():
    parallel = re.search(r'-m "not alone"', SCRIPT)
    alone = re.search(r"-m alone", SCRIPT)
    assert parallel and alone and parallel.start() < alone.start()
    assert "--dist loadfile" in SCRIPT and re.search(r"-n \"\$workers\"", SCRIPT)
    assert "sched_getaffinity" in SCRIPT  # the usable cores, not every core of the machine


def test_each_worker_gets_runs_and_results_folders_of_its_own(tmp_path, monkeypatch):
    import conftest

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    monkeypatch.setenv("AMB_RUNS", str(tmp_path / "runs"))  # restored after the test
    monkeypatch.setenv("AMB_RESULTS", str(tmp_path / "runs" / "results"))
    conftest.pytest_configure(None)
    assert os.environ["AMB_RUNS"] == str(tmp_path / "runs" / "gw3")
    assert os.environ["AMB_RESULTS"] == str(tmp_path / "runs" / "results" / "gw3")
    assert (tmp_path / "runs" / "gw3").is_dir()


def test_the_notebooks_then_the_costliest_files_are_handed_out_first():
    import conftest
    import pytest

    class Item:
        def __init__(self, nodeid: str, seconds: float | None = None):
            self.nodeid, self.seconds = nodeid, seconds

        def get_closest_marker(self, name: str):
            assert name == "costly"
            return None if self.seconds is None else pytest.mark.costly(self.seconds).mark

    items = [
        Item("tests/test_a.py::t"),
        Item("tests/test_b.py::t", 30),
        Item("notebooks/01_data.ipynb::Cell 0"),
        Item("tests/test_c.py::t", 180),
        Item("tests/test_d.py::t"),
        Item("notebooks/02_model.ipynb::Cell 0"),
    ]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid.split("::")[0] for i in items] == [
        "notebooks/01_data.ipynb",
        "notebooks/02_model.ipynb",
        "tests/test_c.py",
        "tests/test_b.py",
        "tests/test_a.py",
        "tests/test_d.py",
    ]
    assert "--no-loadscope-reorder" in SCRIPT  # else xdist starts the files with most tests
