"""One fsync'd atomic write for the files the package writes (run folders, checkpoints,
dataset pickles).

``atomic_file(path)`` yields an open temporary file in the target's folder; when the block
ends without an error the file is flushed, fsync'ed and renamed over ``path`` with
``os.replace``, and the folder is fsync'ed so that the rename persists. On an error the
temporary file is removed and the error propagates. A crash (even ``kill -9``) leaves either
the previous file or the new one, never a partial file; what it can leave is a hidden
``.NAME.*.tmp`` beside the target. A file gets the mode a plain ``open`` would give it (0666
less the umask), not ``tempfile.mkstemp``'s private 0600: checkpoints and datasets are shared.
``atomic_write_bytes`` and ``atomic_write_text`` are the one-call forms.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ambcore.errors import AmbError

__all__ = ["RunWriteError", "atomic_file", "atomic_write_bytes", "atomic_write_text"]


class RunWriteError(AmbError, OSError):
    """A file that could not be written (read-only folder, full disk); names the path."""


def _write_error(path: Path, exc: OSError) -> RunWriteError:
    return RunWriteError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def _as_write_error(path: Path) -> Iterator[None]:
    """An ``OSError`` in the block becomes one ``RunWriteError`` line naming ``path``."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as exc:
        raise _write_error(path, exc) from None


def _umask() -> int:
    mask = os.umask(0o022)  # read by setting; restored at once
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary temporary file that becomes ``path`` when the block succeeds (module doc).
    Failures of the write machinery (folder, temporary file, fsync, rename) raise
    ``RunWriteError``; errors raised inside the block propagate unchanged."""
    path = Path(path)
    with _as_write_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with _as_write_error(path):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            with _as_write_error(path):
                fh.flush()
                os.fsync(fh.fileno())
        with _as_write_error(path):
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_file``); returns the path."""
    path = Path(path)
    with atomic_file(path) as fh, _as_write_error(path):
        fh.write(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))
