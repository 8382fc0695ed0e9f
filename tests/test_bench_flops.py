"""FLOPs and achieved GFLOP/s in the benchmark record (``ambcore.bench``; issue: how far the code
is from the machine). Smoke preset: a tiny random BERT, so the counts are small but real."""

from __future__ import annotations

import pytest
import torch

from ambcore.bench import NAIVE_PAD_TO, achieved, count_flops, efficiency_frame, run_benchmark
from ambcore.config import get_config


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(8, 64, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 8 * 64 * 32
    # forward and backward (input and weight gradients): three products of the same size
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 64 * 32


def test_achieved_rate_is_flops_over_the_median_time_and_a_share_of_probe_x_threads():
    flops = {"train_epoch": 40e9, "eval_pass": 5e9}
    timings = {"train_epoch_s": {"median": 2.0}, "eval_s": {"median": 0.5}}
    a = achieved(flops, timings, probe_gflops=50.0, threads=2, device="cpu")
    assert a["train_gflop_per_s"] == 20.0 and a["eval_gflop_per_s"] == 10.0
    assert a["probe_x_threads_gflop_per_s"] == 100.0
    assert a["train_fraction_of_probe_x_threads"] == pytest.approx(0.2)
    gpu = achieved(flops, timings, probe_gflops=50.0, threads=2, device="cuda")
    assert gpu["train_fraction_of_probe_x_threads"] is None  # the CPU probe bounds no GPU


@pytest.fixture(scope="module")
def record():
    cfg = get_config("smoke", max_text_len=NAIVE_PAD_TO)
    return run_benchmark(
        cfg,
        ["amb", "misa"],
        repeats=1,
        warmup_steps=1,
        measure_memory_peak=False,
        progress=False,
        load_competitors=0,
        phase_epochs=0,
    )


def test_every_model_records_its_flops_and_achieved_rate(record):
    for name in ("amb", "misa"):
        res = record["models"][name]
        f, a = res["flops"], res["achieved"]
        assert f["train_epoch"] > 0 and f["eval_pass"] > 0
        assert f["train_steps"] == res["fast"]["train_steps_per_epoch"]
        # a training sample (forward and backward) costs more than an evaluated one (forward)
        assert f["per_train_sample"] > f["per_eval_sample"] > 0
        assert f["per_train_sample"] == pytest.approx(f["train_epoch"] / record["n_train"])
        probe = record["machine"]["probe"]["gflops"]
        assert a["probe_gflop_per_s"] == probe and a["threads"] == record["torch_threads"]
        assert 0 < a["train_gflop_per_s"] and 0 < a["eval_gflop_per_s"]
        # the probe (one thread's best matmul rate) x threads bounds what training reaches
        assert a["train_fraction_of_probe_x_threads"] < 1.5
    table = efficiency_frame(record)
    assert list(table["model"]) == ["amb", "misa"]
    assert (table["train epoch (GFLOP)"] > 0).all() and table[
        "train % of probe × threads"
    ].notna().all()


def test_a_record_without_flops_has_an_empty_efficiency_table():
    assert efficiency_frame({"models": {"amb": {"fast": {}}}}).empty
    assert efficiency_frame({"device": "cpu"}).empty


def test_the_status_page_reads_the_efficiency_of_a_record(record, tmp_path):
    import json

    from ambcore.status import benchmark_tables

    (tmp_path / "bench-smoke.json").write_text(json.dumps(record, default=str))
    (found,) = benchmark_tables(tmp_path)
    assert list(found.efficiency["model"]) == ["amb", "misa"]


def test_paper_geometry_records_a_step_a_batch_and_a_mosei_epoch(tmp_path):
    """The paper preset's record on the tiny stand-in (the bert-base folder's code path, 1 MB)."""
    from ambcore.bench.paper import MOSEI_SIZES, epoch_seconds_at, paper_geometry
    from ambcore.models.plm import save_standin

    folder = save_standin(tmp_path / "bert-base-uncased", tiny=True)
    block = paper_geometry(folder, models=["amb"])
    paper = get_config("paper")
    amb = block["models"]["amb"]
    assert block["batch_size"] == paper.batch_size and block["plm_geometry"]["layers"] == 4
    assert amb["train_step"]["batch"] == paper.batch_size
    assert amb["eval_batch"]["batch"] == paper.eval_batch_size
    assert amb["train_step"]["flops"] > 0 and amb["train_step"]["seconds"] > 0
    per = amb["flops_per_utterance"]
    assert per["train"] > per["eval"] > 0
    assert amb["mosei_epoch_flops"]["train"] == pytest.approx(per["train"] * MOSEI_SIZES["train"])
    total = amb["mosei_epoch_flops"]["total"]
    assert total == pytest.approx(per["train"] * 16326 + per["eval"] * 1871)
    assert epoch_seconds_at(block, "amb", 10.0) == pytest.approx(total / 1e13)
    # padded to the preset's text length, an utterance costs more than at its own length
    assert amb["padded_text_tokens"] == paper.max_text_len
    assert amb["text_tokens_per_utterance"]["train"] < paper.max_text_len
    assert amb["flops_per_utterance_padded"]["train"] > per["train"]
    assert epoch_seconds_at(block, "amb", 10.0, padded=True) > epoch_seconds_at(block, "amb", 10.0)
    from ambcore.bench.paper import format_lines

    (head, line) = format_lines(block)
    assert "4 layers" in head and line.startswith("  amb: training step (batch 32)")
    assert "ESTIMATE at 10 TFLOP/s" in line

    import json

    from ambcore.status import benchmark_tables

    (tmp_path / "bench-smoke.json").write_text(json.dumps({"models": {}, "paper_geometry": block}))
    (found,) = benchmark_tables(tmp_path)
    row = found.paper.iloc[0]
    assert row["model"] == "amb" and row["MOSEI epoch (TFLOP)"] == pytest.approx(total / 1e12)
    assert row["estimate: epoch at 10 TFLOP/s (s)"] == pytest.approx(total / 1e13)
