"""The machine block: CPU model, cores and a calibration probe, recorded in every env.json."""

from __future__ import annotations

import json
import math

import pytest

from ambcore import runs


def test_probe_is_a_positive_finite_rate():
    probe = runs.matmul_probe(seconds=0.2, size=64)
    assert math.isfinite(probe["gflops"]) and probe["gflops"] > 0
    assert 0 < probe["gflops_median"] <= probe["gflops"]
    assert probe["chunks"] >= 3


def test_probe_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    runs.matmul_probe(seconds=0.05, size=32)
    assert torch.get_num_threads() == before


def test_machine_block_measures_once_per_process_tree(monkeypatch):
    monkeypatch.setenv(runs.PROBE_ENV, "")  # restored after the test
    calls = []

    def fake_probe():
        calls.append(1)
        return {"gflops": 12.5, "gflops_median": 11.0}

    monkeypatch.setattr(runs, "matmul_probe", fake_probe)
    first = runs.machine_block()
    second = runs.machine_block()
    assert first["probe"]["gflops"] == second["probe"]["gflops"] == 12.5
    assert len(calls) == 1  # the second block reads the inherited variable
    assert json.loads(runs.os.environ[runs.PROBE_ENV])["gflops"] == 12.5
    assert first["cpu_model"] and first["usable_cores"] >= 1
    assert runs.machine_block(probe=False).get("probe") is None


def test_env_json_of_a_run_records_the_machine(tmp_path, monkeypatch):
    from ambcore.config import get_config
    from ambcore.train import train_and_evaluate

    monkeypatch.setenv(runs.PROBE_ENV, json.dumps({"gflops": 33.0}))
    train_and_evaluate(get_config("smoke", max_epochs=1), tmp_path / "run", progress=False)
    env = runs.read_json(tmp_path / "run" / "env.json")
    assert env["machine"]["probe"]["gflops"] == 33.0
    assert env["machine"]["cpu_count"] >= 1 and env["machine"]["cpu_model"]


@pytest.mark.parametrize("cached", ["", "not json"])
def test_a_missing_or_broken_cache_is_measured_again(monkeypatch, cached):
    monkeypatch.setenv(runs.PROBE_ENV, cached)
    monkeypatch.setattr(runs, "matmul_probe", lambda: {"gflops": 7.0})
    assert runs.machine_block()["probe"]["gflops"] == 7.0
