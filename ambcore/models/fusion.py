"""AMB's layer-wise fusion (thesis 6.2.5) and two designs beyond the thesis (7.2, Future Work).

One fusion layer per PLM layer l = 1..L reads ``p_l``, the layer's [CLS] state projected from H
to P = ``fusion_proj_dim`` (``cls_projection``: one shared map, or one per layer), and an
audio-visual context, and an FFN (``Linear -> ReLU -> Dropout -> Linear``, hidden
``fusion_hidden``) maps ``[p_l ; context_l (; f_{l-1})]`` to the fused state ``f_l`` (P). With
``fusion_connect="chain"``, ``f_l = f_{l-1} + FFN_l(...)`` for l >= 2 (``ambcore.models.amb``
explains both wirings). What the context is, is ``cfg.fusion_module``:

- ``"ffn"`` (the thesis, the default; ``LayerwiseFusion``): the AV token, the concatenated
  [CLS] summaries of the visual and acoustic encoders (2E), the same for every layer.
- ``"cross_attention"`` (``CrossAttentionFusion``): "the only part of the architecture that
  would have to change would be the feedforward network in the fusion layer" (7.2). At each
  layer ``p_l`` attends (multi-head attention, ``fusion_heads`` heads of width P / heads) over
  the encoders' whole output sequences, their [CLS] positions included: keys and values are
  the visual and acoustic outputs (B, 1 + Lv, E) and (B, 1 + La, E), each projected to P by
  its own linear map (shared by all layers), with their padding masked. The attended vector
  (P) takes the AV token's place in the FFN's input; the chain and the predictor are unchanged.
  Our choices: the query is ``p_l`` alone (not ``f_{l-1}``), one attention block per layer,
  no residual or normalisation around it (the FFN that follows mixes it with ``p_l``).

``cfg.fusion_feedback="shift"`` (``FeedbackShift``; the default ``"none"`` is the thesis)
feeds the fused state back into the PLM: ``f_l`` shifts the token states that enter PLM layer
l + 1, by MAG-BERT's gated displacement and norm-ratio bound (``ambcore.models.shift``, the
same functions MAG-BERT's gate uses) with ``f_l`` as the one source for every token::

    h  = ReLU(W_g [f_l ; z]) * (W_f f_l)        alpha = min(||z|| / ||h|| * beta, 1)
    z' = z + Dropout(alpha * h)

One shift module serves every layer (MAG-BERT has one gate too). Unlike MAG-BERT's gate it
adds no LayerNorm of its own and ``W_f`` starts at zero, so, like the adapters, a fresh model
computes exactly what AMB without feedback computes (a new LayerNorm after every frozen layer
would not). ``beta`` is ``cfg.feedback_beta_shift``. The PLM stays as ``text_adaptation``
says (frozen with adapters); the shift trains with the fusion. The text states then depend on
the audio-visual input, so the model offers no text-only part (``text_is_av_independent``).

Every module here reads a validated ``Config``; the allowed values are ``ambcore.config``'s.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ambcore.models.shift import bounded_shift, gated_displacement

__all__ = [
    "AVSequences",
    "FusionLayer",
    "LayerwiseFusion",
    "CrossAttentionFusion",
    "FeedbackShift",
    "build_fusion",
]


class AVSequences(NamedTuple):
    """The visual and acoustic encoders' output sequences, [CLS] first, with padding masks."""

    visual: torch.Tensor  # (B, 1 + Lv, E)
    visual_padding: torch.Tensor  # (B, 1 + Lv) True = padding; the [CLS] position never is
    acoustic: torch.Tensor  # (B, 1 + La, E)
    acoustic_padding: torch.Tensor  # (B, 1 + La)

    def token(self) -> torch.Tensor:
        """The AV token: the two [CLS] summaries side by side, (B, 2E)."""
        return torch.cat([self.visual[:, 0], self.acoustic[:, 0]], dim=-1)  # (B, 2E)


class FusionLayer(nn.Module):
    """One FFN-Fusion layer (6.2.5): ``[p_l ; context (; f_prev)]`` -> fused state (P).

    With ``own_projection`` (``cls_projection="per_layer"``) the layer projects its [CLS] state
    itself (``cls_proj``: H -> P); otherwise it receives the shared projection's output ``p_l``.
    ``av_dim`` is the width of the AV context: 2E (the AV token), P (cross-attention) or 0.
    """

    def __init__(
        self,
        hidden_size: int,
        proj_dim: int,
        av_dim: int,
        prev_dim: int,
        ffn_hidden: int,
        dropout: float,
        own_projection: bool = True,
    ):
        super().__init__()
        if own_projection:
            self.cls_proj = nn.Linear(hidden_size, proj_dim)  # "projected to a lower dimension"
        self.ffn = nn.Sequential(
            nn.Linear(proj_dim + av_dim + prev_dim, ffn_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_hidden, proj_dim),
        )

    def project(self, cls_state: torch.Tensor) -> torch.Tensor:
        """``p_l``: the layer's own projection of its [CLS] state, or the shared one's output."""
        # cls_state: (B, H) with its own projection, else (B, P)
        return self.cls_proj(cls_state) if hasattr(self, "cls_proj") else cls_state  # (B, P)

    def forward(self, cls_state: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        # cls_state: (B, H) or (B, P) (see project); context: [av (B, 2E)] and/or [f_prev (B, P)]
        return self.ffn(torch.cat([self.project(cls_state), *context], dim=-1))  # (B, P)


class LayerwiseFusion(nn.Module):
    """L fusion layers over the per-layer [CLS] states, the AV token as context (``"ffn"``).

    ``connect``: ``"chain"`` | ``"independent"``; ``cls_projection``: ``"shared"`` (one H -> P
    map for every layer, ``cls_proj``) | ``"per_layer"`` (one per layer, ``layers[l].cls_proj``).
    """

    def __init__(
        self,
        n_layers: int,
        hidden_size: int,
        proj_dim: int,
        av_dim: int,
        ffn_hidden: int,
        dropout: float,
        connect: str = "chain",
        cls_projection: str = "shared",
    ):
        super().__init__()
        self.connect = connect
        self.cls_projection = cls_projection
        if cls_projection == "shared":
            self.cls_proj = nn.Linear(hidden_size, proj_dim)
        self.layers = nn.ModuleList(
            FusionLayer(
                hidden_size,
                proj_dim,
                av_dim,
                prev_dim=proj_dim if (connect == "chain" and i > 0) else 0,
                ffn_hidden=ffn_hidden,
                dropout=dropout,
                own_projection=cls_projection == "per_layer",
            )
            for i in range(n_layers)
        )
        self.out_dim = proj_dim

    def project(self, cls_states: torch.Tensor) -> torch.Tensor:
        """The shared projection (``cls_projection="shared"``); per-layer ones act in ``step``."""
        # cls_states: (B, L, H) or (B, H)
        if self.cls_projection == "shared":
            return self.cls_proj(cls_states)  # (B, L, P) or (B, P)
        return cls_states

    def context(self, av: torch.Tensor | None) -> list[torch.Tensor]:
        """What every layer reads of the AV input, computed once per batch: ``[av]`` or ``[]``."""
        # av: (B, 2E) or None (text-only)
        return [] if av is None else [av]

    def attend(self, i: int, projected: torch.Tensor, context) -> list[torch.Tensor]:
        """Layer ``i``'s AV input: the AV token as it is."""
        return context

    def step(
        self, i: int, cls_state: torch.Tensor, context, prev: torch.Tensor | None
    ) -> torch.Tensor:
        """Fusion layer ``i``: ``f_i`` from its [CLS] state (after ``project``), the context and,
        chained, ``f_{i-1}`` (``prev``); (B, P)."""
        # cls_state: (B, P) or (B, H) (per-layer projection); prev: (B, P) or None
        layer = self.layers[i]
        projected = layer.project(cls_state)  # (B, P)
        inputs = [projected, *self.attend(i, projected, context)]
        if prev is None:
            return layer.ffn(torch.cat(inputs, dim=-1))  # (B, P)
        return prev + layer.ffn(torch.cat([*inputs, prev], dim=-1))  # (B, P)

    def summarize(self, fused: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictor's fused input (the last ``f_L`` chained, else the mean) and all ``f_l``."""
        fused_states = torch.stack(fused, dim=1)  # (B, L, P)
        summary = fused_states[:, -1] if self.connect == "chain" else fused_states.mean(dim=1)
        return summary, fused_states  # (B, P), (B, L, P)

    def forward(self, cls_states: torch.Tensor, av) -> tuple[torch.Tensor, torch.Tensor]:
        # cls_states: (B, L, H); av: (B, 2E) or None ("ffn"), AVSequences ("cross_attention")
        projected = self.project(cls_states)  # (B, L, P), or (B, L, H) per-layer
        context = self.context(av)
        fused: list[torch.Tensor] = []
        for i in range(len(self.layers)):
            prev = fused[-1] if (self.connect == "chain" and i > 0) else None
            fused.append(self.step(i, projected[:, i], context, prev))  # (B, P)
        return self.summarize(fused)  # (B, P), (B, L, P)


class CrossAttentionFusion(LayerwiseFusion):
    """Fusion layers whose AV context is attended over the encoders' output sequences
    (``fusion_module="cross_attention"``; see the module doc)."""

    def __init__(
        self,
        n_layers: int,
        hidden_size: int,
        proj_dim: int,
        encoder_dim: int,
        ffn_hidden: int,
        dropout: float,
        connect: str = "chain",
        cls_projection: str = "shared",
        heads: int = 4,
    ):
        super().__init__(
            n_layers, hidden_size, proj_dim, proj_dim, ffn_hidden, dropout, connect, cls_projection
        )
        # keys and values: each modality's encoder outputs projected to P, shared by all layers
        self.visual_memory = nn.Linear(encoder_dim, proj_dim)
        self.acoustic_memory = nn.Linear(encoder_dim, proj_dim)
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(proj_dim, heads, dropout=dropout, batch_first=True)
            for _ in range(n_layers)
        )

    def context(self, av: AVSequences) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys/values of every layer's attention and their padding mask."""
        memory = torch.cat(
            [self.visual_memory(av.visual), self.acoustic_memory(av.acoustic)], dim=1
        )  # (B, S, P) with S = (1 + Lv) + (1 + La)
        padding = torch.cat([av.visual_padding, av.acoustic_padding], dim=1)  # (B, S)
        return memory, padding

    def attend(self, i: int, projected: torch.Tensor, context) -> list[torch.Tensor]:
        """``p_i`` attends over the AV sequences: the attended vector, (B, P)."""
        # projected: (B, P)
        memory, padding = context  # (B, S, P), (B, S)
        attended, _ = self.attention[i](
            projected[:, None], memory, memory, key_padding_mask=padding, need_weights=False
        )  # (B, 1, P)
        return [attended[:, 0]]  # (B, P)


class FeedbackShift(nn.Module):
    """``z -> z + Dropout(alpha * h)``: the fused state ``f`` shifts the token states ``z`` that
    enter the next PLM layer (``fusion_feedback="shift"``; see the module doc)."""

    def __init__(self, hidden_size: int, proj_dim: int, beta_shift: float, dropout: float):
        super().__init__()
        self.gate = nn.Linear(proj_dim + hidden_size, hidden_size)
        self.project = nn.Linear(proj_dim, hidden_size)
        nn.init.zeros_(self.project.weight)  # a fresh shift moves nothing (like the adapters)
        nn.init.zeros_(self.project.bias)
        self.beta_shift = beta_shift
        self.dropout = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        # z: (B, T, H) token states; fused: (B, P), the same for every token of an utterance
        source = fused[:, None].expand(-1, z.shape[1], -1)  # (B, T, P)
        h = gated_displacement(z, [(self.gate, self.project, source)])  # (B, T, H)
        return z + self.dropout(bounded_shift(z, h, self.beta_shift))  # (B, T, H)


def build_fusion(cfg, hidden_size: int, n_layers: int, use_av: bool) -> LayerwiseFusion:
    """The fusion of ``cfg`` for a PLM of width ``hidden_size`` and depth ``n_layers``:
    ``cfg.fusion_module``'s layers, with the ``FeedbackShift`` as ``feedback`` if asked."""
    shared = dict(
        n_layers=n_layers,
        hidden_size=hidden_size,
        proj_dim=cfg.fusion_proj_dim,
        ffn_hidden=cfg.fusion_hidden,
        dropout=cfg.dropout,
        connect=cfg.fusion_connect,
        cls_projection=cfg.cls_projection,
    )
    if cfg.fusion_module == "cross_attention":  # config: needs the AV sequences (not text-only)
        fusion = CrossAttentionFusion(encoder_dim=cfg.encoder_dim, heads=cfg.fusion_heads, **shared)
    else:
        fusion = LayerwiseFusion(av_dim=2 * cfg.encoder_dim if use_av else 0, **shared)
    if cfg.fusion_feedback == "shift":
        fusion.feedback = FeedbackShift(
            hidden_size, cfg.fusion_proj_dim, cfg.feedback_beta_shift, cfg.dropout
        )
    return fusion
