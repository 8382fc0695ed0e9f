"""The PLM families AMB builds on, and where each keeps the modules AMB touches (thesis 6.2.2,
6.2.3; 7.2: "the choice of the frozen PLM is not investigated enough").

AMB needs four things of a frozen encoder: its list of transformer layers (one adapter and one
fusion layer per layer), the feed-forward block of each layer whose last operation is the
LayerNorm the adapter follows ("after the feedforward layernorm"), the modules outside the
layers that train with the embeddings when the PLM is fine-tuned, and whether the architecture
has a pooler. ``FAMILIES`` holds them for every family, by the ``model_type`` of the PLM's
``config.json``; every other module (adapters, trainability, MAG-BERT's gate, the budget) reads
this one table and never names a family.

In transformers' encoders of these five families the names agree (``encoder.layer``,
``output``, ``output.LayerNorm``); they differ in what sits beside the layers (ELECTRA's
``embeddings_project`` when its embeddings are narrower than its layers, DeBERTa's relative
position embeddings and their LayerNorm, and the optional convolution of DeBERTa-v2-xlarge) and
in the pooler (none in DeBERTa and ELECTRA) and in PyTorch's fused attention (transformers has
none for DeBERTa). DeBERTa-v3 checkpoints are ``deberta-v2`` models.

``BASE_CONFIGS`` are the base-size checkpoints' architectures (their ``config.json`` fields
that decide shapes), so that counts at base size need no file: AMB's trainable parameters
depend only on the width and depth (768 and 12 in every base size here); the vocabularies
matter only for the frozen count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from transformers import (
    BertConfig,
    DebertaV2Config,
    ElectraConfig,
    PretrainedConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

from ambcore.errors import ModelConfigError

__all__ = [
    "Family",
    "FAMILIES",
    "BASE_CONFIGS",
    "family_of",
    "plm_layers",
    "ffn_output",
    "ffn_norm",
    "embedding_modules",
]


@dataclass(frozen=True)
class Family:
    """Where one family keeps what AMB touches (dotted module paths)."""

    name: str
    layers: str  # in the model: the ModuleList of transformer layers
    ffn_output: str  # in a layer: the feed-forward output block, LN(h + x) its last step
    ffn_norm: str  # in a layer: that block's LayerNorm (its input is h + x)
    embeddings: tuple[str, ...]  # in the model: trained with the embeddings (where built)
    pooler: bool  # the architecture has a pooler (``add_pooling_layer``)
    # transformers' attn_implementation: "sdpa" (PyTorch's fused scaled-dot-product attention,
    # flash / memory-efficient kernels on CUDA; the eager attention's function within
    # floating-point tolerance) where transformers has it for the family, else "eager".
    attention: str
    base: str  # the hub name of the family's base-size checkpoint


# model_type (config.json) -> family: the one table of module names.
FAMILIES: dict[str, Family] = {
    "bert": Family(
        name="bert",
        layers="encoder.layer",
        ffn_output="output",
        ffn_norm="output.LayerNorm",
        embeddings=("embeddings",),
        pooler=True,
        attention="sdpa",
        base="bert-base-uncased",
    ),
    "roberta": Family(
        name="roberta",
        layers="encoder.layer",
        ffn_output="output",
        ffn_norm="output.LayerNorm",
        embeddings=("embeddings",),
        pooler=True,
        attention="sdpa",
        base="roberta-base",
    ),
    "xlm-roberta": Family(
        name="xlm-roberta",
        layers="encoder.layer",
        ffn_output="output",
        ffn_norm="output.LayerNorm",
        embeddings=("embeddings",),
        pooler=True,
        attention="sdpa",
        base="xlm-roberta-base",
    ),
    "electra": Family(
        name="electra",
        layers="encoder.layer",
        ffn_output="output",
        ffn_norm="output.LayerNorm",
        embeddings=("embeddings", "embeddings_project"),
        pooler=False,
        attention="sdpa",
        base="google/electra-base-discriminator",
    ),
    "deberta-v2": Family(
        name="deberta-v2",
        layers="encoder.layer",
        ffn_output="output",
        ffn_norm="output.LayerNorm",
        embeddings=("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm", "encoder.conv"),
        pooler=False,
        attention="eager",
        base="microsoft/deberta-v3-base",
    ),
}

# The base-size architectures by hub name: the shape-deciding fields of each config.json.
BASE_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "bert-base-uncased": lambda: BertConfig(),  # BertConfig's defaults are bert-base-uncased
    "roberta-base": lambda: RobertaConfig(
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ),
    "xlm-roberta-base": lambda: XLMRobertaConfig(
        vocab_size=250002,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    ),
    "google/electra-base-discriminator": lambda: ElectraConfig(
        vocab_size=30522,
        embedding_size=768,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
    "microsoft/deberta-v3-base": lambda: DebertaV2Config(
        vocab_size=128100,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        layer_norm_eps=1e-7,
    ),
}


def family_of(config: PretrainedConfig, name: str = "") -> Family:
    """The family of a PLM's config (by ``model_type``); a clear error for any other encoder."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        what = f"PLM {name!r}" if name else "the PLM"
        raise ModelConfigError(
            f"{what} has model_type {model_type!r}; AMB supports the encoder families "
            f"{', '.join(FAMILIES)} (config.json's model_type)"
        )
    return FAMILIES[model_type]


def plm_layers(plm: nn.Module) -> nn.ModuleList:
    """The PLM's transformer layers, in order."""
    return plm.get_submodule(family_of(plm.config).layers)


def ffn_output(plm: nn.Module, layer: nn.Module) -> nn.Module:
    """The feed-forward output block of ``layer`` (its output is the LayerNorm's)."""
    return layer.get_submodule(family_of(plm.config).ffn_output)


def ffn_norm(plm: nn.Module, layer: nn.Module) -> nn.LayerNorm:
    """The LayerNorm that ends the feed-forward block of ``layer``."""
    return layer.get_submodule(family_of(plm.config).ffn_norm)


def embedding_modules(plm: nn.Module) -> list[nn.Module]:
    """The modules outside the layers that train with the embeddings, those the config built."""
    modules = []
    for path in family_of(plm.config).embeddings:
        try:
            module = plm.get_submodule(path)
        except AttributeError:
            continue
        if module is not None:
            modules.append(module)
    return modules
