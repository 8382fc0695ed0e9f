"""``python -m ambcore model summary`` (tiny random BERT)."""

from __future__ import annotations

import json

from ambcore.cli import main
from ambcore.config import get_config
from ambcore.models import build_model, count_parameters


def test_model_summary_json_matches_the_built_model(capsys):
    assert (
        main(["model", "summary", "--preset", "smoke", "--json", "--set", "variant=text-only"]) == 0
    )
    summary = json.loads(capsys.readouterr().out)
    expected = count_parameters(build_model(get_config("smoke", variant="text-only"), 35, 74))
    assert summary["components"] == expected
    assert summary["plm"] == "tiny-random" and summary["variant"] == "text-only"
    assert "encoders" not in summary["components"]


def test_model_summary_table_and_errors(capsys):
    assert main(["model", "summary", "--preset", "smoke", "--set", "text_adaptation=finetune"]) == 0
    out = capsys.readouterr().out
    assert "text_adaptation=finetune finetune_layers=all" in out and "trainable:" in out
    assert main(["model", "summary", "--preset", "smoke", "--set", "adaptor_dim=3"]) == 1
    assert "adaptor_dim" in capsys.readouterr().err


def test_budget_tables_match_built_models():
    from ambcore.models.amb import AMB
    from ambcore.models.plm import load_plm
    from ambcore.models.summary import amb_budgets, finetune_budgets

    cfg = get_config("smoke")
    variants = {
        "AMB": {},
        "text-only": {"variant": "text-only"},
        "FT": {"text_adaptation": "finetune"},
    }
    table = amb_budgets(cfg, variants, 35, 74)
    for label, overrides in variants.items():
        counts = count_parameters(build_model(get_config("smoke", **overrides), 35, 74))
        assert table.loc[label, "trainable"] == counts["all"]["trainable"]
        assert table.loc[label, "total"] == counts["all"]["total"]

    frozen_cfg = get_config("smoke", text_adaptation="frozen")
    model = AMB(frozen_cfg, 35, 74, plm=load_plm(frozen_cfg))
    before = count_parameters(model)["all"]["trainable"]
    with_emb = finetune_budgets(model, frozen_cfg, with_embeddings=True)
    without = finetune_budgets(model, frozen_cfg, with_embeddings=False)
    assert count_parameters(model)["all"]["trainable"] == before  # restored
    embeddings = sum(p.numel() for p in model.plm.embeddings.parameters())
    assert list(with_emb.index) == ["last:1", "last:2"]
    assert (with_emb - without == embeddings).all()
    full = count_parameters(build_model(get_config("smoke", text_adaptation="finetune"), 35, 74))
    assert with_emb["last:2"] == full["all"]["trainable"]
