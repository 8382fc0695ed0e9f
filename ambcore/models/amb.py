"""Adapted Multimodal BERT (AMB), thesis chapter 6.2 (figure 6.1).

Data flow for one batch, with L PLM layers of width H::

    text ──► PLM layer 1 ─► adapter ─► ... ─► PLM layer L ─► adapter        (6.2.2, 6.2.3)
                  │ [CLS]_1                          │ [CLS]_L
                  ▼                                  ▼
    av ───► fusion 1 ──────► fusion 2 ─► ... ─► fusion L ──┐                (6.2.5)
     ▲                                                     ▼
    visual encoder ⊕ acoustic encoder (6.2.4)     predictor([fused_L ; [CLS]_L])  (6.2.6)

Components
----------
- PLM (``ambcore.models.plm``) adapted as ``cfg.text_adaptation`` says
  (``ambcore.models.adapters``): ``"adapters"`` = AMB, ``"finetune"`` = AMB-FT, ``"frozen"``.
- Visual and acoustic encoders (``ambcore.models.encoders``): each sequence -> its [CLS]
  summary of width E = ``encoder_dim``; the audio-visual (AV) token is their concatenation
  (2E), fed to every fusion layer as it is (no extra projection: the fusion FFN's first linear
  map already mixes it).
- Layer-wise fusion (``ambcore.models.fusion.LayerwiseFusion``), one fusion layer per PLM
  layer l = 1..L: ``p_l = W [CLS]_l`` projects the layer's [CLS] state from H to
  P = ``fusion_proj_dim`` ("is projected to a lower dimension", 6.2.5), and an FFN
  (``Linear -> ReLU -> Dropout -> Linear``, hidden ``fusion_hidden``) maps
  ``[p_l ; av (; f_{l-1})]`` to the fused state ``f_l`` of width P.

Design choices the thesis leaves open (``ambcore.models.budget`` derives which fit its numbers)
--------------------------------------------------------------------------------------------
- ``cls_projection``: ``"shared"`` (default; one W for all layers, ``fusion.cls_proj``) or
  ``"per_layer"`` (W_l per layer, ``fusion.layers[l].cls_proj``; the design before the budget
  was derived, 1.18 M parameters on bert-base against 0.10 M). The text speaks of one
  projection, and only the shared one fits the thesis' 8.6 M.
- ``fusion_connect``: ``"chain"`` (default) or ``"independent"``, below.
- ``adapter_placement`` (``ambcore.models.adapters``): ``"ours"`` or ``"pfeiffer"``.
- ``encoder_dim``: the width of the AV encoders (64 in the paper preset; 128 before).
- ``amb_finetune_pooler``: AMB-FT carries BERT's pooler, trainable and never read, as MISA's
  freezing loop leaves it; the thesis' 47.2 M counts it.
- Predictor (``Predictor``): ``[f_L ; [CLS]_L]`` -> score, a single linear layer by default
  (6.2.6: "a single Feedforward layer"); ``predictor_hidden > 0`` adds one hidden layer.
  The loss (L1 in the thesis) is the trainer's.

How fusion layers connect across depth (``cfg.fusion_connect``)
----------------------------------------------------------------
Figure 6.1 stacks 12 fusion layers beside the 12 BERT layers, and 6.2.6 feeds only "the fused
representation of the last BERT and fusion layers" to the predictor. For the first L-1 fusion
layers to matter at all, their outputs must reach the last one, so the default ``"chain"``
passes each fused state on: ``f_1 = FFN_1([p_1 ; av])`` and
``f_l = f_{l-1} + FFN_l([p_l ; av ; f_{l-1}])`` for l >= 2. The residual (our choice) keeps a
12-deep chain of FFNs easy to optimise and lets every layer's evidence reach the predictor
directly, as a transformer's residual stream does. ``"independent"`` (the alternative) fuses
every layer separately, ``f_l = FFN_l([p_l ; av])``, and gives the predictor their mean
over layers (the last one alone would leave the other L-1 fusion layers without gradient).

The embedding layer's output is not fused: its [CLS] vector is the same for every input
(the [CLS] word, position and segment embeddings), so it carries no information about the
utterance. Fusion starts at the first transformer layer.

Variants (all from ``cfg``)
---------------------------
- ``variant="full"``: text, visual and acoustic input.
- ``variant="text-only"``: the AV encoders are not built and the fusion layers take
  ``[p_l (; f_{l-1})]``. This is the same function as feeding a constant zero AV token (a
  zero input only multiplies weights that then never change), without counting or storing
  parameters that cannot learn; the thesis lists 8.6 M for this variant too, i.e. counted the
  unused AV weights.
- ``variant="no-text"``: the text reaching the PLM is reduced to ``[CLS] [SEP]`` per
  utterance. The collate does this; the model enforces it again (keeping the first token
  and the last real token of each row), so no textual content can reach it whatever
  built the batch. The model is otherwise the full one.
- ``text_adaptation``: ``"adapters"`` (AMB), ``"finetune"`` (AMB-FT; ``finetune_layers``
  picks the layers, ``amb_finetune_embeddings`` whether the embeddings train with
  ``"last:K"``), ``"frozen"`` (no adapters, no tuning). The thesis' 47.2 M trainable
  parameters of AMB-FT match bert-base's embeddings + last 3 layers, the scheme of MISA's
  public MOSEI code (BERT layers 0-8 frozen): ``finetune_layers="last:3"``.

Beyond the thesis (its Future Work, 7.2; ``ambcore.models.fusion`` has the details)
------------------------------------------------------------------------------------
- ``fusion_module="cross_attention"``: each fusion layer's ``p_l`` attends over the visual
  and acoustic encoders' output sequences instead of reading the AV token (not with
  ``variant="text-only"``, which has no sequences).
- ``fusion_feedback="shift"``: ``f_l`` shifts the token states entering PLM layer l + 1 with
  MAG-BERT's gated, norm-bounded displacement; the fusion then runs inside the PLM's pass
  (``_fuse_with_feedback``) and the text states depend on the AV input.
- ``plm``: any encoder of the families of ``ambcore.models.families`` (BERT, RoBERTa,
  XLM-RoBERTa, ELECTRA, DeBERTa-v2/v3); the code reads their module names from that table.

``cfg`` is a validated ``Config``: allowed values are checked in ``ambcore.config`` only.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ambcore.data.types import Batch
from ambcore.errors import ModelConfigError
from ambcore.models.adapters import prepare_plm
from ambcore.models.checkpoint import PretrainedMixin
from ambcore.models.encoders import SequenceEncoder
from ambcore.models.families import family_of, plm_layers
from ambcore.models.fusion import AVSequences, FusionLayer, LayerwiseFusion, build_fusion
from ambcore.models.outputs import ModelOutput
from ambcore.models.plm import load_plm
from ambcore.models.shift import register_shift, shifting

__all__ = [
    "AMB",
    "FusionLayer",
    "LayerwiseFusion",
    "Predictor",
    "build_heads",
    "wants_pooler",
    "set_pooler",
    "design_of",
    "reduce_to_cls_sep",
    "check_feature_dims",
]


class Predictor(nn.Module):
    """[fused ; [CLS]_L] -> sentiment score (6.2.6): one linear layer, or one hidden layer if asked."""

    def __init__(self, in_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        if hidden > 0:
            self.head = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
            )
        else:
            self.head = nn.Linear(in_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: (B, P + H)
        return self.head(self.dropout(features)).squeeze(-1)  # (B,)


def reduce_to_cls_sep(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep each row's first token ([CLS]) and last real token ([SEP]): the no-text input."""
    # input_ids, attention_mask, token_type_ids: (B, T)
    last = (attention_mask.sum(dim=1) - 1).clamp(min=0)[:, None]  # (B, 1)
    ids = torch.cat([input_ids[:, :1], input_ids.gather(1, last)], dim=1)  # (B, 2)
    types = torch.cat([token_type_ids[:, :1], token_type_ids.gather(1, last)], dim=1)  # (B, 2)
    return ids, torch.ones_like(ids), types


def check_feature_dims(batch: Batch, visual_dim: int, acoustic_dim: int) -> None:
    """A clear error when the data's feature sizes are not the ones the model was built for."""
    for name, tensor, expected in (
        ("visual", batch.visual, visual_dim),
        ("acoustic", batch.acoustic, acoustic_dim),
    ):
        if tensor.dim() != 3 or tensor.shape[-1] != expected:
            raise ModelConfigError(
                f"batch.{name}: the model was built for {name} features of shape (B, L, {expected}), "
                f"got {tuple(tensor.shape)}; build the model with the dataset's {name}_dim"
            )


def build_heads(
    cfg, hidden: int, n_layers: int, visual_dim: int, acoustic_dim: int
) -> dict[str, nn.Module]:
    """AMB's trainable modules outside the PLM, by attribute name: the visual and acoustic
    encoders (not for ``variant="text-only"``), the layer-wise fusion and the predictor.

    Shared by ``AMB`` and the budget (``ambcore.models.budget``), which counts them for a PLM
    of width ``hidden`` and depth ``n_layers`` without building the PLM.
    """
    heads: dict[str, nn.Module] = {}
    use_av = cfg.variant != "text-only"
    if use_av:
        encoder_args = dict(
            encoder_dim=cfg.encoder_dim,
            n_layers=cfg.encoder_layers,
            n_heads=cfg.encoder_heads,
            ffn_dim=cfg.encoder_ffn_dim,
            dropout=cfg.dropout,
        )
        heads["visual_encoder"] = SequenceEncoder(visual_dim, **encoder_args)
        heads["acoustic_encoder"] = SequenceEncoder(acoustic_dim, **encoder_args)
    heads["fusion"] = build_fusion(cfg, hidden, n_layers, use_av)
    heads["predictor"] = Predictor(cfg.fusion_proj_dim + hidden, cfg.predictor_hidden, cfg.dropout)
    return heads


DESIGN_KEYS = ("cls_projection", "fusion_connect", "adapter_placement", "encoder_dim")
# Designs beyond the thesis (ambcore.models.fusion), named only when not the thesis' own.
BEYOND_KEYS = {"fusion_module": "ffn", "fusion_feedback": "none"}


def design_of(cfg) -> str:
    """The AMB design choices of ``cfg`` in one line, e.g. for error messages and tables."""
    keys = list(DESIGN_KEYS) + [k for k, thesis in BEYOND_KEYS.items() if getattr(cfg, k) != thesis]
    return ", ".join(f"{key}={getattr(cfg, key)!r}" for key in keys)


def wants_pooler(cfg, train_embeddings: bool) -> bool:
    """Whether AMB-FT carries BERT's pooler: fine-tuned with the embeddings when
    ``amb_finetune_pooler`` says so, as MISA's freezing loop leaves it trainable (never read)."""
    return cfg.text_adaptation == "finetune" and cfg.amb_finetune_pooler and train_embeddings


def set_pooler(plm: nn.Module, wanted: bool) -> nn.Module:
    """Give ``plm`` a BERT pooler (seeded random weights if it has none) or remove it.

    The pooler is attached after loading, so the PLM's own weights do not depend on it (a random
    PLM built with a pooler draws its weights differently); its weights never matter, as AMB
    never reads the pooled output. A family without a pooler (DeBERTa, ELECTRA;
    ``ambcore.models.families``) has none to carry and gets none."""
    has = getattr(plm, "pooler", None) is not None
    if wanted and not has and family_of(plm.config).pooler:
        # lazy: BERT's modeling code loads torch._dynamo and torch._inductor (about a second)
        from transformers.models.bert.modeling_bert import BertPooler

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            param = next(plm.parameters())
            plm.pooler = BertPooler(plm.config).to(param.device, param.dtype)
    elif has and not wanted:
        plm.pooler = None
    return plm


class AMB(PretrainedMixin, nn.Module):
    """Adapted Multimodal BERT (thesis 6.2); see the module docstring for every choice."""

    # The PLM sees the text only: ``text_features`` can be computed once for passes whose
    # visual/acoustic input changes and whose text does not (ambcore.models.text_cache).
    text_is_av_independent = True

    def __init__(self, cfg, visual_dim: int, acoustic_dim: int, plm: nn.Module | None = None):
        super().__init__()
        if cfg.model != "amb":
            raise ModelConfigError(f"AMB built from a config with model={cfg.model!r}")
        for name, dim in (("visual_dim", visual_dim), ("acoustic_dim", acoustic_dim)):
            if not isinstance(dim, int) or dim < 1:
                raise ModelConfigError(f"AMB: {name} must be a positive int, got {dim!r}")
        self.cfg = cfg
        self.visual_dim = visual_dim
        self.acoustic_dim = acoustic_dim
        # AMB-FT with last:K trains the embeddings too unless amb_finetune_embeddings=False.
        train_embeddings = True if cfg.finetune_layers == "all" else cfg.amb_finetune_embeddings
        pooler = wants_pooler(cfg, train_embeddings)
        plm = load_plm(cfg) if plm is None else plm  # the same PLM weights with or without a pooler
        self.plm = prepare_plm(set_pooler(plm, pooler), cfg, train_embeddings=train_embeddings)
        hidden = self.plm.config.hidden_size
        n_layers = self.plm.config.num_hidden_layers

        self.use_av = cfg.variant != "text-only"
        for name, module in build_heads(cfg, hidden, n_layers, visual_dim, acoustic_dim).items():
            setattr(self, name, module)
        self.feeds_back = cfg.fusion_feedback == "shift"
        if self.feeds_back:
            # The fused state of layer l shifts the input of layer l + 1 (ambcore.models.fusion):
            # the text states depend on the AV input, nothing is text-only.
            self.text_is_av_independent = False
            for layer in plm_layers(self.plm)[1:]:
                register_shift(layer)

    def component_of(self, param_name: str) -> str:
        """Which component a parameter belongs to (used by ``count_parameters``)."""
        if param_name.startswith("plm."):
            return "adapters" if ".adapter." in param_name else "plm"
        if param_name.startswith(("visual_encoder.", "acoustic_encoder.")):
            return "encoders"
        return param_name.split(".", 1)[0]  # "fusion" (feedback shift included) | "predictor"

    def _text_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The PLM's inputs: the batch's text, ``[CLS] [SEP]`` only for the no-text variant."""
        input_ids, attention_mask, token_type_ids = (
            batch.input_ids,
            batch.attention_mask,
            batch.token_type_ids,
        )
        if self.cfg.variant == "no-text":
            input_ids, attention_mask, token_type_ids = reduce_to_cls_sep(
                input_ids, attention_mask, token_type_ids
            )
        return dict(
            input_ids=input_ids,  # (B, T)
            attention_mask=attention_mask,  # (B, T)
            token_type_ids=token_type_ids,  # (B, T)
        )

    def text_features(self, batch: Batch) -> torch.Tensor:
        """The adapted PLM's [CLS] state after every layer (6.2.2, 6.2.3): (B, L, H).

        The PLM reads the text alone (the no-text variant's ``[CLS] [SEP]`` included), so these
        states do not depend on the visual and acoustic input: a pass whose text is unchanged
        (visual/acoustic noise, thesis 6.3.4) can reuse them through ``forward(batch, text=...)``.
        With ``fusion_feedback="shift"`` they do depend on it, and there are none to reuse.
        """
        if self.feeds_back:
            raise ModelConfigError(
                "fusion_feedback='shift': the PLM's states depend on the visual/acoustic input "
                "(the fused states shift them), so AMB has no text-only features; predict in full"
            )
        text = self.plm(**self._text_inputs(batch), output_hidden_states=True)
        # hidden_states: L + 1 tensors (B, T, H); [0] is the embedding output, not fused.
        return torch.stack([h[:, 0] for h in text.hidden_states[1:]], dim=1)  # (B, L, H)

    def _av_input(self, batch: Batch) -> tuple[object, torch.Tensor | None]:
        """(what the fusion reads of the AV input, the AV token): the AV token (B, 2E) twice
        (``fusion_module="ffn"``), or the encoders' ``AVSequences`` and the token made of
        their [CLS] positions (``"cross_attention"``); (None, None) for text-only."""
        if not self.use_av:
            return None, None
        if self.cfg.fusion_module == "cross_attention":
            sequences = AVSequences(
                *self.visual_encoder.sequence(batch.visual, batch.visual_lengths),
                *self.acoustic_encoder.sequence(batch.acoustic, batch.acoustic_lengths),
            )  # (B, 1+Lv, E), (B, 1+Lv), (B, 1+La, E), (B, 1+La)
            return sequences, sequences.token()  # ..., (B, 2E)
        visual = self.visual_encoder(batch.visual, batch.visual_lengths)  # (B, E)
        acoustic = self.acoustic_encoder(batch.acoustic, batch.acoustic_lengths)  # (B, E)
        av = torch.cat([visual, acoustic], dim=-1)  # (B, 2E)
        return av, av

    def _fuse_with_feedback(self, batch: Batch, av) -> tuple[torch.Tensor, ...]:
        """One PLM pass in which fusion layer l runs on layer l's [CLS] state as it leaves the
        layer and its ``f_l`` shifts the states entering layer l + 1 (``fusion_feedback``).
        Returns (summary (B, P), fused_states (B, L, P), last [CLS] (B, H))."""
        fusion, chained = self.fusion, self.cfg.fusion_connect == "chain"
        context = fusion.context(av)
        fused: list[torch.Tensor] = []

        def fuse(i: int, hidden: torch.Tensor) -> torch.Tensor:
            # hidden: (B, T, H), layer i's output; its [CLS] state is fusion layer i's input
            prev = fused[-1] if (chained and i > 0) else None
            fused.append(fusion.step(i, fusion.project(hidden[:, 0]), context, prev))  # (B, P)
            return hidden

        def fuse_and_shift(i: int, hidden: torch.Tensor) -> torch.Tensor:
            return fusion.feedback(fuse(i, hidden), fused[-1])  # (B, T, H) into layer i + 1

        layers = plm_layers(self.plm)
        shifts = {
            layers[i + 1]: functools.partial(fuse_and_shift, i) for i in range(len(layers) - 1)
        }
        with shifting(shifts):
            out = self.plm(**self._text_inputs(batch))
        last_cls = out.last_hidden_state[:, 0]  # (B, H), the last layer's (no layer follows)
        fuse(len(layers) - 1, out.last_hidden_state)
        summary, fused_states = fusion.summarize(fused)  # (B, P), (B, L, P)
        return summary, fused_states, last_cls

    def forward(self, batch: Batch, text: torch.Tensor | None = None) -> ModelOutput:
        """Predict a batch (6.2); ``text``: this batch's ``text_features`` if already computed
        (the same result, bitwise, as computing them here)."""
        check_feature_dims(batch, self.visual_dim, self.acoustic_dim)
        if self.feeds_back:
            if text is not None:
                self.text_features(batch)  # refuses: there are no text-only features
            av, av_token = self._av_input(batch)  # the AV input first: the PLM pass reads it
            fused, fused_states, last_cls = self._fuse_with_feedback(batch, av)
        else:
            # the text first, then the AV encoders (the order of their dropout draws)
            cls_states = self.text_features(batch) if text is None else text  # (B, L, H)
            av, av_token = self._av_input(batch)
            fused, fused_states = self.fusion(cls_states, av)  # (B, P), (B, L, P)
            last_cls = cls_states[:, -1]  # (B, H)
        prediction = self.predictor(torch.cat([fused, last_cls], dim=-1))  # (B,)
        return ModelOutput(
            prediction=prediction,
            aux_loss=None,
            fused_states=fused_states,
            text_summary=last_cls,
            av_token=av_token,
        )
