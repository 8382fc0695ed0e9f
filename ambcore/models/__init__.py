"""Models (thesis 6.2): AMB and the baselines, built from one ``Config``.

- ``build_model(cfg, visual_dim, acoustic_dim)``: the model named by ``cfg.model``.
- ``from_pretrained(path)`` (also ``ambcore.from_pretrained``): a model saved with
  ``model.save_pretrained(dir)``, or a run folder's best checkpoint; the class is read from the
  folder (``AMB.from_pretrained(path)`` insists on AMB). ``load_pretrained`` is the same.
- ``count_parameters(model)``: total / trainable / frozen parameters per component.

Every model takes a ``Batch`` and returns a ``ModelOutput``; ``model.predict(texts, visual,
acoustic)`` takes raw inputs and returns scores. See ``ambcore.models.amb`` for AMB and
``ambcore.models.checkpoint`` for the folder's files.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

from torch import nn

from ambcore import runs
from ambcore.config import config_from_dict
from ambcore.errors import ModelConfigError
from ambcore.models.checkpoint import (
    MODEL_FILE,
    PretrainedMixin,
    frozen_plm_fingerprint,
    load_trained_weights,
    read_checkpoint,
)

__all__ = [
    "MODEL_REGISTRY",
    "build_model",
    "from_pretrained",
    "load_pretrained",
    "count_parameters",
    "COMPONENT_ORDER",
]

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
            raise ModelConfigError(
                f"model {name!r} is not available ({module_name} is missing)"
            ) from None
        raise
    return getattr(module, class_name)


def build_model(cfg, visual_dim: int, acoustic_dim: int) -> nn.Module:
    """The model ``cfg.model`` for features of sizes ``visual_dim`` and ``acoustic_dim``.

    The PLM is loaded as ``cfg.plm`` says (offline; ``ambcore.models.plm``). A batch whose
    feature sizes differ from the ones given here raises ``ModelConfigError`` in ``forward``.
    """
    return _model_class(cfg.model)(cfg, int(visual_dim), int(acoustic_dim))


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder that ``path`` names: ``path`` itself, or a run folder's ``best/``
    (which must be the run's own checkpoint: ``ambcore.runs.check_best_config``)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelConfigError(
            f"{path}: no such folder; from_pretrained loads a folder written by save_pretrained "
            "or a run folder, offline (nothing is downloaded from the Hub)"
        )
    if (path / MODEL_FILE).is_file():
        return path
    paths = runs.RunPaths(path)
    if paths.config.is_file():  # a run folder
        runs.recover_dir_swap(paths.best)
        if not paths.best.is_dir():
            raise ModelConfigError(f"{path}: no best/ checkpoint (the run never finished an epoch)")
        runs.check_best_config(path)  # a best/ of another seed or config is refused
        return paths.best
    return path  # read_checkpoint names what is missing


def from_pretrained(
    path: str | os.PathLike,
    plm: str | None = None,
    device=None,
    expected_class: type | None = None,
    **kwargs,
) -> nn.Module:
    """Rebuild a model saved by ``save_pretrained`` (or a run folder's best checkpoint): the
    class named by its ``model.json``, the PLM from its reference, then the trained weights.

    ``plm`` overrides where the PLM comes from (e.g. a local folder on another machine); the
    frozen PLM weights must still be the ones the model was trained with (checked by SHA-256).
    ``device`` moves the model there. ``expected_class``: refuse a folder holding another class
    (``AMB.from_pretrained``). Nothing is unpickled: the folder holds JSON and safetensors only;
    nothing is downloaded. The model is returned in evaluation mode.
    """
    folder = model_folder(path)
    checkpoint = read_checkpoint(folder)
    name = checkpoint[1].get("model")
    model_class = _model_class(name)
    if expected_class is not None and not issubclass(model_class, expected_class):
        raise ModelConfigError(
            f"{folder} holds a model of class {model_class.__name__} (model.json: model={name!r}), "
            f"not {expected_class.__name__}; ambcore.from_pretrained picks the class from the folder"
        )
    try:
        # The mixin reads config.json and calls the class's _from_pretrained (a local folder:
        # no Hub request).
        return super(PretrainedMixin, model_class).from_pretrained(
            str(folder),
            local_files_only=True,
            checkpoint=checkpoint,
            plm=plm,
            device=device,
            **kwargs,
        )
    except pickle.UnpicklingError:
        # lazy: plm imports transformers; this package stays free of it (ambcore.train imports it)
        from ambcore.models.plm import resolve_plm_path

        plm_name = plm or checkpoint[0].get("plm")
        raise ModelConfigError(
            f"PLM {plm_name!r} ({resolve_plm_path(plm_name)}): torch.load refused its pickled "
            "weights file (pytorch_model.bin holds objects outside torch's weights-only "
            "allow-list); use a folder with model.safetensors"
        ) from None


def design_label(cfg) -> str | None:
    """The AMB design a config builds (``ambcore.models.amb.design_of``); None for baselines."""
    if cfg.model != "amb":
        return None
    # lazy: amb imports transformers; this package stays free of it (ambcore.train imports it)
    from ambcore.models.amb import design_of

    return design_of(cfg)


def build_from_checkpoint(directory: Path, checkpoint, plm: str | None = None) -> nn.Module:
    """The model of a checkpoint read by ``read_checkpoint``: built from its config (``plm``
    overrides the PLM reference), the frozen PLM checked, the trained weights put in place."""
    config_dict, meta, tensors = checkpoint
    if plm is not None:
        config_dict = {**config_dict, "plm": str(plm)}
    cfg = config_from_dict(config_dict)
    model = build_model(cfg, meta["visual_dim"], meta["acoustic_dim"])
    expected_sha = meta["plm"]["frozen_sha256"]
    if frozen_plm_fingerprint(model) != expected_sha:
        raise ModelConfigError(
            f"{directory}: the PLM loaded from {cfg.plm!r} has different frozen weights from the one "
            f"this checkpoint was trained with (saved reference: {meta['plm']})"
        )
    design = design_label(
        cfg
    )  # name the design its config rebuilt (see ambcore.config.LEGACY_DESIGN)
    source = (
        str(directory) if design is None else f"{directory} (rebuilt as the AMB design {design})"
    )
    load_trained_weights(model, tensors, source)
    model.eval()
    return model


def load_pretrained(directory: str | os.PathLike, plm: str | None = None) -> nn.Module:
    """``from_pretrained`` (the earlier name)."""
    return from_pretrained(directory, plm=plm)


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
    ordered["all"] = {
        key: sum(r[key] for r in ordered.values()) for key in ("total", "trainable", "frozen")
    }
    return ordered
