"""A restricted unpickler for dataset files (thesis 6.3.1 data; MMSA / MAG-BERT / MISA pickles).

Unpickling runs code: a pickle can name any importable callable (``os.system``,
``builtins.eval``...) and the standard unpickler calls it. Dataset pickles downloaded from the
internet only ever need numpy arrays, numpy dtypes/scalars and plain Python containers, so
``safe_load`` admits exactly those globals and refuses every other one *before* it is imported
or called: a refused file raises ``UnsafePickleError`` and its payload never runs.

Files written by numpy 1.x name ``numpy.core.*``; numpy 2 renamed the package ``numpy._core``.
Both spellings are accepted and resolved to the installed numpy's functions.
"""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from ambcore.errors import DataError, UnsafePickleError

__all__ = ["safe_load", "safe_loads", "ALLOWED_GLOBALS"]

# (module, name) -> the object the unpickler may use. Anything else is refused.
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}
for _package in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_package}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_package}.multiarray", "scalar")] = _np_multiarray.scalar
    _NUMPY_GLOBALS[(f"{_package}.numeric", "_frombuffer")] = _np_numeric._frombuffer
_NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype

# Plain data types only; no callables that evaluate, import, open or get attributes.
_BUILTIN_NAMES = (
    "dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
    "int", "float", "complex", "bool", "slice", "range",
)  # fmt: skip
_BUILTIN_GLOBALS: dict[tuple[str, str], Any] = {
    (module, name): getattr(builtins, name)
    for name in _BUILTIN_NAMES
    for module in ("builtins", "__builtin__")  # Python 2 pickles say __builtin__
}
# Python 3 writes ``bytes`` as _codecs.encode(str, "latin1") under pickle protocols 0-2; it
# only encodes a string.
_BUILTIN_GLOBALS[("_codecs", "encode")] = __import__("_codecs").encode

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_NUMPY_GLOBALS, **_BUILTIN_GLOBALS}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str):
        # encoding="latin1" reads numpy arrays pickled under Python 2 (MAG-BERT's files).
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
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


def _load(file: io.BufferedIOBase, source: str) -> Any:
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            AttributeError, KeyError, MemoryError, OverflowError) as exc:  # fmt: skip
        raise DataError(
            f"{source}: not a readable pickle (truncated or corrupt file?): "
            f"{type(exc).__name__}: {exc}"
        ) from None


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` admitting only numpy arrays/dtypes/scalars and plain builtins."""
    return _load(io.BytesIO(data), source)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with the restricted unpickler (streamed, not read whole)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataset file")
    with open(path, "rb") as file:
        return _load(file, str(path))
