"""ambcore.threads: thread counts per process, passive OpenMP waiting, --threads / AMB_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ambcore import threads
from ambcore.config import ConfigError


def test_workers_share_the_cores_one_thread_each_on_two():
    assert threads.threads_per_process(workers=2, cores=2, env={}) == 1
    assert threads.threads_per_process(workers=4, cores=2, env={}) == 1
    assert threads.threads_per_process(workers=2, cores=8, env={}) == 4
    assert threads.threads_per_process(workers=1, cores=8, env={}) == 8


def test_explicit_count_wins_flag_over_environment():
    env = {"AMB_THREADS": "3"}
    assert threads.threads_per_process(workers=2, cores=2, env=env) == 3
    assert threads.threads_per_process(workers=2, threads="5", cores=2, env=env) == 5


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_thread_count_names_its_source(bad):
    with pytest.raises(ConfigError, match="AMB_THREADS"):
        threads.requested_threads(None, {"AMB_THREADS": bad})
    with pytest.raises(ConfigError, match="--threads"):
        threads.requested_threads(bad, {})


def test_lone_process_keeps_an_inherited_omp_num_threads():
    assert threads.process_threads(env={"OMP_NUM_THREADS": "1"}) == 1
    assert threads.process_threads(env={}) == threads.available_cores()
    assert threads.process_threads(env={"OMP_NUM_THREADS": "1", "AMB_THREADS": "2"}) == 2


def test_child_env_sets_threads_and_passive_wait():
    env = threads.child_env(2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "AMB_THREADS" not in env  # a child's own workers still share the cores out


def test_child_environment_restores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with threads.child_environment(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "OMP_WAIT_POLICY" not in os.environ


def test_environment_sets_removes_and_restores(monkeypatch):
    monkeypatch.setenv("AMB_TEST_KEPT", "before")
    monkeypatch.delenv("AMB_TEST_NEW", raising=False)
    with threads.environment({"AMB_TEST_KEPT": None, "AMB_TEST_NEW": "1"}):
        assert "AMB_TEST_KEPT" not in os.environ and os.environ["AMB_TEST_NEW"] == "1"
    assert os.environ["AMB_TEST_KEPT"] == "before" and "AMB_TEST_NEW" not in os.environ


def _clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "AMB_THREADS")
    }
    return {**env, **extra}


def test_import_ambcore_sets_passive_wait_before_torch_loads():
    code = (
        "import sys, ambcore, os; print(os.environ.get('OMP_WAIT_POLICY'));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["PASSIVE", "False"]  # set, and torch not loaded yet: it loads after, with it
    # a user's own setting is kept
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_env(OMP_WAIT_POLICY="ACTIVE"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "ACTIVE"


def test_threads_option_sets_torch_threads():
    code = (
        "from ambcore.cli import build_parser; from ambcore.threads import apply_threads;"
        "import torch; a = build_parser().parse_args(['bench', '--threads', '1']);"
        "print(apply_threads(a.threads), torch.get_num_threads())"
    )
    code += ";import os; print(os.environ['AMB_THREADS'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "1", "1"]  # and the processes it starts take 1 thread each too


def test_threaded_commands_take_the_option():
    from ambcore.cli import THREADED_COMMANDS, build_parser

    parser = build_parser()
    for name in THREADED_COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[name]
        assert any("--threads" in a.option_strings for a in sub._actions), name


def test_book_kernels_get_thread_settings(monkeypatch):
    from ambcore.book import kernel_thread_env

    monkeypatch.setenv("AMB_THREADS", "1")
    env = kernel_thread_env()
    assert env["OMP_NUM_THREADS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_scripts_set_passive_wait_policy():
    from ambcore.paths import PROJECT_ROOT

    for script in ("scripts/run_book.sh", "scripts/test.sh"):
        text = (PROJECT_ROOT / script).read_text()
        assert "OMP_WAIT_POLICY" in text and "PASSIVE" in text, script


def test_sweep_workers_share_the_cores(tmp_path, monkeypatch):
    import json

    import ambcore.commands.sweep as sweep_command
    from ambcore.cli import main

    seen = {}

    def fake_run_sweep(spec, **kwargs):
        seen.update(
            threads=os.environ["OMP_NUM_THREADS"],
            policy=os.environ["OMP_WAIT_POLICY"],
            parallel=kwargs["max_parallel"],
        )
        raise SystemExit(0)

    monkeypatch.setattr(sweep_command, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.delenv("AMB_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # this process' own count, not its workers'
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps({"preset": "smoke", "seeds": [0], "cells": [{"name": "amb"}]}))
    with pytest.raises(SystemExit):
        main(["sweep", str(spec), "--runs-dir", str(tmp_path / "runs"), "--max-parallel", "2"])
    assert seen == {"threads": "1", "policy": "PASSIVE", "parallel": 2}
