"""Trainable-parameter budgets of the baselines for bert-base (thesis tables 6.1 and 6.2), and
of AMB's variants beyond the thesis and on other PLM families (``beyond_budgets``,
``family_budgets``).

The thesis lists MISA (fine-tuned) at 47.1 M trainable parameters, MISA-Adapters at 8.5 M and
MAG-BERT at 110.8 M. ``baseline_budget()`` builds each baseline for bert-base-uncased with
random weights on PyTorch's ``meta`` device (shapes only: no memory, no download, about a
second) and counts what trains here, beside the thesis' number and what the original code
would count.

Where the numbers come from (bert-base: embeddings 23.84 M, each encoder layer 7.09 M, pooler
0.59 M; MOSEI visual 35 / acoustic 74 features; MISA hidden 128):

- MISA: the original MOSEI setup freezes BERT layers 0-8 and trains the embeddings, layers
  9-11 and the pooler (``requires_grad`` stays True on it although MISA never reads the pooled
  output), plus MISA's own modules. Here: ``finetune_layers="last:3"`` with
  ``misa_finetune_embeddings=True``; the unused pooler, the unused shared/private
  discriminator (``sp_weight`` = 0) and the GloVe-mode text LayerNorm are not built, so our
  count is 0.59 M lower; adding them back gives the thesis' 47.1 M.
- MISA-Adapters: 12 adapters of bottleneck 384 (2 x 768 x 384 + biases each = 7.09 M) plus
  MISA's modules (1.43 M) = 8.5 M.
- MAG-BERT: the whole BERT with its pooler (109.48 M) + the gate (1.35 M) + the head.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from transformers import AutoModel

from ambcore.config import get_config
from ambcore.models import count_parameters
from ambcore.models.adapters import BottleneckAdapter
from ambcore.models.amb import AMB, build_heads
from ambcore.models.families import FAMILIES
from ambcore.models.magbert import MAGBert
from ambcore.models.misa import MISA
from ambcore.models.plm import plm_config

__all__ = [
    "THESIS_TRAINABLE_M",
    "BASELINE_SETUPS",
    "BudgetRow",
    "baseline_budget",
    "THESIS_AMB_M",
    "TOLERANCE",
    "BertParts",
    "bert_parts",
    "ThesisBudget",
    "thesis_budget",
    "within",
    "head_parameters",
    "DESIGN_SPACE",
    "design_candidates",
    "thesis_claims",
    "choose_design",
    "amb_rows",
    "BEYOND_VARIANTS",
    "beyond_budgets",
    "family_budgets",
]

# Trainable parameters in millions as printed in the thesis (tables 6.1, 6.2).
THESIS_TRAINABLE_M = {"MISA": 47.1, "MISA-Adapters": 8.5, "MAG-BERT": 110.8}

# Config overrides (on the paper preset) that reproduce each baseline's trainable set.
BASELINE_SETUPS: dict[str, dict[str, object]] = {
    "MISA": dict(
        model="misa",
        text_adaptation="finetune",
        finetune_layers="last:3",
        misa_finetune_embeddings=True,
    ),
    "MISA-Adapters": dict(model="misa", text_adaptation="adapters"),
    "MAG-BERT": dict(model="mag-bert", text_adaptation="finetune", finetune_layers="all"),
}


@dataclass(frozen=True)
class BudgetRow:
    model: str
    trainable: int  # trainable parameters of the model built here
    trainable_plm: int  # of which inside the PLM (fine-tuned layers or adapters)
    total: int  # all parameters, frozen PLM included
    not_built: int  # trainable in the original code but not built here (unused there)
    original_code: int  # trainable + not_built: what the original code counts
    thesis_m: float  # the thesis' number, millions

    @property
    def difference_m(self) -> float:
        """This project's count minus the thesis' number, in millions."""
        return self.trainable / 1e6 - self.thesis_m

    def to_dict(self) -> dict:
        return {**asdict(self), "difference_m": self.difference_m}


def _not_built_in_original(name: str, cfg, plm_hidden: int) -> int:
    """Parameters the original code trains (requires_grad) that no computation here uses."""
    if name == "MAG-BERT":
        return 0
    hidden = cfg.misa_hidden
    sp_discriminator = hidden * 4 + 4  # Linear(hidden, 4); its loss weight sp_weight is 0
    glove_text_norm = 2 * (2 * 300)  # LayerNorm(2 x embedding_size 300), used in GloVe mode only
    pooler = plm_hidden * plm_hidden + plm_hidden if name == "MISA" else 0
    return sp_discriminator + glove_text_norm + pooler


def baseline_budget(
    visual_dim: int = 35, acoustic_dim: int = 74, plm: str = "bert-base-uncased"
) -> list[BudgetRow]:
    """Build each baseline on the meta device for ``plm`` (random init) and count parameters.

    Defaults are CMU-MOSEI's feature sizes (FACET 35, COVAREP 74) and bert-base-uncased,
    the setup of the thesis' tables.
    """
    classes = {"misa": MISA, "mag-bert": MAGBert}
    rows = []
    for name, overrides in BASELINE_SETUPS.items():
        cfg = get_config("paper", plm=plm, plm_random_init=True, **overrides)
        with torch.device("meta"):
            model = classes[cfg.model](cfg, visual_dim, acoustic_dim)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trainable_plm = sum(p.numel() for p in model.plm.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        extra = _not_built_in_original(name, cfg, model.plm.config.hidden_size)
        rows.append(
            BudgetRow(
                model=name,
                trainable=trainable,
                trainable_plm=trainable_plm,
                total=total,
                not_built=extra,
                original_code=trainable + extra,
                thesis_m=THESIS_TRAINABLE_M[name],
            )
        )
    return rows


# ---- AMB: the budget the thesis' numbers imply, and the designs that fit it ------------------

# The thesis' AMB rows (tables 6.1, 6.2), millions, and the tolerance of a match.
THESIS_AMB_M = {"AMB": 8.6, "AMB-FT": 47.2, "AMB text-only": 8.6, "AMB no-text": 8.6}
TOLERANCE = {"AMB": 0.02, "AMB-FT": 0.01}  # printed to one decimal: 8.6 +- 2 %, 47.2 +- 1 %
FT_LAYERS = 3  # AMB-FT and MISA fine-tune bert-base's last three layers (MISA's MOSEI code)


@dataclass(frozen=True)
class BertParts:
    """Parameter counts of bert-base's parts, counted from modules built on the meta device."""

    embeddings: int
    layer: int  # one encoder layer
    pooler: int
    adapter: int  # one bottleneck adapter of the paper preset's size
    n_layers: int
    hidden: int


def bert_parts(plm: str = "bert-base-uncased") -> BertParts:
    """Count ``plm``'s embeddings, one layer, its pooler and one adapter from their shapes."""
    cfg = get_config("paper", plm=plm)
    config = plm_config(plm)
    with torch.device("meta"):
        bert = AutoModel.from_config(config, add_pooling_layer=True)
        adapter = BottleneckAdapter(config.hidden_size, cfg.adapter_dim)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    return BertParts(
        count(bert.embeddings),
        count(bert.encoder.layer[0]),
        count(bert.pooler),
        count(adapter),
        config.num_hidden_layers,
        config.hidden_size,
    )


@dataclass(frozen=True)
class ThesisBudget:
    """What the thesis' AMB and AMB-FT counts imply for everything that is not the PLM.

    AMB-FT = embeddings + last 3 layers + pooler + heads, so heads = AMB-FT - those; AMB =
    adapters + heads. Both rows must describe the same heads (encoders + fusion + predictor).
    """

    parts: BertParts
    adapters: int  # one adapter per layer
    finetuned_plm: int  # embeddings + last 3 layers + pooler (what AMB-FT trains in BERT)
    heads_from_amb_ft: float  # 47.2 M - finetuned_plm
    heads_from_amb: float  # 8.6 M - adapters
    amb_implied: float  # adapters + heads_from_amb_ft: the AMB count that AMB-FT implies
    ft_minus_amb: int  # finetuned_plm - adapters: AMB-FT - AMB, and MISA - MISA-Adapters
    heads_range: tuple[float, float]  # heads that put AMB within 8.6 M +- 2 %

    def rows(self) -> pd.DataFrame:
        p = self.parts
        items = [
            ("bert-base embeddings", p.embeddings),
            (f"bert-base layer (x {FT_LAYERS})", FT_LAYERS * p.layer),
            ("bert-base pooler", p.pooler),
            ("AMB-FT's PLM part (sum)", self.finetuned_plm),
            ("AMB-FT in the thesis", THESIS_AMB_M["AMB-FT"] * 1e6),
            ("=> encoders + fusion + predictor", self.heads_from_amb_ft),
            (f"adapters ({p.n_layers} x {p.adapter:,})", self.adapters),
            ("=> AMB implied by AMB-FT", self.amb_implied),
            ("AMB in the thesis", THESIS_AMB_M["AMB"] * 1e6),
            ("AMB-FT - AMB (= MISA - MISA-Adapters)", self.ft_minus_amb),
            (
                "MISA - MISA-Adapters in the thesis",
                (THESIS_TRAINABLE_M["MISA"] - THESIS_TRAINABLE_M["MISA-Adapters"]) * 1e6,
            ),
        ]
        return pd.DataFrame({"quantity": [k for k, _ in items], "M": [v / 1e6 for _, v in items]})


def thesis_budget(parts: BertParts | None = None) -> ThesisBudget:
    """The arithmetic of the thesis' AMB budget, from bert-base's shapes (``bert_parts``)."""
    parts = parts or bert_parts()
    adapters = parts.n_layers * parts.adapter
    finetuned = parts.embeddings + FT_LAYERS * parts.layer + parts.pooler
    heads_ft = THESIS_AMB_M["AMB-FT"] * 1e6 - finetuned
    tol = TOLERANCE["AMB"] * THESIS_AMB_M["AMB"] * 1e6
    return ThesisBudget(
        parts=parts,
        adapters=adapters,
        finetuned_plm=finetuned,
        heads_from_amb_ft=heads_ft,
        heads_from_amb=THESIS_AMB_M["AMB"] * 1e6 - adapters,
        amb_implied=adapters + heads_ft,
        ft_minus_amb=finetuned - adapters,
        heads_range=(
            THESIS_AMB_M["AMB"] * 1e6 - tol - adapters,
            THESIS_AMB_M["AMB"] * 1e6 + tol - adapters,
        ),
    )


def within(count: float, row: str) -> bool:
    """Whether ``count`` (parameters) is the thesis' number of ``row`` within its tolerance."""
    thesis = THESIS_AMB_M[row] * 1e6
    return abs(count - thesis) <= TOLERANCE["AMB-FT" if row == "AMB-FT" else "AMB"] * thesis


def head_parameters(cfg, parts: BertParts, visual_dim: int = 35, acoustic_dim: int = 74) -> int:
    """Trainable parameters of AMB's encoders, fusion and predictor for ``cfg`` on bert-base."""
    with torch.device("meta"):
        heads = build_heads(cfg, parts.hidden, parts.n_layers, visual_dim, acoustic_dim)
    return sum(p.numel() for m in heads.values() for p in m.parameters())


# The candidates the thesis leaves open: projection, wiring, AV encoder width (FFN = 2 x width).
DESIGN_SPACE = {
    "cls_projection": ("shared", "per_layer"),
    "fusion_connect": ("chain", "independent"),
    "encoder_dim": (32, 64, 96, 128),
}


def design_candidates(parts: BertParts | None = None) -> pd.DataFrame:
    """Every candidate design with its AMB and AMB-FT (with and without the pooler) counts and
    whether each fits the thesis (``within``). One row per design."""
    parts = parts or bert_parts()
    adapters = parts.n_layers * parts.adapter
    ft_plm = parts.embeddings + FT_LAYERS * parts.layer
    rows = []
    for proj, connect, width in itertools.product(*DESIGN_SPACE.values()):
        cfg = get_config(
            "paper",
            cls_projection=proj,
            fusion_connect=connect,
            encoder_dim=width,
            encoder_ffn_dim=2 * width,
        )
        heads = head_parameters(cfg, parts)
        amb, ft, ft_pooler = adapters + heads, ft_plm + heads, ft_plm + parts.pooler + heads
        rows.append(
            {
                "cls_projection": proj,
                "fusion_connect": connect,
                "encoder_dim": width,
                "heads_M": heads / 1e6,
                "AMB_M": amb / 1e6,
                "AMB-FT_M (pooler)": ft_pooler / 1e6,
                "AMB-FT_M (no pooler)": ft / 1e6,
                "fits AMB": within(amb, "AMB"),
                "fits AMB-FT (pooler)": within(ft_pooler, "AMB-FT"),
                "fits AMB-FT (no pooler)": within(ft, "AMB-FT"),
            }
        )
    frame = pd.DataFrame(rows)
    frame["fits both"] = frame["fits AMB"] & (
        frame["fits AMB-FT (pooler)"] | frame["fits AMB-FT (no pooler)"]
    )
    return frame


def thesis_claims(amb: int, amb_ft: int, misa: int) -> pd.DataFrame:
    """The thesis' claims about parameter counts, recomputed from counts (parameters), each
    with a computed sentence on whether it holds.

    - "training less than one fifth of the parameters of the previous state-of-the-art" (ch. 7):
      AMB / MISA < 1/5;
    - "MISA ... leads to five times more trainable parameters than our model" (7.1): MISA / AMB >= 5;
    - table 6.2's AMB-FT / AMB (47.2 / 8.6): ours within the two rows' tolerances (3 %).
    """
    thesis_ft_ratio = THESIS_AMB_M["AMB-FT"] / THESIS_AMB_M["AMB"]
    share, ratio, ft_ratio = amb / misa, misa / amb, amb_ft / amb
    claims = [
        (
            "AMB trains less than one fifth of MISA's parameters",
            "AMB / MISA",
            "< 0.20",
            share,
            share < 0.2,
        ),
        (
            "MISA trains five times more parameters than AMB",
            "MISA / AMB",
            ">= 5",
            ratio,
            ratio >= 5.0,
        ),
        (
            "AMB-FT / AMB as in table 6.2",
            "AMB-FT / AMB",
            f"{thesis_ft_ratio:.2f} +- 3 %",
            ft_ratio,
            abs(ft_ratio / thesis_ft_ratio - 1) <= TOLERANCE["AMB"] + TOLERANCE["AMB-FT"],
        ),
    ]
    frame = pd.DataFrame(claims, columns=["claim", "quantity", "thesis", "ours", "holds"])
    frame["sentence"] = [
        f"{c}: {q} = {v:.3f} here, so the claim {'holds' if ok else 'does not hold'} in our counts."
        for c, q, _, v, ok in claims
    ]
    return frame


def choose_design(candidates: pd.DataFrame) -> pd.DataFrame:
    """The candidates that fit both counts *and* the thesis' text: chained fusion (figure 6.1
    stacks the fusion layers and 6.2.6 feeds only "the fused representation of the last ...
    fusion layers" to the predictor, which reaches the earlier ones only through a chain)."""
    return candidates[candidates["fits both"] & (candidates["fusion_connect"] == "chain")]


def amb_rows(counts: dict[str, int]) -> pd.DataFrame:
    """Our AMB rows (label -> trainable parameters) beside the thesis' (``THESIS_AMB_M``), with
    whether each fits and, for text-only, the parameters it does not build and the thesis counted."""
    rows = []
    for label, count in counts.items():
        note = ""
        if label == "AMB text-only" and "AMB" in counts:
            unbuilt = counts["AMB"] - count
            note = (
                f"the thesis lists {THESIS_AMB_M[label]} M: it counted the AV encoders and the AV inputs "
                f"of the fusion layers ({unbuilt / 1e6:.2f} M), which a text-only model never uses "
                "and we do not build"
            )
        rows.append(
            {
                "model": label,
                "ours_M": count / 1e6,
                "thesis_M": THESIS_AMB_M[label],
                "fits": within(count, label),
                "note": note,
            }
        )
    return pd.DataFrame(rows)


# ---- beyond the thesis: the fusion variants and other PLM families ---------------------------

# The designs of the thesis' Future Work (7.2) beside AMB, as config overrides on the paper preset.
BEYOND_VARIANTS: dict[str, dict[str, object]] = {
    "AMB": {},
    "AMB, cross-attention fusion": {"fusion_module": "cross_attention"},
    "AMB, feedback shift": {"fusion_feedback": "shift"},
}


def _amb_counts(cfg, visual_dim: int, acoustic_dim: int) -> dict[str, dict[str, int]]:
    """``count_parameters`` of AMB for ``cfg``, built on the meta device (shapes only)."""
    with torch.device("meta"):
        model = AMB(cfg, visual_dim, acoustic_dim)
    return count_parameters(model)


def _budget_row(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    row = {f"{name} trainable": c["trainable"] for name, c in counts.items() if name != "all"}
    row.update(trainable=counts["all"]["trainable"], total=counts["all"]["total"])
    return row


def beyond_budgets(
    variants: dict[str, dict[str, object]] | None = None,
    visual_dim: int = 35,
    acoustic_dim: int = 74,
    plm: str = "bert-base-uncased",
) -> pd.DataFrame:
    """Trainable parameters of AMB and of the variants beyond the thesis (``BEYOND_VARIANTS``:
    cross-attention fusion, feedback shift) for ``plm`` (random init, meta device: no download,
    no memory), by component; one row per variant, with its difference to AMB in millions."""
    variants = BEYOND_VARIANTS if variants is None else variants
    rows = {}
    for label, overrides in variants.items():
        cfg = get_config("paper", plm=plm, plm_random_init=True, **overrides)
        rows[label] = _budget_row(_amb_counts(cfg, visual_dim, acoustic_dim))
    table = pd.DataFrame(rows).T.fillna(0).astype(int)
    table.index.name = "variant"
    table["trainable_M"] = table["trainable"] / 1e6
    first = table["trainable"].iloc[0]
    table[f"vs {table.index[0]} (M)"] = (table["trainable"] - first) / 1e6
    return table


def family_budgets(visual_dim: int = 35, acoustic_dim: int = 74, **overrides) -> pd.DataFrame:
    """AMB (paper preset, ``overrides`` applied) on the base size of every PLM family of
    ``ambcore.models.families`` (bert-base-uncased, roberta-base, xlm-roberta-base,
    electra-base, deberta-v3-base): the architecture from ``BASE_CONFIGS`` with random weights on
    the meta device (no download). One row per family: its width, depth and vocabulary, the
    frozen PLM, the trainable parameters by component and in total. Every base size is 768
    wide and 12 deep, so the trainable counts agree and only the frozen PLM differs."""
    rows = []
    for family in FAMILIES.values():
        cfg = get_config("paper", plm=family.base, plm_random_init=True, **overrides)
        config = plm_config(cfg.plm)
        counts = _amb_counts(cfg, visual_dim, acoustic_dim)
        rows.append(
            {
                "family": family.name,
                "plm": family.base,
                "hidden": config.hidden_size,
                "layers": config.num_hidden_layers,
                "vocab": config.vocab_size,
                "plm frozen": counts["plm"]["frozen"],
                **_budget_row(counts),
            }
        )
    table = pd.DataFrame(rows).set_index("family").fillna(0)
    table["trainable_M"] = table["trainable"] / 1e6
    table["plm frozen_M"] = table["plm frozen"] / 1e6
    return table
