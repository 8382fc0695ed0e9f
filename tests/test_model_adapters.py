"""Adapters and PLM trainability (thesis 6.2.2-6.2.3) on a tiny random BERT."""

from __future__ import annotations

import copy

import pytest
import torch

from ambcore.config import ConfigError, get_config
from ambcore.errors import ModelConfigError
from ambcore.models.adapters import (
    BottleneckAdapter,
    add_adapters,
    finetuned_layer_indices,
    prepare_plm,
    set_trainable,
)
from ambcore.models.plm import load_plm, load_tokenizer, resolve_plm_path


@pytest.fixture(scope="module")
def plain_plm():
    return load_plm(get_config("smoke"))


def _inputs(tokenizer):
    enc = tokenizer(["a fine film", "not good at all, sadly"], padding=True, return_tensors="pt")
    return dict(enc)


def test_tiny_random_plm_is_reproducible_and_tiny(plain_plm):
    cfg = get_config("smoke")
    again = load_plm(cfg)
    assert plain_plm.config.hidden_size == 32 and plain_plm.config.num_hidden_layers == 2
    assert plain_plm.pooler is None
    for (name, a), (_, b) in zip(plain_plm.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert resolve_plm_path("tiny-random") is None
    assert load_tokenizer(cfg).vocab_size == plain_plm.config.vocab_size


def test_unavailable_hub_plm_gives_clear_error():
    cfg = get_config("smoke", plm="no-such-org/no-such-bert")
    with pytest.raises(ModelConfigError, match="no-such-bert.*local"):
        load_plm(cfg)


def test_fresh_adapters_reproduce_every_layer_of_the_plm(plain_plm):
    tokenizer = load_tokenizer(get_config("smoke"))
    inputs = _inputs(tokenizer)
    adapted = copy.deepcopy(plain_plm)
    adapters = add_adapters(adapted, adapter_dim=8)
    assert len(adapters) == plain_plm.config.num_hidden_layers
    adapted.eval()
    with torch.no_grad():
        ref = plain_plm(**inputs, output_hidden_states=True).hidden_states
        out = adapted(**inputs, output_hidden_states=True).hidden_states
    assert len(ref) == len(out) == plain_plm.config.num_hidden_layers + 1
    for layer, (a, b) in enumerate(zip(ref, out)):
        assert torch.equal(a, b), f"hidden state {layer} differs"


def test_adapter_sits_after_the_output_layernorm(plain_plm):
    """A non-zero adapter changes the layer output by exactly adapter(LayerNorm output)."""
    adapted = copy.deepcopy(plain_plm)
    add_adapters(adapted, adapter_dim=4)
    layer = adapted.encoder.layer[0]
    torch.nn.init.normal_(layer.output.adapter.up.weight)
    x_inter = torch.randn(2, 5, plain_plm.config.intermediate_size)
    x_attn = torch.randn(2, 5, plain_plm.config.hidden_size)
    plain_out = plain_plm.encoder.layer[0].output.eval()(x_inter, x_attn)
    adapted_out = layer.output.eval()(x_inter, x_attn)
    expected = layer.output.adapter(plain_out)
    assert torch.allclose(adapted_out, expected)
    assert not torch.allclose(adapted_out, plain_out)


def test_adapter_is_a_residual_bottleneck():
    adapter = BottleneckAdapter(6, 3)
    x = torch.randn(2, 4, 6)
    assert torch.equal(adapter(x), x)
    assert adapter.down.weight.shape == (3, 6) and adapter.up.weight.shape == (6, 3)


def _trainable_names(plm):
    return {n for n, p in plm.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "adaptation, layers, expected",
    [
        ("adapters", "all", lambda n: ".adapter." in n),
        ("frozen", "all", lambda n: False),
        ("finetune", "all", lambda n: True),
        ("finetune", "last:1", lambda n: n.startswith("encoder.layer.1.")),
    ],
)
def test_set_trainable_selects_exactly_the_intended_weights(
    plain_plm, adaptation, layers, expected
):
    cfg = get_config("smoke", text_adaptation=adaptation, finetune_layers=layers)
    plm = prepare_plm(copy.deepcopy(plain_plm), cfg)
    names = {n for n, _ in plm.named_parameters()}
    assert _trainable_names(plm) == {n for n in names if expected(n)}
    assert any(".adapter." in n for n in names) == (adaptation == "adapters")


def test_finetune_layer_selection_errors():
    assert finetuned_layer_indices("last:2", 12) == ([10, 11], False)
    assert finetuned_layer_indices("all", 3) == ([0, 1, 2], True)
    with pytest.raises(ModelConfigError, match="1..2"):
        finetuned_layer_indices("last:3", 2)


def test_adapters_twice_or_finetune_with_adapters_is_an_error(plain_plm):
    plm = copy.deepcopy(plain_plm)
    add_adapters(plm, 4)
    with pytest.raises(ModelConfigError, match="twice"):
        add_adapters(plm, 4)
    with pytest.raises(ModelConfigError, match="without adapters"):
        set_trainable(plm, get_config("smoke", text_adaptation="finetune"))


def test_pfeiffer_adapter_reapplies_the_layernorm_with_the_residual_before_it(plain_plm):
    """AdapterHub's Pfeiffer adapter: LN(h + x + A(LN(h + x))), from the module's own weights."""
    adapted = copy.deepcopy(plain_plm)
    adapters = add_adapters(adapted, adapter_dim=4, placement="pfeiffer")
    output = adapted.encoder.layer[0].output.eval()
    assert adapters[0] is output.LayerNorm.adapter and not hasattr(output, "adapter")
    x_inter = torch.randn(2, 5, plain_plm.config.intermediate_size)
    x_attn = torch.randn(2, 5, plain_plm.config.hidden_size)
    fresh = output(x_inter, x_attn)
    torch.nn.init.normal_(adapters[0].up.weight)
    changed = output(x_inter, x_attn)
    # independently: dense, residual, LayerNorm, bottleneck on the normalised state, LayerNorm again
    ln = output.LayerNorm
    summed = x_inter @ output.dense.weight.T + output.dense.bias + x_attn
    normed = torch.nn.functional.layer_norm(summed, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    bottleneck = (
        torch.relu(normed @ adapters[0].down.weight.T + adapters[0].down.bias)
        @ adapters[0].up.weight.T
    )
    expected = torch.nn.functional.layer_norm(
        summed + bottleneck + adapters[0].up.bias, ln.normalized_shape, ln.weight, ln.bias, ln.eps
    )
    assert torch.allclose(fresh, normed, atol=1e-6)  # the identity when freshly built
    assert torch.allclose(changed, expected, atol=1e-5)
    assert not torch.allclose(changed, adapters[0](normed), atol=1e-3)  # not the "ours" placement


def test_pfeiffer_adapters_train_alone_and_unknown_placement_is_an_error(plain_plm):
    adapted = copy.deepcopy(plain_plm)
    add_adapters(adapted, adapter_dim=4, placement="pfeiffer")
    set_trainable(adapted, get_config("smoke", adapter_placement="pfeiffer"))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".LayerNorm.adapter." in n for n in trainable)
    assert len(trainable) == 4 * plain_plm.config.num_hidden_layers  # down/up weight and bias
    with pytest.raises(ConfigError, match="'adapter_placement'='middle'"):  # checked in config
        get_config("smoke", adapter_placement="middle")
    with pytest.raises(ModelConfigError, match="twice"):
        add_adapters(adapted, adapter_dim=4)
