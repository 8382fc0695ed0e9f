"""Visual and acoustic encoders (thesis 6.2.4, 6.3.1).

Each modality's feature sequence (FACET frames, COVAREP frames) is projected to
``encoder_dim``, a learnable [CLS] vector is prepended, and a 2-layer, 1-head transformer
encoder runs over it; the [CLS] output summarises the sequence ("prepending a learnable [CLS]
token and collecting this as a semantic summary works best", 6.3.1).

Choices the thesis leaves open:
- Sinusoidal positions are added to the feature steps (not to [CLS]); without them a
  transformer encoder is blind to order. They have no parameters.
- Padding is masked with a key-padding mask built from the true lengths, so extra padding
  changes nothing; [CLS] is never masked, so an empty sequence still has a summary.

``forward`` returns the [CLS] summary (AMB's AV token); ``sequence`` returns the whole output
sequence with its padding mask, for fusion that attends over it (``ambcore.models.fusion``,
``fusion_module="cross_attention"``). Both run the same computation: the summary is position 0
of the sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SequenceEncoder", "sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine/cosine position codes (Vaswani et al. 2017)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class SequenceEncoder(nn.Module):
    """Feature sequence (B, L, D) with true lengths -> summary (B, encoder_dim), or the whole
    output sequence with its padding mask (``sequence``)."""

    def __init__(
        self,
        input_dim: int,
        encoder_dim: int,
        n_layers: int = 2,
        n_heads: int = 1,
        ffn_dim: int = 256,
        dropout: float = 0.1,
        max_len: int = 1024,
    ):
        super().__init__()
        self.input_dim = input_dim
        self.input_proj = nn.Linear(input_dim, encoder_dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, encoder_dim))
        nn.init.normal_(self.cls, std=0.02)
        # Not saved in checkpoints: recomputed from the shape.
        self.register_buffer(
            "positions", sinusoidal_positions(max_len, encoder_dim), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            d_model=encoder_dim,
            nhead=n_heads,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            batch_first=True,
        )
        # enable_nested_tensor=False: the same (dense) code path in training and inference.
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # features: (B, L, D), lengths: (B,)
        hidden, _ = self.sequence(features, lengths)  # (B, 1+L, E)
        return hidden[:, 0]  # (B, E) the [CLS] summary

    def sequence(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The output at [CLS] and at every step, (B, 1+L, E), and the padding mask (B, 1+L)
        (True = padding; [CLS] never is). Padded positions hold values that mean nothing."""
        # features: (B, L, D), lengths: (B,)
        batch, steps, _ = features.shape
        positions = self.positions[:steps]  # (L, E)
        if steps > self.positions.shape[0]:  # longer than any MOSEI layout; computed on the fly
            positions = sinusoidal_positions(steps, self.positions.shape[1]).to(features)
        hidden = self.input_proj(features) + positions  # (B, L, E)
        hidden = torch.cat([self.cls.expand(batch, -1, -1), hidden], dim=1)  # (B, 1+L, E)
        step = torch.arange(steps, device=features.device)
        padding = step[None, :] >= lengths[:, None]  # (B, L) True = padding
        padding = torch.cat([padding.new_zeros(batch, 1), padding], dim=1)  # (B, 1+L)
        hidden = self.encoder(hidden, src_key_padding_mask=padding)  # (B, 1+L, E)
        return hidden, padding  # (B, 1+L, E), (B, 1+L)
