"""Atomic file writes and UTC timestamps: the one implementation every module that writes uses.

Every file bo_voids writes goes through :func:`atomic_open`, with one policy:

* the data go to a temporary file in the destination's folder (``.{name}.XXXXXXXX.tmp``), which
  is flushed and ``fsync``-ed, then moved over the destination with :func:`os.replace`, so a
  reader sees the old file or the new one, never a half-written one, even after a crash;
* the file gets the permissions of a plainly created one (``0o666`` minus the umask):
  :func:`tempfile.mkstemp` would otherwise leave it readable by its owner only;
* on any error the temporary file is removed, and an :class:`OSError` (folder not writable,
  disk full) becomes a :class:`~bo_voids.exceptions.StateError` naming the destination.

This module depends on numpy and :mod:`bo_voids.exceptions` only, so that low-level modules
(generation, projection, embedders) can write files without importing the experiment store.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bo_voids.exceptions import StateError

__all__ = [
    "atomic_open",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "to_jsonable",
    "utc_timestamp",
]


def _current_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any worker thread.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def utc_timestamp(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601 with a ``Z``: ``2024-05-01T12:00:00Z``.

    Args:
        timespec: Precision, as for :meth:`datetime.datetime.isoformat` (``"milliseconds"``
            gives ``2024-05-01T12:00:00.123Z``).

    Returns:
        The timestamp.
    """
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary file handle whose content replaces ``path`` atomically on success.

    Args:
        path: Destination file; its parent folders are created.

    Yields:
        A writable binary file (a temporary file beside ``path``). When the ``with`` block
        ends normally it is synced and renamed to ``path``; when the block raises, it is
        removed and ``path`` is left as it was.

    Raises:
        StateError: If the folder cannot be created or written (e.g. disk full).

    Example:
        >>> with atomic_open(tmp_path / "a.npz") as fh:  # doctest: +SKIP
        ...     np.savez(fh, x=np.arange(3))
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples to JSON types; non-finite floats to ``None``.

    Args:
        obj: A JSON-like structure that may hold numpy values.

    Returns:
        The same structure with only JSON types.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return to_jsonable(float(obj))  # a NaN numpy scalar must become null too
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # JSON has no NaN/inf: store null
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (numpy types converted, non-finite floats stored as ``null``)."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, sort_keys=False)
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically, under exactly the name given (no suffix added)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
