"""The synthetic dataset: deterministic bytes, MMSA layout, and the planted signal exists."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from ambcore.config import get_config
from ambcore.data import synthetic as syn
from ambcore.data.loaders import load_dataset
from ambcore.data.safe_pickle import safe_loads


@pytest.fixture(scope="module")
def raw():
    return safe_loads(syn.synthetic_bytes(1500, 200, 600, seed=7), "synthetic")


def test_same_seed_same_bytes_different_seed_differs():
    a = syn.synthetic_bytes(40, 10, 10, seed=3)
    assert a == syn.synthetic_bytes(40, 10, 10, seed=3)
    assert a != syn.synthetic_bytes(40, 10, 10, seed=4)
    unaligned = syn.synthetic_bytes(40, 10, 10, seed=3, aligned=False)
    assert unaligned == syn.synthetic_bytes(40, 10, 10, seed=3, aligned=False) != a


def test_valid_and_test_do_not_depend_on_train_size():
    a = safe_loads(syn.synthetic_bytes(20, 10, 10, seed=3))
    b = safe_loads(syn.synthetic_bytes(30, 10, 10, seed=3))
    np.testing.assert_array_equal(a["test"]["vision"], b["test"]["vision"])


def test_written_file_loads_as_synthetic(tmp_path):
    path = syn.make_synthetic_dataset(30, 10, 12, seed=5, out_path=tmp_path / "s.pkl")
    ds = load_dataset(path)
    assert ds.is_synthetic and "SYNTHETIC" in ds.name and ds.format == "mmsa-aligned"
    assert (ds.visual_dim, ds.acoustic_dim) == (35, 74)
    for split in ds.splits.values():
        for words, v, a in zip(split.words, split.visual, split.acoustic):
            assert len(words) == len(v) == len(a) <= 50
    assert sum(ds.repairs.values()) > 0  # the planted -inf frames are found and counted
    assert all(key.endswith("/audio: -inf -> 0") for key in ds.repairs)


def test_unaligned_layout(tmp_path):
    path = syn.make_synthetic_dataset(
        30, 10, 12, seed=5, aligned=False, out_path=tmp_path / "u.pkl"
    )
    ds = load_dataset(path)
    assert ds.format == "mmsa-unaligned" and ds["train"].words is None
    for text, v, a in zip(ds["train"].texts, ds["train"].visual, ds["train"].acoustic):
        n_words = len(text.split())
        assert 2 * n_words <= len(v) <= 4 * n_words and 3 * n_words <= len(a) <= 6 * n_words


def test_synthetic_name_uses_config_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("AMB_CACHE", str(tmp_path))
    cfg = get_config("smoke", synthetic_n_train=24, synthetic_n_valid=8, synthetic_n_test=9)
    ds = load_dataset("synthetic", cfg)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [24, 8, 9]
    again = load_dataset("synthetic", cfg)  # from the cache folder, same file
    assert again.fingerprint == ds.fingerprint
    assert len(list((tmp_path / "synthetic").glob("*.pkl"))) == 1


def test_labels_in_thirds_and_slightly_positive(raw):
    y = raw["train"]["regression_labels"]
    assert y.min() >= -3 and y.max() <= 3
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-5)
    assert 0.0 < y.mean() < 0.5  # slight positive skew by design
    kinds = raw["train"]["synthetic_kind"]
    av_only = np.isin(kinds, ["ironic", "neutral-av"]).mean()
    assert abs(av_only - syn.AV_ONLY_FRACTION) < 0.04


def test_text_valence_follows_the_lexicon(raw):
    split = raw["train"]
    valence = split["synthetic_text_valence"]
    words_valence = np.array(
        [
            sum(syn.POSITIVE_WORDS.get(w, 0) + syn.NEGATIVE_WORDS.get(w, 0) for w in t.split())
            for t in split["raw_text"]
        ]
    )
    assert np.corrcoef(words_valence, split["regression_labels"])[0, 1] > 0.4
    ordinary = ~np.isin(split["synthetic_kind"], ["ironic", "neutral-av"])
    assert np.corrcoef(valence[ordinary], split["regression_labels"][ordinary])[0, 1] > 0.9


def _summaries(split):
    n_words = np.array([len(t.split()) for t in split["raw_text"]])
    audio = np.where(np.isfinite(split["audio"]), split["audio"], 0)
    vision = split["vision"].sum(1) / n_words[:, None]
    audio = audio.sum(1) / n_words[:, None]
    return vision, audio


def test_informative_dims_carry_the_expressed_sentiment(raw):
    vision, audio = _summaries(raw["train"])
    y = raw["train"]["regression_labels"]
    visual_probe = LinearRegression().fit(vision[:, syn.VISUAL_INFORMATIVE], y)
    distractors = [
        d for d in range(35) if d not in syn.VISUAL_INFORMATIVE + (syn.VISUAL_IRONY_CUE,)
    ]
    distractor_probe = LinearRegression().fit(vision[:, distractors[:4]], y)
    acoustic_probe = LinearRegression().fit(audio[:, syn.ACOUSTIC_INFORMATIVE], y)
    r2_v = visual_probe.score(vision[:, syn.VISUAL_INFORMATIVE], y)
    r2_a = acoustic_probe.score(audio[:, syn.ACOUSTIC_INFORMATIVE], y)
    assert r2_v > 0.1 and r2_a > 0.02
    assert r2_v > r2_a  # acoustic is the weaker modality
    assert distractor_probe.score(vision[:, distractors[:4]], y) < 0.03


def test_designed_outcome_full_beats_text_only_beats_no_text(raw):
    """Probes on known summaries: T+A+V > text-only (close) >> no-text, by design."""

    def features(split):
        vision, audio = _summaries(split)
        text = split["synthetic_text_valence"][:, None]
        return {
            "text": text,
            "no-text": np.hstack([vision, audio]),
            "full": np.hstack([text, vision, audio]),
        }

    train, test = features(raw["train"]), features(raw["test"])
    y_train, y_test = raw["train"]["regression_labels"], raw["test"]["regression_labels"]
    corr = {}
    with threadpool_limits(1):  # many threads on a busy 2-core machine are far slower
        for name in train:
            model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
            prediction = model.fit(train[name], y_train).predict(test[name])
            corr[name] = np.corrcoef(prediction, y_test)[0, 1]
    assert corr["full"] > corr["text"] + 0.05
    assert corr["text"] > corr["no-text"] + 0.1


def test_mosei_format_files_carry_mmsa_keys_and_load_back(tmp_path):
    import pickle

    from ambcore.cli import main
    from ambcore.data.loaders import load_dataset

    out = tmp_path / "mosei"
    assert (
        main(
            [
                "data",
                "synth",
                "--mosei-format",
                "--out",
                str(out),
                "--n-train",
                "10",
                "--n-valid",
                "4",
                "--n-test",
                "4",
            ]
        )
        == 0
    )
    for layout in ("aligned", "unaligned"):
        path = out / f"{layout}_50.pkl"
        raw = pickle.loads(path.read_bytes())
        for split, n in (("train", 10), ("valid", 4), ("test", 4)):
            arrays = raw[split]
            # the keys and shapes MMSA's loader reads (use_bert and plain text features)
            assert arrays["text_bert"].shape == (n, 3, 50)
            assert arrays["text"].shape == (n, 50, 768)
            assert arrays["vision"].shape[0] == arrays["audio"].shape[0] == n
            assert arrays["vision"].shape[2] == 35 and arrays["audio"].shape[2] == 74
            for key in (
                "raw_text",
                "id",
                "regression_labels",
                "classification_labels",
                "annotations",
            ):
                assert len(arrays[key]) == n, key
            ids, mask = arrays["text_bert"][:, 0], arrays["text_bert"][:, 1]
            assert (ids[:, 0] == 101).all() and (mask.sum(1) >= 3).all()  # [CLS] first
            labels = arrays["regression_labels"]
            assert ((arrays["classification_labels"] == 2) == (labels > 0)).all()
            if layout == "unaligned":
                assert arrays["audio"].shape[1] == arrays["vision"].shape[1] == 500
                assert arrays["audio_lengths"].max() <= 500
            else:
                assert arrays["audio"].shape[1] == 50
        dataset = load_dataset(path)
        assert dataset.is_synthetic and dataset.visual_dim == 35 and dataset.acoustic_dim == 74
        assert len(dataset.splits["train"]) == 10
