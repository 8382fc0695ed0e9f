"""The restricted unpickler: numpy arrays and plain builtins only; other payloads never run."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from ambcore.data.loaders import load_dataset
from ambcore.data.safe_pickle import safe_load, safe_loads
from ambcore.errors import DataError, UnsafePickleError


class _Payload:
    """Creates a marker file when unpickled by the standard unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_numpy_and_builtins_round_trip():
    obj = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "s": np.array(["x", "yz"], dtype=object),
        "u": np.array(["x", "yz"]),
        "scalar": np.float64(1.5),
        "nested": [(1, 2.0, "three", b"four", None, True), {1, 2}, frozenset({3})],
    }
    for protocol in (2, 4, 5):
        back = safe_loads(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(back["a"], obj["a"])
        assert back["s"].tolist() == ["x", "yz"] and back["u"].tolist() == ["x", "yz"]
        assert back["scalar"] == 1.5 and back["nested"] == obj["nested"]


def test_control_the_payload_runs_with_plain_pickle(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("layout", ["top", "inside-split"])
def test_malicious_pickle_refused_and_never_runs(tmp_path, layout):
    marker = tmp_path / "payload-ran"
    payload = _Payload(marker)
    if layout == "top":
        obj = payload
    else:
        obj = {"train": {"raw_text": np.array(["a"], dtype=object), "audio": payload}}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(UnsafePickleError) as info:
        load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "mkdir" in message  # names the file and the refused global
    assert not marker.exists()


def test_builtins_that_execute_are_refused(tmp_path):
    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(pickle.dumps(Eval()), source="x.pkl")


def test_truncated_and_garbage(tmp_path):
    path = tmp_path / "t.pkl"
    blob = pickle.dumps({"a": np.zeros((100, 10))})
    path.write_bytes(blob[:-50])
    with pytest.raises(DataError, match=f"{path}.*truncated"):
        safe_load(path)
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=str(path)):
        safe_load(path)


def test_loaded_arrays_pickle_and_copy_as_plain_ndarrays():
    import copy

    back = safe_loads(
        pickle.dumps({"a": np.arange(6.0).reshape(2, 3), "s": np.array(["x"], object)})
    )
    again = pickle.loads(pickle.dumps(back))
    assert type(again["a"]) is np.ndarray and again["s"].tolist() == ["x"]
    np.testing.assert_array_equal(copy.deepcopy(back)["a"], np.arange(6.0).reshape(2, 3))


def test_text_opcode_with_garbage_index_is_one_error():
    with pytest.raises(DataError, match="x.pkl"):
        safe_loads(b"(lp0\nNpXYZ\n.", source="x.pkl")
