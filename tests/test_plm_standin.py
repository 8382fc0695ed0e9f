"""The bert-base stand-in: a local Hugging Face folder, random weights, MiniLM's tokenizer files."""

from __future__ import annotations

import torch

from ambcore.cli import main
from ambcore.config import get_config
from ambcore.models import plm


def test_tiny_standin_loads_through_the_local_folder_path(tmp_path, capsys):
    out = tmp_path / "bert"
    assert main(["model", "standin", "--out", str(out), "--tiny"]) == 0
    assert "RANDOM weights" in capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (out / name).is_file(), name
    cfg = get_config("smoke", plm=str(out))
    assert plm.resolve_plm_path(cfg.plm) == str(out.resolve())  # a local folder, not a name
    model = plm.load_plm(cfg)
    assert model.config.hidden_size == 32 and model.config.vocab_size == 30522
    assert model.config.num_hidden_layers >= 3  # the paper preset fine-tunes "last:3"
    # the weights come from the folder (from_pretrained), equal to what was saved
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    key = next(k for k in saved if k.endswith("word_embeddings.weight"))
    assert torch.equal(model.embeddings.word_embeddings.weight, saved[key])
    tok = plm.load_tokenizer(cfg)
    minilm = plm.load_tokenizer(get_config("smoke", plm="embedded"))
    text = "the movie was not good but the actors were great"
    assert tok(text)["input_ids"] == minilm(text)["input_ids"]


def test_full_standin_has_bert_base_geometry_and_parameter_count():
    config = plm.standin_config()
    geometry = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads)
    assert geometry == (768, 12, 12)
    from transformers import BertModel

    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=True)
    # bert-base-uncased as published: 109,482,240 parameters with its pooler
    assert sum(p.numel() for p in model.parameters()) == 109_482_240
