"""MISA (Hazarika, Zimmermann and Poria, ACM MM 2020), the state of the art of thesis 5.3/6.3.2.

MISA projects every modality into a shared (modality-invariant) and a private
(modality-specific) subspace, regularised by similarity (CMD), difference (soft orthogonality)
and reconstruction losses (``ambcore.models.losses``), then fuses the six vectors with a small
transformer. The thesis compares AMB with MISA fine-tuned (table 6.1) and builds
"MISA-Adapters", MISA over a frozen BERT with bottleneck adapters (table 6.2). Here both come
from one class: ``cfg.text_adaptation`` = ``"finetune"`` (original), ``"adapters"``
(MISA-Adapters, via ``ambcore.models.adapters``) or ``"frozen"``.

Architecture facts read from the public code (github.com/declare-lab/MISA, ``src/models.py``,
``src/solver.py``, ``src/config.py``); the code here is our own:

- text: BERT's last hidden states averaged over the tokens -> Linear(768, hidden), ReLU,
  LayerNorm.
- visual / acoustic: two stacked bidirectional LSTMs over the packed true-length sequence,
  LayerNorm between them; the hidden size of each LSTM equals the modality's feature size
  (35 for MOSEI visual, 74 acoustic); the utterance vector is the concatenation of both layers'
  final forward and backward states (4 x feature size) -> Linear(4D, hidden), ReLU, LayerNorm.
  ``weight_hh`` of the LSTMs is orthogonally initialised (solver).
- private encoders: one Linear(hidden, hidden) + sigmoid per modality; shared encoder: one
  Linear(hidden, hidden) + sigmoid applied to all three modalities.
- reconstruction: one Linear(hidden, hidden) per modality applied to shared + private; the
  target is the projected utterance vector.
- fusion: the six vectors (private t, v, a, shared t, v, a) as a sequence through one
  ``nn.TransformerEncoderLayer(d_model=hidden, nhead=2)`` (PyTorch defaults: feed-forward 2048,
  dropout 0.1, ReLU, post-norm), concatenated (6 x hidden) -> Linear(6h, 3h), Dropout(0.5),
  ReLU, Linear(3h, 1).
- MOSEI settings: hidden 128, dropout 0.5, Adam lr 1e-4, batch 16, gradient clipping by VALUE
  at 1.0 (``clip_grad_value_``), patience 6, MSE task loss, diff/sim/recon weights 0.3/1.0/1.0,
  CMD with 5 moments; BERT layers 0-8 frozen, embeddings + layers 9-11 (+ pooler) trained.
  ``ORIGINAL_MOSEI_SETTINGS`` below lists these as config overrides.

Deliberate differences (each keeps results comparable across models in this project):

- the text mean is taken over real tokens only (the original also averages the padding, which
  makes a prediction depend on how long the other sentences in its batch are);
- each of visual/acoustic is packed by its own true length (the original uses the word count
  for both, which is the same number on word-aligned data);
- the unused parts of the original are not built: the shared/private discriminator
  (``sp_weight`` = 0), the text LSTMs' LayerNorm (GloVe mode only) and BERT's pooler. The
  parameter budget (``ambcore.models.budget``) lists what this removes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ambcore.data.types import Batch
from ambcore.errors import ModelConfigError
from ambcore.models.adapters import prepare_plm
from ambcore.models.checkpoint import PretrainedMixin
from ambcore.models.losses import (
    misa_difference_loss,
    misa_reconstruction_loss,
    misa_similarity_loss,
)
from ambcore.models.outputs import ModelOutput
from ambcore.models.plm import load_plm

__all__ = ["MISA", "ORIGINAL_MOSEI_SETTINGS", "SequenceEncoder"]

MODALITIES = ("t", "v", "a")

# The original MOSEI configuration (declare-lab/MISA src/config.py and src/solver.py) as config
# overrides: ``apply_overrides(get_config("paper"), ORIGINAL_MOSEI_SETTINGS)``. Not applied
# automatically: every model in this project trains with the same trainer settings unless a
# run asks otherwise (ambcore.experiments applies it to the MISA cells). Gradients are clipped
# by VALUE at 1.0; when patience runs out the original reloads the best model and optimizer
# state and halves the learning rate, three "trials" in all: ``lr_halvings=2`` (the third time
# it stops). One difference: the original's patience counter allows patience + 1 epochs
# without improvement, ours ``patience``.
ORIGINAL_MOSEI_SETTINGS: dict[str, object] = {
    "model": "misa",
    "text_adaptation": "finetune",
    "finetune_layers": "last:3",
    "misa_finetune_embeddings": True,
    "misa_hidden": 128,
    "misa_dropout": 0.5,
    "misa_diff_weight": 0.3,
    "misa_sim_weight": 1.0,
    "misa_recon_weight": 1.0,
    "misa_cmd_moments": 5,
    "misa_fusion_ffn_dim": 2048,
    "lr": 1e-4,
    "batch_size": 16,
    "grad_clip": 1.0,
    "grad_clip_mode": "value",
    "lr_halvings": 2,
    "patience": 6,
    "loss": "mse",
}


class SequenceEncoder(nn.Module):
    """Two stacked bidirectional LSTMs with a LayerNorm between them (MISA's ``extract_features``).

    The output (B, 4D) concatenates the final forward/backward states of both layers.
    """

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.rnn1 = nn.LSTM(feature_dim, feature_dim, bidirectional=True, batch_first=True)
        self.norm = nn.LayerNorm(2 * feature_dim)
        self.rnn2 = nn.LSTM(2 * feature_dim, feature_dim, bidirectional=True, batch_first=True)
        for name, param in self.named_parameters():
            if "weight_hh" in name:
                nn.init.orthogonal_(param)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D), lengths: (B,). A zero-length sequence is read as one zero step.
        lengths = lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out1, (h1, _) = self.rnn1(packed)  # h1: (2, B, D)
        padded1, _ = pad_packed_sequence(out1, batch_first=True)  # (B, L', 2D)
        packed2 = pack_padded_sequence(
            self.norm(padded1), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h2, _) = self.rnn2(packed2)  # (2, B, D)
        batch = x.shape[0]
        return torch.cat([h1.transpose(0, 1), h2.transpose(0, 1)], dim=1).reshape(batch, -1)


def _projection(in_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.LayerNorm(hidden))


def _sigmoid_layer(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())


class MISA(PretrainedMixin, nn.Module):
    """MISA over a BERT-family PLM; ``forward(batch) -> ModelOutput`` with the auxiliary losses.

    ``save_pretrained(dir)`` (from ``PretrainedMixin``) stores the trainable tensors only.
    """

    model_name = "misa"
    # The PLM sees the text only: ``text_features`` can be computed once for passes whose
    # visual/acoustic input changes and whose text does not (ambcore.models.text_cache).
    text_is_av_independent = True

    def __init__(self, cfg, visual_dim: int, acoustic_dim: int):
        super().__init__()
        if cfg.variant != "full":
            raise ModelConfigError(
                f"model='misa' supports variant='full' only, got variant={cfg.variant!r} "
                "(the text-only / no-text variants are defined for AMB)"
            )
        if cfg.misa_hidden % 2:
            raise ModelConfigError(
                f"misa_hidden={cfg.misa_hidden} must be even (the fusion transformer has 2 heads)"
            )
        if visual_dim < 1 or acoustic_dim < 1:
            raise ModelConfigError(
                f"MISA needs visual and acoustic features; got visual_dim={visual_dim}, "
                f"acoustic_dim={acoustic_dim}"
            )
        self.cfg = cfg
        self.visual_dim, self.acoustic_dim = visual_dim, acoustic_dim
        hidden = cfg.misa_hidden

        # finetune_layers="last:K" trains the embeddings too when misa_finetune_embeddings is
        # set (the original MOSEI setup); "all" always trains them.
        train_embeddings = None if cfg.finetune_layers == "all" else cfg.misa_finetune_embeddings
        self.plm = prepare_plm(load_plm(cfg), cfg, train_embeddings=train_embeddings)
        text_dim = self.plm.config.hidden_size

        self.visual_encoder = SequenceEncoder(visual_dim)
        self.acoustic_encoder = SequenceEncoder(acoustic_dim)
        self.project = nn.ModuleDict(
            {
                "t": _projection(text_dim, hidden),
                "v": _projection(4 * visual_dim, hidden),
                "a": _projection(4 * acoustic_dim, hidden),
            }
        )
        self.private = nn.ModuleDict({m: _sigmoid_layer(hidden) for m in MODALITIES})
        self.shared = _sigmoid_layer(hidden)
        self.reconstruct = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in MODALITIES})
        self.fusion = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model=hidden, nhead=2, dim_feedforward=cfg.misa_fusion_ffn_dim, batch_first=True
            ),
            num_layers=1,
            enable_nested_tensor=False,
        )
        self.head = nn.Sequential(
            nn.Linear(6 * hidden, 3 * hidden),
            nn.Dropout(cfg.misa_dropout),
            nn.ReLU(),
            nn.Linear(3 * hidden, 1),
        )

    def component_of(self, name: str) -> str:
        """Component of a parameter for ``ambcore.models.count_parameters``."""
        if name.startswith("plm."):
            return "adapters" if ".adapter." in name else "plm"
        if name.startswith("fusion."):
            return "fusion"
        if name.startswith("head."):
            return "predictor"
        return "encoders"  # LSTMs, projections, shared/private encoders, reconstruction

    def text_features(self, batch: Batch) -> torch.Tensor:
        """Mean of the PLM's last hidden states over the real tokens: (B, H_plm).

        The PLM reads the text alone, so a pass whose text is unchanged (visual/acoustic noise,
        thesis 6.3.4) can reuse this through ``forward(batch, text=...)``."""
        states = self.plm(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
        ).last_hidden_state  # (B, T, H_plm)
        mask = batch.attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, batch: Batch, text: torch.Tensor | None = None) -> ModelOutput:
        """Predict a batch and its auxiliary losses; ``text``: this batch's ``text_features`` if
        already computed (the same result, bitwise, as computing them here)."""
        if (
            batch.visual.shape[-1] != self.visual_dim
            or batch.acoustic.shape[-1] != self.acoustic_dim
        ):
            raise ModelConfigError(
                f"MISA was built for visual/acoustic dims {self.visual_dim}/{self.acoustic_dim}, "
                f"the batch has {batch.visual.shape[-1]}/{batch.acoustic.shape[-1]}"
            )
        utterance = {
            "t": self.text_features(batch) if text is None else text,  # (B, H_plm)
            "v": self.visual_encoder(batch.visual, batch.visual_lengths),  # (B, 4 Dv)
            "a": self.acoustic_encoder(batch.acoustic, batch.acoustic_lengths),  # (B, 4 Da)
        }
        projected = {m: self.project[m](utterance[m]) for m in MODALITIES}  # each (B, h)
        private = {m: self.private[m](projected[m]) for m in MODALITIES}  # each (B, h)
        shared = {m: self.shared(projected[m]) for m in MODALITIES}  # each (B, h)
        reconstructed = {m: self.reconstruct[m](private[m] + shared[m]) for m in MODALITIES}

        sequence = torch.stack(
            [private[m] for m in MODALITIES] + [shared[m] for m in MODALITIES], dim=1
        )  # (B, 6, h)
        fused = self.fusion(sequence)  # (B, 6, h)
        prediction = self.head(fused.flatten(1)).squeeze(-1)  # (B,)

        cfg = self.cfg
        aux_losses = {
            "misa_sim_cmd": misa_similarity_loss(shared, cfg.misa_cmd_moments),
            "misa_diff": misa_difference_loss(shared, private),
            "misa_recon": misa_reconstruction_loss(reconstructed, projected),
        }
        aux_loss = (
            cfg.misa_sim_weight * aux_losses["misa_sim_cmd"]
            + cfg.misa_diff_weight * aux_losses["misa_diff"]
            + cfg.misa_recon_weight * aux_losses["misa_recon"]
        )
        return ModelOutput(
            prediction=prediction, aux_loss=aux_loss, aux_losses=aux_losses, fused_states=fused
        )
