"""The model chapter's hand-made batch and the shapes of its forward pass
(``ambcore.models.summary.example_batch``, ``forward_shapes``). Smoke preset, tiny random BERT."""

from __future__ import annotations

import pytest
import torch

from ambcore.config import get_config
from ambcore.models import build_model
from ambcore.models.plm import load_tokenizer
from ambcore.models.summary import (
    EXAMPLE_LENGTHS,
    EXAMPLE_TEXTS,
    MOSEI_ACOUSTIC_DIM,
    MOSEI_VISUAL_DIM,
    example_batch,
    forward_shapes,
)


def test_example_batch_is_padded_after_the_true_lengths():
    cfg = get_config("smoke")
    batch = example_batch(cfg)
    assert EXAMPLE_LENGTHS == (6, 1, 9) and len(EXAMPLE_TEXTS) == 3
    assert batch.visual.shape == (3, 9, MOSEI_VISUAL_DIM)
    assert batch.acoustic.shape == (3, 9, MOSEI_ACOUSTIC_DIM)
    assert batch.visual_lengths.tolist() == batch.acoustic_lengths.tolist() == [6, 1, 9]
    for features in (batch.visual, batch.acoustic):
        real = features.abs().sum(-1) > 0  # (B, L)
        assert real.sum(1).tolist() == [6, 1, 9] and torch.equal(real, batch.visual_mask)
    tokens = load_tokenizer(cfg)(list(EXAMPLE_TEXTS), padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, tokens["input_ids"])
    assert torch.equal(batch.attention_mask, tokens["attention_mask"])
    assert batch.labels.tolist() == [0.0, 0.0, 0.0]
    assert batch.ids == ["example-1", "example-2", "example-3"]


def test_example_batch_is_seeded_by_the_config():
    first, again = example_batch(get_config("smoke")), example_batch(get_config("smoke"))
    other = example_batch(get_config("smoke", seed=1))
    assert torch.equal(first.visual, again.visual) and torch.equal(first.acoustic, again.acoustic)
    assert not torch.equal(first.visual, other.visual)
    generator = torch.Generator().manual_seed(0)  # visual drawn first, then acoustic
    assert torch.equal(first.visual[2], torch.randn(3, 9, MOSEI_VISUAL_DIM, generator=generator)[2])


def test_example_batch_takes_one_length_per_text():
    batch = example_batch(get_config("smoke"), texts=("fine",), lengths=(2,), visual_dim=5)
    assert batch.visual.shape == (1, 2, 5) and batch.acoustic.shape == (1, 2, MOSEI_ACOUSTIC_DIM)
    with pytest.raises(ValueError, match="2 text.*1 length"):
        example_batch(get_config("smoke"), texts=("a", "b"), lengths=(3,))


@pytest.mark.parametrize("variant", ["full", "text-only"])
def test_forward_shapes_name_every_tensor(variant):
    cfg = get_config("smoke", variant=variant)
    model = build_model(cfg, MOSEI_VISUAL_DIM, MOSEI_ACOUSTIC_DIM).eval()
    batch = example_batch(cfg)
    with torch.no_grad():
        shapes = forward_shapes(batch, model(batch))
    n_layers, hidden = model.plm.config.num_hidden_layers, model.plm.config.hidden_size
    assert shapes == {
        "input_ids (B, T)": tuple(batch.input_ids.shape),
        "visual (B, Lv, Dv)": (3, 9, MOSEI_VISUAL_DIM),
        "acoustic (B, La, Da)": (3, 9, MOSEI_ACOUSTIC_DIM),
        "av_token (B, 2E)": None if variant == "text-only" else (3, 2 * cfg.encoder_dim),
        "fused_states (B, L, P)": (3, n_layers, cfg.fusion_proj_dim),
        "text_summary = last [CLS] (B, H)": (3, hidden),
        "prediction (B,)": (3,),
    }
