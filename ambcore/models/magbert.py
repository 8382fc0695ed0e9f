"""MAG-BERT (Rahman et al., ACL 2020), the fine-tuned baseline of thesis table 6.1 ("MAG-BERT*").

A Multimodal Adaptation Gate (MAG) shifts every token representation ``z`` of one BERT layer by
a displacement ``H`` built from the visual and acoustic features of the token's word:

    g_v = ReLU(W_gv [v; z] + b_gv)            g_a = ReLU(W_ga [a; z] + b_ga)
    H   = g_v * (W_v v + b_v) + g_a * (W_a a + b_a)
    alpha = min(||z||_2 / ||H||_2 * beta_shift, 1)
    z'  = Dropout(LayerNorm(z + alpha * H))

so the shift never exceeds ``beta_shift`` times the token's own norm. Facts read from the public
code (github.com/WasifurRahman/BERT_multimodal_transformer, ``modeling.py``, ``bert.py``,
``multimodal_driver.py``); the code here is our own:

- gates and projections are ``nn.Linear`` layers (input ``[visual; z]`` / ``[acoustic; z]`` for
  the gates), ``||H|| = 0`` is replaced by 1 before dividing, and ``eps = 1e-6`` is added to it;
- MAG is applied to the embedding output, i.e. before encoder layer 1 (the paper also studies
  other layers; ``cfg.mag_injection_layer`` = k puts it before encoder layer k);
- word alignment: each word-piece of word i takes word i's features; [CLS], [SEP] and padding
  take zero vectors;
- prediction: BERT's pooler (dense + tanh on [CLS]), dropout (BERT's ``hidden_dropout_prob``),
  Linear(768, 1); the whole BERT is fine-tuned. ``cfg.mag_pooling`` ("cls", "mean") reads the
  [CLS] state or the token mean instead, for a PLM whose pooler was never trained (the embedded
  all-MiniLM-L6-v2: ``ambcore.models.plm.summary_spread`` measures it); not the original;
- defaults: beta_shift 1.0, MAG dropout 0.5, AdamW lr 1e-5 with weight decay 0.01 (none on
  biases/LayerNorm) and linear warm-up over 10 % of the steps, batch 48, max 50 tokens,
  40 epochs, MSE training loss; all of them are config values (``ORIGINAL_SETTINGS``).

The gate is injected with a forward pre-hook on the chosen layer (it replaces that layer's
input hidden states; ``ambcore.models.shift``, whose gated displacement and norm-ratio bound
AMB's feedback shares), so transformers' code is neither copied nor edited and every
pretrained weight keeps its name. MAG needs word-aligned features (``Batch.word_index``, built
by the collate from the tokenizer's ``word_ids``). With unaligned data the model refuses to run
(``ModelConfigError``) unless ``cfg.mag_unaligned="resample"``: then each real token takes the
mean of its proportional segment of the visual/acoustic sequence (token j of n covers steps
``[floor(j L / n), floor((j + 1) L / n))``, at least one step). That is an approximation made
for this project, not the original method; results obtained with it must say so.
"""

from __future__ import annotations

import torch
from torch import nn

from ambcore.data.types import Batch
from ambcore.errors import ModelConfigError
from ambcore.models.adapters import prepare_plm
from ambcore.models.checkpoint import PretrainedMixin
from ambcore.models.families import plm_layers
from ambcore.models.outputs import ModelOutput
from ambcore.models.plm import load_plm
from ambcore.models.shift import bounded_shift, gated_displacement, register_shift, shifting

__all__ = [
    "MultimodalAdaptationGate",
    "MAGBert",
    "ORIGINAL_SETTINGS",
    "word_aligned_features",
    "resampled_token_features",
]

# The original settings (multimodal_driver.py defaults) as config overrides; apply with
# ``apply_overrides(cfg, ORIGINAL_SETTINGS)``: AdamW with weight decay 0.01 on matrices only
# (the original exempts biases and LayerNorm weights by name; ambcore.train.make_optimizer
# exempts every parameter with fewer than two dimensions, which is the same set here) and the
# linear warm-up over 10 % of the steps followed by linear decay.
ORIGINAL_SETTINGS: dict[str, object] = {
    "model": "mag-bert",
    "text_adaptation": "finetune",
    "finetune_layers": "all",
    "mag_beta_shift": 1.0,
    "mag_dropout": 0.5,
    "mag_injection_layer": 1,
    "lr": 1e-5,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "batch_size": 48,
    "max_text_len": 50,
    "max_epochs": 40,
    "loss": "mse",
}


class MultimodalAdaptationGate(nn.Module):
    """The MAG: ``z -> Dropout(LayerNorm(z + alpha * H(z, v, a)))`` for token states ``z``."""

    def __init__(
        self,
        hidden_size: int,
        visual_dim: int,
        acoustic_dim: int,
        beta_shift: float,
        dropout: float,
    ):
        super().__init__()
        self.gate_visual = nn.Linear(visual_dim + hidden_size, hidden_size)
        self.gate_acoustic = nn.Linear(acoustic_dim + hidden_size, hidden_size)
        self.project_visual = nn.Linear(visual_dim, hidden_size)
        self.project_acoustic = nn.Linear(acoustic_dim, hidden_size)
        self.beta_shift = beta_shift
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)

    def shift(self, z: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor) -> torch.Tensor:
        """The scaled displacement ``alpha * H``: (B, T, H)."""
        # z: (B, T, H); visual: (B, T, Dv); acoustic: (B, T, Da), one row per token
        h = gated_displacement(
            z,
            [
                (self.gate_visual, self.project_visual, visual),
                (self.gate_acoustic, self.project_acoustic, acoustic),
            ],
        )  # (B, T, H)
        return bounded_shift(z, h, self.beta_shift)  # (B, T, H)

    def forward(
        self, z: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor
    ) -> torch.Tensor:
        return self.dropout(self.norm(z + self.shift(z, visual, acoustic)))  # (B, T, H)


def word_aligned_features(features: torch.Tensor, word_index: torch.Tensor) -> torch.Tensor:
    """Per-token rows of word-aligned ``features`` (B, L, D): token t takes row ``word_index[b, t]``.

    ``word_index`` (B, T) holds -1 for [CLS]/[SEP]/padding, which get zero rows.
    """
    batch, steps, dim = features.shape
    if word_index.shape[0] != batch:
        raise ModelConfigError(
            f"word_index has batch size {word_index.shape[0]}, the features {batch}"
        )
    if word_index.numel() and int(word_index.max()) >= steps:
        raise ModelConfigError(
            f"word_index refers to word {int(word_index.max())}, but the word-aligned features "
            f"have only {steps} steps (shape {tuple(features.shape)}): tokens and feature steps "
            "are not aligned"
        )
    index = word_index.clamp(min=0)  # (B, T)
    gathered = features.gather(1, index.unsqueeze(-1).expand(-1, -1, dim))  # (B, T, D)
    return gathered * (word_index >= 0).unsqueeze(-1).to(features.dtype)


def resampled_token_features(
    features: torch.Tensor, lengths: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Opt-in fallback for unaligned data: each real token averages its share of the sequence.

    Tokens 1..n (between [CLS] at 0 and [SEP] at n + 1, where n + 2 = the attention mask's sum)
    split the sample's ``lengths[b]`` true steps into n consecutive segments; token j (0-based)
    takes the mean of steps ``[floor(j L / n), max(floor((j + 1) L / n), start + 1))``. [CLS],
    [SEP] and padding get zero rows. Returns (B, T, D).
    """
    batch, steps, dim = features.shape
    tokens = attention_mask.shape[1]
    n_words = (attention_mask.sum(dim=1) - 2).clamp(min=1).to(torch.long)  # (B,)
    seq_len = lengths.clamp(min=1, max=steps).to(torch.long)  # (B,)
    position = torch.arange(tokens, device=features.device) - 1  # token t -> word slot t - 1
    j = position.unsqueeze(0).expand(batch, -1)  # (B, T)
    start = torch.div(j.clamp(min=0) * seq_len[:, None], n_words[:, None], rounding_mode="floor")
    end = torch.div(
        (j.clamp(min=0) + 1) * seq_len[:, None], n_words[:, None], rounding_mode="floor"
    )
    start = start.clamp(max=steps - 1)
    end = torch.maximum(end, start + 1).clamp(max=steps)
    cumulative = torch.cat(
        [features.new_zeros(batch, 1, dim), features.cumsum(dim=1)], dim=1
    )  # (B, L + 1, D)
    total = cumulative.gather(1, end.unsqueeze(-1).expand(-1, -1, dim)) - cumulative.gather(
        1, start.unsqueeze(-1).expand(-1, -1, dim)
    )  # (B, T, D)
    mean = total / (end - start).unsqueeze(-1).to(features.dtype)
    real = (j >= 0) & (j < n_words[:, None]) & attention_mask.bool()
    return mean * real.unsqueeze(-1).to(features.dtype)


class MAGBert(PretrainedMixin, nn.Module):
    """BERT with a multimodal adaptation gate before encoder layer ``cfg.mag_injection_layer``."""

    model_name = "mag-bert"
    # The gate shifts BERT's token states by the visual/acoustic features: no part of the
    # prediction depends on the text alone (ambcore.models.text_cache).
    text_is_av_independent = False

    def __init__(self, cfg, visual_dim: int, acoustic_dim: int):
        super().__init__()
        if cfg.variant != "full":
            raise ModelConfigError(
                f"model='mag-bert' supports variant='full' only, got variant={cfg.variant!r} "
                "(the text-only / no-text variants are defined for AMB)"
            )
        if visual_dim < 1 or acoustic_dim < 1:
            raise ModelConfigError(
                f"MAG-BERT needs visual and acoustic features; got visual_dim={visual_dim}, "
                f"acoustic_dim={acoustic_dim}"
            )
        self.cfg = cfg
        self.visual_dim, self.acoustic_dim = visual_dim, acoustic_dim
        with_pooler = cfg.mag_pooling == "pooler"
        self.plm = prepare_plm(load_plm(cfg, add_pooling_layer=with_pooler), cfg)
        # The pooler is part of the prediction path: it trains whatever text_adaptation says.
        # Read elsewhere (mag_pooling "cls" or "mean"), it is not loaded at all.
        if with_pooler:
            self.plm.pooler.requires_grad_(True)
        layers = plm_layers(self.plm)
        k = cfg.mag_injection_layer
        if not 1 <= k <= len(layers):
            raise ModelConfigError(
                f"mag_injection_layer={k}: expected 1..{len(layers)} (1 = after the embeddings, "
                f"k = before encoder layer k of the PLM's {len(layers)})"
            )
        hidden = self.plm.config.hidden_size
        self.gate = MultimodalAdaptationGate(
            hidden, visual_dim, acoustic_dim, cfg.mag_beta_shift, cfg.mag_dropout
        )
        register_shift(layers[k - 1])
        self.dropout = nn.Dropout(self.plm.config.hidden_dropout_prob)
        self.head = nn.Linear(hidden, 1)

    def component_of(self, name: str) -> str:
        """Component of a parameter for ``ambcore.models.count_parameters``."""
        if name.startswith("plm."):
            return "adapters" if ".adapter." in name else "plm"
        if name.startswith("gate."):
            return "fusion"
        return "predictor"

    def token_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual (B, T, Dv) and acoustic (B, T, Da) features per token."""
        if batch.word_index is not None:
            return (
                word_aligned_features(batch.visual, batch.word_index),
                word_aligned_features(batch.acoustic, batch.word_index),
            )
        if self.cfg.mag_unaligned == "resample":
            return (
                resampled_token_features(batch.visual, batch.visual_lengths, batch.attention_mask),
                resampled_token_features(
                    batch.acoustic, batch.acoustic_lengths, batch.attention_mask
                ),
            )
        raise ModelConfigError(
            "MAG-BERT needs word-aligned visual/acoustic features (each token is shifted by its "
            "word's features), but this batch has no word_index: the dataset is unaligned. Use "
            "a word-aligned file (e.g. MMSA aligned_50.pkl, the MAG-BERT/MISA pickles, or "
            "synthetic_aligned=true), or opt into an approximation with "
            "--set mag_unaligned=resample (each token averages its proportional segment)."
        )

    def summary(self, out, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads (``cfg.mag_pooling``): the pooler's output, the [CLS] state, or
        the mean of the real tokens' states; (B, H)."""
        if self.cfg.mag_pooling == "pooler":
            return out.pooler_output
        states = out.last_hidden_state  # (B, T, H)
        if self.cfg.mag_pooling == "cls":
            return states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, batch: Batch) -> ModelOutput:
        if (
            batch.visual.shape[-1] != self.visual_dim
            or batch.acoustic.shape[-1] != self.acoustic_dim
        ):
            raise ModelConfigError(
                f"MAG-BERT was built for visual/acoustic dims {self.visual_dim}/"
                f"{self.acoustic_dim}, the batch has {batch.visual.shape[-1]}/"
                f"{batch.acoustic.shape[-1]}"
            )
        visual, acoustic = self.token_features(batch)  # (B, T, Dv), (B, T, Da)
        target = plm_layers(self.plm)[self.cfg.mag_injection_layer - 1]
        with shifting({target: lambda z: self.gate(z, visual, acoustic)}):  # (B, T, H)
            out = self.plm(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                token_type_ids=batch.token_type_ids,
            )
        pooled = self.summary(out, batch.attention_mask)  # (B, H)
        prediction = self.head(self.dropout(pooled)).squeeze(-1)  # (B,)
        return ModelOutput(prediction=prediction, text_summary=pooled)
