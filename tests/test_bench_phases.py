"""Per-phase CPU time of a training run and the machine block of benchmark records
(``ambcore.bench.phases``, ``ambcore.bench.training``). Smoke preset; no timing is asserted."""

from __future__ import annotations

import json

import pytest

from ambcore import runs
from ambcore.bench import format_report, phases_frame, record_machines, record_phases, run_benchmark
from ambcore.bench.phases import CONTEXTS, PhaseClock, profile_training_run
from ambcore.config import get_config


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_phase_clock_charges_the_innermost_phase():
    tick = FakeClock()
    clock = PhaseClock(tick)
    tick.now = 1.0  # outside every phase
    clock.push("evaluation")
    tick.now = 1.5
    clock.push("plm forward")
    tick.now = 4.5
    clock.pop()
    tick.now = 5.0
    clock.pop()
    clock.push("backward")
    tick.now = 7.0
    clock.pop()
    assert clock.totals() == {
        "other": 1.0,
        "evaluation": 1.0,
        "evaluation: plm forward": 3.0,
        "backward": 2.0,
    }
    assert sum(clock.totals().values()) == pytest.approx(7.0)


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    cfg = get_config("smoke", max_epochs=1)
    return profile_training_run(
        cfg,
        tmp_path_factory.mktemp("phases") / "run",
        noise_rates=(0.0, 1.0),
        noise_kinds=("visual",),
    )


def test_profile_splits_the_run_into_phases(profile):
    phases = profile["cpu_s_by_phase"]
    for phase in (
        "plm forward",
        "adapters",
        "av encoders",
        "backward",
        "optimizer",
        "evaluation: plm forward",
        "noise evaluation: plm forward",
    ):
        assert phases.get(phase, 0.0) > 0, phase
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(profile["cpu_s_total"], abs=0.01)
    assert profile["epochs"] == 1 and profile["noise_grid"]["rates"] == [0.0, 1.0]
    # Contexts prefix only the known ones.
    assert {k.split(": ")[0] for k in phases if ": " in k} <= set(CONTEXTS)


def test_profile_leaves_nothing_patched(profile):
    import torch

    from ambcore import train
    from ambcore.data import collate

    assert torch.Tensor.backward.__module__ == "torch._tensor"
    assert train.predict_split.__module__ == "ambcore.train"
    assert collate._tokenize.__module__ == "ambcore.data.collate"


def test_phases_only_record_has_the_machine_and_the_phases(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.PROBE_ENV, json.dumps({"gflops": 21.5, "measured": "now"}))
    record = run_benchmark(
        get_config("smoke"), ["amb"], timing=False, phase_epochs=1, progress=False
    )
    assert record["machine"]["probe"]["gflops"] == 21.5 and record["machine"]["cpu_model"]
    assert "models" not in record and set(record["phases"]) == {"amb"}
    frame = phases_frame(record)
    assert "total" in set(frame["phase (CPU s)"])
    text = format_report(record)
    assert "21.5 GFLOP/s" in text and "backward" in text
    (tmp_path / "phases-smoke.json").write_text(json.dumps(record))
    (tmp_path / "sdk_bench.json").write_text(json.dumps({"wall_s": 1.0}))
    machines = record_machines(tmp_path).set_index("record")
    assert machines.loc["phases-smoke.json", "probe (GFLOP/s)"] == 21.5
    assert machines.loc["phases-smoke.json", "per-phase CPU time"] == "yes"
    assert machines.loc["sdk_bench.json", "probe (GFLOP/s)"] == "–"
    assert [name for name, _ in record_phases(tmp_path)] == ["phases-smoke.json"]


def test_benchmark_records_are_read_once_for_machines_and_phases(tmp_path):
    """Records that cannot be read are left out of both tables; the phases of
    ``phases_before`` come before the record's own."""
    phases = {"amb": {"cpu_s_by_phase": {"forward": 2.0, "backward": 3.0}, "cpu_s_total": 5.0}}
    (tmp_path / "bench_a.json").write_text(
        json.dumps(
            {
                "machine": {"cpu_model": "CPU A", "cpu_count": 4, "probe": {"gflops": 12.5}},
                "phases": phases,
                "phases_before": {"label": "slow path", "phases": phases},
            }
        )
    )
    (tmp_path / "bench_b.json").write_text(json.dumps({"wall_s": 1.0}))
    (tmp_path / "bench_broken.json").write_text("{not json")
    (tmp_path / "notes.json").write_text(json.dumps({"phases": phases}))  # not a record's name
    machines = record_machines(tmp_path)
    assert list(machines["record"]) == ["bench_a.json", "bench_b.json"]
    assert machines.set_index("record").loc["bench_a.json", "cores"] == 4
    assert machines.set_index("record").loc["bench_b.json", "CPU"] == "–"
    assert list(machines["per-phase CPU time"]) == ["yes", "no"]
    found = record_phases(tmp_path)
    assert [name for name, _ in found] == ["bench_a.json (slow path)", "bench_a.json"]
    total = found[1][1].set_index("phase (CPU s)").loc["total", "amb"]
    assert total == 5.0
