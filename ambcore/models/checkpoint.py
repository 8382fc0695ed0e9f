"""Checkpoints that hold only what training changed (thesis 6.3.2: the parameter budget).

Every model (AMB and the baselines) follows the Hugging Face conventions through
``huggingface_hub.ModelHubMixin``: ``model.save_pretrained(dir)`` writes a model folder and
``AMB.from_pretrained(dir)`` (or ``ambcore.from_pretrained(dir)``, which reads the class from
the folder; ``ambcore.models.from_pretrained``) rebuilds the model. A folder has four files:

- ``weights.safetensors``: every trainable parameter of the model (adapters, encoders, fusion,
  predictor, and the PLM layers only when they were fine-tuned). No frozen PLM weight.
- ``config.json``: the model's constructor arguments as the mixin writes them,
  ``{"cfg": <the full Config, Config.to_dict()>, "visual_dim": ..., "acoustic_dim": ...}``; the
  ambcore config is nested under ``cfg``, so no Hugging Face tool mistakes its keys for a
  transformers config. (Folders of format 1 hold the bare ``Config``; they still load.)
- ``model.json``: what else is needed to rebuild: the model name, the feature dimensions, the
  PLM reference (``cfg.plm``, where it resolved to, random or pretrained), a SHA-256 of
  the frozen PLM weights, checked on load so that trained adapters are never silently combined
  with a different PLM, and ``weights_sha256``, the SHA-256 of the ``weights.safetensors``
  file's bytes, checked on every load: a flipped bit, a truncated or swapped weights file is
  refused with one line, never evaluated.
- ``README.md``: the model card (``ambcore.models.card``), with the Hub's metadata block; a
  finished run rewrites its ``best/`` card with the data and the metrics.

Loading reads JSON and safetensors only; nothing is unpickled and nothing is downloaded (a path
that is not a folder is refused, not looked up on the Hub). A JSON file that does not parse,
a safetensors file that does not parse and weights that are not finite are refused too
(``ModelConfigError``, one line). The frozen PLM is loaded from
its reference (``ambcore.models.plm.load_plm``), then the trained weights are put in place.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelHubMixin
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from ambcore.atomic import atomic_write_bytes, atomic_write_text
from ambcore.errors import ModelConfigError
from ambcore.models.card import model_card
from ambcore.models.inference import predict

__all__ = [
    "WEIGHTS_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
    "CARD_FILE",
    "PretrainedMixin",
    "write_model_card",
    "frozen_plm_fingerprint",
    "read_checkpoint",
    "saved_config",
    "file_sha256",
]

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
CARD_FILE = "README.md"
FORMAT_VERSION = 2  # 2: config.json nests the Config under "cfg"; 1: config.json is the Config
READABLE_VERSIONS = (1, 2)


def frozen_plm_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names and bytes of the PLM weights that the checkpoint does not store.

    Cached on the model until one of those tensors is replaced or modified in place (tracked by
    storage address and autograd version counter), so repeated checkpointing stays cheap.
    """
    frozen = [
        (n, p) for n, p in model.named_parameters() if n.startswith("plm.") and not p.requires_grad
    ]
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PretrainedMixin(
    ModelHubMixin,
    library_name="ambcore",
    tags=["ambcore", "multimodal-sentiment-analysis", "adapters"],
):
    """Hugging Face conventions for models with ``cfg``, ``visual_dim``, ``acoustic_dim`` and a
    ``plm`` (AMB, MISA, MAG-BERT): ``save_pretrained``, ``from_pretrained``, ``predict``."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def save_pretrained(
        self, save_directory: str | os.PathLike, *, model_card_kwargs: dict | None = None, **kwargs
    ) -> Path:
        """Write the model folder (module docstring); returns its path. ``model_card_kwargs``
        go to ``generate_model_card`` (e.g. ``data=`` and ``metrics=`` of a finished run)."""
        super().save_pretrained(save_directory, model_card_kwargs=model_card_kwargs, **kwargs)
        return Path(save_directory)

    def _save_pretrained(self, save_directory: Path) -> None:
        # lazy: plm imports transformers; ambcore.models imports this module and stays free of it
        from ambcore.models.plm import resolve_plm_path

        directory = Path(save_directory)
        tensors = {n: t.to("cpu").contiguous() for n, t in self.trainable_state_dict().items()}
        metadata = {"format": "ambcore", "version": str(FORMAT_VERSION)}
        atomic_write_bytes(directory / WEIGHTS_FILE, save_safetensors_bytes(tensors, metadata))
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
            "weights_sha256": file_sha256(directory / WEIGHTS_FILE),
        }
        init_args = {
            "cfg": cfg.to_dict(),
            "visual_dim": self.visual_dim,
            "acoustic_dim": self.acoustic_dim,
        }
        atomic_write_text(directory / CONFIG_FILE, json.dumps(init_args, indent=2, sort_keys=True))
        atomic_write_text(directory / MODEL_FILE, json.dumps(meta, indent=2))

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The model card (``ambcore.models.card.model_card``): ``data`` (a
        ``MultimodalDataset``) and ``metrics`` (a run's metrics.json) where known."""
        return model_card(self, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        plm: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ):
        """The model saved in a folder, or in a run folder's ``best/``; offline, hash-checked.

        ``plm`` overrides where the PLM comes from (a local folder on another machine; its
        frozen weights must still be the ones the model was trained with). A folder that holds
        another class of model is refused (``ambcore.from_pretrained`` picks the class).
        """
        # lazy: ambcore.models imports this module (a cycle at import time)
        from ambcore.models import from_pretrained

        expected = None if cls is PretrainedMixin else cls
        return from_pretrained(
            pretrained_model_name_or_path, plm=plm, device=device, expected_class=expected, **kwargs
        )

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, checkpoint=None, plm: str | None = None, device=None, **model_kwargs
    ):
        """The mixin's hook: build the model from an already read and checked ``checkpoint``
        (``read_checkpoint``); the mixin's ``cfg``/``visual_dim``/``acoustic_dim`` from
        config.json are the same values and are not used."""
        # lazy: ambcore.models imports this module (a cycle at import time)
        from ambcore.models import build_from_checkpoint

        checkpoint = checkpoint if checkpoint is not None else read_checkpoint(model_id)
        model = build_from_checkpoint(Path(model_id), checkpoint, plm=plm)
        return model if device is None else model.to(device)

    def predict(
        self,
        texts,
        visual,
        acoustic,
        *,
        words=None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Sentiment scores (N,) for N utterances given as raw inputs (thesis 6.2).

        ``texts``: N strings; ``visual`` / ``acoustic``: N arrays of shape (steps, dim), any
        number of steps each; ``words`` (word-aligned models such as MAG-BERT): N lists of
        words, one per feature step. Tokenization, padding, batching (``cfg.eval_batch_size``
        or ``batch_size``), the device (the model's own, or ``device``) and evaluation mode
        are handled here (``ambcore.models.inference``); the model's mode is restored after.
        """
        return predict(
            self,
            texts,
            visual,
            acoustic,
            words=words,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )


def write_model_card(
    directory: str | os.PathLike, model, metrics: dict | None = None, test_predictions=None
) -> Path:
    """Rewrite ``directory``'s model card with a finished run's ``metrics`` (metrics.json) and
    the 95 % bootstrap intervals of its ``test_predictions`` (a frame: id, y_true, y_pred;
    ``ambcore.stats.run_interval``: over the test videos, seeded)."""
    # lazy: stats loads pandas and scipy; ambcore.models imports this module and needs neither
    from ambcore import stats

    intervals = None
    if test_predictions is not None and len(test_predictions) > 1:
        intervals = stats.run_interval(test_predictions)
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, str(model.generate_model_card(metrics=metrics, intervals=intervals)))
    return path


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(config dict, model.json dict, trained tensors) of a checkpoint folder; no unpickling.

    The weights file must have the SHA-256 recorded in ``model.json``, parse as safetensors and
    hold finite values only; the JSON files must parse. Each failure is one line naming the file.
    """
    directory = Path(directory)
    for name in (WEIGHTS_FILE, CONFIG_FILE, MODEL_FILE):
        if not (directory / name).is_file():
            raise ModelConfigError(
                f"{directory} is not a model checkpoint: {name} is missing (expected "
                f"{WEIGHTS_FILE}, {CONFIG_FILE} and {MODEL_FILE}, written by save_pretrained)"
            )
    meta = _read_json_object(directory / MODEL_FILE)
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise ModelConfigError(
            f"{directory / MODEL_FILE}: format_version {meta.get('format_version')!r}, "
            f"expected one of {', '.join(map(str, READABLE_VERSIONS))}"
        )
    config = saved_config(directory, meta["format_version"])
    data = (directory / WEIGHTS_FILE).read_bytes()
    _check_weights_hash(directory, meta, hashlib.sha256(data).hexdigest())
    try:
        tensors = load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ModelConfigError(
            f"{directory / WEIGHTS_FILE}: not a readable safetensors file ({_one_line(exc)})"
        ) from None
    _check_finite(directory / WEIGHTS_FILE, tensors)
    return config, meta, tensors


def saved_config(directory: str | os.PathLike, format_version: int | None = None) -> dict:
    """The ambcore ``Config`` (as a dict) of a model folder: ``config.json``'s ``cfg`` (format
    2), or the whole of ``config.json`` (format 1). ``format_version`` is read from
    ``model.json`` when not given."""
    directory = Path(directory)
    if format_version is None:
        if not (directory / MODEL_FILE).is_file():
            raise ModelConfigError(
                f"{directory} is not a model checkpoint: {MODEL_FILE} is missing"
            )
        format_version = _read_json_object(directory / MODEL_FILE).get("format_version")
    config = _read_json_object(directory / CONFIG_FILE)
    if format_version == 1:
        return config
    cfg = config.get("cfg")
    if not isinstance(cfg, dict):
        raise ModelConfigError(
            f'{directory / CONFIG_FILE}: no "cfg" object (the model\'s ambcore Config); '
            f"found keys {sorted(config)[:6]}"
        )
    return cfg


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"{path}: not valid JSON ({_one_line(exc)})") from None
    if not isinstance(value, dict):
        raise ModelConfigError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _check_weights_hash(directory: Path, meta: dict, actual: str) -> None:
    expected = meta.get("weights_sha256")
    if not isinstance(expected, str):
        raise ModelConfigError(
            f"{directory / MODEL_FILE}: no weights_sha256 (a checkpoint written before weights "
            "were hashed, or an edited one); train the run again"
        )
    if actual != expected:
        raise ModelConfigError(
            f"{directory / WEIGHTS_FILE}: SHA-256 {actual[:16]}... differs from the "
            f"{expected[:16]}... recorded in {MODEL_FILE} (the file was modified, truncated or "
            "replaced); train the run again"
        )


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelConfigError(f"{path}: tensor {name!r} holds NaN or infinite values")


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
