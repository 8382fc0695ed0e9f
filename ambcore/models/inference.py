"""Predictions from raw inputs: ``model.predict(texts, visual, acoustic)`` (thesis 6.2).

The inputs are what a user has: N transcripts and N visual and acoustic feature sequences of
shape (steps, dim), any number of steps each. They become a ``Split`` and go through the same
loader as evaluation (``ambcore.data.collate.make_loader``: the PLM's tokenizer, dynamic
padding, batches of ``cfg.eval_batch_size`` by length when ``cfg.fast_path``); the model runs
in evaluation mode under ``torch.inference_mode`` (bf16 autocast as ``autocast_dtype`` says,
as in training), and the scores come back in the input order as a numpy array.

Inputs are checked, never repaired: a wrong count, a feature array that is not 2-D, has the
wrong width or holds NaN/inf is refused with one line naming the input and its index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ambcore.data.collate import make_loader
from ambcore.data.types import Split
from ambcore.errors import DataError

__all__ = ["predict", "check_inputs", "run_batches", "autocast_dtype", "autocast"]


def _as_features(name: str, values, dim: int, n: int) -> list[np.ndarray]:
    if isinstance(values, np.ndarray) and values.ndim == 3:
        values = list(values)  # (N, steps, dim): one array per utterance
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise DataError(
            f"predict: {name} must be a list of (steps, {dim}) arrays, got {type(values).__name__}"
        )
    if len(values) != n:
        raise DataError(f"predict: {len(values)} {name} arrays for {n} texts; give one per text")
    arrays = []
    for i, value in enumerate(values):
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"predict: {name}[{i}] is not a numeric array ({exc})") from None
        if array.ndim != 2 or array.shape[1] != dim:
            raise DataError(
                f"predict: {name}[{i}] has shape {array.shape}; the model expects (steps, {dim})"
            )
        if not np.isfinite(array).all():
            raise DataError(f"predict: {name}[{i}] holds NaN or infinite values")
        arrays.append(array)
    return arrays


def check_inputs(model, texts, visual, acoustic, words=None) -> Split:
    """The inputs as a ``Split`` named ``predict`` (ids ``"0"``..., labels 0), or ``DataError``."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DataError(f"predict: texts must be a list of strings, got {type(texts).__name__}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise DataError(f"predict: texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    n = len(texts)
    visual = _as_features("visual", visual, model.visual_dim, n)
    acoustic = _as_features("acoustic", acoustic, model.acoustic_dim, n)
    if words is not None:
        if len(words) != n:
            raise DataError(f"predict: {len(words)} word lists for {n} texts")
        for i, (w, v, a) in enumerate(zip(words, visual, acoustic)):
            if not (len(w) == len(v) == len(a)):
                raise DataError(
                    f"predict: words[{i}] has {len(w)} words, the word-aligned "
                    f"features {len(v)} (visual) and {len(a)} (acoustic) steps"
                )
        words = [list(map(str, w)) for w in words]
    return Split(
        name="predict",
        ids=[str(i) for i in range(n)],
        texts=list(texts),
        visual=visual,
        acoustic=acoustic,
        labels=np.zeros(n, dtype=np.float32),
        words=words,
    )


def _tokenizer(model):
    """The model's PLM tokenizer, loaded once per model (offline)."""
    tokenizer = model.__dict__.get("_predict_tokenizer")
    if tokenizer is None:
        # lazy: plm imports transformers; ambcore.train imports this module and does not need it
        from ambcore.models.plm import load_tokenizer

        tokenizer = load_tokenizer(model.cfg)
        model.__dict__["_predict_tokenizer"] = tokenizer
    return tokenizer


def _device_of(model) -> torch.device:
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def autocast_dtype(cfg, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training/evaluation step, by ``cfg.precision``: "auto" is bf16
    on CUDA with ``cfg.bf16`` and None (fp32) on the CPU; "fp32" is None everywhere; "bf16"
    is bf16 on every device (the CPU too)."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and cfg.bf16 else None


def autocast(cfg, device: torch.device):
    """``torch.autocast`` as ``autocast_dtype`` says (a no-op context when it says None)."""
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(
        device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
    )


def run_batches(
    model,
    loader,
    cfg,
    device: torch.device,
    progress: bool = False,
    desc: str = "predict",
    text_cache=None,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, predictions (N,), labels (N,)) of ``model`` over ``loader``'s batches, in the
    loader's order, on ``device``: evaluation mode, ``torch.inference_mode`` (``torch.no_grad``
    with ``cfg.fast_path=False``), autocast as ``autocast_dtype`` says. The tensors stay on
    the device (one copy to the host for the whole pass, by the caller). ``text_cache``: a
    ``TextCache`` of ``model`` that computes the text features (``ambcore.models.text_cache``).
    The evaluation loop of training (``ambcore.train.predict_split``) and ``predict``."""
    model.eval()
    ids: list[str] = []
    preds: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    no_grad = torch.inference_mode() if cfg.fast_path else torch.no_grad()
    with no_grad:
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
            batch = batch.to(device, non_blocking=True)
            with autocast(cfg, device):
                out = model(batch) if text_cache is None else text_cache(batch)
            preds.append(out.prediction.float().reshape(-1))  # (B,) stays on the device
            labels.append(batch.labels.float().reshape(-1))  # (B,)
            ids.extend(batch.ids)
    if not preds:
        return ids, torch.zeros(0), torch.zeros(0)
    return ids, torch.cat(preds), torch.cat(labels)


def predict(
    model,
    texts,
    visual,
    acoustic,
    *,
    words=None,
    batch_size: int | None = None,
    device=None,
    progress: bool = False,
) -> np.ndarray:
    """Scores (N,) float64 of ``model`` for raw inputs, in their order (module docstring)."""
    split = check_inputs(model, texts, visual, acoustic, words)
    if len(split) == 0:
        return np.zeros(0, dtype=np.float64)
    cfg = model.cfg
    if batch_size is not None:
        if int(batch_size) < 1:
            raise DataError(f"predict: batch_size must be at least 1, got {batch_size}")
        cfg = dataclasses.replace(cfg, eval_batch_size=int(batch_size))
    if device is not None:
        model.to(device)
    loader = make_loader(split, _tokenizer(model), cfg, shuffle=False)
    was_training = model.training
    try:
        ids, preds, _ = run_batches(model, loader, cfg, _device_of(model), progress)
    finally:
        model.train(was_training)
    scores = np.zeros(len(split), dtype=np.float64)
    scores[[int(i) for i in ids]] = preds.cpu().numpy()  # back in the input order
    return scores
