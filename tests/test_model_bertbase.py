"""Parameter counts of AMB for bert-base (random weights from BertConfig(); no download).

Expected counts are derived here from the layer shapes, independently of the model code.
"""

from __future__ import annotations

import pytest
import torch

from ambcore.config import apply_overrides, get_config
from ambcore.models import build_model, count_parameters
from ambcore.models.adapters import add_adapters, set_trainable

pytestmark = pytest.mark.slow

V, P, H, I, L = (
    30522,
    512,
    768,
    3072,
    12,
)  # bert-base-uncased: vocab, positions, hidden, FFN, layers
VISUAL, ACOUSTIC = 35, 74  # MOSEI FACET / COVAREP


def linear(n_in, n_out):
    return n_in * n_out + n_out


EMBEDDINGS = V * H + P * H + 2 * H + 2 * H  # word, position, segment, LayerNorm
BERT_LAYER = 4 * linear(H, H) + linear(H, I) + linear(I, H) + 2 * 2 * H


@pytest.fixture(scope="module")
def frozen_amb():
    """One bert-base AMB without adapters; trainability is then switched in place."""
    cfg = get_config("paper", plm_random_init=True, text_adaptation="frozen")
    return build_model(cfg, VISUAL, ACOUSTIC)


def test_plm_is_bert_base_without_pooler(frozen_amb):
    counts = count_parameters(frozen_amb)
    assert counts["plm"]["total"] == EMBEDDINGS + L * BERT_LAYER
    assert counts["plm"]["trainable"] == 0


def heads(cfg, projection=None, connect=None):
    """Encoders + fusion + predictor of AMB from the layer shapes, for a design."""
    projection, connect = projection or cfg.cls_projection, connect or cfg.fusion_connect
    E, F = cfg.encoder_dim, cfg.encoder_ffn_dim
    transformer_layer = linear(E, 3 * E) + linear(E, E) + linear(E, F) + linear(F, E) + 2 * 2 * E
    encoders = sum(
        linear(d, E) + E + cfg.encoder_layers * transformer_layer for d in (VISUAL, ACOUSTIC)
    )
    Pj, Fh = cfg.fusion_proj_dim, cfg.fusion_hidden
    ffn_first = linear(Pj + 2 * E, Fh) + linear(Fh, Pj)
    ffn_later = linear(Pj + 2 * E + (Pj if connect == "chain" else 0), Fh) + linear(
        Fh, Pj
    )  # chain: + f_{l-1}
    projections = linear(H, Pj) * (L if projection == "per_layer" else 1)
    fusion = projections + ffn_first + (L - 1) * ffn_later
    return {"encoders": encoders, "fusion": fusion, "predictor": linear(Pj + H, 1)}


ADAPTERS = L * (linear(H, 384) + linear(384, H))
POOLER = linear(H, H)


def test_encoder_fusion_and_predictor_counts(frozen_amb):
    counts = count_parameters(frozen_amb)
    for component, expected in heads(frozen_amb.cfg).items():
        assert counts[component]["trainable"] == expected, component


@pytest.mark.parametrize("projection", ["shared", "per_layer"])
@pytest.mark.parametrize("connect", ["chain", "independent"])
@pytest.mark.parametrize("placement", ["ours", "pfeiffer"])
def test_every_design_counts_as_its_shapes_say(projection, connect, placement):
    cfg = get_config(
        "paper",
        plm_random_init=True,
        cls_projection=projection,
        fusion_connect=connect,
        adapter_placement=placement,
    )
    with torch.device("meta"):
        model = build_model(cfg, VISUAL, ACOUSTIC)
    counts = count_parameters(model)
    assert counts["adapters"]["trainable"] == ADAPTERS
    assert counts["all"]["trainable"] == ADAPTERS + sum(heads(cfg, projection, connect).values())


def test_the_paper_design_is_the_thesis_budget_and_the_earlier_one_is_not():
    """AMB 8.6 M +- 2 %, AMB-FT (embeddings + last 3 layers + pooler) 47.2 M +- 1 % (tables 6.1, 6.2)."""
    cfg = get_config("paper", plm_random_init=True)
    amb = ADAPTERS + sum(heads(cfg).values())
    amb_ft = EMBEDDINGS + 3 * BERT_LAYER + POOLER + sum(heads(cfg).values())
    assert 8.43e6 <= amb <= 8.77e6 and 46.7e6 <= amb_ft <= 47.7e6
    earlier = get_config("paper", cls_projection="per_layer", encoder_dim=128, encoder_ffn_dim=256)
    assert ADAPTERS + sum(heads(earlier).values()) > 10.4e6  # the 10.48 M of the earlier design
    with torch.device("meta"):
        built_ft = build_model(
            apply_overrides(cfg, {"text_adaptation": "finetune", "finetune_layers": "last:3"}),
            VISUAL,
            ACOUSTIC,
        )
    assert count_parameters(built_ft)["all"]["trainable"] == amb_ft


def test_model_summary_cli_reports_the_thesis_budget(capsys):
    import json

    from ambcore.cli import main

    cfg = get_config("paper")
    assert main(["model", "summary", "--preset", "paper", "--random-init", "--json"]) == 0
    amb = json.loads(capsys.readouterr().out)["components"]["all"]["trainable"]
    assert amb == ADAPTERS + sum(heads(cfg).values()) and 8.43e6 <= amb <= 8.77e6


def test_budget_module_agrees_with_the_shapes():
    from ambcore.models.budget import bert_parts, choose_design, design_candidates, thesis_budget

    parts = bert_parts()
    assert (parts.embeddings, parts.layer, parts.pooler) == (EMBEDDINGS, BERT_LAYER, POOLER)
    budget = thesis_budget(parts)
    assert budget.heads_from_amb_ft == 47.2e6 - (EMBEDDINGS + 3 * BERT_LAYER + POOLER)
    assert budget.ft_minus_amb == EMBEDDINGS + 3 * BERT_LAYER + POOLER - ADAPTERS
    candidates = design_candidates(parts)
    row = candidates[
        (candidates.cls_projection == "per_layer")
        & (candidates.fusion_connect == "independent")
        & (candidates.encoder_dim == 96)
    ].iloc[0]
    cfg = get_config(
        "paper",
        cls_projection="per_layer",
        fusion_connect="independent",
        encoder_dim=96,
        encoder_ffn_dim=192,
    )
    assert round(row["AMB_M"] * 1e6) == ADAPTERS + sum(heads(cfg).values())
    chosen = choose_design(candidates)
    paper = get_config("paper")
    assert len(chosen) == 1
    assert (
        chosen.iloc[0].cls_projection,
        chosen.iloc[0].fusion_connect,
        chosen.iloc[0].encoder_dim,
    ) == (paper.cls_projection, paper.fusion_connect, paper.encoder_dim)


def test_amb_ft_last3_with_embeddings_and_amb_adapters(frozen_amb):
    heads = count_parameters(frozen_amb)["all"]["trainable"]
    cfg = get_config(
        "paper", plm_random_init=True, text_adaptation="finetune", finetune_layers="last:3"
    )
    set_trainable(frozen_amb.plm, cfg, train_embeddings=True)
    counts = count_parameters(frozen_amb)
    assert counts["plm"]["trainable"] == EMBEDDINGS + 3 * BERT_LAYER
    assert counts["all"]["trainable"] == heads + EMBEDDINGS + 3 * BERT_LAYER

    add_adapters(frozen_amb.plm, cfg.adapter_dim)
    set_trainable(frozen_amb.plm, get_config("paper", plm_random_init=True))
    counts = count_parameters(frozen_amb)
    assert counts["adapters"]["trainable"] == L * (linear(H, 384) + linear(384, H))
    assert counts["plm"]["trainable"] == 0
    assert counts["all"]["trainable"] == heads + L * (linear(H, 384) + linear(384, H))
