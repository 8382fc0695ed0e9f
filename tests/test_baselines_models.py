"""MISA and MAG-BERT on the tiny random BERT: shapes, trainability, gradients, masks, the gate."""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from ambcore.config import ConfigError, get_config
from ambcore.data.types import Batch
from ambcore.errors import ModelConfigError
from ambcore.models.magbert import (
    MAGBert,
    MultimodalAdaptationGate,
    resampled_token_features,
    word_aligned_features,
)
from ambcore.models.misa import MISA
from ambcore.models.plm import load_plm, load_tokenizer

DV, DA = 7, 5
TEXTS = ["a good movie", "terrible and boring film really", "fine"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(get_config("smoke"))


def make_batch(tokenizer, texts=TEXTS, extra_token_pad=0, extra_step_pad=0, seed=0) -> Batch:
    """A word-aligned batch: one feature step per word, word_index from the tokenizer."""
    g = torch.Generator().manual_seed(seed)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    word_index = torch.tensor(
        [[-1 if w is None else w for w in enc.word_ids(i)] for i in range(len(texts))]
    )
    if extra_token_pad:
        pad = torch.zeros(len(texts), extra_token_pad, dtype=torch.long)
        ids, mask, types = (torch.cat([t, pad], 1) for t in (ids, mask, types))
        word_index = torch.cat([word_index, pad - 1], 1)
    n_words = torch.tensor([len(t.split()) for t in texts])
    steps = int(n_words.max()) + extra_step_pad
    # Drawn at a fixed size, then cut: padding does not change the real steps' values.
    visual = torch.randn(len(texts), 16, DV, generator=g)[:, :steps]
    acoustic = torch.randn(len(texts), 16, DA, generator=g)[:, :steps]
    real = torch.arange(steps)[None, :] < n_words[:, None]
    visual, acoustic = visual * real[..., None], acoustic * real[..., None]
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=types,
        visual=visual,
        visual_lengths=n_words,
        acoustic=acoustic,
        acoustic_lengths=n_words,
        labels=torch.tensor([1.0, -2.0, 0.5]),
        ids=["a", "b", "c"],
        word_index=word_index,
    )


def smoke(**overrides):
    return get_config("smoke", **overrides)


def grads_after_backward(model, batch):
    model.train()
    model.zero_grad()
    out = model(batch)
    loss = (out.prediction - batch.labels).abs().mean()
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


# ---- MISA --------------------------------------------------------------------------------------


def test_misa_forward_shapes_and_weighted_aux_loss(tokenizer):
    cfg = smoke(model="misa", misa_diff_weight=0.3, misa_sim_weight=0.7, misa_recon_weight=2.0)
    model = MISA(cfg, DV, DA).eval()
    batch = make_batch(tokenizer)
    out = model(batch)
    assert out.prediction.shape == (3,)
    assert out.fused_states.shape == (3, 6, cfg.misa_hidden)
    assert set(out.aux_losses) == {"misa_sim_cmd", "misa_diff", "misa_recon"}
    expected = (
        0.7 * out.aux_losses["misa_sim_cmd"]
        + 0.3 * out.aux_losses["misa_diff"]
        + 2.0 * out.aux_losses["misa_recon"]
    )
    torch.testing.assert_close(out.aux_loss, expected)
    assert all(v.item() > 0 for v in out.aux_losses.values())


def test_misa_adapters_trains_adapters_only_inside_the_plm(tokenizer):
    model = MISA(smoke(model="misa", text_adaptation="adapters"), DV, DA)
    grads = grads_after_backward(model, make_batch(tokenizer))
    for name, param in model.named_parameters():
        if name.startswith("plm.") and ".adapter." not in name:
            assert not param.requires_grad and grads[name] is None, name
        else:
            assert param.requires_grad and grads[name] is not None, name
    assert any(".adapter." in n for n in grads)
    # The up-projection starts at zero, so it is the adapter tensor with a non-zero gradient.
    assert grads["plm.encoder.layer.0.output.adapter.up.weight"].abs().sum() > 0
    for name in (
        "visual_encoder.rnn1.weight_ih_l0",
        "fusion.layers.0.linear1.weight",
        "reconstruct.a.weight",
        "head.0.weight",
    ):
        assert grads[name].abs().sum() > 0, name


def test_misa_finetune_trains_plm_and_last_k_keeps_early_layers_frozen(tokenizer):
    model = MISA(smoke(model="misa", text_adaptation="finetune"), DV, DA)
    grads = grads_after_backward(model, make_batch(tokenizer))
    assert all(p.requires_grad for p in model.parameters())
    assert grads["plm.encoder.layer.0.attention.self.query.weight"].abs().sum() > 0
    assert grads["plm.embeddings.word_embeddings.weight"].abs().sum() > 0
    assert not any(n.startswith("plm.pooler") for n in grads)  # the unused pooler is not built

    # MISA's MOSEI setup: last layers + embeddings (misa_finetune_embeddings=True).
    model = MISA(smoke(model="misa", text_adaptation="finetune", finetune_layers="last:1"), DV, DA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "plm.encoder.layer.1.output.dense.weight" in trainable
    assert "plm.embeddings.word_embeddings.weight" in trainable
    assert "plm.encoder.layer.0.output.dense.weight" not in trainable
    model = MISA(
        smoke(
            model="misa",
            text_adaptation="finetune",
            finetune_layers="last:1",
            misa_finetune_embeddings=False,
        ),
        DV,
        DA,
    )
    assert not model.plm.embeddings.word_embeddings.weight.requires_grad


def test_misa_one_step_changes_trainable_and_keeps_frozen_bit_identical(tokenizer):
    model = MISA(smoke(model="misa", text_adaptation="adapters"), DV, DA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads_after_backward(model, make_batch(tokenizer))
    torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    for name, param in model.named_parameters():
        same = torch.equal(before[name], param.detach())
        if not param.requires_grad:
            assert same, name
    assert not torch.equal(before["head.3.weight"], model.head[3].weight.detach())


def test_misa_ignores_padding_of_tokens_and_feature_steps(tokenizer):
    model = MISA(smoke(model="misa", text_adaptation="finetune"), DV, DA).eval()
    with torch.no_grad():
        plain = model(make_batch(tokenizer)).prediction
        padded = model(make_batch(tokenizer, extra_token_pad=4, extra_step_pad=3)).prediction
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-5)


def test_misa_rejects_wrong_dims_and_variants(tokenizer):
    model = MISA(smoke(model="misa"), DV + 1, DA)
    with pytest.raises(ModelConfigError, match="visual/acoustic dims 8/5.*7/5"):
        model(make_batch(tokenizer))
    with pytest.raises(ModelConfigError, match="variant='full' only"):
        MISA(smoke(model="misa", variant="text-only"), DV, DA)
    with pytest.raises(ConfigError, match="misa_hidden"):  # refused where the config is made
        smoke(model="misa", misa_hidden=15)
    with pytest.raises(ModelConfigError, match="must be even"):  # and by the model itself
        MISA(dataclasses.replace(smoke(model="misa"), misa_hidden=15), DV, DA)


# ---- MAG-BERT ----------------------------------------------------------------------------------


def test_gate_shift_is_norm_bounded_and_exact_below_the_bound():
    torch.manual_seed(0)
    gate = MultimodalAdaptationGate(4, 3, 2, beta_shift=0.5, dropout=0.0)
    z = torch.randn(2, 5, 4)
    big_v, big_a = 100 * torch.randn(2, 5, 3), 100 * torch.randn(2, 5, 2)
    shift = gate.shift(z, big_v, big_a)
    # Large features: alpha = 0.5 ||z|| / ||H|| < 1, so ||shift|| = 0.5 ||z||.
    torch.testing.assert_close(shift.norm(dim=-1), 0.5 * z.norm(dim=-1), atol=1e-4, rtol=1e-4)
    # Tiny features: alpha = 1 and the shift is H itself.
    small_v, small_a = 1e-3 * torch.ones(2, 5, 3), 1e-3 * torch.ones(2, 5, 2)
    with torch.no_grad():
        for lin in (gate.project_visual, gate.project_acoustic):
            lin.bias.zero_()
    h = torch.relu(gate.gate_visual(torch.cat([small_v, z], -1))) * gate.project_visual(
        small_v
    ) + torch.relu(gate.gate_acoustic(torch.cat([small_a, z], -1))) * gate.project_acoustic(small_a)
    torch.testing.assert_close(gate.shift(z, small_v, small_a), h)
    # The output is LayerNorm(z + shift).
    out = gate.eval()(z, big_v, big_a)
    expected = torch.nn.functional.layer_norm(z + gate.shift(z, big_v, big_a), (4,))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_word_aligned_features_by_hand():
    feats = torch.arange(2 * 3 * 2, dtype=torch.float).reshape(2, 3, 2)
    word_index = torch.tensor([[-1, 0, 0, 2, -1], [-1, 1, -1, -1, -1]])
    out = word_aligned_features(feats, word_index)
    assert out.shape == (2, 5, 2)
    assert out[0].tolist() == [[0, 0], [0, 1], [0, 1], [4, 5], [0, 0]]
    assert out[1].tolist() == [[0, 0], [8, 9], [0, 0], [0, 0], [0, 0]]
    with pytest.raises(ModelConfigError, match="only 3 steps"):
        word_aligned_features(feats, torch.tensor([[-1, 3], [-1, 0]]))


def test_resampled_token_features_by_hand():
    feats = torch.tensor([[[1.0], [3.0], [5.0], [7.0]], [[2.0], [0.0], [0.0], [0.0]]])
    lengths = torch.tensor([4, 1])
    # sample 0: [CLS] w w [SEP] -> 2 tokens over 4 steps; sample 1: [CLS] w w w [SEP] over 1 step
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    out = resampled_token_features(feats, lengths, mask)[..., 0]
    assert out[0].tolist() == [0.0, 2.0, 6.0, 0.0, 0.0]
    assert out[1].tolist() == [0.0, 2.0, 2.0, 2.0, 0.0]


def test_mag_with_zero_shift_equals_the_plain_plm(tokenizer):
    cfg = smoke(model="mag-bert", text_adaptation="finetune")
    model = MAGBert(cfg, DV, DA).eval()
    with torch.no_grad():
        for lin in (model.gate.project_visual, model.gate.project_acoustic):
            lin.weight.zero_()
            lin.bias.zero_()
    plain = load_plm(cfg, add_pooling_layer=True).eval()
    batch = make_batch(tokenizer)
    with torch.no_grad():
        ours = model(batch).text_summary
        reference = plain(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
        ).pooler_output
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_mag_injection_layer_changes_only_later_layers(tokenizer):
    cfg = smoke(model="mag-bert", text_adaptation="finetune", mag_injection_layer=2)
    model = MAGBert(cfg, DV, DA).eval()
    plain = load_plm(cfg, add_pooling_layer=True).eval()
    captured = {}

    def keep(key):
        return lambda module, args, output: captured.__setitem__(key, output)

    model.plm.encoder.layer[0].register_forward_hook(keep("mag0"))
    model.plm.encoder.layer[1].register_forward_hook(keep("mag1"))
    plain.encoder.layer[0].register_forward_hook(keep("plain0"))
    plain.encoder.layer[1].register_forward_hook(keep("plain1"))
    batch = make_batch(tokenizer)
    with torch.no_grad():
        model(batch)
        plain(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
        )
    first = lambda x: x[0] if isinstance(x, tuple) else x  # noqa: E731
    torch.testing.assert_close(first(captured["mag0"]), first(captured["plain0"]))
    assert not torch.allclose(first(captured["mag1"]), first(captured["plain1"]), atol=1e-3)
    with pytest.raises(ModelConfigError, match="expected 1..2"):
        MAGBert(smoke(model="mag-bert", mag_injection_layer=3), DV, DA)


def test_mag_finetune_trains_plm_gate_and_head(tokenizer):
    model = MAGBert(smoke(model="mag-bert", text_adaptation="finetune"), DV, DA)
    grads = grads_after_backward(model, make_batch(tokenizer))
    assert all(p.requires_grad for p in model.parameters())
    for name in (
        "plm.embeddings.word_embeddings.weight",
        "plm.encoder.layer.1.output.dense.weight",
        "plm.pooler.dense.weight",
        "gate.gate_visual.weight",
        "gate.project_acoustic.weight",
        "head.weight",
    ):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_mag_adapters_freezes_plm_but_not_gate_pooler_head(tokenizer):
    model = MAGBert(smoke(model="mag-bert", text_adaptation="adapters"), DV, DA)
    grads = grads_after_backward(model, make_batch(tokenizer))
    for name, param in model.named_parameters():
        frozen_plm = name.startswith("plm.") and ".adapter." not in name and "pooler" not in name
        assert param.requires_grad != frozen_plm, name
        assert (grads[name] is None) == frozen_plm, name


def test_mag_unaligned_batch_is_refused_unless_resampling_is_asked_for(tokenizer):
    batch = make_batch(tokenizer)
    batch.word_index = None
    model = MAGBert(smoke(model="mag-bert"), DV, DA).eval()
    with pytest.raises(ModelConfigError, match="needs word-aligned.*mag_unaligned=resample"):
        model(batch)
    model = MAGBert(smoke(model="mag-bert", mag_unaligned="resample"), DV, DA).eval()
    assert model(batch).prediction.shape == (3,)


def test_mag_ignores_padding(tokenizer):
    model = MAGBert(smoke(model="mag-bert", text_adaptation="finetune"), DV, DA).eval()
    with torch.no_grad():
        plain = model(make_batch(tokenizer)).prediction
        padded = model(make_batch(tokenizer, extra_token_pad=3, extra_step_pad=2)).prediction
    torch.testing.assert_close(plain, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_mag_pooling_reads_the_states_and_ignores_padding(tokenizer, pooling):
    """mag_pooling "cls"/"mean": the head reads the [CLS] state or the real tokens' mean of the
    last layer (of the MAG-shifted model); the pooler is not loaded at all."""
    cfg = smoke(model="mag-bert", text_adaptation="finetune", mag_pooling=pooling)
    model = MAGBert(cfg, DV, DA).eval()
    assert model.plm.pooler is None and not any("pooler" in n for n, _ in model.named_parameters())
    batch = make_batch(tokenizer)
    states = {}
    model.plm.encoder.layer[-1].register_forward_hook(
        lambda module, args, output: states.__setitem__(
            "last", output[0] if isinstance(output, tuple) else output
        )
    )
    with torch.no_grad():
        summary = model(batch).text_summary
        padded = model(make_batch(tokenizer, extra_token_pad=3, extra_step_pad=2)).text_summary
    last, mask = states["last"], batch.attention_mask
    if pooling == "cls":
        expected = last[:, 0]
    else:
        expected = torch.stack([last[i, : int(mask[i].sum())].mean(0) for i in range(len(TEXTS))])
    torch.testing.assert_close(summary, expected)
    torch.testing.assert_close(summary, padded, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="mag_pooling"):
        smoke(mag_pooling="max")


# ---- registry, save/load ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,adaptation", [("misa", "adapters"), ("misa", "finetune"), ("mag-bert", "finetune")]
)
def test_registry_and_save_load_round_trip(tmp_path, tokenizer, name, adaptation):
    from safetensors.torch import load_file

    from ambcore.models import build_model, load_pretrained

    cfg = smoke(model=name, text_adaptation=adaptation)
    model = build_model(cfg, DV, DA)
    with torch.no_grad():  # make the trained weights differ from a fresh build
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(tmp_path)
    stored = load_file(str(tmp_path / "weights.safetensors"))
    assert set(stored) == {n for n, p in model.named_parameters() if p.requires_grad}
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(model)
    batch = make_batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).prediction, model(batch).prediction)


def test_summary_spread_and_its_verdict():
    from ambcore.models.plm import spread_verdict, summary_spread

    rows = summary_spread(smoke(), TEXTS)
    assert [r["summary"] for r in rows] == ["pooler", "[CLS] state", "token mean"]
    assert all(r["std across texts"] > 0 for r in rows)
    assert all(abs(r["mean |value|"]) < 1.0 for r in rows[:1])  # tanh output
    made = [
        {"summary": "pooler", "mean |value|": 0.05, "std across texts": 0.03, "pooler |bias|": 0.0},
        {"summary": "[CLS] state", "mean |value|": 0.2, "std across texts": 0.18},
        {"summary": "token mean", "mean |value|": 0.2, "std across texts": 0.2},
    ]
    said = spread_verdict(made, "mean")
    assert "6.0 times less" in said and "never trained" in said and "reads the token mean" in said
    made[0]["pooler |bias|"] = 0.1
    assert "so it was trained" in spread_verdict(made, "pooler")
