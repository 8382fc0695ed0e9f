"""Bottleneck adapters in a frozen BERT, and which PLM weights train (thesis 6.2.2, 6.2.3).

Adapter (Houlsby et al. 2019): a down-projection, a ReLU, an up-projection and a residual
connection, ``h + W_up ReLU(W_down h)``. The up-projection starts at zero, so a freshly adapted
PLM computes exactly what the plain PLM computes.

Placement (``cfg.adapter_placement``; the thesis follows AdapterFusion, Pfeiffer et al. 2020,
and puts one adapter per BERT layer "after the feedforward layernorm", instead of Houlsby's two
per layer; this halves the adapter parameters). Two readings of that sentence:

- ``"ours"`` (default): the adapter acts on the output of the feed-forward block's LayerNorm,
  ``y = LN(h + x) + A(LN(h + x))``, with no normalisation after it. In transformers'
  ``BertLayer`` that LayerNorm is the last operation of ``layer.output`` (``BertOutput``), so the
  adapter is the child module ``layer.output.adapter`` and a forward hook on that
  ``BertOutput`` instance passes its output through it.
- ``"pfeiffer"``: the adapter as AdapterHub implements Pfeiffer's configuration
  (``original_ln_before=True``, ``residual_before_ln=True``, ``original_ln_after=True``): the
  adapter reads ``LN(h + x)``, its residual is taken *before* the LayerNorm, and the layer's
  own LayerNorm is applied again: ``y = LN(h + x + A(LN(h + x)))``, with ``h`` the feed-forward
  output and ``x`` the attention block's output. Here the adapter is the child module
  ``layer.output.LayerNorm.adapter`` and a forward hook on that LayerNorm (whose input is
  ``h + x``) computes it.

Both are the identity when freshly built (the up-projection starts at zero). Nothing in
transformers is edited or patched globally, and every pretrained weight keeps its name.

The same code serves every PLM family of ``ambcore.models.families`` (BERT, RoBERTa,
XLM-RoBERTa, ELECTRA, DeBERTa-v2/v3): where a family keeps its layers, their feed-forward
output block and LayerNorm, and the modules that train with the embeddings comes from that
one table. ``cfg`` is a validated ``Config`` (``ambcore.config`` checks every allowed value).

``set_trainable`` implements ``cfg.text_adaptation``: ``"adapters"`` (only adapters train),
``"finetune"`` (the PLM's own weights train; ``cfg.finetune_layers`` = ``"all"`` or
``"last:K"``) and ``"frozen"`` (nothing in the PLM trains).
"""

from __future__ import annotations

import torch
from torch import nn

from ambcore.errors import ModelConfigError
from ambcore.models.families import embedding_modules, ffn_norm, ffn_output, plm_layers

__all__ = [
    "BottleneckAdapter",
    "add_adapters",
    "has_adapters",
    "freeze_plm",
    "set_trainable",
    "prepare_plm",
    "finetuned_layer_indices",
    "adapter_of",
]


class BottleneckAdapter(nn.Module):
    """``h + up(dropout(ReLU(down(h))))``; the identity when freshly built (``up`` is zero)."""

    def __init__(self, hidden_size: int, bottleneck_dim: int, dropout: float = 0.0):
        super().__init__()
        if bottleneck_dim < 1:
            raise ModelConfigError(f"adapter_dim must be >= 1, got {bottleneck_dim}")
        self.down = nn.Linear(hidden_size, bottleneck_dim)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck_dim, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, hidden: torch.Tensor) -> torch.Tensor:
        """The bottleneck alone, ``up(dropout(ReLU(down(h))))``, without the residual."""
        # hidden: (B, T, H)
        hidden = self.act(self.down(hidden))  # (B, T, bottleneck)
        return self.up(self.dropout(hidden))  # (B, T, H)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: (B, T, H)
        return hidden + self.delta(hidden)  # (B, T, H)


def _apply_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on a layer's feed-forward output block (``BertOutput`` in BERT): its output
    (after the LayerNorm) goes through the adapter.

    Module-level (not a closure) so that copies of the model (``copy.deepcopy``) stay correct.
    """
    return module.adapter(output)


def _apply_pfeiffer_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on the feed-forward output LayerNorm (``"pfeiffer"`` placement).

    ``args[0]`` is the LayerNorm's input ``s = h + x`` and ``output`` is ``LN(s)``; returns
    ``LN(s + A(LN(s)))``, the LayerNorm re-applied with its own weights (calling the module
    again would run this hook again).
    """
    summed = args[0]  # (B, T, H)
    return nn.functional.layer_norm(
        summed + module.adapter.delta(output),
        module.normalized_shape,
        module.weight,
        module.bias,
        module.eps,
    )


def adapter_of(layer: nn.Module) -> BottleneckAdapter | None:
    """The adapter of a PLM layer, wherever its placement put it (None without one)."""
    return next((m for m in layer.modules() if isinstance(m, BottleneckAdapter)), None)


def has_adapters(plm: nn.Module) -> bool:
    return any(adapter_of(layer) is not None for layer in plm_layers(plm))


def _insert_ours(plm: nn.Module, layer: nn.Module, adapter: BottleneckAdapter) -> None:
    block = ffn_output(plm, layer)
    block.adapter = adapter  # registered as a child: state_dict, .to(), .train()
    block.register_forward_hook(_apply_adapter)


def _insert_pfeiffer(plm: nn.Module, layer: nn.Module, adapter: BottleneckAdapter) -> None:
    norm = ffn_norm(plm, layer)
    norm.adapter = adapter
    norm.register_forward_hook(_apply_pfeiffer_adapter)


# cfg.adapter_placement -> how one adapter goes into one layer (the values: ambcore.config).
_INSERT = {"ours": _insert_ours, "pfeiffer": _insert_pfeiffer}


def add_adapters(
    plm: nn.Module, adapter_dim: int, dropout: float = 0.0, placement: str = "ours"
) -> list[BottleneckAdapter]:
    """Insert one adapter per layer at ``placement`` (see the module doc); returns them in order."""
    if has_adapters(plm):
        raise ModelConfigError("the PLM already has adapters; add_adapters was called twice")
    insert = _INSERT[placement]
    hidden = plm.config.hidden_size
    adapters = []
    for layer in plm_layers(plm):
        param = next(ffn_norm(plm, layer).parameters())
        adapter = BottleneckAdapter(hidden, adapter_dim, dropout).to(param.device, param.dtype)
        insert(plm, layer, adapter)
        adapters.append(adapter)
    return adapters


def freeze_plm(plm: nn.Module) -> None:
    """Every PLM parameter (adapters included) stops receiving gradients."""
    for param in plm.parameters():
        param.requires_grad_(False)


def finetuned_layer_indices(finetune_layers: str, n_layers: int) -> tuple[list[int], bool]:
    """Encoder layers trained by ``finetune_layers``, and whether the embeddings train too.

    ``"all"``: every layer and the embeddings; ``"last:K"``: the last K layers only (K must
    fit the PLM's depth, which only the PLM knows).
    """
    if finetune_layers == "all":
        return list(range(n_layers)), True
    k = int(finetune_layers.removeprefix("last:"))
    if not 1 <= k <= n_layers:
        raise ModelConfigError(
            f"finetune_layers={finetune_layers!r}: K must be in 1..{n_layers} (the PLM has "
            f"{n_layers} layers)"
        )
    return list(range(n_layers - k, n_layers)), False


def set_trainable(plm: nn.Module, cfg, train_embeddings: bool | None = None) -> None:
    """Set ``requires_grad`` on the PLM's parameters (only) as ``cfg.text_adaptation`` says.

    ``train_embeddings`` (fine-tuning only) overrides whether the embeddings (the family's
    modules beside the layers, ``ambcore.models.families``, and a pooler, if any) train; by
    default they do with ``finetune_layers="all"`` and do not with ``"last:K"``. The other
    parts of a model (encoders, fusion, heads) are not touched.
    """
    freeze_plm(plm)
    mode = cfg.text_adaptation
    if mode == "adapters":
        if not has_adapters(plm):
            raise ModelConfigError("text_adaptation='adapters' but the PLM has no adapters")
        for layer in plm_layers(plm):
            adapter_of(layer).requires_grad_(True)
    elif mode == "finetune":
        if has_adapters(plm):
            raise ModelConfigError("text_adaptation='finetune' expects a PLM without adapters")
        layers = plm_layers(plm)
        indices, with_embeddings = finetuned_layer_indices(cfg.finetune_layers, len(layers))
        if train_embeddings is not None:
            with_embeddings = train_embeddings
        for i in indices:
            layers[i].requires_grad_(True)
        if with_embeddings:
            for module in embedding_modules(plm):
                module.requires_grad_(True)
            if getattr(plm, "pooler", None) is not None:
                plm.pooler.requires_grad_(True)
    # "frozen": nothing in the PLM trains.


def prepare_plm(
    plm: nn.Module, cfg, adapter_dropout: float = 0.0, train_embeddings: bool | None = None
) -> nn.Module:
    """Adapters (if ``cfg.text_adaptation == "adapters"``, size ``cfg.adapter_dim``) + trainability."""
    if cfg.text_adaptation == "adapters":
        add_adapters(plm, cfg.adapter_dim, adapter_dropout, cfg.adapter_placement)
    set_trainable(plm, cfg, train_embeddings=train_embeddings)
    return plm
