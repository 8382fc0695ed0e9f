"""AMB on every PLM family (``ambcore.models.families``): BERT, RoBERTa, XLM-RoBERTa, ELECTRA and
DeBERTa-v2/v3, as tiny random models saved to local folders with a tokenizer (nothing is
downloaded). Expected counts are derived here from the layer shapes and the configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    RobertaTokenizer,
    XLMRobertaConfig,
)

import ambcore
from ambcore.config import get_config
from ambcore.data.collate import Collator
from ambcore.errors import ModelConfigError
from ambcore.models import build_model, count_parameters
from ambcore.models.adapters import add_adapters
from ambcore.models.families import BASE_CONFIGS, FAMILIES, family_of
from ambcore.models.plm import TOKENIZER_FILES, load_plm, load_tokenizer, resolve_plm_path

DV, DA = 7, 5
TEXTS = ["what a wonderful , moving film", "boring", "i did not like the ending at all"]
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=128,
)
# family -> (tiny config for a vocabulary size, tokenizer kind): WordPiece (MiniLM's
# bert-base-uncased files, as `model standin --tiny` writes) or a byte-level BPE trained here.
TINY_FAMILIES = {
    "bert": (lambda v: BertConfig(vocab_size=v, pad_token_id=0, **TINY), "wordpiece"),
    "roberta": (lambda v: RobertaConfig(vocab_size=v, type_vocab_size=1, **TINY), "bpe"),
    "xlm-roberta": (lambda v: XLMRobertaConfig(vocab_size=v, type_vocab_size=1, **TINY), "bpe"),
    "electra": (
        lambda v: ElectraConfig(vocab_size=v, embedding_size=16, pad_token_id=0, **TINY),
        "wordpiece",
    ),
    "deberta-v2": (  # DeBERTa-v3's layout: relative positions, no absolute ones, no segments
        lambda v: DebertaV2Config(
            vocab_size=v,
            type_vocab_size=0,
            relative_attention=True,
            position_buckets=16,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            pad_token_id=0,
            **TINY,
        ),
        "wordpiece",
    ),
}


def _bpe_tokenizer(folder) -> int:
    """A RoBERTa byte-level BPE tokenizer (<s> </s> <pad>, no token_type_ids) in ``folder``."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TEXTS * 4,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    vocab_file, merges_file = bpe.save_model(str(folder))
    merges = [tuple(line.split()) for line in open(merges_file).read().splitlines()[1:] if line]
    tokenizer = RobertaTokenizer(vocab=json.load(open(vocab_file)), merges=merges)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """family -> a local Hugging Face folder: tiny random weights (seed 0) and a tokenizer."""
    made = {}
    for name, (make_config, kind) in TINY_FAMILIES.items():
        folder = tmp_path_factory.mktemp(name)
        if kind == "bpe":
            vocab = _bpe_tokenizer(folder)
            config = make_config(vocab)  # RoBERTa's pad id 1 is the BPE tokenizer's <pad>
        else:
            for file in TOKENIZER_FILES:
                shutil.copyfile(Path(resolve_plm_path("embedded")) / file, folder / file)
            config = make_config(30522)
        torch.manual_seed(0)
        AutoModel.from_config(config).save_pretrained(folder)
        made[name] = folder
    return made


def _cfg(folders, name, **overrides):
    return get_config("smoke", plm=str(folders[name]), **overrides)


def _batch(cfg, words=False):
    """A batch as the collate builds it with the folder's own tokenizer."""
    gen = torch.Generator().manual_seed(0)
    items = [
        {
            "id": str(i),
            "text": text,
            "words": text.split() if words else None,
            "visual": torch.randn(len(text.split()), DV, generator=gen).numpy(),
            "acoustic": torch.randn(len(text.split()), DA, generator=gen).numpy(),
            "label": 0.0,
        }
        for i, text in enumerate(TEXTS)
    ]
    return Collator(load_tokenizer(cfg), cfg.max_text_len)(items)


def linear(n_in, n_out):
    return n_in * n_out + n_out


def plm_from_shapes(config) -> int:
    """The encoder without a pooler, from its config: embeddings, the layers, what sits beside."""
    H, I, L, V = (
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.vocab_size,
    )
    layer = 4 * linear(H, H) + linear(H, I) + linear(I, H) + 2 * 2 * H  # attention, FFN, 2 LNs
    if config.model_type == "deberta-v2":  # words + LN; relative positions + their LN
        beside = V * H + 2 * H + 2 * config.position_buckets * H + 2 * H
    else:
        E = getattr(config, "embedding_size", H)  # ELECTRA's embeddings may be narrower
        beside = (V + config.max_position_embeddings + config.type_vocab_size) * E + 2 * E
        beside += linear(E, H) if E != H else 0  # ELECTRA's embeddings_project
    return beside + L * layer


def heads_from_shapes(cfg, H, L, visual=DV, acoustic=DA) -> int:
    """AMB's encoders + fusion + predictor (the thesis' design: shared projection, chain)."""
    E, F, P, Fh = cfg.encoder_dim, cfg.encoder_ffn_dim, cfg.fusion_proj_dim, cfg.fusion_hidden
    block = linear(E, 3 * E) + linear(E, E) + linear(E, F) + linear(F, E) + 2 * 2 * E
    encoders = sum(linear(d, E) + E + cfg.encoder_layers * block for d in (visual, acoustic))
    ffns = linear(P + 2 * E, Fh) + (L - 1) * linear(2 * P + 2 * E, Fh) + L * linear(Fh, P)
    return encoders + linear(H, P) + ffns + linear(P + H, 1)


# ---- the table ---------------------------------------------------------------------------------


def test_the_table_names_every_family_once():
    assert set(FAMILIES) == set(TINY_FAMILIES) == {f.name for f in FAMILIES.values()}
    assert {f.base for f in FAMILIES.values()} == set(BASE_CONFIGS)
    for name, family in FAMILIES.items():
        assert family_of(BASE_CONFIGS[family.base]()) is family, name
    with pytest.raises(ModelConfigError, match="model_type 'distilbert'; AMB supports"):
        family_of(DistilBertConfig(), "distilbert-base-uncased")


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_each_family_loads_from_its_folder_without_a_pooler(folders, name):
    cfg = _cfg(folders, name)
    plm = load_plm(cfg)
    assert family_of(plm.config).name == name and getattr(plm, "pooler", None) is None
    assert sum(p.numel() for p in plm.parameters()) == plm_from_shapes(plm.config)
    if FAMILIES[name].pooler:
        assert load_plm(cfg, add_pooling_layer=True).pooler is not None
    else:
        with pytest.raises(ModelConfigError, match=f"{name} family\\) has no pooler"):
            load_plm(cfg, add_pooling_layer=True)


@pytest.mark.parametrize("placement", ["ours", "pfeiffer"])
@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_fresh_adapters_reproduce_every_layer_of_each_family(folders, name, placement):
    cfg = _cfg(folders, name)
    plain, adapted = load_plm(cfg).eval(), load_plm(cfg).eval()
    adapters = add_adapters(adapted, 4, placement=placement)
    norm = "output.LayerNorm" if placement == "pfeiffer" else "output"
    for layer, adapter in zip(adapted.encoder.layer, adapters):
        assert layer.get_submodule(norm).adapter is adapter  # after the feed-forward LayerNorm
    batch = _batch(cfg)
    inputs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with torch.no_grad():
        expected = plain(**inputs, output_hidden_states=True).hidden_states
        got = adapted(**inputs, output_hidden_states=True).hidden_states
        for a, b in zip(expected, got):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        torch.nn.init.normal_(adapters[-1].up.weight)
        moved = adapted(**inputs).last_hidden_state
    assert not torch.allclose(moved, expected[-1])


# ---- AMB on each family ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_amb_on_each_family_has_its_shapes_and_counts(folders, name):
    cfg = _cfg(folders, name)
    torch.manual_seed(0)
    model = build_model(cfg, DV, DA).eval()
    config = model.plm.config
    H, L = config.hidden_size, config.num_hidden_layers
    batch = _batch(cfg)
    with torch.no_grad():
        out = model(batch)
    assert out.prediction.shape == (3,) and torch.isfinite(out.prediction).all()
    assert out.fused_states.shape == (3, L, cfg.fusion_proj_dim)
    assert out.text_summary.shape == (3, H) and out.av_token.shape == (3, 2 * cfg.encoder_dim)
    # only the adapters, the encoders, the fusion and the predictor train
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in model.named_parameters() if not n.startswith("plm.") or ".adapter." in n
    }
    counts = count_parameters(model)
    assert counts["adapters"]["trainable"] == L * (
        linear(H, cfg.adapter_dim) + linear(cfg.adapter_dim, H)
    )
    assert counts["plm"] == {
        "total": plm_from_shapes(config),
        "trainable": 0,
        "frozen": plm_from_shapes(config),
    }
    heads = sum(counts[c]["trainable"] for c in ("encoders", "fusion", "predictor"))
    assert heads == heads_from_shapes(cfg, H, L)


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_finetuning_trains_the_layers_and_the_familys_embeddings(folders, name):
    model = build_model(_cfg(folders, name, text_adaptation="finetune"), DV, DA)
    assert all(p.requires_grad for p in model.plm.parameters())  # "all": every PLM weight
    last = build_model(
        _cfg(folders, name, text_adaptation="finetune", finetune_layers="last:1"), DV, DA
    )
    beside = FAMILIES[name].embeddings
    trainable = {n for n, p in last.plm.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in last.plm.named_parameters()
        if n.startswith("encoder.layer.1.") or n.startswith(tuple(f"{m}." for m in beside))
    }
    assert trainable == expected and len(trainable) < len(list(last.plm.parameters()))
    assert {n.split(".")[0] for n in trainable} >= {"encoder", "embeddings"}
    if name == "deberta-v2":
        assert any(n.startswith("encoder.rel_embeddings.") for n in trainable)
    if name == "electra":
        assert any(n.startswith("embeddings_project.") for n in trainable)


@pytest.mark.parametrize("name", ["roberta", "deberta-v2", "electra"])
def test_amb_checkpoints_of_other_families_round_trip(folders, tmp_path, name):
    model = build_model(_cfg(folders, name, fusion_module="cross_attention"), DV, DA)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval().save_pretrained(tmp_path)
    loaded = ambcore.from_pretrained(tmp_path)
    batch = _batch(model.cfg)
    with torch.no_grad():
        assert torch.equal(loaded(batch).prediction, model(batch).prediction)


def test_mag_bert_reads_the_cls_state_of_a_family_without_a_pooler(folders):
    with pytest.raises(ModelConfigError, match="has no pooler.*mag_pooling=cls"):
        build_model(_cfg(folders, "deberta-v2", model="mag-bert"), DV, DA)
    cfg = _cfg(folders, "deberta-v2", model="mag-bert", mag_pooling="cls")
    model = build_model(cfg, DV, DA).eval()
    with torch.no_grad():
        assert model(_batch(cfg, words=True)).prediction.shape == (3,)


# ---- base sizes -------------------------------------------------------------------------------------


def test_family_table_of_base_sizes_is_the_shapes():
    from ambcore.models.budget import family_budgets

    table = family_budgets()
    assert list(table.index) == list(FAMILIES)
    cfg = get_config("paper")
    amb = 12 * (linear(768, 384) + linear(384, 768)) + heads_from_shapes(cfg, 768, 12, 35, 74)
    assert (table["trainable"] == amb).all()  # width and depth alone decide AMB's count
    assert 8.43e6 <= amb <= 8.77e6  # bert-base's 8.66 M, the thesis' 8.6 M
    for family in FAMILIES.values():
        row = table.loc[family.name]
        assert row["plm"] == family.base and (row["hidden"], row["layers"]) == (768, 12)
        assert row["plm frozen"] == plm_from_shapes(BASE_CONFIGS[family.base]()), family.name
    assert table.loc["bert", "plm frozen"] < table.loc["xlm-roberta", "plm frozen"]


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_misa_and_the_model_chapters_batch_run_on_each_family(folders, name):
    from ambcore.models.summary import example_batch, forward_shapes

    cfg = _cfg(folders, name, model="misa", text_adaptation="adapters")
    with torch.no_grad():
        assert build_model(cfg, DV, DA).eval()(_batch(cfg)).prediction.shape == (3,)
    cfg = _cfg(folders, name)
    batch = example_batch(cfg, visual_dim=DV, acoustic_dim=DA)  # RoBERTa: no token_type_ids
    assert torch.equal(batch.token_type_ids, torch.zeros_like(batch.input_ids))  # one segment
    with torch.no_grad():
        shapes = forward_shapes(batch, build_model(cfg, DV, DA).eval()(batch))
    assert shapes["prediction (B,)"] == (3,)
