"""Bad inputs to the SDK converter (``ambcore.data.sdk``): huge finite frame values and damaged
``.csd`` files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ambcore.bench.sdk import SyntheticSdkSpec, generate_synthetic_sdk
from ambcore.cli import main
from ambcore.data.safe_pickle import safe_load
from ambcore.data.sdk import CsdFile, SortedFrames, write_csd
from ambcore.data.types import SPLITS
from ambcore.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("huge", [1e20, 3e38, -3e38])
def test_one_huge_frame_does_not_zero_the_later_words(huge):
    """Frames [i, i+1) with value i (frame 0: ``huge``); word k = [k, k+1) must average to k."""
    n = 12
    intervals = np.stack([np.arange(n), np.arange(1, n + 1)], 1).astype(np.float64)
    features = np.arange(n, dtype=np.float32)[:, None] + np.array([[0.0, 0.5]], np.float32)
    features[0] = huge
    words = intervals[1:].copy()
    means, counts = SortedFrames(intervals, features).average(words)
    assert counts.tolist() == [1] * (n - 1)
    np.testing.assert_array_equal(means, features[1:])
    # a word spanning the huge frame and the next: the float64 mean of its own two frames
    both, _ = SortedFrames(intervals, features).average(np.array([[0.0, 2.0], [2.0, 4.0]]))
    np.testing.assert_array_equal(
        both[1], features[2:4].astype(np.float64).mean(0).astype(np.float32)
    )


def _damaged_csd(tmp_path, name: str, root: str, dim: int):
    rng = np.random.default_rng(0)
    frames = np.stack([np.arange(60), np.arange(1, 61)], 1).astype(np.float64) / 10
    videos = {
        f"v{i:03d}": (rng.normal(size=(60, dim)).astype(np.float32), frames) for i in range(300)
    }
    path = write_csd(tmp_path / name, root, videos)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - (1 << 19) : middle + (1 << 19)] = bytes(1 << 20)  # 1 MiB zeroed inside
    path.write_bytes(bytes(data))
    return path


def test_damaged_csd_is_one_data_error(tmp_path):
    path = _damaged_csd(tmp_path, "V.csd", "FACET", 20)
    with pytest.raises(DataError) as info:
        with CsdFile(path) as csd:
            for video in csd.video_ids:
                csd.read(video)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "damaged" in message


def test_damaged_csd_through_from_sdk_cli(tmp_path, capsys):
    rng = np.random.default_rng(1)
    ids = [f"v{i:03d}" for i in range(300)]
    words = {
        v: (np.array([b"good"] * 6)[:, None], np.stack([np.arange(6), np.arange(1, 7)], 1) / 1.0)
        for v in ids
    }
    labels = {v: (rng.uniform(-3, 3, (1, 7)), np.array([[0.0, 6.0]])) for v in ids}
    paths = {
        "words": write_csd(tmp_path / "W.csd", "words", words),
        "visual": _damaged_csd(tmp_path, "V.csd", "FACET", 20),
        "acoustic": write_csd(
            tmp_path / "A.csd",
            "COVAREP",
            {
                v: (
                    np.ones((60, 5), np.float32),
                    np.stack([np.arange(60), np.arange(1, 61)], 1) / 10,
                )
                for v in ids
            },
        ),
        "labels": write_csd(tmp_path / "L.csd", "All Labels", labels),
    }
    (tmp_path / "folds.json").write_text(
        json.dumps({"train": ids[:100], "valid": ids[100:200], "test": ids[200:]})
    )
    argv = [
        "data",
        "from-sdk",
        "--out",
        str(tmp_path / "out"),
        "--folds",
        str(tmp_path / "folds.json"),
        "--no-progress",
    ]
    for key, path in paths.items():
        argv += [f"--{key}", str(path)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "V.csd" in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert not list((tmp_path / "out").glob("*.pkl"))  # no partial output


_CONVERT = """
import json, resource, sys
from ambcore.data.sdk import convert_sdk_to_mmsa
paths, out, length = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
convert_sdk_to_mmsa(paths["words"], paths["visual"], paths["acoustic"], paths["labels"],
                    paths["folds"], out, max_len=20, unaligned_len=length, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _conversion_growth_kb(tmp_path, paths, length: int) -> int:
    paths = json.dumps({k: str(v) for k, v in paths.items()})
    child = subprocess.run(
        [sys.executable, "-c", _CONVERT, paths, str(tmp_path / f"out{length}"), str(length)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return int(child.stdout.split()[-1])


@pytest.mark.slow
def test_unaligned_layout_written_in_bounded_memory(tmp_path):
    """The unaligned arrays (~110 MB here) never sit in memory: the conversion's peak grows by
    far less than their size over an aligned-only conversion."""
    spec = SyntheticSdkSpec(n_videos=60, seed=5)
    paths = generate_synthetic_sdk(tmp_path / "csd", spec, progress=False)
    aligned_only = _conversion_growth_kb(tmp_path, paths, 0)
    with_unaligned = _conversion_growth_kb(tmp_path, paths, 600)
    unaligned = safe_load(tmp_path / "out600" / "unaligned_600.pkl")
    size_kb = sum(unaligned[s][k].nbytes for s in SPLITS for k in ("audio", "vision")) >> 10
    assert size_kb > 80 << 10
    print(
        f"peak growth: aligned only {aligned_only} KiB, with unaligned {with_unaligned} KiB, "
        f"unaligned arrays {size_kb} KiB"
    )
    assert with_unaligned - aligned_only < size_kb // 4
    assert not list((tmp_path / "out600").glob(".*.tmp"))  # temporary rows removed
