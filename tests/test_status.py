"""The Status page's tables (ambcore.status): what produced the build, the chapters' times,
the benchmark records."""

from __future__ import annotations

import json

import pytest

from ambcore import get_config, runs
from ambcore.book import CHAPTERS
from ambcore.errors import AmbError
from ambcore.status import (
    benchmark_tables,
    build_provenance_table,
    device_label,
    environment_report,
    load_timings,
    revision_label,
    timings_table,
)

# ---- what produced this build ---------------------------------------------------------------


ENV = {
    "git_revision": "0123abcd",
    "git_dirty": True,
    "device": "cuda",
    "device_name": "NVIDIA H200",
    "cpu_model": "Some CPU",
    "cpu_count": 16,
    "torch_threads": 4,
    "memory_gib": 125.5,
    "python": "3.11.9",
    "platform": "Linux-x86_64",
}


def test_revision_and_device_labels():
    assert revision_label(ENV) == "0123abcd (with uncommitted changes)"
    assert revision_label({"git_revision": None, "git_dirty": False}) == "unknown"
    assert revision_label({"git_revision": "0123abcd", "git_dirty": False}) == "0123abcd"
    assert device_label(ENV) == "cuda (NVIDIA H200)"
    assert device_label({"device": "cpu", "device_name": None}) == "cpu"


def test_build_provenance_table_names_data_model_revision_and_machine():
    table = build_provenance_table(dict(ENV, device_name=None), get_config("smoke"))
    assert list(table.columns) == ["what", "value"]
    values = dict(zip(table["what"], table["value"]))
    assert list(values) == [
        "preset",
        "data",
        "language model",
        "git revision",
        "device",
        "device name",
        "CPU",
        "CPU cores",
        "torch threads",
        "memory (GiB)",
        "python",
        "platform",
    ]
    assert values["preset"] == "smoke" and "SYNTHETIC" in values["data"]
    assert "tiny randomly initialised BERT" in values["language model"]
    assert values["git revision"] == "0123abcd (with uncommitted changes)"
    assert values["device name"] == "–" and values["CPU cores"] == 16
    assert values["memory (GiB)"] == 125.5


def test_environment_report_adds_the_machine_and_the_book_packages(monkeypatch):
    monkeypatch.setenv(runs.PROBE_ENV, json.dumps({"gflops": 1.0}))  # no probe measured here
    env = environment_report()
    assert env["cpu_model"] and env["memory_gib"] > 0
    assert {"papermill", "jupytext", "jupyter-book"} <= set(env["versions"])


# ---- the chapters' times --------------------------------------------------------------------


def test_load_timings_none_when_missing_and_refuses_a_corrupt_file(tmp_path):
    path = tmp_path / "timings.json"
    assert load_timings(path) is None  # a chapter run on its own
    path.write_text(json.dumps({"chapters": {"01_data": {"status": "ok", "seconds": 1.5}}}))
    table = timings_table(load_timings(path))
    assert list(table["chapter"]) == [c.name for c in CHAPTERS]
    assert table["status"].iloc[0] == "ok" and table["status"].iloc[1] == "not run"
    path.write_text('{"chapters": ')  # cut short
    with pytest.raises(AmbError, match=f"{path}: not valid JSON"):
        load_timings(path)


# ---- benchmark records ----------------------------------------------------------------------


def test_benchmark_tables_read_bench_and_other_records(tmp_path):
    epoch = {"median": 2.0, "min": 1.5, "max": 2.5}
    path_result = {
        "train_epoch_s": epoch,
        "train_samples_per_s": 48.0,
        "train_step_ms": 300.0,
        "eval_samples_per_s": 200.0,
        "peak_memory_mib": 900.0,
    }
    record = {
        "device": "cpu",
        "preset": "embedded",
        "data": "SYNTHETIC",
        "models": {
            "amb": {
                "fast": path_result,
                "naive": path_result,
                "trainable_params": 10,
                "ratio_fast_over_naive": {"train_epoch": {"median": 0.5}},
            }
        },
        "targets": {
            "amb: fast/naive training epoch <= 0.5": {
                "median": 0.5,
                "of_minimums": 0.45,
                "met_median": True,
                "met_of_minimums": True,
                "noisy": False,
            },
            "amb peak memory < amb-ft peak memory (fast path)": {
                "amb_mib": 800.0,
                "amb_ft_mib": 900.0,
                "met": True,
            },
        },
    }
    (tmp_path / "bench_cpu.json").write_text(json.dumps(record))
    (tmp_path / "sdk_bench.json").write_text(json.dumps({"wall_s": 12.5, "spec": {"n": 3}}))
    (tmp_path / "other.json").write_text("{}")
    records = {r.name: r for r in benchmark_tables(tmp_path)}
    assert set(records) == {"bench_cpu.json", "sdk_bench.json"}
    bench = records["bench_cpu.json"]
    assert "device cpu" in bench.caption and "preset embedded" in bench.caption
    assert list(bench.table["path"]) == ["fast", "naive"]
    assert list(bench.targets["met (median)"]) == [True, True]
    assert bench.targets["fastest"].iloc[0] == 0.45
    assert "800.0 vs 900.0" in bench.targets["median"].iloc[1]
    assert records["sdk_bench.json"].targets is None
    sdk = records["sdk_bench.json"].table
    assert dict(zip(sdk["key"], sdk["value"])) == {"wall_s": 12.5, "spec.n": 3}


def test_a_precision_study_shows_one_row_per_metric_with_its_verdict(tmp_path):
    row = {
        "a": "bf16",
        "b": "fp32",
        "n_a": 5,
        "n_b": 5,
        "metric": "mae",
        "estimate_a": 0.79,
        "estimate_b": 0.77,
        "diff": 0.02,
        "lo": -0.09,
        "hi": 0.12,
        "p_holm": 1.0,
        "verdict": "not distinguishable",
    }
    record = {
        "model": "amb",
        "data": ["SYNTHETIC MOSEI-shaped"],
        "comparison": [row, {**row, "metric": "corr"}],
        "decision": {"keep_bf16_default": True},
    }
    (tmp_path / "numerics-embedded.json").write_text(json.dumps(record))
    (study,) = benchmark_tables(tmp_path)
    assert list(study.table["metric"]) == ["mae", "corr"]
    assert study.table["95 % interval"].iloc[0] == "[-0.090, +0.120]"
    assert set(study.table["verdict"]) == {"not distinguishable"}
    assert "data SYNTHETIC MOSEI-shaped)" in study.caption and "['" not in study.caption
    assert "keep bf16 autocast" in study.caption
