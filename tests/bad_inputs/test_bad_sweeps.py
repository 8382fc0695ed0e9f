"""Hostile and broken sweep specs and run folders (ambcore.sweep, ``python -m ambcore sweep``).

Each bad spec ends with exit status 2, one ``error:`` line naming the key and value, no
traceback, and nothing written; the specs that would expand into gigabytes run in a child
process whose address space is capped, so that they fail fast instead of filling the machine.
A DONE folder whose files do not check out is set aside and trained again, and a failing cell
is one line while the other cells go on.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ambcore import runs
from ambcore.cli import main as cli_main
from ambcore.sweep import load_spec, plan, run_sweep

ROOT = Path(__file__).resolve().parents[2]
GOOD = "name: toy\npreset: smoke\nseeds: [0, 1]\ncells:\n  - {name: amb, overrides: {model: amb}}\n"


def _spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _dry_run(capsys, spec: Path, *extra: str) -> tuple[int, list[str], str]:
    code = cli_main(["sweep", str(spec), "--dry-run", *extra])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()], captured.out


def _assert_one_error_line(code: int, err: list[str], *words: str) -> None:
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err[0]


@pytest.fixture()
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("AMB_RUNS", str(root))
    return root


# ---- names and runs_dir stay inside the runs folder ------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        (GOOD.replace("name: toy", "name: ../escaped"), ["name", "../escaped"]),
        (GOOD.replace("name: amb,", "name: ../escaped,"), ["cell name", "../escaped"]),
        (GOOD + "runs_dir: ../escaped\n", ["runs_dir", "../escaped"]),
        (GOOD + "runs_dir: ok/../../escaped\n", ["runs_dir", "../escaped"]),
        (GOOD + "runs_dir: /tmp/escaped\n", ["runs_dir", "/tmp/escaped"]),
        (GOOD + "runs_dir: ''\nname: ..\n", ["name", "'..'"]),
    ],
)
def test_names_and_runs_dir_cannot_leave_the_runs_folder(tmp_path, runs_root, capsys, text, words):
    code, err, out = _dry_run(capsys, _spec(tmp_path, text))
    _assert_one_error_line(code, err, *words)
    assert out == "" and not (tmp_path / "escaped").exists() and list(runs_root.iterdir()) == []


def test_a_symlink_out_of_the_runs_folder_is_refused(tmp_path, runs_root, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs_root / "link").symlink_to(outside)
    code, err, _ = _dry_run(capsys, _spec(tmp_path, GOOD + "runs_dir: link\n"))
    _assert_one_error_line(code, err, "runs_dir", "link", "leads out of the runs folder")

    (runs_root / "toy").mkdir()
    (runs_root / "toy" / "amb").symlink_to(outside)  # a cell folder leading out
    code, err, _ = _dry_run(capsys, _spec(tmp_path, GOOD))
    _assert_one_error_line(code, err, "cell 'amb'", "symlink out of the sweep's folder")
    assert list(outside.iterdir()) == []


def test_an_absolute_runs_dir_is_still_allowed_from_code_and_the_command_line(
    tmp_path, runs_root, capsys
):
    spec = load_spec(
        {"preset": "smoke", "runs_dir": str(tmp_path / "mine"), "cells": [{"name": "a"}]}
    )
    assert spec.runs_dir == tmp_path / "mine"
    code, err, out = _dry_run(capsys, _spec(tmp_path, GOOD), "--runs-dir", str(tmp_path / "cli"))
    assert code == 0 and not err and str(tmp_path / "cli") in out


# ---- seeds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seeds", ["[true]", "[0, false]", "[-1]", "[1.0e+23]", "[4294967296]", "['3']", "[[0]]", "7"]
)
def test_seeds_are_non_negative_integers(tmp_path, runs_root, capsys, seeds):
    code, err, out = _dry_run(capsys, _spec(tmp_path, GOOD.replace("[0, 1]", seeds)))
    _assert_one_error_line(code, err, "seeds", "integers from 0 to 4294967295")
    assert out == "" and "seedTrue" not in "".join(err)


# ---- size: a cap on cells, no alias bombs ----------------------------------------------------------


def _cli_capped(args: list[str], memory_bytes: int = 3 << 30, timeout: float = 120):
    """``python -m ambcore ARGS`` in a child whose address space is capped at ``memory_bytes``."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ambcore", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        preexec_fn=cap,
        timeout=timeout,
    )


def test_a_grid_of_ten_billion_cells_fails_at_once(tmp_path, runs_root):
    keys = "".join(f"  k{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for i in range(10))
    spec = _spec(tmp_path, f"preset: smoke\nseeds: [0]\ngrid:\n{keys}")
    proc = _cli_capped(["sweep", str(spec), "--dry-run"])
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    _assert_one_error_line(proc.returncode, err, "10000000000 runs", "at most 1000")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_yaml_alias_bomb_fails_at_once(tmp_path, runs_root):
    levels = ["&l0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    for i in range(1, 9):  # 10**9 integers once expanded, in a 300-byte file
        levels.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    spec = _spec(tmp_path, GOOD.replace("[0, 1]", "[" + ", ".join(levels) + "]"))
    proc = _cli_capped(["sweep", str(spec), "--dry-run"])
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    _assert_one_error_line(proc.returncode, err, "YAML alias *l0", "line 3")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_the_cell_cap_is_overridable(tmp_path, runs_root, capsys):
    spec = _spec(tmp_path, GOOD)  # 1 cell x 2 seeds
    code, err, _ = _dry_run(capsys, spec, "--max-cells", "1")
    _assert_one_error_line(code, err, "2 runs", "at most 1", "--max-cells")
    code, err, out = _dry_run(capsys, spec, "--max-cells", "2")
    assert code == 0 and not err and "1 cell(s) x 2 seed(s)" in out


# ---- DONE folders are checked before they are skipped ----------------------------------------------


def _corrupt(run_dir: Path, how: str) -> None:
    paths = runs.RunPaths(run_dir)
    weights = paths.best / "weights.safetensors"
    if how == "no metrics.json":
        paths.metrics.unlink()
    elif how == "truncated metrics.json":
        paths.metrics.write_bytes(paths.metrics.read_bytes()[:40])
    elif how == "metrics.json without test":
        metrics = json.loads(paths.metrics.read_text())
        del metrics["test"]
        paths.metrics.write_text(json.dumps(metrics))
    elif how == "no best/":
        shutil.rmtree(paths.best)
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "best/ of another config":
        other = json.loads((paths.best / "config.json").read_text())
        (paths.best / "config.json").write_text(
            json.dumps({**other, "cfg": {**other["cfg"], "seed": 99}})
        )
    elif how == "no config.json":
        paths.config.unlink()
    elif how == "weights unlike their hash":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0x01  # one flipped bit in the last tensor
        weights.write_bytes(bytes(data))


CORRUPTIONS = (
    "no metrics.json",
    "truncated metrics.json",
    "metrics.json without test",
    "no best/",
    "truncated weights",
    "best/ of another config",
    "no config.json",
    "weights unlike their hash",
)


@pytest.mark.slow
def test_corrupt_done_folders_are_set_aside_and_trained_again(tmp_path, capsys):
    """One real smoke run, copied into the folder of every cell (all cells share its config),
    then each copy broken in another way; the sweep retrains exactly the broken ones."""
    cells = [{"name": "intact"}] + [{"name": f"c{i}"} for i in range(len(CORRUPTIONS))]
    spec = {"name": "corrupt", "preset": "smoke", "seeds": [0], "cells": cells}
    first = run_sweep({**spec, "cells": cells[:1]}, runs_dir=tmp_path, progress=False)
    assert [o.outcome for o in first.outcomes] == ["trained"]
    template = tmp_path / "intact" / "seed0"
    for i, how in enumerate(CORRUPTIONS):
        shutil.copytree(template, tmp_path / f"c{i}" / "seed0")
        _corrupt(tmp_path / f"c{i}" / "seed0", how)
    capsys.readouterr()

    second = run_sweep(spec, runs_dir=tmp_path, progress=False)  # does not stop at any of them
    out = capsys.readouterr()
    outcomes = {o.cell: (o.status_before, o.outcome) for o in second.outcomes}
    assert outcomes.pop("intact") == ("done", "skipped")
    assert outcomes == {f"c{i}": ("corrupt", "trained") for i in range(len(CORRUPTIONS))}
    assert all(c.status == "done" for c in plan(second.spec))
    for i, how in enumerate(CORRUPTIONS):
        run_dir = tmp_path / f"c{i}" / "seed0"
        aside = run_dir.with_name("seed0.corrupt-1")
        assert runs.read_metrics(run_dir)["test"]["mae"] > 0  # trained anew
        assert not runs.is_done(aside) and (aside / "DONE.rejected").exists()  # reports skip it
        reason = runs.read_json(aside / "REJECTED.json")["reason"]
        line = [x for x in (out.out + out.err).splitlines() if f"c{i}/seed0: marked DONE" in x]
        assert len(line) == 1 and reason in line[0], (how, line)


# ---- a failing cell is one line, the others go on ----------------------------------------------------


@pytest.mark.slow
def test_a_diverging_cell_is_one_failed_line_and_the_sweep_goes_on(tmp_path, capsys, monkeypatch):
    """The cell with lr 0.000123 gets a NaN loss from its second epoch on and diverges."""
    import ambcore.train as train

    real_loss = train._task_loss

    def exploding_loss(cfg, prediction, labels):
        loss = real_loss(cfg, prediction, labels)
        return loss * float("nan") if cfg.lr == 0.000123 else loss

    monkeypatch.setattr(train, "_task_loss", exploding_loss)
    spec = _spec(
        tmp_path,
        "name: div\npreset: smoke\nseeds: [0]\ncells:\n"
        "  - {name: diverges, overrides: {lr: 0.000123}}\n"
        "  - {name: fine, overrides: {model: amb}}\n",
    )
    code = cli_main(["sweep", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1
    assert "Traceback" not in text and 'File "' not in text
    failed = [line for line in text.splitlines() if "diverges" in line and "FAILED" in line]
    assert len(failed) == 2  # as it happened, and in the summary
    assert all("diverges seed 0" in line and "diverged at epoch 1" in line for line in failed)
    assert runs.is_done(tmp_path / "runs" / "fine" / "seed0")
    assert not runs.is_done(tmp_path / "runs" / "diverges" / "seed0")
