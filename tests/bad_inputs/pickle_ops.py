"""Hand-written pickle opcodes for the bad-input tests (small, forged files).

Each function returns the bytes of opcodes that leave one object on the unpickler's stack.
"""

from __future__ import annotations

import struct

MARK, STOP, REDUCE, BUILD = b"(", b".", b"R", b"b"


def proto(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + STOP


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def binbytes(value: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(value)) + value


def integer(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def none() -> bytes:
    return b"N"


def boolean(value: bool) -> bytes:
    return b"\x88" if value else b"\x89"


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + b"t"


def lst(*items: bytes) -> bytes:
    return b"]" + (MARK + b"".join(items) + b"e" if items else b"")


def dct(pairs: dict[str, bytes]) -> bytes:
    body = b"".join(text(k) + v for k, v in pairs.items())
    return b"}" + (MARK + body + b"u" if pairs else b"")


def put(index: int) -> bytes:
    return b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"j" + struct.pack("<I", index)


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + REDUCE


def dtype(spec: str, order: str = "<", flags: int = 0, size: int = -1) -> bytes:
    state = tup(
        integer(3), text(order), none(), none(), none(), integer(size), integer(-1), integer(flags)
    )
    return call(glob("numpy", "dtype"), text(spec), boolean(False), boolean(True)) + state + BUILD


def array(shape: tuple[int, ...], dtype_ops: bytes, raw: bytes) -> bytes:
    """numpy's own route: _reconstruct(ndarray, (0,), b'b') then BUILD with the state."""
    empty = call(
        glob("numpy.core.multiarray", "_reconstruct"),
        glob("numpy", "ndarray"),
        tup(integer(0)),
        binbytes(b"b"),
    )
    state = tup(integer(1), tup(*map(integer, shape)), dtype_ops, boolean(False), raw)
    return empty + state + BUILD


def float_array(shape: tuple[int, ...], fill: float = 0.0) -> bytes:
    count = 1
    for d in shape:
        count *= d
    return array(shape, dtype("f4"), binbytes(struct.pack("<f", fill) * count))


def object_array(items: list[bytes]) -> bytes:
    return array((len(items),), dtype("O8", "|", 63), lst(*items))


def mmsa_split(n: int = 2, steps: int = 3, raw_text: bytes | None = None, **extra: bytes) -> bytes:
    keys = {
        "raw_text": raw_text if raw_text is not None else object_array([text("a b")] * n),
        "audio": float_array((n, steps, 4)),
        "vision": float_array((n, steps, 5)),
        "regression_labels": float_array((n,), 0.5),
    }
    keys.update(extra)
    return dct(keys)


def mmsa_file(
    train: bytes | None = None, valid: bytes | None = None, test: bytes | None = None
) -> bytes:
    return proto(
        dct(
            {
                "train": train or mmsa_split(),
                "valid": valid or mmsa_split(),
                "test": test or mmsa_split(),
            }
        )
    )
