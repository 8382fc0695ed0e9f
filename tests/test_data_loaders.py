"""Loaders on small files written here in each exact layout (MMSA, MAG-BERT, MISA)."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

from ambcore.data.loaders import load_dataset
from ambcore.errors import DataError

SIZES = {"train": 5, "valid": 3, "test": 4}
_VIDEOS = (
    itertools.count()
)  # video numbers: ids are unique across splits (the loader reports shared ones)


def _text(rng, n_words):
    vocab = ["the", "movie", "was", "very", "good", "bad", "and", "but", "plot", "fine"]
    return " ".join(rng.choice(vocab, n_words))


def mmsa_split(rng, n, steps=10, dv=35, da=74, aligned=True, left_pad=False, with_ids=True):
    """One split in the MMSA layout; aligned: zero-padded word steps, unaligned: lengths."""
    n_words = rng.integers(1, steps + 1, n)
    texts = np.array([_text(rng, k) for k in n_words], dtype=object)
    vision = np.zeros((n, steps, dv), np.float32)
    audio = np.zeros((n, steps, da), np.float32)
    v_len = n_words if aligned else rng.integers(1, steps + 1, n)
    a_len = n_words if aligned else rng.integers(1, steps + 1, n)
    for i in range(n):
        v_slice = slice(steps - v_len[i], steps) if left_pad else slice(0, v_len[i])
        a_slice = slice(steps - a_len[i], steps) if left_pad else slice(0, a_len[i])
        vision[i, v_slice] = rng.normal(size=(v_len[i], dv)) + 5.0  # never exactly 0
        audio[i, a_slice] = rng.normal(size=(a_len[i], da)) + 5.0
    split = {
        "raw_text": texts,
        "audio": audio,
        "vision": vision,
        "regression_labels": np.round(rng.uniform(-3, 3, n) * 3) / 3,
        "classification_labels": np.zeros(n),
        "text": np.zeros((n, steps, 8), np.float32),
    }
    if with_ids:
        split["id"] = np.array([f"vid{next(_VIDEOS)}$_${i % 2}" for i in range(n)], dtype=object)
    if not aligned:
        split["audio_lengths"] = a_len.astype(np.int64)
        split["vision_lengths"] = v_len.astype(np.int64)
    return split


def mmsa_file(tmp_path, name="aligned_50.pkl", seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    data = {s: mmsa_split(rng, n, **kwargs) for s, n in SIZES.items()}
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path, data


def list_items(rng, n, dv=35, da=74, misa=False):
    items = []
    for i in range(n):
        k = int(rng.integers(1, 8))
        words = [str(w) for w in rng.choice(["so", "it", "was", "great", "awful"], k)]
        visual = rng.normal(size=(k, dv)).astype(np.float32)
        acoustic = rng.normal(size=(k, da)).astype(np.float32)
        label = np.array([[rng.uniform(-3, 3)]], dtype=np.float32)
        if misa:
            ids = np.arange(k)
            items.append(((ids, visual, acoustic, words), label, f"seg{next(_VIDEOS)}"))
        else:
            items.append(((np.array(words), visual, acoustic), label, f"seg{next(_VIDEOS)}"))
    return items


def list_file(tmp_path, misa=False, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    names = {"train": "train", "valid": "dev", "test": "test"}
    data = {names[s]: list_items(rng, n, misa=misa, **kwargs) for s, n in SIZES.items()}
    path = tmp_path / "mosei.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    return path, data


# ---- MMSA -------------------------------------------------------------------------------------
def test_mmsa_aligned_right_padded(tmp_path):
    path, data = mmsa_file(tmp_path, dv=20, da=5)  # MOSI dims: taken from the data
    ds = load_dataset(path)
    assert ds.format == "mmsa-aligned" and not ds.is_synthetic
    assert (ds.visual_dim, ds.acoustic_dim) == (20, 5)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [5, 3, 4]
    split, raw = ds["valid"], data["valid"]
    for i in range(3):
        words = raw["raw_text"][i].split()
        assert split.words[i] == words
        assert split.visual[i].shape == (len(words), 20)
        assert split.acoustic[i].shape == (len(words), 5)
        np.testing.assert_array_equal(split.visual[i], raw["vision"][i, : len(words)])
    np.testing.assert_allclose(split.labels, raw["regression_labels"].astype(np.float32))
    assert split.ids == list(raw["id"])
    assert len(ds.fingerprint) == 64 and ds.repairs == {}


def test_mmsa_aligned_left_padded(tmp_path):
    path, data = mmsa_file(tmp_path, left_pad=True)
    ds = load_dataset(path)
    raw = data["train"]
    for i in range(5):
        n = len(raw["raw_text"][i].split())
        np.testing.assert_array_equal(ds["train"].visual[i], raw["vision"][i, 10 - n :])
        np.testing.assert_array_equal(ds["train"].acoustic[i], raw["audio"][i, 10 - n :])
    assert ds.repairs == {}


def test_mmsa_aligned_without_ids_and_long_transcripts(tmp_path):
    rng = np.random.default_rng(3)
    data = {s: mmsa_split(rng, n, with_ids=False) for s, n in SIZES.items()}
    data["train"]["raw_text"][0] = " ".join(["word"] * 14)  # longer than the 10 steps
    data["train"]["vision"][0] = 1.0
    data["train"]["audio"][0] = 1.0
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps(data))
    ds = load_dataset(path)
    assert ds["train"].ids[0] == "train_0"
    assert len(ds["train"].words[0]) == 10 and ds["train"].visual[0].shape[0] == 10
    assert ds["train"].texts[0].count("word") == 14  # the transcript is kept whole
    assert ds.repairs["train/aligned: transcripts longer than 10 steps (words cut)"] == 1


def test_mmsa_unaligned_with_lengths(tmp_path):
    path, data = mmsa_file(tmp_path, name="unaligned_50.pkl", aligned=False, steps=30)
    ds = load_dataset(path)
    assert ds.format == "mmsa-unaligned" and not ds.aligned
    raw = data["test"]
    for i in range(4):
        assert ds["test"].visual[i].shape == (raw["vision_lengths"][i], 35)
        assert ds["test"].acoustic[i].shape == (raw["audio_lengths"][i], 74)
        assert ds["test"].words is None
        assert ds["test"].texts[i] == raw["raw_text"][i]


def test_numpy1_pickles_with_core_module_names(tmp_path):
    rng = np.random.default_rng(0)
    data = {s: mmsa_split(rng, n) for s, n in SIZES.items()}
    blob = pickle.dumps(data, protocol=2)  # GLOBAL opcodes: "module\nname\n" in plain text
    assert b"numpy._core.multiarray\n" in blob
    blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(blob)
    assert len(load_dataset(legacy)["train"]) == 5


# ---- MAG-BERT / MISA --------------------------------------------------------------------------
@pytest.mark.parametrize("misa", [False, True])
def test_list_layouts(tmp_path, misa):
    path, data = list_file(tmp_path, misa=misa, dv=47)
    ds = load_dataset(path)
    assert ds.format == ("misa" if misa else "mag-bert")
    assert (ds.visual_dim, ds.acoustic_dim) == (47, 74)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [5, 3, 4]
    (features, label, segment) = data["dev"][1]
    words = features[3] if misa else list(features[0])
    assert ds["valid"].words[1] == words
    assert ds["valid"].texts[1] == " ".join(words)
    assert ds["valid"].ids[1] == segment
    assert ds["valid"].labels[1] == pytest.approx(float(label[0, 0]))
    np.testing.assert_array_equal(ds["valid"].visual[1], features[1])


# ---- NaN / inf repairs ------------------------------------------------------------------------
def test_nonfinite_features_replaced_and_counted(tmp_path):
    rng = np.random.default_rng(1)
    data = {s: mmsa_split(rng, n) for s, n in SIZES.items()}
    n0 = len(data["train"]["raw_text"][0].split())
    data["train"]["audio"][0, 0, :3] = -np.inf
    data["train"]["audio"][0, n0 - 1, 5] = np.inf
    data["train"]["vision"][0, 0, 0] = np.nan
    data["test"]["audio"][1, 0, 0] = -np.inf
    path = tmp_path / "dirty.pkl"
    path.write_bytes(pickle.dumps(data))
    ds = load_dataset(path)
    assert ds.repairs == {
        "train/audio: -inf -> 0": 3,
        "train/audio: +inf -> 0": 1,
        "train/vision: NaN -> 0": 1,
        "test/audio: -inf -> 0": 1,
    }
    for split in ds.splits.values():
        assert all(np.isfinite(a).all() for a in split.acoustic)
        assert all(np.isfinite(v).all() for v in split.visual)
    assert ds["train"].acoustic[0][0, 0] == 0.0


def test_nonfinite_in_list_layout_counted(tmp_path):
    rng = np.random.default_rng(2)
    data = {k: list_items(rng, n) for k, n in (("train", 3), ("dev", 2), ("test", 2))}
    data["dev"][0][0][2][0, :2] = -np.inf
    path = tmp_path / "mosei.pkl"
    path.write_bytes(pickle.dumps(data))
    ds = load_dataset(path)
    assert ds.repairs == {"valid/acoustic: -inf -> 0": 2}


# ---- bad input: one DataError naming file, split, key and the expectation -------------------
def _write(tmp_path, data, name="bad.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data))
    return path


def _mmsa(seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return {s: mmsa_split(rng, n, **kwargs) for s, n in SIZES.items()}


def _expect_error(path, *fragments):
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_key(tmp_path):
    data = _mmsa()
    del data["valid"]["vision"]
    _expect_error(_write(tmp_path, data), "'valid'", "'vision'", "missing", "expected")


def test_mismatched_lengths(tmp_path):
    data = _mmsa()
    data["test"]["regression_labels"] = data["test"]["regression_labels"][:-1]
    _expect_error(_write(tmp_path, data), "'test'", "'regression_labels'", "3 rows", "4 rows")


def test_wrong_rank(tmp_path):
    data = _mmsa()
    data["train"]["audio"] = data["train"]["audio"][:, 0, :]
    _expect_error(_write(tmp_path, data), "'train'", "'audio'", "(5, 74)", "rank 3")


def test_feature_dim_inconsistent_across_splits(tmp_path):
    data = _mmsa()
    data["test"]["vision"] = data["test"]["vision"][:, :, :20]
    _expect_error(_write(tmp_path, data), "visual feature dimension", "35", "20", "'test'")


@pytest.mark.parametrize("bad_value, fragment", [(3.5, "outside [-3, 3]"), (np.nan, "non-finite")])
def test_bad_labels(tmp_path, bad_value, fragment):
    data = _mmsa()
    data["valid"]["regression_labels"][2] = bad_value
    _expect_error(_write(tmp_path, data), "'valid'", "'regression_labels'", fragment, "row 2")


def test_lengths_longer_than_steps(tmp_path):
    data = _mmsa(aligned=False)
    data["train"]["audio_lengths"][1] = 11
    _expect_error(_write(tmp_path, data), "'train'", "'audio_lengths'", "0 <= length <= 10")


def test_only_one_length_array(tmp_path):
    data = _mmsa(aligned=False)
    del data["valid"]["vision_lengths"]
    _expect_error(_write(tmp_path, data), "'valid'", "'vision_lengths'", "missing")


def test_unknown_layout(tmp_path):
    _expect_error(_write(tmp_path, {"training": []}), "top-level keys", "expected")
    _expect_error(_write(tmp_path, [1, 2], "list.pkl"), "top level is list")


def test_list_layout_words_and_features_disagree(tmp_path):
    rng = np.random.default_rng(0)
    data = {k: list_items(rng, 2) for k in ("train", "dev", "test")}
    (words, visual, acoustic), label, segment = data["dev"][1]
    data["dev"][1] = (
        (words, visual[:-1] if len(visual) > 1 else visual[:0], acoustic),
        label,
        segment,
    )
    _expect_error(_write(tmp_path, data), "'valid'", "item 1", "word-aligned")


def test_list_layout_bad_item_shape(tmp_path):
    rng = np.random.default_rng(0)
    data = {k: list_items(rng, 2) for k in ("train", "dev", "test")}
    data["test"][0] = ("just", "two")
    _expect_error(_write(tmp_path, data), "'test'", "item 0", "((words, visual, acoustic)")


def test_truncated_file(tmp_path):
    path, _ = mmsa_file(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    _expect_error(path, "truncated")


def test_missing_file_and_amb_data(tmp_path, monkeypatch):
    _expect_error(tmp_path / "nope.pkl", "no such dataset file")
    monkeypatch.delenv("AMB_DATA", raising=False)
    with pytest.raises(DataError, match="AMB_DATA"):
        load_dataset("")
    path, _ = mmsa_file(tmp_path)
    monkeypatch.setenv("AMB_DATA", str(path))
    assert load_dataset(None).source == str(path)
    assert load_dataset("").fingerprint == load_dataset(path).fingerprint
