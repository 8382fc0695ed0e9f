"""One configuration dataclass for every experiment in the book (thesis section 6.3.1).

`Config` is frozen: build it from a preset and override fields by name::

    cfg = get_config("embedded", seed=1, model="misa")
    cfg = apply_overrides(cfg, ["lr=1e-4", "variant=text-only"])

Presets
-------
- ``smoke``: CI-sized, a tiny random BERT and a few hundred synthetic utterances; seconds.
- ``embedded``: the synthetic MOSEI-shaped dataset and the bundled all-MiniLM-L6-v2; the
  default main job. Sized so that the whole book (7 models x 3 seeds, plus the robustness
  runs) takes about a third of its earlier 26 minutes on two CPU cores: one AMB run (up to 4
  epochs over 320 training utterances, 150 validation, 250 test) costs about 23 CPU-seconds
  with one thread, against about 64 with the earlier 8 epochs over 600/200/300 (measured by
  ``ambcore.bench.phases``, results/phases-embedded.json: training is PLM forward and
  backward, a third of a run is evaluation). Evaluation batches of 32 pad the short synthetic texts (15 word pieces on
  average) to the longest of 32, not of 128.
- ``paper``: CMU-MOSEI (path from ``--set data=...`` or ``AMB_DATA``) and bert-base-uncased with
  the thesis' hyper-parameters (adapter 384, fusion 220, Adam 5e-5, dropout 0.2, patience 10).

Every field has a default; a comment explains the non-obvious ones. Fields are grouped by the
component that reads them; models ignore the groups of other models.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ambcore.errors import AmbError

__all__ = [
    "Config",
    "PRESETS",
    "get_config",
    "apply_overrides",
    "config_from_dict",
    "saved_values",
    "ConfigError",
    "validate",
    "CELL_TIMEOUT_S",
    "CELL_TIMEOUT_ENV",
    "cell_timeout",
]


class ConfigError(AmbError, ValueError):
    """An unknown preset or key, or a value of the wrong type."""


@dataclass(frozen=True)
class Config:
    # ---- identity ---------------------------------------------------------------------------
    preset: str = "embedded"
    seed: int = 0

    # ---- data (ambcore.data) ------------------------------------------------------------------
    # "synthetic" (the embedded generated dataset), or a path to an MMSA/MAG-BERT/MISA pickle.
    # An empty string means: take the path from the AMB_DATA environment variable.
    data: str = "synthetic"
    synthetic_n_train: int = 1200
    synthetic_n_valid: int = 300
    synthetic_n_test: int = 400
    synthetic_aligned: bool = True  # aligned_50 layout (50 steps); False: unaligned (up to 500)
    synthetic_seed: int = 1234  # the dataset itself; fixed across training seeds by design
    max_text_len: int = 64  # cap on word-piece tokens incl. [CLS]/[SEP]; padding is dynamic
    # Which of MMSA's datasets the file is (ambcore.data.specs): "auto" names it from the
    # feature sizes and accepts any; "mosei" | "mosi" | "sims" refuses a file that does not fit.
    dataset: str = "auto"

    # ---- pretrained language model (ambcore.models.plm) -------------------------------------
    # "embedded" = the bundled all-MiniLM-L6-v2; "tiny-random" = a random BERT (hidden 32,
    # 2 layers) for tests; anything else is a local folder or a hub name (bert-base-uncased).
    plm: str = "embedded"
    plm_random_init: bool = False  # build the PLM's architecture with random weights

    # ---- model choice -------------------------------------------------------------------------
    model: str = "amb"  # "amb" | "misa" | "mag-bert"
    # How the PLM is adapted to the task: "adapters" (frozen PLM + bottleneck adapters),
    # "finetune" (PLM weights trained; see finetune_layers), "frozen" (no adapters, no tuning).
    text_adaptation: str = "adapters"
    # Which PLM encoder layers are trainable with text_adaptation="finetune": "all", or
    # "last:K" (the last K layers; whether the embeddings train too is per model, see
    # amb_finetune_embeddings / misa_finetune_embeddings). The thesis' AMB-FT (47.2 M) and
    # MISA (47.1 M) match bert-base's embeddings + last 3 layers: "last:3" with embeddings.
    finetune_layers: str = "all"
    # "full" (text + audio + visual), "text-only" (no audio-visual input), "no-text" (the
    # text reaching the model is reduced to [CLS] [SEP]).
    variant: str = "full"
    # A control, not a model: the visual and acoustic features of each split are permuted
    # across its utterances (one fixed permutation, the same for every seed), so they carry no
    # information about the label or the text (the negative control of the Ablation chapter).
    av_shuffle: bool = False

    # ---- AMB (thesis 6.2) ---------------------------------------------------------------------
    adapter_dim: int = 384  # bottleneck size; scaled down for smaller PLMs by the presets
    encoder_dim: int = 128  # width of the visual/acoustic transformer encoders
    encoder_layers: int = 2
    encoder_heads: int = 1
    encoder_ffn_dim: int = 256
    fusion_proj_dim: int = 128  # the [CLS] state is projected to this size before fusion
    fusion_hidden: int = 220
    # "chain": fusion layer l also receives fusion layer l-1's output (the thesis figure's
    # 12x stack); "independent": each layer fuses only its own [CLS] with the AV token.
    fusion_connect: str = "chain"
    # The [CLS] state's projection before fusion: "shared" (one H -> P map for all layers, the
    # design that fits the thesis' 8.6 M) | "per_layer" (one per layer, the earlier design).
    cls_projection: str = "shared"
    # Where each layer's adapter sits (ambcore.models.adapters): "ours" (on the feed-forward
    # LayerNorm's output, no re-normalisation) | "pfeiffer" (AdapterHub's Pfeiffer adapter:
    # residual before that LayerNorm, the LayerNorm re-applied).
    adapter_placement: str = "ours"
    predictor_hidden: int = 0  # 0: a single linear layer (thesis 6.2.6)
    # Beyond the thesis (its Future Work, 7.2; ambcore.models.fusion). What each fusion layer
    # reads of the AV input: "ffn" (the thesis: the AV token) | "cross_attention" (the
    # projected [CLS] state attends over the AV encoders' output sequences; not text-only).
    fusion_module: str = "ffn"
    fusion_heads: int = 4  # attention heads of "cross_attention"; a divisor of fusion_proj_dim
    # "none" (the thesis) | "shift": the fused state of layer l shifts the token states that
    # enter PLM layer l + 1, by MAG-BERT's gated displacement bounded by
    # feedback_beta_shift x the states' norm.
    fusion_feedback: str = "none"
    feedback_beta_shift: float = 1.0
    # AMB-FT with finetune_layers="last:K": also train the word/position/segment embeddings
    # (MISA's MOSEI scheme; with last:3 it reproduces the thesis' AMB-FT parameter count).
    amb_finetune_embeddings: bool = True
    # AMB-FT also carries BERT's pooler, trained with the embeddings and never read, as MISA's
    # freezing loop leaves it trainable (the thesis' 47.2 M counts it; the paper preset sets it).
    amb_finetune_pooler: bool = False
    dropout: float = 0.2

    # ---- MISA (Hazarika et al. 2020) ----------------------------------------------------------
    misa_hidden: int = 128
    misa_dropout: float = 0.5
    misa_diff_weight: float = 0.3
    misa_sim_weight: float = 1.0
    misa_recon_weight: float = 1.0
    misa_cmd_moments: int = 5
    # Feed-forward width of MISA's 1-layer, 2-head fusion transformer (PyTorch's default 2048,
    # which the original code keeps).
    misa_fusion_ffn_dim: int = 2048
    # With text_adaptation="finetune" and finetune_layers="last:K", also train the embeddings
    # (MISA's MOSEI setup trains the embeddings + layers 9-11: finetune_layers="last:3").
    misa_finetune_embeddings: bool = True

    # ---- MAG-BERT (Rahman et al. 2020) --------------------------------------------------------
    mag_beta_shift: float = 1.0
    mag_dropout: float = 0.5
    mag_injection_layer: int = 1  # 1 = after the embeddings (before encoder layer 1)
    # MAG shifts each token by its word's features, so it needs word-aligned data. With
    # unaligned data: "error" (default) refuses; "resample" averages each token's proportional
    # segment of the sequence (an approximation, not the original method).
    mag_unaligned: str = "error"
    # What the prediction head reads: "pooler" (the original: BERT's pooler, dense + tanh on
    # [CLS], trained by bert-base's next-sentence task), "cls" (the [CLS] state itself) or "mean"
    # (the mean of the real tokens' states). For PLMs whose pooler was never trained, such as
    # the embedded all-MiniLM-L6-v2 (made for mean pooling); see ambcore.models.magbert.
    mag_pooling: str = "pooler"

    # ---- training (ambcore.train) -------------------------------------------------------------
    loss: str = "l1"  # "l1" (thesis) | "mse"
    lr: float = 5e-5
    # Learning rate of the parameters trained from scratch (adapters, encoders, fusion, gates,
    # heads) when pretrained PLM weights train beside them; 0: ``lr`` for every parameter (the
    # thesis and the recipes). Beyond the recipes: on a budget of a few dozen steps, a head
    # that starts at zero output cannot reach the labels' scale at a fine-tuning rate
    # (ambcore.train.make_optimizer).
    new_params_lr: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 128
    max_epochs: int = 40
    patience: int = 10  # early stopping on validation MAE
    grad_clip: float = 0.0  # 0: no clipping
    # The baselines' own training recipes (off by default; ambcore.models.misa/.magbert):
    grad_clip_mode: str = "norm"  # "norm": the global gradient norm; "value": each value (MISA)
    # "adam" | "adamw": decoupled weight decay, none on biases and normalisation weights
    # (parameters with fewer than 2 dimensions), as MAG-BERT's optimizer groups.
    optimizer: str = "adam"
    # > 0: the learning rate rises linearly over this fraction of all training steps
    # (max_epochs x batches per epoch), then falls linearly to 0 (MAG-BERT: 0.1).
    warmup_ratio: float = 0.0
    # When patience runs out: restore the best weights and optimizer state, halve the learning
    # rate and go on, at most this many times, then stop (MISA: its 3 "trials" = 2 halvings).
    lr_halvings: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # Numerics of the training and evaluation steps: "auto" (bf16 autocast on CUDA when
    # ``bf16``, fp32 on the CPU), "fp32" (no autocast on any device) or "bf16" (bf16 autocast
    # on every device, the CPU included: ``python -m ambcore bench --numerics`` compares the
    # two on the CPU).
    precision: str = "auto"
    bf16: bool = True  # with precision="auto": autocast on CUDA; ignored on the CPU
    fast_path: bool = True  # length bucketing, token cache, inference_mode (see ambcore.bench)
    compile: bool = False  # torch.compile on CUDA
    noise_augment_rate: float = 0.0  # fraction of training samples perturbed (beyond the thesis)
    num_workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that define the dataset, not the run; used to fingerprint cached datasets.
DATA_FIELDS = tuple(f.name for f in fields(Config) if f.name.startswith("synthetic_")) + ("data",)

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        preset="smoke",
        data="synthetic",
        synthetic_n_train=96,
        synthetic_n_valid=32,
        synthetic_n_test=32,
        plm="tiny-random",
        adapter_dim=16,
        encoder_dim=16,
        encoder_ffn_dim=32,
        fusion_proj_dim=16,
        fusion_hidden=24,
        misa_hidden=16,
        misa_fusion_ffn_dim=32,
        lr=1e-3,
        batch_size=16,
        max_epochs=2,
        patience=2,
    ),
    "embedded": dict(
        preset="embedded",
        data="synthetic",
        plm="embedded",
        synthetic_n_train=320,
        synthetic_n_valid=150,
        synthetic_n_test=250,
        adapter_dim=192,  # half the hidden size, the thesis' ratio (384 of 768)
        encoder_dim=64,
        encoder_ffn_dim=128,
        fusion_proj_dim=64,
        fusion_hidden=110,
        misa_hidden=64,
        # all-MiniLM-L6-v2 was trained for mean pooling; its pooler was never trained (bias 0,
        # outputs that vary 6x less across utterances than [CLS]), so MAG-BERT reads the mean.
        mag_pooling="mean",
        lr=1e-3,
        batch_size=32,
        eval_batch_size=32,
        max_epochs=4,
        patience=2,
    ),
    "paper": dict(
        preset="paper",
        # precision stays "auto" (bf16 autocast on CUDA): bf16 and fp32 runs of the same seeds
        # are not distinguishable (python -m ambcore bench --numerics; README, GPU figures).
        data="",  # from --set data=... or AMB_DATA
        plm="bert-base-uncased",
        adapter_dim=384,
        # The AMB design that fits the thesis' 8.6 M / 47.2 M (ambcore.models.budget): AV
        # encoders of width 64, one shared [CLS] projection, chained fusion, the pooler counted.
        encoder_dim=64,
        encoder_ffn_dim=128,
        amb_finetune_pooler=True,
        fusion_proj_dim=128,
        fusion_hidden=220,
        misa_hidden=128,
        lr=5e-5,
        batch_size=32,
        max_epochs=100,
        patience=10,
        max_text_len=50,
    ),
}


# Seconds one cell of a book chapter may run (``ambcore.book``: papermill's execution timeout
# per cell), by preset. Not a ``Config`` field: it bounds the job, not a run. The longest cell
# of the embedded book (the ablation's sweep) takes about 7 minutes on a 2-core machine, the
# smoke book's under a minute; a paper cell trains a whole sweep on a GPU. A cell that runs
# longer stops the book (a hung kernel would otherwise hang it forever).
CELL_TIMEOUT_S: dict[str, float] = {"smoke": 900, "embedded": 3600, "paper": 172_800}
CELL_TIMEOUT_ENV = "AMB_CELL_TIMEOUT"  # overrides the preset's value; `book --cell-timeout` too


def cell_timeout(preset: str, given: Any = None) -> float | None:
    """The cell time limit of a book of ``preset`` in seconds: ``given`` (``book
    --cell-timeout``) if not None, else ``$AMB_CELL_TIMEOUT`` if set, else ``CELL_TIMEOUT_S``.
    ``0`` means no limit (None). Anything but a number >= 0 is a ``ConfigError``."""
    where = "--cell-timeout"
    if given is None and os.environ.get(CELL_TIMEOUT_ENV, "").strip():
        given, where = os.environ[CELL_TIMEOUT_ENV], CELL_TIMEOUT_ENV
    if given is None:
        return CELL_TIMEOUT_S.get(preset, max(CELL_TIMEOUT_S.values()))
    try:
        seconds = float(given) if not isinstance(given, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(
            f"{where} {given!r}: expected the seconds a cell may run (a number "
            ">= 0; 0 for no limit)"
        )
    return seconds or None


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Parse ``value`` (often a string from the CLI or papermill) into the field's type."""
    if isinstance(typ, str):  # from __future__ annotations
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, str)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config key {name!r}: expected a boolean, got {value!r}")
    if typ in (int, float) and isinstance(value, bool):  # True is not a number here
        raise ConfigError(f"config key {name!r}: expected {typ.__name__}, got {value!r}")
    try:
        if typ is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if typ is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {name!r}: expected {typ.__name__}, got {value!r}") from None


_FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def _check_keys(keys) -> None:
    unknown = sorted(set(keys) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: "
            + ", ".join(sorted(_FIELD_TYPES))
        )


def get_config(preset: str = "embedded", **overrides: Any) -> Config:
    """The named preset with ``overrides`` applied (values are type-checked)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    _check_keys(overrides)
    values.update(overrides)
    return _config_from_values(values)


# Design fields added after configs were first saved, with the value every config saved
# before them was built with: a saved config without the field rebuilds the design it was
# trained with (old checkpoints and run folders keep loading).
LEGACY_DESIGN = {
    "cls_projection": "per_layer",
    "adapter_placement": "ours",
    "amb_finetune_pooler": False,
}


# Fields added after configs were first saved whose default is what every earlier config did
# (``precision="auto"`` is the earlier autocast rule): a saved config without one is the same
# config, so sweeps adopt its finished runs.
ADDED_DEFAULTS = {
    "precision": "auto",
    "dataset": "auto",
    "fusion_module": "ffn",
    "fusion_heads": 4,
    "fusion_feedback": "none",
    "feedback_beta_shift": 1.0,
}


def saved_values(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config's values (``Config.to_dict()`` output) completed with the fields of
    ``LEGACY_DESIGN`` and ``ADDED_DEFAULTS`` it predates, as it was trained."""
    return {**LEGACY_DESIGN, **ADDED_DEFAULTS, **values}


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config from ``Config.to_dict()`` output (e.g. a run folder's config.json).

    A saved config that lacks a field of ``LEGACY_DESIGN`` predates it and gets the design it
    was built with (``saved_values``)."""
    return _config_from_values(saved_values(values))


def _config_from_values(values: dict[str, Any]) -> Config:
    _check_keys(values)
    typed = {k: _coerce(k, v, _FIELD_TYPES[k]) for k, v in values.items()}
    return _validate(Config(**typed))


def apply_overrides(cfg: Config, assignments: list[str] | dict[str, Any]) -> Config:
    """Apply ``["key=value", ...]`` (CLI ``--set``) or a dict of overrides."""
    if isinstance(assignments, dict):
        pairs = dict(assignments)
    else:
        pairs = {}
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            key, value = item.split("=", 1)
            pairs[key.strip()] = value.strip()
    _check_keys(pairs)
    typed = {k: _coerce(k, v, _FIELD_TYPES[k]) for k, v in pairs.items()}
    return _validate(replace(cfg, **typed))


_CHOICES = {
    "dataset": ("auto", "mosei", "mosi", "sims"),  # ambcore.data.specs.DATASET_CHOICES
    "model": ("amb", "misa", "mag-bert"),
    "text_adaptation": ("adapters", "finetune", "frozen"),
    "variant": ("full", "text-only", "no-text"),
    "fusion_connect": ("chain", "independent"),
    "fusion_module": ("ffn", "cross_attention"),
    "fusion_feedback": ("none", "shift"),
    "cls_projection": ("shared", "per_layer"),
    "adapter_placement": ("ours", "pfeiffer"),
    "mag_unaligned": ("error", "resample"),
    "mag_pooling": ("pooler", "cls", "mean"),
    "loss": ("l1", "mse"),
    "grad_clip_mode": ("norm", "value"),
    "optimizer": ("adam", "adamw"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("auto", "fp32", "bf16"),
}


def _validate(cfg: Config) -> Config:
    for key, choices in _CHOICES.items():
        value = getattr(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key {key!r}={value!r}; valid values: {', '.join(choices)}")
    ft = cfg.finetune_layers
    if ft != "all" and not (ft.startswith("last:") and ft[5:].isdigit()):
        raise ConfigError(f"config key 'finetune_layers'={ft!r}; expected 'all' or 'last:K'")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise ConfigError(f"config key 'warmup_ratio'={cfg.warmup_ratio!r}; expected 0 <= r < 1")
    if cfg.precision == "bf16" and not cfg.bf16:
        raise ConfigError(
            "config key 'precision'='bf16' contradicts bf16=False; set one of them "
            "(precision=fp32 for no autocast)"
        )
    if cfg.lr_halvings < 0:
        raise ConfigError(f"config key 'lr_halvings'={cfg.lr_halvings!r}; expected >= 0")
    validate(cfg)
    return cfg


# ---- value ranges ----------------------------------------------------------------------------
# Every value is checked where a Config is made (get_config, apply_overrides, config_from_dict),
# so the CLI, sweeps, the book and the notebooks refuse a bad value before anything runs.

SEED_MAX = 2**32 - 1  # numpy's seeding accepts 0 .. 2**32 - 1
LR_MAX = 1.0  # Adam/AdamW steps of more than 1 per update are not a learning rate

# key -> (lowest allowed, highest allowed); None: no bound on that side.
_INT_RANGES: dict[str, tuple[int | None, int | None]] = {
    "seed": (0, SEED_MAX),
    "synthetic_seed": (0, SEED_MAX),
    "synthetic_n_train": (1, None),
    "synthetic_n_valid": (1, None),
    "synthetic_n_test": (1, None),
    "max_text_len": (2, None),  # room for [CLS] and [SEP]; smaller caps are ignored by tokenizers
    "adapter_dim": (1, None),
    "encoder_dim": (1, None),
    "encoder_layers": (0, None),
    "encoder_heads": (1, None),
    "encoder_ffn_dim": (1, None),
    "fusion_proj_dim": (1, None),
    "fusion_hidden": (1, None),
    "fusion_heads": (1, None),
    "predictor_hidden": (0, None),
    "misa_hidden": (2, None),
    "misa_cmd_moments": (1, None),
    "misa_fusion_ffn_dim": (1, None),
    "mag_injection_layer": (0, None),
    "batch_size": (1, None),
    "eval_batch_size": (1, None),
    "max_epochs": (1, None),
    "patience": (1, None),
    "num_workers": (0, None),
}
# key -> (low, high, high included?) for float fields; every float field must also be finite.
_FLOAT_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "lr": (0.0, LR_MAX, True),
    "new_params_lr": (0.0, LR_MAX, True),
    "weight_decay": (0.0, None, True),
    "dropout": (0.0, 1.0, False),
    "misa_dropout": (0.0, 1.0, False),
    "mag_dropout": (0.0, 1.0, False),
    "misa_diff_weight": (0.0, None, True),
    "misa_sim_weight": (0.0, None, True),
    "misa_recon_weight": (0.0, None, True),
    "grad_clip": (0.0, None, True),
    "noise_augment_rate": (0.0, 1.0, True),
    "feedback_beta_shift": (0.0, None, True),
}
_POSITIVE = {"lr"}  # strictly above the low bound
_RANGE_NOTES = {
    "patience": " (epochs without a better validation MAE before stopping; use a large value "
    "to train all max_epochs)",
    "max_text_len": " (word pieces including [CLS] and [SEP]; there is no 'no cap' value)",
}


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    note = _RANGE_NOTES.get(key, "")
    return ConfigError(f"config key {key!r}={value!r}; expected {allowed}{note}")


def _check_int(key: str, value: int) -> None:
    low, high = _INT_RANGES[key]
    if (low is not None and value < low) or (high is not None and value > high):
        allowed = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise _bad(key, value, allowed)


def _check_float(key: str, value: float) -> None:
    low, high, high_included = _FLOAT_RANGES.get(key, (None, None, True))
    if not math.isfinite(value):
        raise _bad(key, value, "a finite number")
    too_low = low is not None and (value <= low if key in _POSITIVE else value < low)
    too_high = high is not None and (value > high if high_included else value >= high)
    if too_low or too_high:
        left = "<" if key in _POSITIVE else "<="
        right = "" if high is None else (" <= " if high_included else " < ") + f"{high:g}"
        raise _bad(key, value, f"{low:g} {left} {key}{right}")


def validate(cfg: Config) -> Config:
    """Refuse values outside their ranges with one line naming key, value and what is allowed.

    Integers (seeds, sizes, epochs, patience), finite floats in their ranges (learning rate,
    dropout, clipping, noise rate), the divisibility of ``encoder_dim`` by ``encoder_heads``
    (the AV encoders' attention heads) and, for cross-attention fusion, of ``fusion_proj_dim``
    by ``fusion_heads`` and its need of the AV sequences. Returns ``cfg``.
    """
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in _INT_RANGES:
            _check_int(f.name, value)
        elif isinstance(value, float):
            _check_float(f.name, value)
    if cfg.encoder_dim % cfg.encoder_heads:
        raise ConfigError(
            f"config key 'encoder_heads'={cfg.encoder_heads!r}; expected a divisor of "
            f"encoder_dim={cfg.encoder_dim} (each attention head gets encoder_dim/encoder_heads)"
        )
    if cfg.misa_hidden % 2:
        raise _bad("misa_hidden", cfg.misa_hidden, "an even integer (2 fusion attention heads)")
    if cfg.fusion_module == "cross_attention":
        if cfg.fusion_proj_dim % cfg.fusion_heads:
            raise ConfigError(
                f"config key 'fusion_heads'={cfg.fusion_heads!r}; expected a divisor of "
                f"fusion_proj_dim={cfg.fusion_proj_dim} (each attention head gets "
                "fusion_proj_dim/fusion_heads)"
            )
        if cfg.variant == "text-only":
            raise ConfigError(
                "config key 'fusion_module'='cross_attention' attends over the visual and "
                "acoustic sequences, which variant='text-only' does not have; use "
                "fusion_module=ffn for text-only"
            )
    return cfg


# typing.get_type_hints is not needed: annotations are simple names (see _coerce).
del typing, field
