"""Checkpoints that hold only what training changed (thesis 6.3.2: the parameter budget).

A checkpoint folder has three files:

- ``weights.safetensors``: every trainable parameter of the model (adapters, encoders, fusion,
  predictor, and the PLM layers only when they were fine-tuned). No frozen PLM weight.
- ``config.json``: the full ``Config`` (``Config.to_dict()``).
- ``model.json``: what else is needed to rebuild: the model name, the feature dimensions, the
  PLM reference (``cfg.plm``, where it resolved to, random or pretrained) and a SHA-256 of
  the frozen PLM weights, checked on load so that trained adapters are never silently combined
  with a different PLM.

Loading reads JSON and safetensors only; nothing is unpickled. The frozen PLM is loaded from
its reference (``ambcore.models.plm.load_plm``), then the trained weights are put in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ambcore.errors import ModelConfigError

__all__ = [
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
    "PretrainedMixin",
    "frozen_plm_fingerprint",
    "read_checkpoint",
]

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
FORMAT_VERSION = 1


def frozen_plm_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names and bytes of the PLM weights that the checkpoint does not store.

    Cached on the model until one of those tensors is replaced or modified in place (tracked by
    storage address and autograd version counter), so repeated checkpointing stays cheap.
    """
    frozen = [(n, p) for n, p in model.named_parameters() if n.startswith("plm.") and not p.requires_grad]
    key = tuple((n, p.data_ptr(), p._version) for n, p in frozen)
    cached = getattr(model, "_frozen_fingerprint_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    for name, param in frozen:
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    model._frozen_fingerprint_cache = (key, digest.hexdigest())
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class PretrainedMixin:
    """``save_pretrained(dir)`` for models with ``cfg``, ``visual_dim``, ``acoustic_dim``, ``plm``."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        from ambcore.models.plm import resolve_plm_path

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {n: t.to("cpu").contiguous() for n, t in self.trainable_state_dict().items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": "ambcore", "version": str(FORMAT_VERSION)})
        os.replace(tmp, directory / WEIGHTS_FILE)
        cfg = self.cfg
        meta = {
            "format_version": FORMAT_VERSION,
            "model": cfg.model,
            "class": type(self).__name__,
            "visual_dim": self.visual_dim,
            "acoustic_dim": self.acoustic_dim,
            "plm": {
                "name": cfg.plm,
                "resolved": resolve_plm_path(cfg.plm),
                "random_init": bool(cfg.plm_random_init or cfg.plm == "tiny-random"),
                "frozen_sha256": frozen_plm_fingerprint(self),
            },
            "trainable_tensors": sorted(tensors),
        }
        _atomic_write_text(directory / CONFIG_FILE, cfg.to_json())
        _atomic_write_text(directory / MODEL_FILE, json.dumps(meta, indent=2))
        return directory


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(config dict, model.json dict, trained tensors) of a checkpoint folder; no unpickling."""
    directory = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE, MODEL_FILE):
        if not (directory / name).is_file():
            raise ModelConfigError(
                f"{directory} is not a model checkpoint: {name} is missing (expected "
                f"{WEIGHTS_FILE}, {CONFIG_FILE} and {MODEL_FILE}, written by save_pretrained)"
            )
    config = json.loads((directory / CONFIG_FILE).read_text())
    meta = json.loads((directory / MODEL_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelConfigError(
            f"{directory / MODEL_FILE}: format_version {meta.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    tensors = load_file(str(directory / WEIGHTS_FILE))
    return config, meta, tensors


def load_trained_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Put the checkpoint's tensors into ``model``; they must be exactly its trainable tensors."""
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise ModelConfigError(
            f"{source}: the checkpoint's tensors do not match the model built from its config "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; unexpected: "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ModelConfigError(
                    f"{source}: tensor {name!r} has shape {tuple(value.shape)}, the model "
                    f"expects {tuple(params[name].shape)}"
                )
            params[name].copy_(value)
