"""The paper preset's cost at bert-base geometry (thesis 6.3.1: the full MOSEI book on a GPU).

No bert-base weights are needed: ``python -m ambcore model standin --out DIR`` writes a folder
with bert-base-uncased's architecture and seeded random weights, which costs what the real
model costs. For each model this times one training step (a batch of the paper preset's
``batch_size``) and one evaluation batch (``eval_batch_size``) on this machine, counts their
FLOPs (``FlopCounterMode``), and scales the FLOPs per utterance to one epoch at CMU-MOSEI's
sizes: training on the 16,326 training utterances plus the evaluation of the 1,871 validation
utterances. ``epoch_seconds_at(block, model, tflops)`` turns that into the seconds of an epoch
on a device that sustains ``tflops``: an ESTIMATE, until a GPU measures it
(``scripts/gpu_check.sh``).

The batches are synthetic (``data=synthetic``; the text lengths are the synthetic data's, see
``text_tokens_per_utterance``, shorter than most MOSEI utterances); the first step and batch
are counted, the second timed. The FLOPs are also counted with every utterance padded to
``max_text_len`` (``*_padded``: the thesis' fixed padding, an upper bound for MOSEI).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ambcore.bench.training import (
    _build,
    _epoch_generator,
    _load_data,
    _make_optimizer,
    bench_config,
    count_flops,
    fast_loader,
    fast_train_epoch,
    naive_loader,
)
from ambcore.config import Config, get_config
from ambcore.models.plm import plm_config
from ambcore.train import resolve_device

__all__ = [
    "MOSEI_SIZES",
    "ESTIMATE_TFLOPS",
    "paper_geometry",
    "epoch_seconds_at",
    "paper_geometry_frame",
    "format_lines",
]

MOSEI_SIZES = {"train": 16326, "valid": 1871, "test": 4659}  # CMU-MOSEI's standard splits
ESTIMATE_TFLOPS = (10.0, 50.0)  # sustained rates the Status page turns into epoch estimates


def _paper_config(plm: str | Path, device: str, preset: str = "paper") -> Config:
    base = get_config(preset, plm=str(plm), data="synthetic", device=device)
    return get_config(
        preset,
        plm=str(plm),
        data="synthetic",
        device=device,
        synthetic_n_train=2 * base.batch_size,
        synthetic_n_valid=2 * base.eval_batch_size,
        synthetic_n_test=base.eval_batch_size,
    )


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _one_model(name: str, base: Config, dataset, tokenizer, device: torch.device) -> dict[str, Any]:
    cfg = bench_config(base, name)
    model = _build(cfg, dataset, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(trainable, cfg, device, fast=True)
    train = list(fast_loader(dataset["train"], tokenizer, cfg, True, _epoch_generator(cfg, 1)))[:2]
    valid = list(fast_loader(dataset["valid"], tokenizer, cfg, False))[:2]

    def step(batch) -> None:
        fast_train_epoch(model, [batch], optimizer, trainable, tokenizer, cfg, device, 1)

    def evaluate(batch) -> None:
        model.eval()
        with torch.inference_mode():
            model(batch.to(device))

    train_flops = count_flops(lambda: step(train[0]))  # also the warm-up
    eval_flops = count_flops(lambda: evaluate(valid[0]))
    step_s = _timed(lambda: step(train[1]), device)
    eval_s = _timed(lambda: evaluate(valid[1]), device)
    per_train = train_flops / len(train[0].labels)
    per_eval = eval_flops / len(valid[0].labels)
    epoch = {"train": per_train * MOSEI_SIZES["train"], "valid": per_eval * MOSEI_SIZES["valid"]}
    # The same with every utterance padded to max_text_len (the thesis' fixed padding of
    # aligned_50; the upper bound for MOSEI, whose utterances are mostly shorter)
    padded_train = next(
        iter(naive_loader(dataset["train"], tokenizer, cfg, True, _epoch_generator(cfg, 1)))
    )
    padded_valid = next(iter(naive_loader(dataset["valid"], tokenizer, cfg, False)))
    padded = {
        "train": count_flops(lambda: step(padded_train)) / len(padded_train.labels),
        "eval": count_flops(lambda: evaluate(padded_valid)) / len(padded_valid.labels),
    }
    padded_epoch = {
        "train": padded["train"] * MOSEI_SIZES["train"],
        "valid": padded["eval"] * MOSEI_SIZES["valid"],
    }
    return {
        "config": {k: getattr(cfg, k) for k in ("model", "text_adaptation", "finetune_layers")},
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "train_step": {
            "batch": len(train[0].labels),
            "flops": train_flops,
            "seconds": step_s,
            "gflop_per_s": train_flops / 1e9 / step_s,
        },
        "eval_batch": {
            "batch": len(valid[0].labels),
            "flops": eval_flops,
            "seconds": eval_s,
            "gflop_per_s": eval_flops / 1e9 / eval_s,
        },
        "text_tokens_per_utterance": {
            "train": train[0].input_ids.shape[1],
            "eval": valid[0].input_ids.shape[1],
        },
        "flops_per_utterance": {"train": per_train, "eval": per_eval},
        "mosei_epoch_flops": {**epoch, "total": epoch["train"] + epoch["valid"]},
        "padded_text_tokens": padded_train.input_ids.shape[1],
        "flops_per_utterance_padded": padded,
        "mosei_epoch_flops_padded": {
            **padded_epoch,
            "total": padded_epoch["train"] + padded_epoch["valid"],
        },
        "mosei_epoch_s_here": (
            MOSEI_SIZES["train"] / len(train[0].labels) * step_s
            + MOSEI_SIZES["valid"] / len(valid[0].labels) * eval_s
        ),
    }


def paper_geometry(
    plm: str | Path,
    models: Iterable[str] = ("amb", "amb-ft"),
    device: str = "cpu",
    preset: str = "paper",
) -> dict[str, Any]:
    """The cost record of ``models`` at the geometry of ``plm`` (a bert-base stand-in folder)
    with the paper preset's batch sizes and text length; see the module docstring."""
    base = _paper_config(plm, device, preset)
    dev = resolve_device(base.device)
    dataset, tokenizer = _load_data(base)
    geometry = plm_config(base.plm)
    return {
        "plm": str(plm),
        "plm_geometry": {
            "layers": geometry.num_hidden_layers,
            "hidden": geometry.hidden_size,
            "heads": geometry.num_attention_heads,
        },
        "preset": preset,
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "batch_size": base.batch_size,
        "eval_batch_size": base.eval_batch_size,
        "max_text_len": base.max_text_len,
        "mosei_sizes": dict(MOSEI_SIZES),
        "models": {name: _one_model(name, base, dataset, tokenizer, dev) for name in models},
        "note": "FLOPs counted by FlopCounterMode on synthetic batches; the MOSEI epoch is "
        "FLOPs per utterance x MOSEI's split sizes; times on another device are an "
        "estimate (epoch_seconds_at) until measured",
    }


def epoch_seconds_at(
    block: dict[str, Any], model: str, tflops: float, padded: bool = False
) -> float:
    """ESTIMATED seconds of one MOSEI epoch (training plus validation) of ``model`` on a device
    that sustains ``tflops`` TFLOP/s on these operations (not its peak rate); ``padded``: with
    every utterance padded to ``max_text_len`` (the upper bound)."""
    key = "mosei_epoch_flops_padded" if padded else "mosei_epoch_flops"
    return block["models"][model][key]["total"] / (tflops * 1e12)


def paper_geometry_frame(record: dict[str, Any]):
    """One row per model of a record's ``paper_geometry`` block (empty without one): the step
    and batch here, the MOSEI epoch's TFLOP, and the ESTIMATED epoch seconds at
    ``ESTIMATE_TFLOPS``."""
    block = record.get("paper_geometry") or {}
    rows = []
    for name, m in (block.get("models") or {}).items():
        row = {
            "model": name,
            "train step (s)": m["train_step"]["seconds"],
            "train step (GFLOP)": m["train_step"]["flops"] / 1e9,
            "eval batch (s)": m["eval_batch"]["seconds"],
            "eval batch (GFLOP)": m["eval_batch"]["flops"] / 1e9,
            "GFLOP/s here (train)": m["train_step"]["gflop_per_s"],
            "tokens per utterance": m["text_tokens_per_utterance"]["train"],
            "MOSEI epoch (TFLOP)": m["mosei_epoch_flops"]["total"] / 1e12,
            f"MOSEI epoch, text padded to {m['padded_text_tokens']} (TFLOP)": m[
                "mosei_epoch_flops_padded"
            ]["total"]
            / 1e12,
            "MOSEI epoch here (s)": m["mosei_epoch_s_here"],
        }
        for rate in ESTIMATE_TFLOPS:
            row[f"estimate: epoch at {rate:g} TFLOP/s (s)"] = epoch_seconds_at(block, name, rate)
            row[f"estimate, padded: epoch at {rate:g} TFLOP/s (s)"] = epoch_seconds_at(
                block, name, rate, padded=True
            )
        rows.append(row)
    return pd.DataFrame(rows)


def format_lines(block: dict[str, Any] | None) -> list[str]:
    """The paper-geometry block as lines of ``python -m ambcore bench``'s report."""
    if not block:
        return []
    g = block["plm_geometry"]
    lines = [
        f"paper preset at the geometry of {block['plm']} ({g['layers']} layers, width "
        f"{g['hidden']}), {block['torch_threads']} thread(s) on {block['device']}:"
    ]
    for name, m in block["models"].items():
        t, e = m["train_step"], m["eval_batch"]
        lines.append(
            f"  {name}: training step (batch {t['batch']}) {t['flops'] / 1e9:.1f} GFLOP in "
            f"{t['seconds']:.2f} s, evaluation batch ({e['batch']}) {e['flops'] / 1e9:.1f} GFLOP in "
            f"{e['seconds']:.2f} s; a MOSEI epoch {m['mosei_epoch_flops']['total'] / 1e12:.0f} "
            f"TFLOP ({m['mosei_epoch_flops_padded']['total'] / 1e12:.0f} padded to "
            f"{m['padded_text_tokens']} tokens); ESTIMATE at 10 TFLOP/s: "
            f"{epoch_seconds_at(block, name, 10.0):.0f}-{epoch_seconds_at(block, name, 10.0, True):.0f} s"
        )
    return lines
