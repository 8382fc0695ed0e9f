"""``python -m ambcore model summary`` (tiny random BERT)."""

from __future__ import annotations

import json

from ambcore.cli import main
from ambcore.config import get_config
from ambcore.models import build_model, count_parameters


def test_model_summary_json_matches_the_built_model(capsys):
    assert main(["model", "summary", "--preset", "smoke", "--json", "--set", "variant=text-only"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = count_parameters(build_model(get_config("smoke", variant="text-only"), 35, 74))
    assert summary["components"] == expected
    assert summary["plm"] == "tiny-random" and summary["variant"] == "text-only"
    assert "encoders" not in summary["components"]


def test_model_summary_table_and_errors(capsys):
    assert main(["model", "summary", "--preset", "smoke", "--set", "text_adaptation=finetune"]) == 0
    out = capsys.readouterr().out
    assert "text_adaptation=finetune finetune_layers=all" in out and "trainable:" in out
    assert main(["model", "summary", "--preset", "smoke", "--set", "adaptor_dim=3"]) == 2
    assert "adaptor_dim" in capsys.readouterr().err
