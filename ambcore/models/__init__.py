"""Models (thesis 6.2): AMB and the baselines, built from one ``Config``.

- ``build_model(cfg, visual_dim, acoustic_dim)``: the model named by ``cfg.model``.
- ``load_pretrained(dir)``: a model saved with ``model.save_pretrained(dir)``.
- ``count_parameters(model)``: total / trainable / frozen parameters per component.

Every model takes a ``Batch`` and returns a ``ModelOutput``; see ``ambcore.models.amb`` for AMB.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from torch import nn

from ambcore.errors import ModelConfigError

__all__ = ["MODEL_REGISTRY", "build_model", "load_pretrained", "count_parameters", "COMPONENT_ORDER"]

# cfg.model -> "module:Class"; the class is built as Class(cfg, visual_dim, acoustic_dim).
# Imported lazily, so a model's module is only needed when that model is asked for.
MODEL_REGISTRY: dict[str, str] = {
    "amb": "ambcore.models.amb:AMB",
    "misa": "ambcore.models.misa:MISA",
    "mag-bert": "ambcore.models.magbert:MAGBert",
}


def _model_class(name: str):
    if name not in MODEL_REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_REGISTRY)}")
    module_name, class_name = MODEL_REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ModelConfigError(f"model {name!r} is not available ({module_name} is missing)") from None
        raise
    return getattr(module, class_name)


def build_model(cfg, visual_dim: int, acoustic_dim: int) -> nn.Module:
    """The model ``cfg.model`` for features of sizes ``visual_dim`` and ``acoustic_dim``.

    The PLM is loaded as ``cfg.plm`` says (offline; ``ambcore.models.plm``). A batch whose
    feature sizes differ from the ones given here raises ``ModelConfigError`` in ``forward``.
    """
    return _model_class(cfg.model)(cfg, int(visual_dim), int(acoustic_dim))


def load_pretrained(directory: str | os.PathLike, plm: str | None = None) -> nn.Module:
    """Rebuild a model saved by ``save_pretrained``: PLM from its reference, then trained weights.

    ``plm`` overrides where the PLM comes from (e.g. a local folder on another machine); the
    frozen PLM weights must still be the ones the model was trained with (checked by SHA-256).
    Nothing is unpickled: the folder holds JSON and safetensors only.
    """
    from ambcore.config import config_from_dict
    from ambcore.models.checkpoint import frozen_plm_fingerprint, load_trained_weights, read_checkpoint

    directory = Path(directory)
    config_dict, meta, tensors = read_checkpoint(directory)
    if plm is not None:
        config_dict = {**config_dict, "plm": plm}
    cfg = config_from_dict(config_dict)
    model = build_model(cfg, meta["visual_dim"], meta["acoustic_dim"])
    expected_sha = meta["plm"]["frozen_sha256"]
    if frozen_plm_fingerprint(model) != expected_sha:
        raise ModelConfigError(
            f"{directory}: the PLM loaded from {cfg.plm!r} has different frozen weights from the one "
            f"this checkpoint was trained with (saved reference: {meta['plm']})"
        )
    source = str(directory)
    if cfg.model == "amb":  # name the design its config rebuilt (see ambcore.config.LEGACY_DESIGN)
        from ambcore.models.amb import design_of

        source = f"{directory} (rebuilt as the AMB design {design_of(cfg)})"
    load_trained_weights(model, tensors, source)
    model.eval()
    return model


COMPONENT_ORDER = ("adapters", "encoders", "fusion", "predictor", "plm")


def count_parameters(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{component: {"total", "trainable", "frozen"}}`` plus an ``"all"`` row.

    Components come from ``model.component_of(name)`` where defined (AMB: adapters, encoders,
    fusion, predictor, plm), else from the parameter name's first part. Shared tensors count once.
    """
    component_of = getattr(model, "component_of", lambda name: name.split(".", 1)[0])
    rows: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        row = rows.setdefault(component_of(name), {"total": 0, "trainable": 0, "frozen": 0})
        row["total"] += param.numel()
        row["trainable" if param.requires_grad else "frozen"] += param.numel()
    ordered = {k: rows.pop(k) for k in COMPONENT_ORDER if k in rows}
    ordered.update(sorted(rows.items()))
    ordered["all"] = {key: sum(r[key] for r in ordered.values()) for key in ("total", "trainable", "frozen")}
    return ordered
