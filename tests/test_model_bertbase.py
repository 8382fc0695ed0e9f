"""Parameter counts of AMB for bert-base (random weights from BertConfig(); no download).

Expected counts are derived here from the layer shapes, independently of the model code.
"""

from __future__ import annotations

import pytest

from ambcore.config import get_config
from ambcore.models import build_model, count_parameters
from ambcore.models.adapters import add_adapters, set_trainable

pytestmark = pytest.mark.slow

V, P, H, I, L = 30522, 512, 768, 3072, 12  # bert-base-uncased: vocab, positions, hidden, FFN, layers
VISUAL, ACOUSTIC = 35, 74  # MOSEI FACET / COVAREP


def linear(n_in, n_out):
    return n_in * n_out + n_out


EMBEDDINGS = V * H + P * H + 2 * H + 2 * H  # word, position, segment, LayerNorm
BERT_LAYER = 4 * linear(H, H) + linear(H, I) + linear(I, H) + 2 * 2 * H


@pytest.fixture(scope="module")
def frozen_amb():
    """One bert-base AMB without adapters; trainability is then switched in place."""
    cfg = get_config("paper", plm_random_init=True, text_adaptation="frozen")
    return build_model(cfg, VISUAL, ACOUSTIC)


def test_plm_is_bert_base_without_pooler(frozen_amb):
    counts = count_parameters(frozen_amb)
    assert counts["plm"]["total"] == EMBEDDINGS + L * BERT_LAYER
    assert counts["plm"]["trainable"] == 0


def test_encoder_fusion_and_predictor_counts(frozen_amb):
    cfg = frozen_amb.cfg
    E, F = cfg.encoder_dim, cfg.encoder_ffn_dim
    transformer_layer = linear(E, 3 * E) + linear(E, E) + linear(E, F) + linear(F, E) + 2 * 2 * E
    encoders = sum(linear(d, E) + E + cfg.encoder_layers * transformer_layer for d in (VISUAL, ACOUSTIC))
    Pj, Fh = cfg.fusion_proj_dim, cfg.fusion_hidden
    first = linear(H, Pj) + linear(Pj + 2 * E, Fh) + linear(Fh, Pj)
    later = linear(H, Pj) + linear(Pj + 2 * E + Pj, Fh) + linear(Fh, Pj)  # chained: + f_{l-1}
    counts = count_parameters(frozen_amb)
    assert counts["encoders"]["trainable"] == encoders
    assert counts["fusion"]["trainable"] == first + (L - 1) * later
    assert counts["predictor"]["trainable"] == linear(Pj + H, 1)


def test_amb_ft_last3_with_embeddings_and_amb_adapters(frozen_amb):
    heads = count_parameters(frozen_amb)["all"]["trainable"]
    cfg = get_config("paper", plm_random_init=True, text_adaptation="finetune", finetune_layers="last:3")
    set_trainable(frozen_amb.plm, cfg, train_embeddings=True)
    counts = count_parameters(frozen_amb)
    assert counts["plm"]["trainable"] == EMBEDDINGS + 3 * BERT_LAYER
    assert counts["all"]["trainable"] == heads + EMBEDDINGS + 3 * BERT_LAYER

    add_adapters(frozen_amb.plm, cfg.adapter_dim)
    set_trainable(frozen_amb.plm, get_config("paper", plm_random_init=True))
    counts = count_parameters(frozen_amb)
    assert counts["adapters"]["trainable"] == L * (linear(H, 384) + linear(384, H))
    assert counts["plm"]["trainable"] == 0
    assert counts["all"]["trainable"] == heads + L * (linear(H, 384) + linear(384, H))
