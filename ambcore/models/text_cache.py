"""Text features computed once and reused across passes whose text is unchanged (thesis 6.3.4).

The robustness curves (``ambcore.robustness``, figure 6.3) predict the test split once per
noise condition and draw. Visual and acoustic noise leaves the text as it is, and where the
language model reads the text alone its output is the same in every such pass. A model says
so with the class attribute ``text_is_av_independent = True`` and offers

- ``text_features(batch)``: the part of ``forward`` that depends on the text only
  (AMB, 6.2: the adapted PLM's per-layer [CLS] states, (B, L, H); MISA: the mean of the PLM's
  last hidden states, (B, H)), and
- ``forward(batch, text=features)``: the rest, bitwise the same as ``forward(batch)``.

MAG-BERT shifts BERT's token states by the visual and acoustic features, so no part of its
prediction depends on the text alone (``text_is_av_independent = False``): it is predicted in
full in every pass. So is AMB with ``fusion_feedback="shift"``, whose fused states shift the
PLM's token states (the attribute is then False on the instance).

``TextCache`` keeps the text features of each evaluation batch, keyed by the batch's utterance
ids, and checks at every reuse that the batch's text tensors are the ones the features were
computed from (a changed text is an error, never a stale prediction). It stores the features
only (for AMB the (B, L, H) [CLS] states, not every hidden state) and a copy of the text ids.
"""

from __future__ import annotations

import torch
from torch import nn

from ambcore.data.types import Batch
from ambcore.models.outputs import ModelOutput

__all__ = ["TextCache", "reuses_text"]


def reuses_text(model: nn.Module) -> bool:
    """Whether ``model``'s text features do not depend on the visual and acoustic input."""
    return bool(getattr(model, "text_is_av_independent", False))


def _text_inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    return batch.input_ids, batch.attention_mask, batch.token_type_ids  # each (B, T)


class TextCache:
    """``model(batch)`` with each batch's ``text_features`` computed on first sight, then reused.

    Serve only passes whose text is the clean one (visual/acoustic noise, or none); the
    batches must come in the same composition every time (keyed by ``batch.ids``)."""

    def __init__(self, model: nn.Module):
        if not reuses_text(model):
            raise ValueError(
                f"{type(model).__name__}: its text features depend on the visual/acoustic input "
                "(text_is_av_independent is not True); predict it in full"
            )
        self.model = model
        self._entries: dict[tuple[str, ...], tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, batch: Batch) -> ModelOutput:
        key = tuple(batch.ids)
        entry = self._entries.get(key)
        if entry is None:
            features = self.model.text_features(batch)
            self._entries[key] = (tuple(t.clone() for t in _text_inputs(batch)), features)
            self.misses += 1
        else:
            inputs, features = entry
            if not all(torch.equal(a, b) for a, b in zip(inputs, _text_inputs(batch))):
                raise ValueError(
                    f"TextCache: the text of the batch of ids {list(key)[:3]}... differs from the "
                    "one its features were computed from; serve only passes whose text is unchanged"
                )
            self.hits += 1
        return self.model(batch, text=features)
