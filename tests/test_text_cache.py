"""Text features computed once for the robustness curves (thesis 6.3.4): the same numbers.

AMB (every variant and adaptation) and MISA reuse the clean text features in the passes with
visual/acoustic noise (``ambcore.models.text_cache``); the curves must equal, exactly, the
ones predicted in full. MAG-BERT, and AMB with feedback into the PLM (``fusion_feedback="shift"``),
are always predicted in full.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dataclasses  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ambcore import robustness  # noqa: E402
from ambcore.config import apply_overrides, get_config  # noqa: E402
from ambcore.data import load_dataset  # noqa: E402
from ambcore.data.collate import make_loader  # noqa: E402
from ambcore.models import build_model  # noqa: E402
from ambcore.models.plm import load_tokenizer  # noqa: E402
from ambcore.models.text_cache import TextCache, reuses_text  # noqa: E402
from ambcore.noise import AV_KINDS, NOISE_KINDS, TEXT_KINDS, TokenizerInfo, apply_noise  # noqa: E402
from ambcore.train import predict_split, train_and_evaluate  # noqa: E402

# eval_batch_size 8: the 32 test utterances of the smoke preset in 4 batches.
COMMON = ["max_epochs=1", "patience=5", "eval_batch_size=8"]
REUSING = {
    "amb-full": ["model=amb"],
    "amb-text-only": ["model=amb", "variant=text-only"],
    "amb-no-text": ["model=amb", "variant=no-text"],
    "amb-ft": ["model=amb", "text_adaptation=finetune", "finetune_layers=last:1"],
    "misa-finetune": ["model=misa", "text_adaptation=finetune", "finetune_layers=last:1"],
    "misa-adapters": ["model=misa", "text_adaptation=adapters"],
}
MAG = ["model=mag-bert", "text_adaptation=finetune"]
# Models whose text depends on the visual/acoustic input: predicted in full in every pass.
IN_FULL = {"mag-bert": MAG, "amb-shift": ["model=amb", "fusion_feedback=shift"]}
RATES, N_DRAWS = [0.0, 0.5, 1.0], 2


def _cfg(overrides):
    return apply_overrides(get_config("smoke"), overrides + COMMON)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One smoke run per model (trained on first use)."""
    root, done = tmp_path_factory.mktemp("text-cache"), {}

    def get(name: str):
        if name not in done:
            overrides = IN_FULL[name] if name in IN_FULL else REUSING[name]
            train_and_evaluate(_cfg(overrides), root / name, progress=False)
            done[name] = root / name
        return done[name]

    return get


class _CountingCache(TextCache):
    made: list[_CountingCache] = []

    def __init__(self, model):
        super().__init__(model)
        _CountingCache.made.append(self)


def _curve(run_dir, reuse: bool) -> pd.DataFrame:
    return robustness.robustness_curve(
        run_dir, NOISE_KINDS, rates=RATES, n_draws=N_DRAWS, reuse_text=reuse
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REUSING))
def test_curves_with_reused_text_equal_the_full_predictions(trained, monkeypatch, name):
    run_dir = trained(name)
    full = _curve(run_dir, reuse=False)
    _CountingCache.made = []
    monkeypatch.setattr(robustness, "TextCache", _CountingCache)
    reused = _curve(run_dir, reuse=True)
    pd.testing.assert_frame_equal(reused, full, check_exact=True)
    # The reuse really happened: the PLM ran once per batch (in the clean pass), and every
    # visual/acoustic pass (2 kinds x 2 granularities x 2 noisy rates x 2 draws) reused it.
    (cache,) = _CountingCache.made
    n_batches = 4
    assert cache.misses == len(cache) == n_batches
    assert cache.hits == n_batches * len(AV_KINDS) * 2 * 2 * N_DRAWS


@pytest.mark.slow
@pytest.mark.parametrize("name", list(IN_FULL))
def test_mag_bert_is_predicted_in_full_every_pass(trained, monkeypatch, name):
    run_dir = trained(name)
    caches = []
    real = robustness.predict_split

    def spying(*args, text_cache=None, **kwargs):
        caches.append(text_cache)
        return real(*args, text_cache=text_cache, **kwargs)

    monkeypatch.setattr(robustness, "predict_split", spying)
    reused = _curve(run_dir, reuse=True)
    assert caches and all(c is None for c in caches)
    monkeypatch.setattr(robustness, "predict_split", real)
    pd.testing.assert_frame_equal(reused, _curve(run_dir, reuse=False), check_exact=True)


def _model_and_batches(overrides):
    cfg = _cfg(overrides)
    dataset = load_dataset(cfg.data, cfg)
    torch.manual_seed(0)
    model = build_model(cfg, dataset.visual_dim, dataset.acoustic_dim).eval()
    tokenizer = load_tokenizer(cfg)
    return model, list(make_loader(dataset["test"], tokenizer, cfg, shuffle=False)), tokenizer


@pytest.mark.parametrize("name", list(REUSING))
def test_forward_with_precomputed_text_is_bitwise_the_plain_forward(name):
    model, batches, _ = _model_and_batches(REUSING[name])
    assert reuses_text(model)
    with torch.inference_mode():
        for batch in batches:
            plain = model(batch)
            text = model.text_features(batch)
            reused = model(batch, text=text)
            for field in dataclasses.fields(plain):
                a, b = getattr(plain, field.name), getattr(reused, field.name)
                if isinstance(a, torch.Tensor):
                    assert torch.equal(a, b), field.name
                elif isinstance(a, dict):
                    assert all(torch.equal(a[k], b[k]) for k in a), field.name
            # The features depend on the text only: new visual/acoustic input leaves them be ...
            noisy = apply_noise(batch, "visual", 1.0, torch.Generator().manual_seed(1)).batch
            noisy = apply_noise(noisy, "acoustic", 1.0, torch.Generator().manual_seed(2)).batch
            assert torch.equal(model.text_features(noisy), text)
            # ... and forward reads the features it is given.
            assert not torch.equal(model(batch, text=text + 1.0).prediction, plain.prediction)


@pytest.mark.parametrize("name", list(IN_FULL))
def test_mag_bert_declares_no_text_only_part(name):
    """MAG-BERT, and AMB whose fused states shift the PLM's token states (fusion_feedback)."""
    model, _, _ = _model_and_batches(IN_FULL[name])
    assert not reuses_text(model)
    with pytest.raises(ValueError, match="predict it in full"):
        TextCache(model)


def test_noisy_loader_keeps_batch_order_and_text_for_visual_and_acoustic_noise():
    _, batches, tokenizer = _model_and_batches(REUSING["amb-full"])
    info = TokenizerInfo.from_tokenizer(tokenizer)
    for kind in NOISE_KINDS:
        for grain in ("step", "element"):
            noisy = list(
                robustness._NoisyLoader(
                    batches, kind, 1.0, torch.Generator().manual_seed(0), info, grain
                )
            )
            assert [b.ids for b in noisy] == [b.ids for b in batches]
            same_text = [torch.equal(n.input_ids, b.input_ids) for n, b in zip(noisy, batches)]
            assert all(same_text) == (kind in AV_KINDS), kind


def test_cache_refuses_a_changed_text_and_another_model():
    model, batches, tokenizer = _model_and_batches(REUSING["amb-full"])
    cache = TextCache(model)
    info = TokenizerInfo.from_tokenizer(tokenizer)
    with torch.inference_mode():
        cache(batches[0])
        cache(apply_noise(batches[0], "visual", 1.0, torch.Generator().manual_seed(0)).batch)
        assert (cache.misses, cache.hits) == (1, 1)
        for kind in TEXT_KINDS:
            changed = apply_noise(
                batches[0], kind, 1.0, torch.Generator().manual_seed(0), info
            ).batch
            with pytest.raises(ValueError, match="differs"):
                cache(changed)
    cfg = _cfg(REUSING["amb-full"])
    dataset = load_dataset(cfg.data, cfg)
    other, _, _ = _model_and_batches(REUSING["amb-full"])
    with pytest.raises(ValueError, match="another model"):
        predict_split(other, dataset["test"], tokenizer, cfg, text_cache=cache)
