"""AMB (thesis 6.2) on a tiny random BERT: oracle equality, trainability, masks, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ambcore.config import ConfigError, get_config
from ambcore.data.types import Batch
from ambcore.errors import ModelConfigError
from ambcore.models import build_model, count_parameters, load_pretrained
from ambcore.models.plm import load_plm, load_tokenizer

VISUAL_DIM, ACOUSTIC_DIM = 7, 5
TEXTS = ["what a wonderful , moving film", "boring", "i did not like the ending at all"]


def make_batch(
    texts=TEXTS,
    visual_lengths=(6, 2, 0),
    acoustic_lengths=(4, 5, 1),
    seed=0,
    pad_text=0,
    pad_visual=0,
    pad_acoustic=0,
    visual_dim=VISUAL_DIM,
) -> Batch:
    """A padded batch as the collate builds it; ``pad_*`` add extra padding at the end."""
    gen = torch.Generator().manual_seed(seed)
    tokenizer = load_tokenizer(get_config("smoke"))
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    if pad_text:
        zeros = torch.zeros(len(texts), pad_text, dtype=ids.dtype)
        ids, mask, types = (torch.cat([t, zeros], 1) for t in (ids, mask, types))
    n = len(texts)
    lv, la = torch.tensor(visual_lengths), torch.tensor(acoustic_lengths)
    visual = torch.randn(n, max(visual_lengths), visual_dim, generator=gen)
    acoustic = torch.randn(n, max(acoustic_lengths), ACOUSTIC_DIM, generator=gen)
    visual = torch.cat([visual, torch.zeros(n, pad_visual, visual_dim)], 1)
    acoustic = torch.cat([acoustic, torch.zeros(n, pad_acoustic, ACOUSTIC_DIM)], 1)
    visual *= (torch.arange(visual.shape[1])[None, :] < lv[:, None])[..., None]  # zero padding
    acoustic *= (torch.arange(acoustic.shape[1])[None, :] < la[:, None])[..., None]
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=types,
        visual=visual,
        visual_lengths=lv,
        acoustic=acoustic,
        acoustic_lengths=la,
        labels=torch.randn(n, generator=gen),
        ids=[str(i) for i in range(n)],
    )


def build(**overrides):
    torch.manual_seed(0)
    return build_model(get_config("smoke", **overrides), VISUAL_DIM, ACOUSTIC_DIM)


@pytest.fixture(scope="module")
def amb():
    return build().eval()


def test_forward_shapes(amb):
    batch = make_batch()
    out = amb(batch)
    n_layers, hidden = amb.plm.config.num_hidden_layers, amb.plm.config.hidden_size
    cfg = amb.cfg
    assert out.prediction.shape == (3,)
    assert out.fused_states.shape == (3, n_layers, cfg.fusion_proj_dim)
    assert out.text_summary.shape == (3, hidden)
    assert out.av_token.shape == (3, 2 * cfg.encoder_dim)
    assert out.aux_loss is None and out.aux_losses == {}
    assert torch.isfinite(out.prediction).all()


def test_fresh_amb_text_path_equals_the_plain_plm(amb):
    """Fresh adapters: every layer's hidden states are those of the transformers model alone."""
    batch = make_batch()
    oracle = load_plm(get_config("smoke")).eval()
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        token_type_ids=batch.token_type_ids,
        output_hidden_states=True,
    )
    with torch.no_grad():
        expected = oracle(**inputs).hidden_states
        got = amb.plm(**inputs).hidden_states
        out = amb(batch)
    for layer, (a, b) in enumerate(zip(expected, got)):
        assert torch.equal(a, b), f"hidden state {layer}"
    assert torch.equal(out.text_summary, expected[-1][:, 0])


def test_trained_adapter_changes_the_hidden_states_that_fusion_sees():
    model = build().eval()
    batch = make_batch()
    before = model(batch).text_summary
    torch.nn.init.normal_(model.plm.encoder.layer[-1].output.adapter.up.weight)
    after = model(batch)
    assert not torch.allclose(before, after.text_summary)
    # the adapter output is what the last hidden state (and so the predictor) sees
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        token_type_ids=batch.token_type_ids,
    )
    assert torch.equal(after.text_summary, model.plm(**inputs).last_hidden_state[:, 0])


def _is_adapter(n):
    return n.startswith("plm.") and ".adapter." in n


def _is_head(n):  # everything outside the PLM
    return not n.startswith("plm.")


VARIANTS = {
    "adapters": (dict(), lambda n: _is_adapter(n) or _is_head(n)),
    "finetune-all": (dict(text_adaptation="finetune"), lambda n: True),
    "finetune-last1": (
        dict(text_adaptation="finetune", finetune_layers="last:1"),
        lambda n: _is_head(n) or n.startswith(("plm.encoder.layer.1.", "plm.embeddings.")),
    ),
    "finetune-last1-no-embeddings": (
        dict(text_adaptation="finetune", finetune_layers="last:1", amb_finetune_embeddings=False),
        lambda n: _is_head(n) or n.startswith("plm.encoder.layer.1."),
    ),
    "frozen": (dict(text_adaptation="frozen"), _is_head),
    "per-layer-projection": (
        dict(cls_projection="per_layer"),
        lambda n: _is_adapter(n) or _is_head(n),
    ),
    "independent": (dict(fusion_connect="independent"), lambda n: _is_adapter(n) or _is_head(n)),
    "pfeiffer": (dict(adapter_placement="pfeiffer"), lambda n: _is_adapter(n) or _is_head(n)),
    "text-only": (dict(variant="text-only"), lambda n: _is_adapter(n) or _is_head(n)),
    "no-text": (dict(variant="no-text"), lambda n: _is_adapter(n) or _is_head(n)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exactly_the_intended_parameters_train(variant):
    overrides, should_train = VARIANTS[variant]
    model = build(**overrides)
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if should_train(n)}
    has_adapters = any(".adapter." in n for n in names)
    assert has_adapters == (overrides.get("text_adaptation", "adapters") == "adapters")
    has_encoders = any(n.startswith(("visual_encoder.", "acoustic_encoder.")) for n in names)
    assert has_encoders == (variant != "text-only")
    counts = count_parameters(model)
    assert counts["all"]["trainable"] == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    assert counts["all"]["total"] == sum(p.numel() for p in model.parameters())
    assert ("encoders" in counts) == (variant != "text-only")


@pytest.mark.parametrize(
    "variant",
    [
        "adapters",
        "finetune-last1",
        "finetune-last1-no-embeddings",
        "text-only",
        "frozen",
        "per-layer-projection",
        "independent",
        "pfeiffer",
    ],
)
def test_optimizer_steps_change_every_trainable_tensor_and_no_frozen_one(variant):
    overrides, _ = VARIANTS[variant]
    model = build(**overrides).train()
    batch = make_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(model(batch).prediction, batch.labels)
        loss.backward()
        optimizer.step()

    step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # Zero-initialised up-projections mean the down-projections get no gradient on step one.
    still = trainable - changed
    assert all(".adapter.down." in n for n in still), sorted(still)
    step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable, sorted(trainable - changed)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert torch.equal(param, before[name]), name  # bit-identical


@pytest.mark.parametrize("extra", [dict(pad_text=5), dict(pad_visual=4), dict(pad_acoustic=3)])
def test_extra_padding_does_not_change_the_output(amb, extra):
    reference = amb(make_batch())
    padded = amb(make_batch(**extra))
    assert torch.allclose(reference.prediction, padded.prediction, atol=1e-5)
    assert torch.allclose(reference.fused_states, padded.fused_states, atol=1e-5)


def test_padding_content_is_ignored(amb):
    batch = make_batch()
    noisy = make_batch()
    steps = torch.arange(noisy.visual.shape[1])[None, :] >= noisy.visual_lengths[:, None]
    noisy.visual[steps] = 100.0
    assert torch.allclose(amb(batch).prediction, amb(noisy).prediction, atol=1e-5)


def test_no_text_model_sees_no_text():
    model = build(variant="no-text").eval()
    a = model(make_batch(texts=["a great film", "terrible", "ok"]))
    b = model(make_batch(texts=["the worst thing i have ever seen", "wow", "fine i guess"]))
    assert torch.allclose(a.prediction, b.prediction, atol=1e-6)


def test_text_only_model_ignores_audio_visual_input():
    model = build(variant="text-only").eval()
    a = model(make_batch(seed=0))
    b = model(make_batch(seed=1, visual_lengths=(1, 1, 1)))
    assert a.av_token is None
    assert torch.equal(a.prediction, b.prediction)


def test_full_model_uses_audio_visual_input(amb):
    a = amb(make_batch(seed=0))
    b = amb(make_batch(seed=1))
    assert not torch.allclose(a.prediction, b.prediction)


def test_independent_fusion_runs_and_every_layer_contributes():
    model = build(fusion_connect="independent").train()
    out = model(make_batch())
    out.prediction.sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("fusion."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mismatched_feature_dims_are_a_clear_error(amb):
    with pytest.raises(ModelConfigError, match=r"visual.*\(B, L, 7\).*\(3, 6, 9\)"):
        amb(make_batch(visual_dim=9))


def test_unknown_model_and_config_keys_are_errors():
    with pytest.raises(ConfigError, match="adaptor_dim"):
        get_config("smoke", adaptor_dim=3)
    cfg = get_config("smoke", model="misa")
    from ambcore.models import MODEL_REGISTRY

    MODEL_REGISTRY_COPY = dict(MODEL_REGISTRY)
    try:
        MODEL_REGISTRY.pop("misa")
        with pytest.raises(ModelConfigError, match="unknown model 'misa'"):
            build_model(cfg, 3, 3)
    finally:
        MODEL_REGISTRY.update(MODEL_REGISTRY_COPY)


@pytest.mark.parametrize(
    "variant", ["adapters", "finetune-last1", "text-only", "per-layer-projection", "pfeiffer"]
)
def test_save_load_round_trip(tmp_path, variant):
    overrides, _ = VARIANTS[variant]
    model = build(**overrides)
    for p in model.parameters():  # move away from the fresh initialisation
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    batch = make_batch()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "config.json",
        "model.json",
        "weights.safetensors",
    ]
    saved = load_file(str(tmp_path / "weights.safetensors"))
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    plm_keys = {k for k in saved if k.startswith("plm.") and ".adapter." not in k}
    if variant == "finetune-last1":
        assert plm_keys and all(
            k.startswith(("plm.encoder.layer.1.", "plm.embeddings.")) for k in plm_keys
        )
    else:
        assert not plm_keys  # no PLM weight in adapter checkpoints
    loaded = load_pretrained(tmp_path)
    assert not loaded.training
    assert torch.equal(model(batch).prediction, loaded(batch).prediction)


def test_loading_refuses_a_different_plm_and_bad_folders(tmp_path):
    model = build()
    model.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    meta["plm"]["frozen_sha256"] = "0" * 64
    (tmp_path / "ckpt" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelConfigError, match="different frozen weights"):
        load_pretrained(tmp_path / "ckpt")
    with pytest.raises(ModelConfigError, match="weights.safetensors is missing"):
        load_pretrained(tmp_path)


def test_loading_a_config_with_unknown_keys_is_an_error(tmp_path):
    build().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["cfg"]["fusion_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="fusion_layers"):
        load_pretrained(tmp_path)


def test_loading_checks_tensor_names(tmp_path):
    build().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["cfg"]["variant"] = (
        "text-only"  # a model without encoders: the encoder tensors are unexpected
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="unexpected: \\['acoustic_encoder"):
        load_pretrained(tmp_path)


@pytest.mark.integration
def test_embedded_minilm_amb(tmp_path):
    cfg = get_config("embedded")
    model = build_model(cfg, VISUAL_DIM, ACOUSTIC_DIM).eval()
    oracle = load_plm(cfg).eval()
    batch = make_batch()
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        token_type_ids=batch.token_type_ids,
        output_hidden_states=True,
    )
    with torch.no_grad():
        expected = oracle(**inputs).hidden_states
        got = model.plm(**inputs).hidden_states
        out = model(batch)
    assert len(got) == 7 and all(torch.equal(a, b) for a, b in zip(expected, got))
    assert out.fused_states.shape == (3, 6, cfg.fusion_proj_dim)
    counts = count_parameters(model)
    assert counts["plm"]["trainable"] == 0 and counts["adapters"]["trainable"] > 0
    model.save_pretrained(tmp_path)
    size = (tmp_path / "weights.safetensors").stat().st_size
    assert size < 4 * counts["all"]["trainable"] + 100_000  # float32 trainable weights only
    loaded = load_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(out.prediction, loaded(batch).prediction)


def test_design_choices_build_the_projections_they_name():
    shared, per_layer = build(), build(cls_projection="per_layer")
    n_layers = shared.plm.config.num_hidden_layers
    assert hasattr(shared.fusion, "cls_proj") and not any(
        hasattr(l, "cls_proj") for l in shared.fusion.layers
    )
    assert not hasattr(per_layer.fusion, "cls_proj") and all(
        hasattr(l, "cls_proj") for l in per_layer.fusion.layers
    )
    proj = sum(p.numel() for p in shared.fusion.cls_proj.parameters())
    fusion = lambda m: count_parameters(m)["fusion"]["trainable"]  # noqa: E731
    assert fusion(per_layer) - fusion(shared) == (n_layers - 1) * proj
    # the shared map is applied to every layer's [CLS] state: each layer's fused input differs
    batch = make_batch()
    states = shared.eval()(batch).fused_states
    assert states.shape[1] == n_layers and not torch.allclose(states[:, 0], states[:, 1])


def test_amb_ft_pooler_is_counted_trainable_and_never_read():
    plain = build(text_adaptation="finetune", finetune_layers="last:1")
    pooled = build(text_adaptation="finetune", finetune_layers="last:1", amb_finetune_pooler=True)
    assert plain.plm.pooler is None
    pooler = sum(p.numel() for p in pooled.plm.pooler.parameters())
    hidden = pooled.plm.config.hidden_size
    assert pooler == hidden * hidden + hidden
    assert all(p.requires_grad for p in pooled.plm.pooler.parameters())
    assert (
        count_parameters(pooled)["all"]["trainable"] - count_parameters(plain)["all"]["trainable"]
        == pooler
    )
    batch = make_batch()
    assert torch.equal(plain.eval()(batch).prediction, pooled.eval()(batch).prediction)
    # not with adapters, nor without the embeddings (MISA's loop trains it with them)
    assert build(amb_finetune_pooler=True).plm.pooler is None
    no_emb = build(
        text_adaptation="finetune",
        finetune_layers="last:1",
        amb_finetune_pooler=True,
        amb_finetune_embeddings=False,
    )
    assert no_emb.plm.pooler is None


def _strip_design_fields(folder):
    config = json.loads((folder / "config.json").read_text())
    for key in ("cls_projection", "adapter_placement", "amb_finetune_pooler"):
        config["cfg"].pop(key)
    (folder / "config.json").write_text(json.dumps(config))


def test_checkpoint_of_the_earlier_design_still_loads(tmp_path):
    """A config saved before the design fields existed rebuilds per-layer projections."""
    model = build(cls_projection="per_layer").eval()
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    model.save_pretrained(tmp_path)
    _strip_design_fields(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.cfg.cls_projection == "per_layer" and loaded.cfg.adapter_placement == "ours"
    batch = make_batch()
    assert torch.equal(model(batch).prediction, loaded(batch).prediction)


def test_checkpoint_of_another_design_fails_naming_the_design(tmp_path):
    build().save_pretrained(tmp_path)  # shared projection
    _strip_design_fields(tmp_path)  # now claims to be the earlier, per-layer design
    with pytest.raises(ModelConfigError, match="cls_projection='per_layer'") as err:
        load_pretrained(tmp_path)
    assert "\n" not in str(err.value)
