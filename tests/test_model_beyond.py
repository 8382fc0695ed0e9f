"""AMB beyond the thesis (7.2, Future Work): cross-attention fusion and feedback into the PLM
(``ambcore.models.fusion``), on a tiny random BERT; counts derived here from the layer shapes."""

from __future__ import annotations

import json

import pytest
import torch
from test_model_amb import ACOUSTIC_DIM, VISUAL_DIM, build, make_batch

import ambcore
from ambcore.config import ConfigError, get_config
from ambcore.errors import ModelConfigError
from ambcore.models import count_parameters
from ambcore.models.encoders import SequenceEncoder
from ambcore.models.fusion import CrossAttentionFusion, FeedbackShift
from ambcore.models.shift import bounded_shift
from ambcore.models.text_cache import TextCache, reuses_text

CROSS = {"fusion_module": "cross_attention"}
SHIFT = {"fusion_feedback": "shift"}


def linear(n_in, n_out):
    return n_in * n_out + n_out


def heads_from_shapes(cfg, hidden, n_layers, visual=VISUAL_DIM, acoustic=ACOUSTIC_DIM):
    """Encoders + fusion (feedback included) + predictor of AMB, from the layer shapes."""
    E, F, P, Fh = cfg.encoder_dim, cfg.encoder_ffn_dim, cfg.fusion_proj_dim, cfg.fusion_hidden
    block = linear(E, 3 * E) + linear(E, E) + linear(E, F) + linear(F, E) + 2 * 2 * E
    encoders = sum(linear(d, E) + E + cfg.encoder_layers * block for d in (visual, acoustic))
    chain = cfg.fusion_connect == "chain"
    if cfg.fusion_module == "cross_attention":
        context = P  # the attended vector
        extra = 2 * linear(E, P) + n_layers * (4 * P * P + 4 * P)  # memory maps, attention
    else:
        context, extra = (0 if cfg.variant == "text-only" else 2 * E), 0  # the AV token
    if cfg.variant == "text-only":
        encoders = 0
    ffns = sum(
        linear(P + context + (P if chain and i > 0 else 0), Fh) + linear(Fh, P)
        for i in range(n_layers)
    )
    projections = linear(hidden, P) * (n_layers if cfg.cls_projection == "per_layer" else 1)
    feedback = (
        linear(P + hidden, hidden) + linear(P, hidden) if cfg.fusion_feedback == "shift" else 0
    )
    return {
        **({"encoders": encoders} if encoders else {}),
        "fusion": projections + ffns + extra + feedback,
        "predictor": linear(P + hidden, 1),
    }


def _randomise(model, std=0.05):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


# ---- config ----------------------------------------------------------------------------------


def test_new_choices_are_config_values_checked_in_config():
    cfg = get_config("smoke")
    assert (cfg.fusion_module, cfg.fusion_feedback) == ("ffn", "none")  # the thesis
    with pytest.raises(ConfigError, match="'fusion_module'='mlp'; valid values: ffn"):
        get_config("smoke", fusion_module="mlp")
    with pytest.raises(ConfigError, match="'fusion_feedback'='add'; valid values: none, shift"):
        get_config("smoke", fusion_feedback="add")
    with pytest.raises(ConfigError, match="'fusion_heads'=3; expected a divisor of"):
        get_config("smoke", fusion_heads=3, **CROSS)  # fusion_proj_dim 16
    get_config("smoke", fusion_heads=3)  # heads are read by cross-attention only
    with pytest.raises(ConfigError, match="'fusion_heads'=0; expected an integer >= 1"):
        get_config("smoke", fusion_heads=0)
    with pytest.raises(ConfigError, match="text-only"):
        get_config("smoke", variant="text-only", **CROSS)
    with pytest.raises(ConfigError, match="feedback_beta_shift"):
        get_config("smoke", feedback_beta_shift=-1.0)


# ---- the encoders' sequences -------------------------------------------------------------------


def test_encoder_sequence_is_the_summary_path_and_masks_padding():
    torch.manual_seed(0)
    encoder = SequenceEncoder(7, 16, n_layers=2, ffn_dim=32, dropout=0.0).eval()
    features, lengths = torch.randn(3, 6, 7), torch.tensor([6, 2, 0])
    with torch.no_grad():
        hidden, padding = encoder.sequence(features, lengths)
        summary = encoder(features, lengths)
    assert hidden.shape == (3, 7, 16) and padding.shape == (3, 7)
    assert torch.equal(summary, hidden[:, 0])  # forward is position 0 of the sequence, bitwise
    assert padding.tolist()[1] == [False, False, False, True, True, True, True]
    assert not padding[:, 0].any()  # [CLS] is never padding: an empty sequence attends to it


# ---- cross-attention fusion ---------------------------------------------------------------------


@pytest.mark.parametrize("projection", ["shared", "per_layer"])
@pytest.mark.parametrize("connect", ["chain", "independent"])
def test_cross_attention_shapes_and_counts(projection, connect):
    model = build(cls_projection=projection, fusion_connect=connect, **CROSS).eval()
    assert isinstance(model.fusion, CrossAttentionFusion)
    n_layers, hidden = model.plm.config.num_hidden_layers, model.plm.config.hidden_size
    out = model(make_batch())
    cfg = model.cfg
    assert out.prediction.shape == (3,) and torch.isfinite(out.prediction).all()
    assert out.fused_states.shape == (3, n_layers, cfg.fusion_proj_dim)
    assert out.av_token.shape == (3, 2 * cfg.encoder_dim)  # the [CLS] positions, side by side
    counts = count_parameters(model)
    for component, expected in heads_from_shapes(cfg, hidden, n_layers).items():
        assert counts[component]["trainable"] == expected, component
    assert counts["plm"]["trainable"] == 0 and reuses_text(model)


def test_cross_attention_reads_every_step_and_ignores_padding():
    model = _randomise(build(**CROSS), std=0.5)
    batch = make_batch()
    with torch.no_grad():
        plain = model(batch).prediction
        padded = model(make_batch(pad_visual=3, pad_acoustic=2)).prediction
        # change one real visual step of utterance 0 only
        batch.visual[0, 1] += 5.0
        moved = model(batch).prediction
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-4)  # float noise only
    garbage = make_batch()  # utterance 2 has no visual step: its row is all padding
    garbage.visual[2] = torch.randn(
        garbage.visual.shape[1:], generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        torch.testing.assert_close(model(garbage).prediction, plain, atol=1e-6, rtol=0)
    assert not torch.allclose(moved[0], plain[0]) and torch.allclose(moved[1:], plain[1:])


def test_cross_attention_keys_are_the_sequences_not_the_summaries():
    """With the AV token fixed, the fused states still move when the other positions move."""
    model = _randomise(build(**CROSS))
    fusion = model.fusion
    batch = make_batch()
    with torch.no_grad():
        cls_states = model.text_features(batch)
        av, _ = model._av_input(batch)
        before, _ = fusion(cls_states, av)
        shifted = av._replace(visual=torch.cat([av.visual[:, :1], av.visual[:, 1:] + 1.0], 1))
        after, _ = fusion(cls_states, shifted)
    assert torch.equal(av.token(), shifted.token()) and not torch.allclose(before, after)


# ---- feedback shift -----------------------------------------------------------------------------


def test_a_fresh_feedback_shift_computes_amb_and_text_cache_refuses_it():
    plain, fed = build().eval(), build(**SHIFT).eval()
    assert plain.text_is_av_independent and not fed.text_is_av_independent
    missing = fed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("fusion.feedback.") for k in missing)
    batch = make_batch()
    with torch.no_grad():
        a, b = plain(batch), fed(batch)
    torch.testing.assert_close(b.prediction, a.prediction, atol=1e-6, rtol=0)
    torch.testing.assert_close(b.fused_states, a.fused_states, atol=1e-6, rtol=0)
    assert not reuses_text(fed)
    with pytest.raises(ValueError, match="predict it in full"):
        TextCache(fed)
    with pytest.raises(ModelConfigError, match="fusion_feedback='shift'.*predict in full"):
        fed.text_features(batch)
    with pytest.raises(ModelConfigError, match="no text-only features"):
        fed(batch, text=a.fused_states)


def test_the_shift_moves_the_next_layers_only_and_carries_the_av_input():
    model = _randomise(build(**SHIFT))
    batch = make_batch()
    with torch.no_grad():
        out = model(batch)
        torch.nn.init.zeros_(model.fusion.feedback.project.weight)
        torch.nn.init.zeros_(model.fusion.feedback.project.bias)
        unshifted = model(batch)
    # f_1 reads layer 1, which no shift reaches; f_2 reads layer 2, whose input was shifted
    torch.testing.assert_close(out.fused_states[:, 0], unshifted.fused_states[:, 0])
    assert not torch.allclose(out.fused_states[:, 1], unshifted.fused_states[:, 1])
    assert not torch.allclose(out.text_summary, unshifted.text_summary)
    # the text states now depend on the visual input
    model = _randomise(build(**SHIFT))
    noisy = make_batch()
    noisy.visual.mul_(-1.0)
    with torch.no_grad():
        assert not torch.allclose(model(batch).text_summary, model(noisy).text_summary)


def test_feedback_is_mag_berts_bounded_gated_shift():
    torch.manual_seed(0)
    shift = FeedbackShift(hidden_size=8, proj_dim=4, beta_shift=0.5, dropout=0.0).eval()
    torch.nn.init.normal_(shift.project.weight, std=10.0)
    z, fused = torch.randn(2, 5, 8), torch.randn(2, 4)
    source = fused[:, None].expand(-1, 5, -1)
    h = torch.relu(shift.gate(torch.cat([source, z], -1))) * shift.project(source)
    alpha = torch.clamp(z.norm(dim=-1) / (h.norm(dim=-1) + 1e-6) * 0.5, max=1.0)
    with torch.no_grad():
        out = shift(z, fused)
        torch.testing.assert_close(out, z + alpha[..., None] * h)
        torch.testing.assert_close(out - z, bounded_shift(z, h, 0.5))
        assert ((out - z).norm(dim=-1) <= 0.5 * z.norm(dim=-1) + 1e-5).all()  # the bound


@pytest.mark.parametrize(
    "overrides", [SHIFT, {**SHIFT, "variant": "text-only"}, {**SHIFT, **CROSS}]
)
def test_feedback_counts_and_only_adapters_encoders_fusion_train(overrides):
    model = build(**overrides)
    n_layers, hidden = model.plm.config.num_hidden_layers, model.plm.config.hidden_size
    counts = count_parameters(model)
    heads = heads_from_shapes(model.cfg, hidden, n_layers)
    assert {c for c in counts if c not in ("adapters", "plm", "all")} == set(heads)
    for component, expected in heads.items():
        assert counts[component]["trainable"] == expected, component
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n for n, _ in model.named_parameters() if not n.startswith("plm.") or ".adapter." in n
    }
    model.train()
    model(make_batch()).prediction.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())  # every trainable tensor is used
    assert grads["fusion.feedback.project.weight"].abs().sum() > 0  # the shift trains
    assert all(p.grad is None for n, p in model.plm.named_parameters() if ".adapter." not in n)


# ---- checkpoints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides", [CROSS, SHIFT, {**CROSS, **SHIFT, "fusion_connect": "independent"}]
)
def test_checkpoints_of_the_new_variants_round_trip(tmp_path, overrides):
    model = _randomise(build(**overrides))
    batch = make_batch()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["cfg"]
    assert all(saved[k] == v for k, v in overrides.items())
    loaded = ambcore.from_pretrained(tmp_path)
    assert loaded.cfg == model.cfg and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(batch).prediction, model(batch).prediction)
    card = (tmp_path / "README.md").read_text()
    assert all(f"{k}={v!r}" in card for k, v in overrides.items() if k != "fusion_connect")


def test_a_checkpoint_saved_before_the_new_fields_is_the_thesis_design(tmp_path):
    model = _randomise(build())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("fusion_module", "fusion_heads", "fusion_feedback", "feedback_beta_shift"):
        config["cfg"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = ambcore.from_pretrained(tmp_path)
    assert (loaded.cfg.fusion_module, loaded.cfg.fusion_feedback) == ("ffn", "none")
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(loaded(batch).prediction, model(batch).prediction)


# ---- bert-base budgets ----------------------------------------------------------------------------

BERT_BASE_H, BERT_BASE_L = 768, 12
BASE_ADAPTERS = BERT_BASE_L * (linear(768, 384) + linear(384, 768))


def test_beyond_budget_rows_are_the_shapes_at_bert_base():
    from ambcore.models.budget import beyond_budgets

    table = beyond_budgets()
    assert list(table.index) == ["AMB", "AMB, cross-attention fusion", "AMB, feedback shift"]
    for label, overrides in zip(table.index, ({}, CROSS, SHIFT)):
        cfg = get_config("paper", **overrides)
        heads = heads_from_shapes(cfg, BERT_BASE_H, BERT_BASE_L, 35, 74)
        assert table.loc[label, "trainable"] == BASE_ADAPTERS + sum(heads.values()), label
        assert table.loc[label, "fusion trainable"] == heads["fusion"]
    assert 8.43e6 <= table.loc["AMB", "trainable"] <= 8.77e6  # the thesis' 8.6 M, unchanged
    assert table["vs AMB (M)"].iloc[0] == 0 and (table["vs AMB (M)"].iloc[1:] > 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [CROSS, SHIFT])
def test_model_summary_cli_reports_the_variants_at_bert_base(capsys, overrides):
    from ambcore.cli import main

    ((key, value),) = overrides.items()
    argv = ["model", "summary", "--preset", "paper", "--random-init", "--json"]
    assert main([*argv, "--set", f"{key}={value}"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary[key] == value and summary["plm_family"] == "bert"
    heads = heads_from_shapes(get_config("paper", **overrides), BERT_BASE_H, BERT_BASE_L, 35, 74)
    components = summary["components"]
    assert components["adapters"]["trainable"] == BASE_ADAPTERS
    for component, expected in heads.items():
        assert components[component]["trainable"] == expected, component
    assert components["all"]["trainable"] == BASE_ADAPTERS + sum(heads.values())
