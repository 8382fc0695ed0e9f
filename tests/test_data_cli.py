"""``python -m ambcore data inspect|synth``: reports, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from ambcore.cli import main
from ambcore.data.report import describe, seven_class_counts
from ambcore.data.synthetic import synthetic_bytes


@pytest.fixture()
def synth_file(tmp_path):
    path = tmp_path / "synth.pkl"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(path),
                "--n-train",
                "20",
                "--n-valid",
                "6",
                "--n-test",
                "7",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return path


def test_synth_writes_the_generator_bytes(synth_file, tmp_path):
    assert synth_file.read_bytes() == synthetic_bytes(20, 6, 7, seed=3)
    unaligned = tmp_path / "u.pkl"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(unaligned),
                "--unaligned",
                "--n-train",
                "5",
                "--n-valid",
                "2",
                "--n-test",
                "2",
            ]
        )
        == 0
    )
    assert unaligned.read_bytes() == synthetic_bytes(5, 2, 2, seed=1234, aligned=False)


def test_inspect_text_and_json(synth_file, capsys):
    assert main(["data", "inspect", str(synth_file)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "visual 35-d, acoustic 74-d" in out
    assert "7-class label counts" in out and "audio: -inf -> 0" in out
    assert main(["data", "inspect", str(synth_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sizes"] == {"train": 20, "valid": 6, "test": 7}
    assert report["synthetic"] is True and report["format"] == "mmsa-aligned"
    counts = report["splits"]["train"]["labels"]["seven_class_counts"]
    assert sum(counts.values()) == 20
    assert sum(report["repairs"].values()) > 0


def test_seven_class_bins_round_half_to_even():
    counts = seven_class_counts(np.array([-3.5, -2.5, -0.5, 0.5, 1.5, 2.4, 3.0]))
    assert counts == {-3: 1, -2: 1, -1: 0, 0: 2, 1: 0, 2: 2, 3: 1}


def test_describe_lengths(synth_file):
    from ambcore.data.loaders import load_dataset

    report = describe(load_dataset(synth_file))
    train = report["splits"]["train"]
    assert train["visual_steps"] == train["acoustic_steps"] == train["words"]


@pytest.mark.parametrize("case", ["missing", "evil", "bad-label"])
def test_inspect_bad_input_one_line_error(tmp_path, capsys, case):
    path = tmp_path / f"{case}.pkl"
    if case == "evil":
        path.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    elif case == "bad-label":
        rng = np.random.default_rng(0)
        split = {
            "raw_text": np.array(["a b"], dtype=object),
            "vision": rng.normal(size=(1, 2, 3)),
            "audio": rng.normal(size=(1, 2, 4)),
            "regression_labels": np.array([4.0]),
        }
        path.write_bytes(pickle.dumps({"train": split, "valid": split, "test": split}))
    assert main(["data", "inspect", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(path) in err
    if case == "evil":
        assert "os.system" in err
    if case == "bad-label":
        assert "'train'" in err and "'regression_labels'" in err


def test_exit_code_as_a_process(tmp_path):
    env = {**os.environ, "AMB_DATA": ""}
    result = subprocess.run(
        [sys.executable, "-m", "ambcore", "data", "inspect", str(tmp_path / "none.pkl")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no such dataset file" in result.stderr
