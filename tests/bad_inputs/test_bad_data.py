"""Hostile and dirty dataset files: each is one ``error:`` line from ``data inspect``, in bounded
memory, with no traceback and no partial output.

The forged pickles are written opcode by opcode (``pickle_ops``); each file is a few hundred
bytes to a few MB. Each case runs the CLI in a child process under an address-space limit and
reads the child's peak resident memory from ``wait4``.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pickle_ops as P
import pytest
from inspect_batch import ROOT, Result, run_batch

from ambcore.data.loaders import FEATURE_LIMIT, load_dataset
from ambcore.data.safe_pickle import safe_loads
from ambcore.errors import DataError

GROWTH_LIMIT_KB = 256 << 10  # peak resident memory may grow by at most 256 MiB per file
CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {}  # name -> (file bytes, message fragments)


def case(name: str, data: bytes, *fragments: str) -> str:
    CASES[name] = (data, fragments)
    return name


@pytest.fixture(scope="module")
def inspected(tmp_path_factory) -> dict[str, Result]:
    """Every CASES file through ``data inspect`` in one child process."""
    folder = tmp_path_factory.mktemp("bad_data")
    paths = []
    # The forged pointers crashed the unchecked loader: last, so that a crash hides no other case.
    for name, (data, _) in sorted(CASES.items(), key=lambda item: "garbage" in item[0]):
        paths.append(folder / f"{name}.pkl")
        paths[-1].write_bytes(data)
    results = run_batch(paths, folder)
    return {path.stem: (path, results[str(path)]) for path in paths}


def assert_one_line_error(inspected, name: str) -> str:
    path, result = inspected[name]
    assert result.code == 1, f"exit {result.code}: {result.err[-800:]}"
    assert result.out == "", "partial output"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err[-800:]
    assert "Traceback" not in result.err and "MemoryError" not in result.err
    assert str(path) in lines[0]
    for fragment in CASES[name][1]:
        assert fragment in lines[0], lines[0]
    assert result.growth_kb < GROWTH_LIMIT_KB, f"peak memory grew by {result.growth_kb} KiB"
    return lines[0]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(data)
    return path


# ---- memory safety: no object array from raw bytes -------------------------------------------
def _forged_frombuffer(fill: bytes) -> bytes:
    forged = P.call(
        P.glob("numpy.core.numeric", "_frombuffer"),
        P.binbytes(fill * 16),
        P.dtype("f8", flags=63),
        P.tup(P.integer(2)),
        P.text("C"),
    )
    return P.mmsa_file(train=P.mmsa_split(raw_text=forged))


FORGED = [
    case("frombuffer-garbage-pointers", _forged_frombuffer(b"A"), "refused to load", "forged"),
    case("frombuffer-null-pointers", _forged_frombuffer(b"\0"), "refused to load", "forged"),
    case(
        "reconstruct-forged-flags",
        P.mmsa_file(
            train=P.mmsa_split(
                raw_text=P.array((2,), P.dtype("f8", flags=63), P.binbytes(b"\0" * 16))
            )
        ),
        "refused to load",
        "forged",
    ),
    case(
        "object-dtype-from-bytes",
        P.mmsa_file(
            train=P.mmsa_split(
                raw_text=P.array((2,), P.dtype("O8", "|", 63), P.binbytes(b"\0" * 16))
            )
        ),
        "refused to load",
        "never built from raw bytes",
    ),
]


@pytest.mark.parametrize("name", FORGED)
def test_object_arrays_never_from_raw_bytes(inspected, name):
    assert_one_line_error(inspected, name)


def _meta(value: bytes) -> bytes:
    return P.proto(
        P.dct(
            {
                "train": P.mmsa_split(),
                "valid": P.mmsa_split(),
                "test": P.mmsa_split(),
                "meta": value,
            }
        )
    )


CODEC = case(
    "codec-utf16",
    _meta(P.call(P.glob("_codecs", "encode"), P.text("x"), P.text("utf-16"))),
    "refused to load",
    "'utf-16'",
)


def test_codecs_encode_only_latin1(inspected):
    assert_one_line_error(inspected, CODEC)
    # numpy's own protocol-2 bytes still load
    latin1 = P.call(P.glob("_codecs", "encode"), P.text("\xff"), P.text("latin1"))
    assert safe_loads(P.proto(latin1)) == b"\xff"


# ---- allocation bounds ------------------------------------------------------------------------
ZERO_STRIDES = P.call(
    P.glob("numpy", "ndarray"),
    P.tup(*map(P.integer, (10**5, 10**4, 10**4))),
    P.dtype("f4"),
    P.binbytes(b"\0" * 4),
    P.integer(0),
    P.tup(P.integer(0), P.integer(0), P.integer(0)),
)

BOMBS = [
    case(
        "bytearray-2GiB",
        _meta(P.call(P.glob("builtins", "bytearray"), P.integer(2**31))),
        "refused to load",
        "bytearray",
    ),
    case(
        "bytes-10GB",
        _meta(P.call(P.glob("builtins", "bytes"), P.integer(10**10))),
        "refused to load",
        "bytes",
    ),
    case(
        "list-range-1e9",
        _meta(
            P.call(
                P.glob("builtins", "list"), P.call(P.glob("builtins", "range"), P.integer(10**9))
            )
        ),
        "refused to load",
        "list",
    ),
    case(
        "zero-stride-view",
        P.mmsa_file(train=P.mmsa_split(audio=ZERO_STRIDES)),
        "refused to load",
        "numpy.ndarray",
    ),
    case(
        "binbytes8-3GB",
        b"\x80\x04\x8e" + struct.pack("<Q", 3 * 10**9) + b"x" * 40 + b".",
        "refused to load",
        "declares",
    ),
    case(
        "frame-3GB",
        b"\x80\x04\x95" + struct.pack("<Q", 3 * 10**9) + b"N.",
        "refused to load",
        "FRAME",
    ),
    case(
        "memo-index-2e9",
        b"\x80\x02Nr" + struct.pack("<I", 2 * 10**9) + b".",
        "refused to load",
        "memo index",
    ),
    case(
        "deep-nesting",
        P.mmsa_file(
            train=P.mmsa_split(
                raw_text=P.object_array([b"]" * 200_000 + b"a" * 199_999, P.text("b")])
            )
        ),
        "refused to load",
        "nested",
    ),
]


@pytest.mark.parametrize("name", BOMBS)
def test_declared_sizes_checked_before_allocation(inspected, name):
    assert len(CASES[name][0]) < 1 << 20
    assert_one_line_error(inspected, name)


def _billion_laughs(n: int = 100_000) -> bytes:
    words = P.text(" a" * 20_000) + P.put(0)  # 40 kB of text, then n - 1 references to it
    raw_text = P.object_array([words] + [P.get(0)] * (n - 1))
    split = P.dct(
        {
            "raw_text": raw_text,
            "audio": P.float_array((n, 1, 1)),
            "vision": P.float_array((n, 1, 1)),
            "regression_labels": P.float_array((n,)),
        }
    )
    return P.proto(P.dct({"train": split, "valid": P.mmsa_split(), "test": P.mmsa_split()}))


LAUGHS = case("billion-laughs", _billion_laughs(), "refused to load", "shared references")


def test_shared_reference_billion_laughs_in_raw_text(inspected):
    assert len(CASES[LAUGHS][0]) < 4 << 20
    assert_one_line_error(inspected, LAUGHS)


def _plain(n: int = 20_000) -> bytes:
    texts = P.object_array([P.text(f"w{i} x") for i in range(n)])
    return P.mmsa_file(train=P.mmsa_split(n=n, steps=5, raw_text=texts))


PLAIN = case("plain", _plain())


def test_a_plain_file_still_loads_in_bounded_memory(inspected):
    """Control: a valid hand-written file of ~2 MB loads through the same runner and limits."""
    path, result = inspected[PLAIN]
    assert result.code == 0 and "Traceback" not in result.err, result.err[-800:]
    assert "train" in result.out and result.growth_kb < GROWTH_LIMIT_KB


def test_one_file_through_python_m_ambcore(tmp_path):
    """The real command line, as a process: exit 1, one line, nothing on stdout."""
    path = write(tmp_path, "forged", CASES[FORGED[0]][0])
    child = subprocess.run(
        [sys.executable, "-m", "ambcore", "data", "inspect", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert child.returncode == 1 and child.stdout == ""
    assert child.stderr.count("\n") == 1 and child.stderr.startswith(f"error: {path}")


# ---- loader validation -------------------------------------------------------------------------
def _split(n=2, steps=3, **override):
    rng = np.random.default_rng(0)
    split = {
        "raw_text": np.array(["a b", "c d e"][:n] + ["f"] * max(0, n - 2), dtype=object),
        "id": np.array([f"v{i}$_$0" for i in range(n)], dtype=object),
        "audio": rng.normal(size=(n, steps, 4)).astype(np.float32),
        "vision": rng.normal(size=(n, steps, 5)).astype(np.float32),
        "regression_labels": np.zeros(n, np.float32),
    }
    split.update(override)
    return split


def _dataset(tmp_path, name, train=None, valid=None, test=None) -> Path:
    import pickle

    obj = {
        "train": train or _split(),
        "valid": valid or _split(id=np.array(["w0", "w1"], object)),
        "test": test or _split(id=np.array(["t0", "t1"], object)),
    }
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


VALIDATION = {
    "empty-train": (dict(train=_split(n=0)), ("'train'", "no utterances")),
    "empty-valid": (dict(valid=_split(n=0)), ("'valid'", "no utterances")),
    "empty-test": (dict(test=_split(n=0, id=np.array([], object))), ("'test'", "no utterances")),
    "lone-surrogate": (
        dict(train=_split(raw_text=np.array(["a \ud800 b", "c"], object))),
        ("'raw_text'", "row 0", "surrogate"),
    ),
    "huge-features": (
        dict(train=_split(audio=np.full((2, 3, 4), 1e37, np.float32))),
        ("'audio'", "1e+37"),
    ),
    "complex-features": (
        dict(train=_split(vision=np.ones((2, 3, 5), np.complex64))),
        ("'vision'", "complex64"),
    ),
    "fractional-lengths": (
        dict(
            train=_split(
                steps=4,
                audio=np.ones((2, 6, 4), np.float32),
                audio_lengths=np.array([1.5, 2.0]),
                vision_lengths=np.array([2, 3]),
            )
        ),
        ("'audio_lengths'", "1.5"),
    ),
    "none-text": (
        dict(train=_split(raw_text=np.array([None, "c"], object))),
        ("'raw_text'", "row 0", "None"),
    ),
    "all-nan-features": (
        dict(train=_split(audio=np.full((2, 3, 4), np.nan, np.float32))),
        ("'train'", "'audio'", "no finite value"),
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATION))
def test_dirty_data_one_line(tmp_path, case):
    splits, fragments = VALIDATION[case]
    path = _dataset(tmp_path, case, **splits)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


SURROGATE = case(
    "surrogate-via-cli",
    P.mmsa_file(train=P.mmsa_split(raw_text=P.object_array([P.text("\ud800"), P.text("c")]))),
    "'raw_text'",
    "surrogate",
)


def test_dirty_data_through_the_cli(inspected):
    assert_one_line_error(inspected, SURROGATE)


def test_feature_bound_is_documented_and_inclusive(tmp_path):
    ok = _split(audio=np.full((2, 3, 4), FEATURE_LIMIT, np.float32))
    assert load_dataset(_dataset(tmp_path, "edge", train=ok)).acoustic_dim == 4


def test_aligned_shape_with_length_arrays_is_reported(tmp_path):
    train = _split(audio_lengths=np.array([2, 3]), vision_lengths=np.array([2, 3]))
    dataset = load_dataset(_dataset(tmp_path, "lengths", train=train))
    assert dataset.format == "mmsa-unaligned"
    notes = [k for k in dataset.repairs if k.startswith("train/") and "length arrays" in k]
    assert notes and dataset.repairs[notes[0]] == 2
    assert [len(v) for v in dataset["train"].visual] == [2, 3]


def test_many_small_objects_refused_by_the_estimate_before_loading():
    """2 MB of EMPTY_SET opcodes would build ~0.5 GB of sets: refused from the scan alone."""
    n = 2_000_000
    data = P.proto(b"]" + P.MARK + b"\x8f" * n + b"e", protocol=4)
    with pytest.raises(DataError, match="objects would take about"):
        safe_loads(data, source="sets.pkl")
