"""Parameter budgets by component (thesis 6.3.2, tables 6.1 and 6.2: trainable parameters),
and the shapes of one forward pass through a built model (thesis 6.2).

Used by ``python -m ambcore model summary`` and the model chapter. Counts always come from a
built model (``count_parameters``), never from formulas typed elsewhere. ``example_batch`` is
the model chapter's hand-made batch (not dataset samples); ``forward_shapes`` names the shape
of every intermediate tensor of its forward pass.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import nn

from ambcore.config import apply_overrides
from ambcore.data.types import Batch
from ambcore.models import build_model, count_parameters
from ambcore.models.adapters import set_trainable
from ambcore.models.amb import AMB
from ambcore.models.plm import load_plm, load_tokenizer

__all__ = [
    "MOSEI_VISUAL_DIM",
    "MOSEI_ACOUSTIC_DIM",
    "model_summary",
    "format_summary",
    "parameter_table",
    "amb_budgets",
    "finetune_budgets",
    "EXAMPLE_TEXTS",
    "EXAMPLE_LENGTHS",
    "example_batch",
    "forward_shapes",
]

MOSEI_VISUAL_DIM = 35  # FACET (the synthetic dataset has the same layout)
MOSEI_ACOUSTIC_DIM = 74  # COVAREP


def model_summary(
    cfg,
    visual_dim: int = MOSEI_VISUAL_DIM,
    acoustic_dim: int = MOSEI_ACOUSTIC_DIM,
    model: nn.Module | None = None,
) -> dict:
    """What was built and its parameter counts: ``{"model", "plm", ..., "components": {...}}``."""
    model = model if model is not None else build_model(cfg, visual_dim, acoustic_dim)
    plm_config = model.plm.config
    return {
        "model": cfg.model,
        "text_adaptation": cfg.text_adaptation,
        "finetune_layers": cfg.finetune_layers if cfg.text_adaptation == "finetune" else None,
        "variant": cfg.variant,
        "plm": cfg.plm,
        "plm_weights": "random"
        if (cfg.plm_random_init or cfg.plm == "tiny-random")
        else "pretrained",
        "plm_family": plm_config.model_type,
        "plm_layers": plm_config.num_hidden_layers,
        "plm_hidden": plm_config.hidden_size,
        # AMB's designs beyond the thesis (ambcore.models.fusion); None for the baselines
        "fusion_module": cfg.fusion_module if cfg.model == "amb" else None,
        "fusion_feedback": cfg.fusion_feedback if cfg.model == "amb" else None,
        "visual_dim": visual_dim,
        "acoustic_dim": acoustic_dim,
        "components": count_parameters(model),
    }


def parameter_table(summary: dict, unit: float = 1.0) -> pd.DataFrame:
    """One row per component, columns total / trainable / frozen (divided by ``unit``)."""
    table = pd.DataFrame(summary["components"]).T[["total", "trainable", "frozen"]]
    table.index.name = "component"
    return table / unit if unit != 1.0 else table


def format_summary(summary: dict) -> str:
    head = (
        f"model={summary['model']} text_adaptation={summary['text_adaptation']}"
        + (f" finetune_layers={summary['finetune_layers']}" if summary["finetune_layers"] else "")
        + f" variant={summary['variant']}"
        + "".join(
            f" {key}={summary[key]}"
            for key, thesis in (("fusion_module", "ffn"), ("fusion_feedback", "none"))
            if summary.get(key) not in (None, thesis)
        )
        + "\n"
        f"PLM {summary['plm']} ({summary['plm_weights']} weights, {summary['plm_layers']} layers, "
        f"hidden {summary['plm_hidden']}); visual dim {summary['visual_dim']}, "
        f"acoustic dim {summary['acoustic_dim']}"
    )
    rows = [f"{'component':<12} {'total':>13} {'trainable':>13} {'frozen':>13}"]
    for name, row in summary["components"].items():
        if name == "all":
            rows.append("-" * len(rows[0]))
        rows.append(f"{name:<12} {row['total']:>13,} {row['trainable']:>13,} {row['frozen']:>13,}")
    trainable = summary["components"]["all"]["trainable"]
    return head + "\n" + "\n".join(rows) + f"\ntrainable: {trainable / 1e6:.2f} M parameters"


def amb_budgets(
    cfg,
    variants: dict[str, dict],
    visual_dim: int = MOSEI_VISUAL_DIM,
    acoustic_dim: int = MOSEI_ACOUSTIC_DIM,
    plm: nn.Module | None = None,
) -> pd.DataFrame:
    """Parameter counts of several AMB variants (config overrides) that share one PLM.

    The PLM (``plm``, or ``cfg.plm`` loaded once) is copied per variant, which is much faster
    than building bert-base from scratch for every row; ``plm`` itself is left unchanged. One
    row per variant: trainable parameters by component and in total, and the model's total.
    """
    plm = load_plm(cfg) if plm is None else plm
    rows = {}
    for label, overrides in variants.items():
        variant_cfg = apply_overrides(cfg, overrides)
        model = AMB(variant_cfg, visual_dim, acoustic_dim, plm=copy.deepcopy(plm))
        counts = count_parameters(model)
        row = {f"{name} trainable": counts[name]["trainable"] for name in counts if name != "all"}
        row["trainable"] = counts["all"]["trainable"]
        row["total"] = counts["all"]["total"]
        rows[label] = row
        del model
    table = pd.DataFrame(rows).T.fillna(0).astype(int)
    table.index.name = "variant"
    return table


def finetune_budgets(model: nn.Module, cfg, with_embeddings: bool) -> pd.Series:
    """Trainable parameters of ``model`` (an AMB without adapters) for finetune_layers=last:K, K=1..L.

    Trainability is switched in place on the model's PLM and restored afterwards.
    """
    saved = {name: p.requires_grad for name, p in model.plm.named_parameters()}
    n_layers = model.plm.config.num_hidden_layers
    counts = {}
    for k in range(1, n_layers + 1):
        k_cfg = apply_overrides(
            cfg, {"text_adaptation": "finetune", "finetune_layers": f"last:{k}"}
        )
        set_trainable(model.plm, k_cfg, train_embeddings=with_embeddings)
        counts[f"last:{k}"] = count_parameters(model)["all"]["trainable"]
    for name, p in model.plm.named_parameters():
        p.requires_grad_(saved[name])
    series = pd.Series(
        counts, name="trainable (embeddings trained)" if with_embeddings else "trainable"
    )
    series.index.name = "finetune_layers"
    return series


# The model chapter's hand-made batch: three sentences, and the true number of visual and
# acoustic steps of each (the longest sets the padded length).
EXAMPLE_TEXTS = ("what a wonderful , moving film", "boring", "i did not like the ending at all")
EXAMPLE_LENGTHS = (6, 1, 9)


def example_batch(
    cfg,
    texts: tuple[str, ...] = EXAMPLE_TEXTS,
    lengths: tuple[int, ...] = EXAMPLE_LENGTHS,
    visual_dim: int = MOSEI_VISUAL_DIM,
    acoustic_dim: int = MOSEI_ACOUSTIC_DIM,
):
    """A hand-made ``Batch`` for one forward pass (thesis 6.2), not dataset samples.

    ``texts`` tokenised by the tokenizer of ``cfg.plm`` (padded, cut at ``cfg.max_text_len``);
    visual and acoustic sequences of random features (a generator seeded with ``cfg.seed``,
    visual drawn first), ``lengths[i]`` real steps for utterance ``i`` in both modalities and
    zeros after them; labels 0 and ids ``example-1``, ``example-2``, ...
    """
    if len(texts) != len(lengths) or not texts:
        raise ValueError(
            f"example_batch: {len(texts)} text(s) but {len(lengths)} length(s); "
            "expected one length per text, at least one text"
        )
    tokenizer = load_tokenizer(cfg)
    tokens = tokenizer(
        list(texts), padding=True, truncation=True, max_length=cfg.max_text_len, return_tensors="pt"
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    n, steps = len(texts), max(lengths)
    real = torch.arange(steps)[None, :, None] < torch.tensor(lengths)[:, None, None]  # (B, L, 1)
    visual = torch.randn(n, steps, visual_dim, generator=generator) * real  # (B, Lv, Dv)
    acoustic = torch.randn(n, steps, acoustic_dim, generator=generator) * real  # (B, La, Da)
    return Batch(
        input_ids=tokens["input_ids"],
        attention_mask=tokens["attention_mask"],
        # RoBERTa-style tokenizers return none; the collate's zeros then
        token_type_ids=tokens.get("token_type_ids", torch.zeros_like(tokens["input_ids"])),
        visual=visual,
        visual_lengths=torch.tensor(lengths),
        acoustic=acoustic,
        acoustic_lengths=torch.tensor(lengths),
        labels=torch.zeros(n),
        ids=[f"example-{i + 1}" for i in range(n)],
    )


def forward_shapes(batch, out) -> dict[str, tuple[int, ...] | None]:
    """The shape of every tensor of one AMB forward pass, by name with its axes (``B`` batch,
    ``T`` word pieces, ``Lv``/``La`` visual/acoustic steps, ``L`` PLM layers, ``H`` PLM width,
    ``E`` encoder width, ``P`` fused width); None for a tensor the model does not produce (the
    AV token of the text-only variant). ``out``: the model's ``ModelOutput`` for ``batch``."""
    tensors = {
        "input_ids (B, T)": batch.input_ids,
        "visual (B, Lv, Dv)": batch.visual,
        "acoustic (B, La, Da)": batch.acoustic,
        "av_token (B, 2E)": out.av_token,
        "fused_states (B, L, P)": out.fused_states,
        "text_summary = last [CLS] (B, H)": out.text_summary,
        "prediction (B,)": out.prediction,
    }
    return {name: None if t is None else tuple(t.shape) for name, t in tensors.items()}
