"""The fast path computes what the naive reference path computes (``ambcore.bench``).

Smoke preset (tiny random BERT, synthetic data). The same utterances go through both paths:
dynamic padding vs fixed padding to 50, length-bucketed vs plain shuffled batches, cached vs
per-batch tokenization, frozen weights without vs with gradients, ``inference_mode`` vs
``no_grad`` evaluation. No timing is asserted here; ``python -m ambcore bench`` measures it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest
import torch

from ambcore.bench import (
    NAIVE_PAD_TO,
    bench_config,
    fast_loader,
    make_naive_model,
    measure_memory,
    naive_loader,
    naive_predict,
    summary_frame,
)
from ambcore.config import get_config
from ambcore.data import load_dataset
from ambcore.models import build_model
from ambcore.models.plm import load_tokenizer
from ambcore.train import _task_loss, epoch_seed, predict_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE = get_config("smoke", max_text_len=NAIVE_PAD_TO)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", BASE), load_tokenizer(BASE)


def _generator(epoch: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(BASE.seed, epoch))


def _model(cfg, dataset):
    torch.manual_seed(0)
    return build_model(cfg, dataset.visual_dim, dataset.acoustic_dim)


def _same_batch_both_paths(split, tokenizer, cfg):
    """The first fast-path training batch, and the naive path's batch of the same utterances."""
    fast = next(iter(fast_loader(split, tokenizer, cfg, shuffle=True, generator=_generator())))
    naive = naive_loader(split, tokenizer, cfg, shuffle=True, generator=_generator())
    index = {uid: i for i, uid in enumerate(split.ids)}
    naive_batch = naive.collate_fn([naive.dataset[index[uid]] for uid in fast.ids])
    return fast, naive_batch


def _loss_and_grads(model, batch, cfg, params):
    out = model(batch)
    loss = _task_loss(cfg, out.prediction, batch.labels)
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return out.prediction.detach(), grads


@pytest.mark.parametrize("name", ["amb", "amb-ft", "mag-bert"])
def test_dynamic_padding_gives_the_predictions_and_gradients_of_fixed_padding(data, name):
    dataset, tokenizer = data
    cfg = bench_config(BASE, name)
    split = dataset["train"]
    fast_batch, naive_batch = _same_batch_both_paths(split, tokenizer, cfg)
    assert naive_batch.ids == fast_batch.ids
    assert naive_batch.input_ids.shape[1] == NAIVE_PAD_TO
    assert naive_batch.visual.shape[1] == NAIVE_PAD_TO
    assert fast_batch.input_ids.shape[1] < NAIVE_PAD_TO  # the smoke texts are shorter than 50
    assert torch.equal(
        naive_batch.input_ids[:, : fast_batch.input_ids.shape[1]], fast_batch.input_ids
    )

    model = _model(cfg, dataset).eval()  # eval: no dropout, so both paths are deterministic
    naive_model, naive_params = make_naive_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    fast_pred, fast_grads = _loss_and_grads(model, fast_batch, cfg, trainable)
    naive_pred, naive_grads = _loss_and_grads(naive_model, naive_batch, cfg, naive_params)

    torch.testing.assert_close(fast_pred, naive_pred, rtol=1e-4, atol=1e-5)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for param_name, g_fast, g_naive in zip(names, fast_grads, naive_grads):
        assert (g_fast is None) == (g_naive is None), param_name
        if g_fast is not None:
            torch.testing.assert_close(g_fast, g_naive, rtol=1e-3, atol=1e-6, msg=param_name)


def test_frozen_plm_weights_carry_no_gradient_on_the_fast_path_only(data):
    dataset, tokenizer = data
    cfg = bench_config(BASE, "amb")
    fast_batch, naive_batch = _same_batch_both_paths(dataset["train"], tokenizer, cfg)
    model = _model(cfg, dataset).train()
    naive_model, naive_params = make_naive_model(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("plm.") and ".adapter." not in n for n in frozen)

    for m, batch in ((model, fast_batch), (naive_model, naive_batch)):
        out = m(batch)
        _task_loss(cfg, out.prediction, batch.labels).backward()
    fast_params, naive_named = dict(model.named_parameters()), dict(naive_model.named_parameters())
    assert all(fast_params[n].grad is None for n in frozen)
    # The naive path computes them (and throws them away: they are not optimized).
    assert all(naive_named[n].grad is not None for n in frozen)
    assert {id(p) for p in naive_params} == {
        id(p) for n, p in naive_named.items() if n not in frozen
    }
    adapters = [p for n, p in model.named_parameters() if ".adapter." in n]
    assert adapters and all(p.grad is not None for p in adapters)


def test_bucketing_keeps_the_samples_of_every_epoch(data):
    dataset, tokenizer = data
    split = dataset["train"]
    for epoch in (1, 2):
        fast = list(fast_loader(split, tokenizer, BASE, shuffle=True, generator=_generator(epoch)))
        naive = list(
            naive_loader(split, tokenizer, BASE, shuffle=True, generator=_generator(epoch))
        )
        fast_ids = [uid for b in fast for uid in b.ids]
        naive_ids = [uid for b in naive for uid in b.ids]
        assert sorted(fast_ids) == sorted(naive_ids) == sorted(split.ids)
        assert len(fast_ids) == len(set(fast_ids))
        assert len(fast) == len(naive)
        # Dynamic padding with buckets feeds fewer text positions than fixed padding.
        assert sum(b.input_ids.numel() for b in fast) < sum(b.input_ids.numel() for b in naive)


def test_inference_mode_evaluation_equals_no_grad_evaluation(data):
    dataset, tokenizer = data
    cfg = bench_config(BASE, "misa")  # MISA: auxiliary branches are built but unused in eval
    split = dataset["valid"]
    model = _model(cfg, dataset)
    naive_model, _ = make_naive_model(model)

    fast = predict_split(model, split, tokenizer, cfg, "cpu")  # inference_mode, dynamic padding
    reference = predict_split(model, split, tokenizer, replace(cfg, fast_path=False), "cpu")
    naive = naive_predict(naive_model, naive_loader(split, tokenizer, cfg, shuffle=False), "cpu")
    assert fast.ids == list(split.ids)
    torch.testing.assert_close(torch.tensor(fast.y_pred), torch.tensor(reference.y_pred))
    torch.testing.assert_close(
        torch.tensor(fast.y_pred),
        torch.tensor([naive[uid] for uid in fast.ids], dtype=torch.float64),
        rtol=1e-4,
        atol=1e-5,
    )
    assert not model.training and not naive_model.training


def test_peak_memory_is_measured_for_both_paths():
    result = {
        path: measure_memory(bench_config(BASE, "amb"), path, steps=1) for path in ("fast", "naive")
    }
    for path, r in result.items():
        assert r["steps"] == 1 and r["peak_mib"] > 0 and r["peak_delta_mib"] >= 0, (path, r)
    assert result["naive"]["longest_tokens"] == NAIVE_PAD_TO
    assert result["fast"]["longest_tokens"] <= NAIVE_PAD_TO


def test_bench_command_writes_the_record(tmp_path):
    from ambcore.cli import main

    out = tmp_path / "bench-smoke.json"
    argv = [
        "bench",
        "--preset",
        "smoke",
        "--models",
        "amb,amb-ft",
        "--repeats",
        "1",
        "--warmup-steps",
        "1",
        "--no-memory",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["device"] == "cpu" and record["cpu_count"] >= 1 and record["torch"]
    assert record["is_synthetic"] and record["n_train"] == BASE.synthetic_n_train
    assert record["machine"]["probe"]["gflops"] > 0 and record["machine"]["cpu_model"]
    assert set(record["phases"]) == {"amb", "amb-ft"}  # CPU seconds by phase (ambcore.bench.phases)
    assert set(record["models"]) == {"amb", "amb-ft"}
    amb, ft = record["models"]["amb"], record["models"]["amb-ft"]
    assert amb["trainable_params"] < ft["trainable_params"]
    assert amb["config"]["text_adaptation"] == "adapters"
    assert ft["config"] == {
        "model": "amb",
        "text_adaptation": "finetune",
        "finetune_layers": "last:2",
    }  # smoke PLM: 2 layers
    for path in ("fast", "naive"):
        assert amb[path]["train_epoch_s"]["n"] == 1 and amb[path]["train_samples_per_s"] > 0
        assert amb[path]["eval_samples_per_s"] > 0 and amb[path]["peak_memory_mib"] is None
    tokens = amb["padded_text_tokens_per_epoch"]
    assert tokens["naive"] == NAIVE_PAD_TO * BASE.synthetic_n_train > tokens["fast"]
    assert "amb/amb-ft training step from epoch times (fast path) <= 0.7" in record["targets"]
    paired = record["paired_steps"]  # AMB and AMB-FT on the same batches, two passes
    n_batches = -(-BASE.synthetic_n_train // BASE.batch_size)
    assert paired["models"] == ["amb", "amb-ft"] and paired["batches"] >= n_batches
    pairs = 2 * paired["batches"]
    assert paired["step_ms"]["amb"]["n"] == paired["step_ms"]["amb-ft"]["n"] == pairs
    assert paired["ratio"]["n"] == pairs
    same_batches = record["targets"]["amb/amb-ft training step, same batches (fast path) <= 0.7"]
    assert same_batches["pairs"] == pairs
    assert same_batches["median"] == pytest.approx(paired["ratio"]["median"], abs=1e-3)
    table = summary_frame(record)
    assert list(table["model"]) == ["amb", "amb", "amb-ft", "amb-ft"]
    assert table["fast/naive epoch"].notna().sum() == 2
    loaded = record["under_load"]  # the same steps beside one busy process, and idle
    assert loaded["model"] == "amb" and loaded["competitors"] == 1
    assert loaded["step_ms_idle"]["n"] == loaded["step_ms_loaded"]["n"] == 2 * loaded["batches"]
    assert loaded["ratio"] == pytest.approx(
        loaded["step_ms_loaded"]["median"] / loaded["step_ms_idle"]["median"], rel=1e-2
    )
    assert loaded["torch_threads"] >= 1 and loaded["omp_wait_policy"]


@pytest.mark.alone  # measures the CPU time a busy process gets in half a second
def test_busy_processes_spin_and_end_with_the_block():
    import resource

    from ambcore.bench import busy_processes

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    before = children_cpu()
    with busy_processes(1) as procs:
        time.sleep(0.5)
    assert procs[0].poll() is not None  # killed and reaped
    assert children_cpu() - before > 0.1  # it spun (about 1 s of wall time in the block)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_batches_copy_to_the_gpu_unchanged(data):
    dataset, tokenizer = data
    batch = next(iter(fast_loader(dataset["valid"], tokenizer, BASE, shuffle=False)))
    pinned = batch.pin_memory()
    assert pinned.input_ids.is_pinned() and pinned.visual.is_pinned()
    moved = pinned.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(moved.visual.cpu(), batch.visual) and moved.ids == batch.ids
