"""``model.predict`` from raw inputs and ``from_pretrained`` for every model (tiny random BERT)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

import ambcore
from ambcore.config import get_config
from ambcore.data.collate import Collator
from ambcore.errors import DataError, ModelConfigError
from ambcore.models import build_model
from ambcore.models.amb import AMB
from ambcore.models.magbert import MAGBert
from ambcore.models.misa import MISA
from ambcore.models.plm import load_tokenizer

DV, DA = 5, 7
TEXTS = ["what a wonderful film", "it was fine, I guess", "a complete waste of my evening", "ok"]


def _features(steps, dim, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, dim)).astype(np.float32) for n in steps]


def _trained_like(model):
    """Trainable weights moved away from their initialisation (a deterministic stand-in)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def amb():
    return _trained_like(build_model(get_config("smoke"), DV, DA))


def test_predict_returns_one_score_per_text_in_input_order(amb):
    visual, acoustic = _features((3, 12, 1, 40), DV), _features((5, 2, 9, 1), DA, seed=1)
    scores = amb.predict(TEXTS, visual, acoustic)
    assert isinstance(scores, np.ndarray) and scores.shape == (4,) and scores.dtype == np.float64
    one_by_one = [amb.predict([t], [v], [a])[0] for t, v, a in zip(TEXTS, visual, acoustic)]
    np.testing.assert_allclose(scores, one_by_one, atol=1e-6)
    np.testing.assert_allclose(
        amb.predict(TEXTS, visual, acoustic, batch_size=3), scores, atol=1e-6
    )
    # the same numbers as the model on a batch collated by hand
    tokenizer = load_tokenizer(amb.cfg)
    items = [
        {"id": str(i), "text": t, "words": None, "visual": v, "acoustic": a, "label": 0.0}
        for i, (t, v, a) in enumerate(zip(TEXTS, visual, acoustic))
    ]
    with torch.no_grad():
        direct = amb(Collator(tokenizer, amb.cfg.max_text_len)(items)).prediction.numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-5)
    assert amb.predict([], [], []).shape == (0,)


def test_predict_sets_eval_mode_and_restores_the_mode(amb):
    visual, acoustic = _features((4, 4, 4, 4), DV), _features((4, 4, 4, 4), DA)
    expected = amb.predict(TEXTS, visual, acoustic)
    amb.train()
    try:
        np.testing.assert_array_equal(amb.predict(TEXTS, visual, acoustic), expected)  # no dropout
        assert amb.training
    finally:
        amb.eval()
    stacked = amb.predict(TEXTS, np.stack(visual), np.stack(acoustic))  # (N, steps, dim) arrays
    np.testing.assert_array_equal(stacked, expected)


@pytest.mark.parametrize(
    "texts, visual, acoustic, message",
    [
        ("one string", [np.zeros((2, DV))], [np.zeros((2, DA))], "texts must be a list of strings"),
        ([1, 2], [np.zeros((2, DV))] * 2, [np.zeros((2, DA))] * 2, r"texts\[0\] is int"),
        (["a", "b"], [np.zeros((2, DV))], [np.zeros((2, DA))] * 2, "1 visual arrays for 2 texts"),
        (
            ["a"],
            [np.zeros((2, DV + 1))],
            [np.zeros((2, DA))],
            r"visual\[0\] has shape \(2, 6\); the model expects \(steps, 5\)",
        ),
        (["a"], [np.zeros(DV)], [np.zeros((2, DA))], r"visual\[0\] has shape \(5,\)"),
        (["a"], [np.zeros((2, DV))], [np.full((2, DA), np.nan)], r"acoustic\[0\] holds NaN"),
        (["a"], [[["x"] * DV]], [np.zeros((1, DA))], r"visual\[0\] is not a numeric array"),
    ],
)
def test_predict_refuses_bad_inputs_with_one_line(amb, texts, visual, acoustic, message):
    with pytest.raises(DataError, match=message) as info:
        amb.predict(texts, visual, acoustic)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model_name, cls", [("amb", AMB), ("misa", MISA), ("mag-bert", MAGBert)])
def test_every_model_round_trips_through_from_pretrained(tmp_path, model_name, cls):
    model = _trained_like(build_model(get_config("smoke", model=model_name), DV, DA))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "config.json",
        "model.json",
        "weights.safetensors",
    ]
    loaded = ambcore.from_pretrained(tmp_path)
    assert type(loaded) is cls and not loaded.training
    assert type(cls.from_pretrained(tmp_path)) is cls
    words = [t.split() for t in TEXTS]  # MAG-BERT: word-aligned features, one step per word
    steps = [len(w) for w in words]
    visual, acoustic = _features(steps, DV), _features(steps, DA, seed=1)
    np.testing.assert_array_equal(
        loaded.predict(TEXTS, visual, acoustic, words=words),
        model.predict(TEXTS, visual, acoustic, words=words),
    )
    card = (tmp_path / "README.md").read_text()
    assert (
        card.startswith("---\n") and "library_name: ambcore" in card and f"# {cls.__name__}" in card
    )


def test_from_pretrained_refuses_what_it_cannot_load_offline(tmp_path, amb):
    with pytest.raises(ModelConfigError, match="no such folder.*nothing is downloaded"):
        ambcore.from_pretrained("someone/amb-on-the-hub")
    with pytest.raises(ModelConfigError, match="weights.safetensors is missing"):
        ambcore.from_pretrained(tmp_path)
    amb.save_pretrained(tmp_path / "amb")
    with pytest.raises(ModelConfigError, match="class AMB .*not MAGBert"):
        MAGBert.from_pretrained(tmp_path / "amb")
    config = json.loads((tmp_path / "amb" / "config.json").read_text())
    (tmp_path / "amb" / "config.json").write_text(json.dumps(config["cfg"]))  # the bare Config
    with pytest.raises(ModelConfigError, match='no "cfg" object'):
        ambcore.from_pretrained(tmp_path / "amb")


def test_a_folder_of_the_first_format_still_loads(tmp_path, amb):
    """Format 1: config.json held the bare Config (run folders written before format 2)."""
    amb.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config["cfg"]))
    (tmp_path / "model.json").write_text(json.dumps({**meta, "format_version": 1}))
    visual, acoustic = _features((3, 3, 3, 3), DV), _features((3, 3, 3, 3), DA)
    np.testing.assert_array_equal(
        ambcore.from_pretrained(tmp_path).predict(TEXTS, visual, acoustic),
        amb.predict(TEXTS, visual, acoustic),
    )
