"""The CUDA-only branches, decided on the CPU with a forced device: bf16 autocast, pinned
memory, device placement, the fused optimizer (no GPU needed; the GPU run checks the rest)."""

from __future__ import annotations

import pytest
import torch

from ambcore.config import get_config
from ambcore.errors import AmbError
from ambcore.models.inference import autocast_dtype
from ambcore.train import make_optimizer, resolve_device

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_autocast_is_bf16_on_cuda_only_and_only_with_bf16():
    cfg = get_config("smoke")
    assert autocast_dtype(cfg, CUDA) is torch.bfloat16
    assert autocast_dtype(cfg, CPU) is None
    assert autocast_dtype(get_config("smoke", bf16=False), CUDA) is None


@pytest.mark.parametrize(
    "precision, on_cpu, on_cuda",
    [
        ("auto", None, torch.bfloat16),
        ("fp32", None, None),
        ("bf16", torch.bfloat16, torch.bfloat16),
    ],
)
def test_precision_forces_the_autocast_dtype_on_every_device(precision, on_cpu, on_cuda):
    cfg = get_config("smoke", precision=precision)
    assert autocast_dtype(cfg, CPU) is on_cpu and autocast_dtype(cfg, CUDA) is on_cuda


def test_device_placement(fake_cuda):
    assert resolve_device("auto") == CUDA
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cpu") == CPU


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(AmbError, match="'device'='cuda'"):
        resolve_device("cuda")


def _loader(cfg):
    from ambcore.data.collate import make_loader
    from ambcore.data.loaders import load_dataset
    from ambcore.models.plm import load_tokenizer

    split = load_dataset("synthetic", cfg)["valid"]
    return make_loader(split, load_tokenizer(cfg), cfg, shuffle=False)


def test_pinned_memory_on_the_gpu_fast_path_only(fake_cuda):
    assert _loader(get_config("smoke", device="auto")).pin_memory
    assert _loader(get_config("smoke", device="cuda")).pin_memory
    assert not _loader(get_config("smoke", device="cpu")).pin_memory
    assert not _loader(get_config("smoke", device="auto", fast_path=False)).pin_memory


def test_pinned_memory_off_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not _loader(get_config("smoke", device="auto")).pin_memory


def test_fused_optimizer_on_the_gpu_fast_path_only():
    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    assert make_optimizer(params, get_config("smoke"), CUDA).defaults["fused"] is True
    assert not make_optimizer(params, get_config("smoke"), CPU).defaults["fused"]
    naive = get_config("smoke", fast_path=False)
    assert not make_optimizer(params, naive, CUDA).defaults["fused"]
