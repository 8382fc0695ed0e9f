"""Parameter budgets by component (thesis 6.3.2, tables 6.1 and 6.2: trainable parameters).

Used by ``python -m ambcore model summary`` and the model chapter. Counts always come from a
built model (``count_parameters``), never from formulas typed elsewhere.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from ambcore.models import build_model, count_parameters

__all__ = [
    "MOSEI_VISUAL_DIM",
    "MOSEI_ACOUSTIC_DIM",
    "model_summary",
    "format_summary",
    "parameter_table",
    "amb_budgets",
    "finetune_budgets",
]

MOSEI_VISUAL_DIM = 35  # FACET (the synthetic dataset has the same layout)
MOSEI_ACOUSTIC_DIM = 74  # COVAREP


def model_summary(cfg, visual_dim: int = MOSEI_VISUAL_DIM, acoustic_dim: int = MOSEI_ACOUSTIC_DIM,
                  model: nn.Module | None = None) -> dict:
    """What was built and its parameter counts: ``{"model", "plm", ..., "components": {...}}``."""
    model = model if model is not None else build_model(cfg, visual_dim, acoustic_dim)
    plm_config = model.plm.config
    return {
        "model": cfg.model,
        "text_adaptation": cfg.text_adaptation,
        "finetune_layers": cfg.finetune_layers if cfg.text_adaptation == "finetune" else None,
        "variant": cfg.variant,
        "plm": cfg.plm,
        "plm_weights": "random" if (cfg.plm_random_init or cfg.plm == "tiny-random") else "pretrained",
        "plm_layers": plm_config.num_hidden_layers,
        "plm_hidden": plm_config.hidden_size,
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
        + f" variant={summary['variant']}\n"
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


def amb_budgets(cfg, variants: dict[str, dict], visual_dim: int = MOSEI_VISUAL_DIM,
                acoustic_dim: int = MOSEI_ACOUSTIC_DIM, plm: nn.Module | None = None) -> pd.DataFrame:
    """Parameter counts of several AMB variants (config overrides) that share one PLM.

    The PLM (``plm``, or ``cfg.plm`` loaded once) is copied per variant, which is much faster
    than building bert-base from scratch for every row; ``plm`` itself is left unchanged. One
    row per variant: trainable parameters by component and in total, and the model's total.
    """
    import copy

    from ambcore.config import apply_overrides
    from ambcore.models.amb import AMB
    from ambcore.models.plm import load_plm

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
    from ambcore.config import apply_overrides
    from ambcore.models.adapters import set_trainable

    saved = {name: p.requires_grad for name, p in model.plm.named_parameters()}
    n_layers = model.plm.config.num_hidden_layers
    counts = {}
    for k in range(1, n_layers + 1):
        k_cfg = apply_overrides(cfg, {"text_adaptation": "finetune", "finetune_layers": f"last:{k}"})
        set_trainable(model.plm, k_cfg, train_embeddings=with_embeddings)
        counts[f"last:{k}"] = count_parameters(model)["all"]["trainable"]
    for name, p in model.plm.named_parameters():
        p.requires_grad_(saved[name])
    series = pd.Series(counts, name="trainable (embeddings trained)" if with_embeddings else "trainable")
    series.index.name = "finetune_layers"
    return series
