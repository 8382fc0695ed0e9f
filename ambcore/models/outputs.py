"""The typed output every model returns from ``forward(batch)`` (thesis 6.2.6).

The trainer's loss is ``cfg.loss(prediction, labels) + aux_loss`` (``aux_loss`` is None for
AMB; MISA adds its similarity/difference/reconstruction terms there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["ModelOutput"]


@dataclass
class ModelOutput:
    prediction: torch.Tensor  # (B,) sentiment score
    aux_loss: torch.Tensor | None = (
        None  # () weighted sum of auxiliary losses, added by the trainer
    )
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> () unweighted
    # AMB: the fused representation after each PLM layer, for analysis.
    fused_states: torch.Tensor | None = None  # (B, L, F)
    text_summary: torch.Tensor | None = None  # (B, H) the last layer's [CLS] state
    av_token: torch.Tensor | None = (
        None  # (B, 2E) visual and acoustic [CLS] states; None if text-only
    )
