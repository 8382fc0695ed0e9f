"""``python -m ambcore data from-sdk`` end to end, then the result through ``load_dataset``."""

from __future__ import annotations

import argparse
import importlib.util
import json

import numpy as np
import pytest

from ambcore.bench.sdk import SyntheticSdkSpec, generate_synthetic_sdk
from ambcore.data.safe_pickle import safe_load
from ambcore.data.sdk import add_from_sdk_parser

HAS_DATA_COMMAND = importlib.util.find_spec("ambcore.commands.data") is not None


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Tiny synthetic SDK files converted through the from-sdk command's parser and handler."""
    tmp_path = tmp_path_factory.mktemp("sdk_cli")
    spec = SyntheticSdkSpec(n_videos=20, utterances_per_video=2, words_per_utterance=8, seed=2)
    paths = generate_synthetic_sdk(tmp_path / "csd", spec, progress=False)
    out = tmp_path / "mmsa"
    argv = ["from-sdk", "--words", str(paths["words"]), "--visual", str(paths["visual"])]
    argv += ["--acoustic", str(paths["acoustic"]), "--labels", str(paths["labels"])]
    argv += ["--folds", str(paths["folds"]), "--out", str(out), "--max-len", "12"]
    argv += ["--unaligned-len", "64", "--no-progress"]
    return paths, out, argv


def _data_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="data")
    add_from_sdk_parser(parser.add_subparsers(dest="action", required=True))
    return parser


def test_from_sdk_handler_writes_pickles_and_prints_report(converted, capsys):
    _, out, argv = converted
    args = _data_parser().parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "videos:     20" in printed and "skipped: nothing" in printed
    report = json.loads((out / "conversion_report.json").read_text())
    aligned = safe_load(out / "aligned_12.pkl")
    unaligned = safe_load(out / "unaligned_64.pkl")
    for split in ("train", "valid", "test"):
        n = report["n_utterances"][split]
        assert aligned[split]["vision"].shape == (n, 12, 35)
        assert aligned[split]["audio"].shape == (n, 12, 74)
        assert unaligned[split]["audio"].shape == (n, 64, 74)
        assert list(unaligned[split]["id"]) == list(aligned[split]["id"])
        assert set(unaligned[split]) >= {"audio_lengths", "vision_lengths", "raw_text"}
    assert unaligned["train"]["audio_lengths"].max() == 64


@pytest.mark.skipif(not HAS_DATA_COMMAND, reason="ambcore.commands.data is not written yet")
def test_from_sdk_through_the_cli_then_load_dataset(converted, capsys):
    from ambcore.cli import main
    from ambcore.data import load_dataset

    _, out, argv = converted
    assert main(["data", *argv]) == 0
    capsys.readouterr()
    report = json.loads((out / "conversion_report.json").read_text())
    n_utterances = sum(report["n_utterances"].values())

    aligned = load_dataset(str(out / "aligned_12.pkl"))
    assert aligned.aligned and not aligned.is_synthetic
    assert (aligned.visual_dim, aligned.acoustic_dim) == (35, 74)
    assert sum(len(s) for s in aligned.splits.values()) == n_utterances
    train = aligned["train"]
    for i in range(len(train)):
        n_words = min(len(train.texts[i].split()), 12)
        assert len(train.words[i]) == n_words == len(train.visual[i]) == len(train.acoustic[i])
        assert "sp" not in train.words[i] and "$_$" in train.ids[i]
    assert np.all(np.abs(train.labels) <= 3)

    unaligned = load_dataset(str(out / "unaligned_64.pkl"))
    assert not unaligned.aligned
    lengths = [len(v) for v in unaligned["train"].acoustic]
    assert max(lengths) == 64 and min(lengths) > 0


@pytest.mark.skipif(not HAS_DATA_COMMAND, reason="ambcore.commands.data is not written yet")
def test_from_sdk_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from ambcore.cli import main

    missing = str(tmp_path / "nope.csd")
    code = main(
        [
            "data",
            "from-sdk",
            "--words",
            missing,
            "--visual",
            missing,
            "--acoustic",
            missing,
            "--labels",
            missing,
            "--folds",
            missing,
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "nope.csd" in err
