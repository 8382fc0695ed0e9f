"""CMU-MOSI and CH-SIMS in MMSA's format: the generator writes their files (sizes and keys), the
loader reads them with their own feature sizes, and a declared dataset refuses a file that does
not fit it in one line naming the file, the key and the value (ambcore.data.specs)."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from ambcore.cli import main
from ambcore.config import _CHOICES, get_config
from ambcore.data import specs
from ambcore.data import synthetic as syn
from ambcore.data.loaders import load_dataset
from ambcore.data.report import describe, format_report
from ambcore.errors import DataError

SIZES = (10, 4, 5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """MOSI- and SIMS-format folders, written once by the generator."""
    root = tmp_path_factory.mktemp("mmsa")
    return {
        dataset: syn.write_mmsa_format(root / dataset, dataset, *SIZES, seed=5)
        for dataset in ("mosi", "sims")
    }


def test_specs_hold_mmsa_sizes_and_config_offers_them():
    mosei, mosi, sims = (specs.DATASETS[k] for k in ("mosei", "mosi", "sims"))
    assert (mosei.visual_dim, mosei.acoustic_dim, mosei.splits) == (35, 74, (16326, 1871, 4659))
    assert (mosi.visual_dim, mosi.acoustic_dim, mosi.splits) == (20, 5, (1284, 229, 686))
    assert (sims.visual_dim, sims.acoustic_dim, sims.splits) == (709, 33, (1368, 456, 457))
    assert (mosi.text_steps, sims.text_steps, sims.aligned_steps) == (50, 39, None)
    assert dict(sims.files) == {"unaligned": "unaligned_39.pkl"}
    assert _CHOICES["dataset"] == specs.DATASET_CHOICES
    assert get_config("paper").dataset == "auto"  # the default accepts any feature sizes
    assert specs.detect(20, 5) == "mosi" and specs.detect(7, 3) == ""


def test_mosi_files_have_mosi_sizes_and_keys(files):
    assert set(files["mosi"]) == {"aligned", "unaligned"}
    for layout, path in files["mosi"].items():
        assert path.name == f"{layout}_50.pkl"
        raw = pickle.loads(path.read_bytes())
        for split, n in zip(("train", "valid", "test"), SIZES):
            arrays = raw[split]
            steps = (50, 50) if layout == "aligned" else (375, 500)
            assert arrays["vision"].shape == (n, steps[0], 20)
            assert arrays["audio"].shape == (n, steps[1], 5)
            assert arrays["text_bert"].shape == (n, 3, 50)
            assert arrays["text"].shape == (n, 50, 768)
            assert "regression_labels_T" not in arrays
        dataset = load_dataset(path, get_config("smoke", dataset="mosi"))
        assert (dataset.visual_dim, dataset.acoustic_dim, dataset.kind) == (20, 5, "mosi")
        assert dataset.name.startswith("SYNTHETIC MOSI-shaped")
        assert dataset.aligned == (layout == "aligned")


def test_sims_file_has_sims_sizes_keys_labels_ids_and_chinese_text(files):
    assert list(files["sims"]) == ["unaligned"]
    path = files["sims"]["unaligned"]
    assert path.name == "unaligned_39.pkl"
    raw = pickle.loads(path.read_bytes())
    ids = []
    for split, n in zip(("train", "valid", "test"), SIZES):
        arrays = raw[split]
        assert arrays["vision"].shape == (n, 55, 709) and arrays["audio"].shape == (n, 400, 33)
        assert arrays["text_bert"].shape == (n, 3, 39) and arrays["text"].shape == (n, 39, 768)
        assert arrays["vision_lengths"].max() <= 55 and arrays["audio_lengths"].max() <= 400
        for key in ("regression_labels", *(f"regression_labels_{m}" for m in "TAV")):
            labels = arrays[key]
            assert labels.shape == (n,) and np.abs(labels).max() <= 1.0
            np.testing.assert_allclose(labels * 5, np.round(labels * 5), atol=1e-4)  # 0.2 grid
        for m in "TAV":
            classes = arrays[f"classification_labels_{m}"]
            assert ((classes == 2) == (arrays[f"regression_labels_{m}"] > 0)).all()
        for text in arrays["raw_text"]:
            assert " " not in text and re.fullmatch(r"[\u4e00-\u9fff，。]+", text), text
        assert all(re.fullmatch(r"video_\d{4}\$_\$\d{4}", i) for i in arrays["id"])
        ids += list(arrays["id"])
    assert len(set(ids)) == len(ids)  # no id shared by two splits
    dataset = load_dataset(path, get_config("smoke", dataset="sims"))
    assert (dataset.visual_dim, dataset.acoustic_dim, dataset.kind) == (709, 33, "sims")
    assert dataset.name.startswith("SYNTHETIC CH-SIMS-shaped") and not dataset.aligned
    assert dataset.shared_ids == {}
    text = format_report(describe(dataset))
    assert "[SYNTHETIC: not CH-SIMS]" in text and "whole splits 1,368/456/457" in text
    assert describe(dataset)["splits"]["train"]["words"]["min"] > 1  # characters, not 1 "word"


def test_sims_has_no_aligned_layout_and_mosei_bytes_keep_their_keys(tmp_path):
    with pytest.raises(ValueError, match="no aligned layout"):
        syn.make_synthetic_dataset(
            *SIZES, seed=1, aligned=True, out_path=tmp_path / "a.pkl", mmsa_format="sims"
        )
    raw = pickle.loads(syn.synthetic_bytes(*SIZES, seed=1))
    assert "dataset" not in raw["meta"] and raw["train"]["vision"].shape[2] == 35


def _mmsa(tmp_path, dv, da, labels=None):
    rng = np.random.default_rng(0)
    data = {}
    for split, n in zip(("train", "valid", "test"), (3, 2, 2)):
        data[split] = {
            "raw_text": np.array(["好 的"] * n, dtype=object),
            "id": np.array([f"{split}{i}$_$0" for i in range(n)], dtype=object),
            "vision": rng.normal(size=(n, 2, dv)).astype(np.float32) + 3,
            "audio": rng.normal(size=(n, 2, da)).astype(np.float32) + 3,
            "regression_labels": np.full(n, 0.4 if labels is None else labels, np.float32),
        }
    path = tmp_path / f"f{dv}-{da}.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def test_declared_dataset_refuses_a_file_that_does_not_fit(tmp_path, files):
    mosi = files["mosi"]["aligned"]
    with pytest.raises(DataError) as info:
        load_dataset(mosi, get_config("smoke", dataset="sims"))
    message = str(info.value)
    assert "\n" not in message and str(mosi) in message
    assert "key 'vision' has feature size 20; expected 709 for dataset=sims" in message
    with pytest.raises(DataError, match=r"key 'audio' has feature size 4; expected 5"):
        load_dataset(_mmsa(tmp_path, 20, 4), get_config("smoke", dataset="mosi"))
    big = _mmsa(tmp_path, 709, 33, labels=2.0)
    with pytest.raises(
        DataError,
        match=r"key 'regression_labels': label 2 at row 0; expected "
        r"labels in \[-1, 1\] for dataset=sims",
    ):
        load_dataset(big, get_config("smoke", dataset="sims"))
    assert load_dataset(big).kind == "sims"  # auto: named from the sizes, labels accepted
    other = load_dataset(_mmsa(tmp_path, 7, 3), get_config("smoke"))
    assert other.kind == "" and other.name == "f7-3.pkl (mmsa-aligned)"
    with pytest.raises(DataError, match="data synth --format mosi"):
        load_dataset("synthetic", get_config("smoke", dataset="mosi"))


def test_cli_writes_each_format_and_inspect_checks_the_declared_dataset(tmp_path, capsys):
    sizes = ["--n-train", "4", "--n-valid", "2", "--n-test", "2"]
    assert main(["data", "synth", "--format", "sims", "--out", str(tmp_path / "s"), *sizes]) == 0
    assert main(["data", "synth", "--mosei-format", "--out", str(tmp_path / "m"), *sizes]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["unaligned_39.pkl"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "aligned_50.pkl",
        "unaligned_50.pkl",
    ]
    capsys.readouterr()
    sims = str(tmp_path / "s" / "unaligned_39.pkl")
    assert main(["data", "inspect", sims, "--dataset", "sims"]) == 0
    assert "CH-SIMS (visual 709, OpenFace; acoustic 33, LibROSA)" in capsys.readouterr().out
    assert main(["data", "inspect", sims, "--dataset", "mosei"]) != 0
    err = capsys.readouterr().err
    assert "key 'vision' has feature size 709; expected 35 for dataset=mosei" in err
    out = str(tmp_path / "x.pkl")
    assert main(["data", "synth", "--out", out, "--tokenizer", str(tmp_path), *sizes]) != 0
    assert "--tokenizer needs --format" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_the_planted_signal_sits_on_the_datasets_own_dims(dataset):
    planting = syn.PLANTINGS[dataset]
    styles = syn._dimension_styles(7, planting)
    split = syn._split_arrays(7, 0, "train", 400, False, styles, dataset)
    lengths = split["vision_lengths"][:, None]
    vision = split["vision"].sum(1) / lengths  # (N, Dv) mean over the real frames
    y = split["regression_labels"]
    corr = [abs(np.corrcoef(vision[:, d], y)[0, 1]) for d in range(planting.visual_dim)]
    informative = [corr[d] for d in planting.visual_informative]
    others = [c for d, c in enumerate(corr) if d not in planting.visual_informative]
    assert min(informative) > 0.15 > np.median(others)
    assert syn.planted_dims(dataset) == (planting.visual_informative, planting.acoustic_informative)
