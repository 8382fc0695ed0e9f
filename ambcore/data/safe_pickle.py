"""A restricted, memory-safe unpickler for dataset files (thesis 6.3.1 data; MMSA / MAG-BERT /
MISA pickles).

Unpickling runs code: a pickle can name any importable callable (``os.system``,
``builtins.eval``...) and the standard unpickler calls it. Dataset pickles downloaded from the
internet only ever need numpy arrays, numpy dtypes/scalars and plain Python containers, so
``safe_load`` admits exactly those globals and refuses every other one *before* it is imported
or called: a refused file raises ``UnsafePickleError`` and its payload never runs.

Even the allowed globals are not handed to the pickle as they are: each is replaced by a checked
equivalent, because numpy's own reconstruction functions trust their input.

- **No object array from raw bytes.** ``numpy.dtype`` yields a stand-in whose pickled state is
  checked (plain bool/int/float/complex/str/bytes/object kinds only, no fields or sub-arrays,
  and object flags only on the object dtype); arrays are rebuilt from that checked dtype, with a
  raw buffer of exactly ``prod(shape) * itemsize`` bytes, and object arrays only from a list of
  already-unpickled Python objects. A forged dtype state is one ``DataError`` line.
- **Declared sizes are checked before anything is allocated.** A scan of the opcodes (no
  payload is read) checks every length prefix against the bytes left in the file and every memo
  index against the memo written so far, and estimates the memory of the objects the file
  builds; ``bytes(n)``/``bytearray(n)``, ``list(range(n))`` and friends are charged against the
  same budget; ``numpy.ndarray(...)`` called directly (buffers with strides) is refused.
- **Limits** (``MAX_DEPTH``, ``MEMORY_FACTOR``, ``MEMORY_SLACK``, ``LOGICAL_FACTOR``,
  ``LOGICAL_SLACK``): a file of S bytes may build objects of at most
  ``MEMORY_FACTOR * S + MEMORY_SLACK`` bytes (estimated before loading), nest at most
  ``MAX_DEPTH`` containers deep, and hold at most ``LOGICAL_FACTOR * S + LOGICAL_SLACK`` items
  and characters counted once per *reference* (a shared-reference "billion laughs" is refused
  before the loader expands it). Measured: unpickling a 187 MiB MMSA file (protocol 4) adds
  188 MiB, and ``data inspect`` on it peaks at 1.7 x its size over the interpreter; a 322 MiB
  MAG-BERT-style file (protocol 2, whose array bytes pass through latin-1 text) adds 911 MiB
  (2.8 x), and ``data inspect`` peaks at 3 x its size.

Every refusal is one ``DataError`` line naming the file and what was wrong.

Files written by numpy 1.x name ``numpy.core.*``; numpy 2 renamed the package ``numpy._core``.
Both spellings are accepted.
"""

from __future__ import annotations

import builtins
import io
import math
import mmap
import pickle
import pickletools
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ambcore.errors import DataError, UnsafePickleError

__all__ = [
    "safe_load",
    "safe_loads",
    "ALLOWED_GLOBALS",
    "MAX_DEPTH",
    "MEMORY_FACTOR",
    "MEMORY_SLACK",
    "LOGICAL_FACTOR",
    "LOGICAL_SLACK",
]

MAX_DEPTH = 64  # containers inside containers; MMSA files nest 4 deep, MAG-BERT/MISA 6
MEMORY_FACTOR = 16  # estimated object memory <= MEMORY_FACTOR * file size + MEMORY_SLACK
MEMORY_SLACK = 64 << 20
LOGICAL_FACTOR = 4  # items + characters + array bytes, counted per reference
LOGICAL_SLACK = 16 << 20

_NUMPY_NAMES = {
    "multiarray": ("_reconstruct", "scalar"),
    "numeric": ("_frombuffer",),
}
_BUILTIN_NAMES = (
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "bytes",
    "bytearray",
    "int",
    "float",
    "complex",
    "bool",
    "slice",
    "range",
)

# Every global a dataset pickle may name, as (module, name).
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        (f"{pkg}.{mod}", name)
        for pkg in ("numpy.core", "numpy._core")
        for mod, names in _NUMPY_NAMES.items()
        for name in names
    ]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(module, name) for name in _BUILTIN_NAMES for module in ("builtins", "__builtin__")]
)

# ---- dtypes ----------------------------------------------------------------------------------
_DTYPE_SPEC = re.compile(r"^[<>|=]?(b1|[iu][1248]|f[248]|c(8|16)|O[48]?|[USa]\d*)$")
_OBJECT_FLAGS = 0x07  # NPY_ITEM_REFCOUNT | NPY_LIST_PICKLE | NPY_ITEM_IS_POINTER


class _PickledDtype:
    """Stands in for ``numpy.dtype(spec)`` until its state is checked; ``resolve`` gives the
    real dtype, built from the spec, byte order and item size only (never the pickled flags)."""

    def __init__(self, source: str, spec: Any, align: Any = False, copy: Any = True):
        if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
            raise DataError(
                f"{source}: refused to load: numpy dtype {spec!r} is not a plain bool, int, "
                "float, complex, string or object dtype"
            )
        self._source, self._spec, self._order, self._size = source, spec, None, None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and 5 <= len(state) <= 9):
            raise DataError(f"{self._source}: refused to load: malformed numpy dtype state")
        order, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise DataError(
                f"{self._source}: refused to load: numpy dtype {self._spec!r} with fields or "
                "sub-arrays (structured dtypes are not dataset features)"
            )
        if order not in ("<", ">", "|", "="):
            raise DataError(f"{self._source}: refused to load: numpy byte order {order!r}")
        self._order = order
        size = state[5] if len(state) > 5 else -1
        if self._spec.lstrip("<>|=")[0] in "USa" and isinstance(size, int) and size >= 0:
            self._size = size
        real = self.resolve()
        flags = state[7] if len(state) > 7 else None
        if isinstance(flags, int) and bool(flags & _OBJECT_FLAGS) != real.hasobject:
            raise DataError(
                f"{self._source}: refused to load: forged numpy dtype state (object flags "
                f"{flags:#x} on dtype {real.str!r}); object arrays are never built from raw bytes"
            )

    def resolve(self) -> np.dtype:
        spec = self._spec.lstrip("<>|=").replace("a", "S")
        if spec[0] == "O":
            return np.dtype(object)
        if self._size is not None:
            unit = 4 if spec[0] == "U" else 1
            if self._size % unit:
                raise DataError(
                    f"{self._source}: refused to load: string dtype of {self._size} bytes"
                )
            spec = f"{spec[0]}{self._size // unit}"
        order = self._order or (self._spec[0] if self._spec[0] in "<>|=" else "=")
        return np.dtype(spec).newbyteorder(order) if order in "<>" else np.dtype(spec)


# ---- arrays ----------------------------------------------------------------------------------
class PickledArray(np.ndarray):
    """A numpy array rebuilt by the restricted unpickler (a plain ndarray otherwise); its
    ``__setstate__`` checks the pickled state before numpy sees it."""

    _source = "<pickle>"

    def __new__(cls, *args, **kwargs):
        raise DataError(
            f"{cls._source}: refused to load: the pickle calls numpy.ndarray(...) directly "
            "(buffers with strides); dataset arrays are pickled through _reconstruct"
        )

    def __reduce_ex__(self, protocol):
        """Pickled (and deep-copied) as the plain ndarray it is."""
        return np.asarray(self).__reduce_ex__(protocol)

    def __setstate__(self, state: Any) -> None:
        source = self._source
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError(f"{source}: refused to load: malformed numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _PickledDtype):
            raise DataError(f"{source}: refused to load: numpy array state without a numpy dtype")
        dtype = dtype.resolve()
        count = _checked_count(shape, source)
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != count:
                raise DataError(
                    f"{source}: refused to load: an object array of shape {tuple(shape)} needs a "
                    f"list of {count} objects, got {type(raw).__name__}; object arrays are never "
                    "built from raw bytes"
                )
        else:
            raw = _checked_buffer(raw, count * dtype.itemsize, shape, dtype, source)
        np.ndarray.__setstate__(self, (tuple(shape), dtype, bool(fortran), raw))


def _checked_count(shape: Any, source: str) -> int:
    if not (
        isinstance(shape, tuple)
        and len(shape) <= 32
        and all(type(d) is int and d >= 0 for d in shape)
    ):
        raise DataError(f"{source}: refused to load: numpy array shape {shape!r}")
    return math.prod(shape)


def _checked_buffer(raw: Any, nbytes: int, shape, dtype, source: str) -> Any:
    if isinstance(raw, str):  # Python 2 pickles: the buffer was a str, decoded as latin1
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != nbytes:
        got = f"{len(raw)} bytes" if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
        raise DataError(
            f"{source}: refused to load: a numpy array of shape {tuple(shape)} and dtype "
            f"{dtype.str} needs exactly {nbytes} bytes, the pickle gives {got}"
        )
    return raw


def _array_class(source: str) -> type:
    return type("PickledArray", (PickledArray,), {"_source": source, "__module__": __name__})


def _numpy_globals(source: str, arrays: type) -> dict[str, Callable]:
    def dtype(*args):
        return _PickledDtype(source, *args)

    def reconstruct(subtype, shape, typecode=b"b"):
        if subtype is not arrays:
            raise DataError(f"{source}: refused to load: _reconstruct of {subtype!r}")
        return np.ndarray.__new__(arrays, (0,), np.uint8)

    def scalar(dtype, data=None):
        if not isinstance(dtype, _PickledDtype) or dtype.resolve().hasobject:
            raise DataError(f"{source}: refused to load: numpy scalar of a non-numeric dtype")
        real = dtype.resolve()
        data = _checked_buffer(data, real.itemsize, (), real, source)
        return np.frombuffer(data, dtype=real)[0]

    def frombuffer(buffer, dtype, shape, order="C"):
        if not isinstance(dtype, _PickledDtype) or dtype.resolve().hasobject:
            raise DataError(
                f"{source}: refused to load: numpy array from a buffer with a non-numeric dtype; "
                "object arrays are never built from raw bytes"
            )
        real = dtype.resolve()
        shape = tuple(shape) if isinstance(shape, list) else shape
        buffer = _checked_buffer(
            buffer, _checked_count(shape, source) * real.itemsize, shape, real, source
        )
        if order not in ("C", "F"):
            raise DataError(f"{source}: refused to load: array order {order!r}")
        return np.frombuffer(buffer, dtype=real).reshape(shape, order=order).view(arrays)

    return {
        "_reconstruct": reconstruct,
        "scalar": scalar,
        "_frombuffer": frombuffer,
        "dtype": dtype,
    }


# ---- builtins, charged against the allocation budget -----------------------------------------
class _Budget:
    """Bytes that constructor calls may still allocate (declared sizes are charged first)."""

    def __init__(self, source: str, file_size: int, limit: int):
        self.source, self.file_size, self.left = source, file_size, limit

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise DataError(
                f"{self.source}: refused to load: {what} would allocate {nbytes} bytes, more "
                f"than this file may build ({max(self.left, 0)} bytes left of its budget)"
            )
        self.left -= nbytes


def _builtin_globals(budget: _Budget) -> dict[str, Callable]:
    def sized(name: str, per_item: int) -> Callable:
        kind = getattr(builtins, name)

        def build(*args):
            arg = args[0] if args else ()
            if isinstance(arg, bool) or len(args) > 2:
                raise DataError(f"{budget.source}: refused to load: {name}{args!r:.60}")
            count = arg if isinstance(arg, int) else len(arg) if hasattr(arg, "__len__") else None
            if count is None or count < 0:
                raise DataError(f"{budget.source}: refused to load: {name} of {type(arg).__name__}")
            if isinstance(arg, (int, range)) and count > budget.file_size:
                raise DataError(
                    f"{budget.source}: refused to load: {name}() of {count} items declared in a "
                    f"file of {budget.file_size} bytes"
                )
            budget.charge(count * per_item, f"{name}() of {count} items")
            return kind(*args)

        return build

    def text(*args):
        if not all(isinstance(a, (str, bytes, bytearray, int, float)) for a in args[:1]):
            raise DataError(f"{budget.source}: refused to load: str of {type(args[0]).__name__}")
        return str(*args)

    def checked_range(*args):
        if not all(type(a) is int for a in args):
            raise DataError(f"{budget.source}: refused to load: range{args!r:.60}")
        return range(*args)

    plain = {name: getattr(builtins, name) for name in ("int", "float", "complex", "bool", "slice")}
    return {
        **plain,
        "str": text,
        "range": checked_range,
        "bytes": sized("bytes", 1),
        "bytearray": sized("bytearray", 1),
        **{name: sized(name, 64) for name in ("dict", "list", "tuple", "set", "frozenset")},
    }


def _encode(budget: _Budget) -> Callable:
    def encode(text, encoding="utf-8", errors="strict"):
        """Python 3 writes ``bytes`` under protocols 0-2 as ``_codecs.encode(str, "latin1")``;
        only that codec is run."""
        if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
            raise DataError(
                f"{budget.source}: refused to load: _codecs.encode with codec {encoding!r}; "
                "dataset pickles only use 'latin1'"
            )
        if not isinstance(text, str) or errors != "strict":
            kind = type(text).__name__
            raise DataError(f"{budget.source}: refused to load: _codecs.encode of {kind}")
        return text.encode("latin1")

    return encode


# ---- the opcode scan: declared sizes against the file, before anything is allocated --------
_OPS = {op.code.encode("latin1")[0]: op for op in pickletools.opcodes}
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1),
    pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4),
    pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8),
}
_OBJECT_COST = 80  # bytes of a small Python object plus the pointer that holds it
_COSTS = {
    "EMPTY_SET": 240,
    "FROZENSET": 240,
    "ADDITEMS": 0,
    "MARK": 0,
    "STOP": 0,
    "POP": 0,
    "POP_MARK": 0,
    "PROTO": 0,
    "FRAME": 0,
    "PUT": 16,
    "BINPUT": 16,
    "LONG_BINPUT": 16,
    "MEMOIZE": 16,
}


def _scan(data, source: str) -> int:
    """Walk the opcodes of ``data`` (a buffer) without building anything; return the estimated
    memory of the objects they build. Raises DataError on a declared size past the file's end,
    a memo index out of order, out-of-band buffers or a missing STOP."""
    size, pos, puts, estimate = len(data), 0, 0, 0
    while pos < size:
        code = data[pos]
        op = _OPS.get(code)
        if op is None:
            raise DataError(
                f"{source}: not a readable pickle (corrupt file?): opcode {code:#x} at byte {pos}"
            )
        pos += 1
        arg = op.arg
        payload = 0
        if op.name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            raise DataError(f"{source}: refused to load: out-of-band buffers (pickle protocol 5)")
        if arg is None:
            pass
        elif arg.n == pickletools.UP_TO_NEWLINE:
            lines = 2 if op.name in ("GLOBAL", "INST") else 1
            for _ in range(lines):
                end = data.find(b"\n", pos)
                if end < 0:
                    raise DataError(
                        f"{source}: not a readable pickle (truncated file?): {op.name} at "
                        f"byte {pos - 1}"
                    )
                payload += end - pos
                if op.name == "PUT":
                    _check_memo(int(bytes(data[pos:end]) or b"-1"), puts, source)
                pos = end + 1
        elif arg.n in _LENGTH_PREFIX:
            fmt, width = _LENGTH_PREFIX[arg.n]
            if pos + width > size:
                raise DataError(f"{source}: not a readable pickle (truncated file?) at byte {pos}")
            (payload,) = struct.unpack_from(fmt, data, pos)
            pos += width
            if payload < 0 or payload > size - pos:
                raise DataError(
                    f"{source}: refused to load: {op.name} at byte {pos - width - 1} declares "
                    f"{payload} bytes, but only {size - pos} bytes are left (truncated or "
                    "forged file)"
                )
            pos += payload
        else:  # fixed width
            if pos + arg.n > size:
                raise DataError(f"{source}: not a readable pickle (truncated file?) at byte {pos}")
            if op.name in ("BINPUT", "LONG_BINPUT"):
                _check_memo(int.from_bytes(data[pos : pos + arg.n], "little"), puts, source)
            elif op.name == "FRAME":
                (frame,) = struct.unpack_from("<Q", data, pos)
                if frame > size - pos - 8:
                    raise DataError(
                        f"{source}: refused to load: FRAME declares {frame} bytes, but only "
                        f"{size - pos - 8} bytes are left (truncated or forged file)"
                    )
            pos += arg.n
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            puts += 1
        factor = 4 if "UNICODE" in op.name else 1  # a UTF-8 byte may become 4 bytes of str
        estimate += _COSTS.get(op.name, _OBJECT_COST) + factor * payload
        if op.name == "STOP":
            return estimate
    raise DataError(f"{source}: not a readable pickle (truncated file?): no STOP opcode")


def _check_memo(index: int, puts: int, source: str) -> None:
    if not 0 <= index <= puts:
        raise DataError(
            f"{source}: refused to load: memo index {index} after {puts} memo entries (a "
            "forged index would make the unpickler allocate its memo table up to it)"
        )


# ---- the walk: depth and shared references ---------------------------------------------------
def _check_tree(obj: Any, source: str, limit: int) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than ``limit`` items/characters/bytes
    counted per reference (what the loader will expand), without recursion."""
    stack, total = [(obj, 0)], 0
    while stack:
        value, depth = stack.pop()
        total += 1
        if isinstance(value, (str, bytes, bytearray)):
            total += len(value)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                stack.extend((v, depth + 1) for v in value.reshape(-1))
            else:
                total += value.nbytes
        elif isinstance(value, (list, tuple, set, frozenset, dict)):
            if depth >= MAX_DEPTH:
                raise DataError(
                    f"{source}: refused to load: containers nested more than {MAX_DEPTH} deep"
                )
            items = value.items() if isinstance(value, dict) else value
            for item in items:
                if isinstance(item, tuple) and isinstance(value, dict):
                    stack.extend(((item[0], depth + 1), (item[1], depth + 1)))
                else:
                    stack.append((item, depth + 1))
        if total > limit:
            raise DataError(
                f"{source}: refused to load: its shared references expand to more than "
                f"{limit} items and characters ({LOGICAL_FACTOR} x its size + "
                f"{LOGICAL_SLACK >> 20} MiB); a dataset stores each value once"
            )


# ---- loading ---------------------------------------------------------------------------------
class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str, budget: _Budget):
        # encoding="latin1" reads numpy arrays pickled under Python 2 (MAG-BERT's files).
        super().__init__(file, encoding="latin1")
        self._source = source
        arrays = _array_class(source)
        numpy_globals = _numpy_globals(source, arrays)
        builtins_globals = _builtin_globals(budget)
        self._globals: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): arrays,
            ("numpy", "dtype"): numpy_globals["dtype"],
            ("_codecs", "encode"): _encode(budget),
        }
        for module, name in ALLOWED_GLOBALS:
            if name in numpy_globals and module.startswith("numpy"):
                self._globals[(module, name)] = numpy_globals[name]
            elif module in ("builtins", "__builtin__"):
                self._globals[(module, name)] = builtins_globals[name]

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle asks for {module}.{name}, which is "
                "not a numpy array/dtype or a plain builtin; nothing from it was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle uses persistent ids ({pid!r}); "
            "dataset pickles hold numpy arrays and plain containers only"
        )


def _load(data, file: io.BufferedIOBase, source: str) -> Any:
    """Scan ``data`` (the file's bytes as a buffer), then unpickle ``file`` (the same bytes)."""
    size = len(data)
    if size == 0:
        raise DataError(f"{source}: empty file; expected a dataset pickle")
    try:
        estimate = _scan(data, source)
        memory_limit = MEMORY_FACTOR * size + MEMORY_SLACK
        if estimate > memory_limit:
            raise DataError(
                f"{source}: refused to load: its objects would take about {estimate} bytes, "
                f"more than {MEMORY_FACTOR} x its size + {MEMORY_SLACK >> 20} MiB "
                f"({memory_limit} bytes)"
            )
        budget = _Budget(source, size, memory_limit - estimate)
        obj = _RestrictedUnpickler(file, source, budget).load()
    except DataError:
        raise
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        IndexError,
        struct.error,
        AttributeError,
        KeyError,
        MemoryError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise DataError(
            f"{source}: not a readable pickle (truncated or corrupt file?): "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    _check_tree(obj, source, LOGICAL_FACTOR * size + LOGICAL_SLACK)
    return obj


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and plain builtins."""
    data = bytes(data)
    return _load(data, io.BytesIO(data), source)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with the restricted unpickler (scanned through a memory
    map, then streamed; the file is never read whole)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    with open(path, "rb") as file:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file; expected a dataset pickle")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _load(mapped, file, str(path))
