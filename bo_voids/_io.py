"""Atomic file writes, pickle-free ``.npz`` files and UTC timestamps, shared by every module.

Every file bo_voids writes goes through :func:`atomic_open`, with one policy:

* the data go to a temporary file in the destination's folder (``.{name}.XXXXXXXX.tmp``), which
  is flushed and ``fsync``-ed, then moved over the destination with :func:`os.replace`, so a
  reader sees the old file or the new one, never a half-written one, even after a crash;
* the file gets the permissions of a plainly created one (``0o666`` minus the umask):
  :func:`tempfile.mkstemp` would otherwise leave it readable by its owner only;
* on any error the temporary file is removed, and an :class:`OSError` (folder not writable,
  disk full) becomes a :class:`~bo_voids.exceptions.StateError` naming the destination.

Saved models (:class:`~bo_voids.projection.PCAProjector`, :class:`~bo_voids.summaries.SummaryMap`)
are ``.npz`` files of plain arrays and a ``format_version``, written by :func:`write_npz` and read
back by :func:`read_npz` with ``allow_pickle=False``, so loading a file never runs code from it.

This module depends on numpy, :mod:`bo_voids.exceptions` and :mod:`bo_voids._types` only, so
that low-level modules (generation, projection, embedders) can write files without importing the
experiment store.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import ArrayLike

from bo_voids._types import JsonObject, JsonValue
from bo_voids.exceptions import DamagedFileError, StateError

__all__ = [
    "JsonLines",
    "atomic_open",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_jsonl",
    "read_npz",
    "read_regular_file",
    "to_jsonable",
    "utc_timestamp",
    "write_npz",
]

#: The key of the format version in every file written by :func:`write_npz`.
FORMAT_VERSION_KEY = "format_version"


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


def to_jsonable(obj: object) -> JsonValue:
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
    return obj  # type: ignore[return-value]  # a JSON scalar, or left for json.dumps to refuse


def atomic_write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (numpy types converted, non-finite floats stored as ``null``)."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, sort_keys=False)
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically, under exactly the name given (no suffix added)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: str | Path, arrays: Mapping[str, ArrayLike], *, format_version: int) -> Path:
    """Save named arrays and a format version as an ``.npz`` file atomically, without pickle.

    The file is written through :func:`atomic_open`, so the name is used exactly as given (no
    ``.npz`` is appended) and readers never see a half-written file.

    Args:
        path: Destination file.
        arrays: The arrays by name (anything :func:`numpy.asarray` takes; no object arrays).
        format_version: The version of the caller's layout, checked by :func:`read_npz`.

    Returns:
        The destination path.

    Raises:
        ValueError: An array holds Python objects (it could only be stored pickled), or an
            array is named ``format_version``.
        StateError: The file cannot be written.
    """
    plain = {name: np.asarray(value) for name, value in arrays.items()}
    if FORMAT_VERSION_KEY in plain:
        raise ValueError(f"{FORMAT_VERSION_KEY!r} is written by write_npz itself")
    pickled = sorted(name for name, value in plain.items() if value.dtype.hasobject)
    if pickled:
        raise ValueError(f"object arrays {pickled} cannot be saved without pickle")
    dest = Path(path)
    with atomic_open(dest) as fh:
        to_save: dict[str, Any] = {FORMAT_VERSION_KEY: np.int64(format_version), **plain}
        np.savez(fh, **to_save)
    return dest


def read_npz(
    path: str | Path, keys: Sequence[str], *, kind: str, format_version: int
) -> dict[str, np.ndarray]:
    """Read the arrays ``keys`` of a file written by :func:`write_npz` (``allow_pickle=False``).

    Args:
        path: The file.
        keys: The arrays the caller needs; other arrays in the file are ignored.
        kind: What the file holds, for the error messages (e.g. ``"PCAProjector"``).
        format_version: The only format version the caller reads.

    Returns:
        ``{key: array}`` for every key of ``keys``.

    Raises:
        StateError: The file is missing or unreadable ("cannot read ..."), lacks a key ("... is
            not a saved ``kind``"), or has another format version.
    """
    p = Path(path)
    wanted = (FORMAT_VERSION_KEY, *keys)
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in wanted if k not in data.files]
            if missing:
                raise StateError(f"{p} is not a saved {kind} (missing {missing})")
            arrays = {k: data[k] for k in wanted}
    except StateError:
        raise
    except (OSError, ValueError) as exc:  # no such file, not a zip, an object array
        raise StateError(f"cannot read {kind} file {p}: {exc}") from exc
    version = arrays.pop(FORMAT_VERSION_KEY)
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != format_version:
        raise StateError(f"{p}: unsupported {kind} format version {version.tolist()}")
    return arrays


def read_regular_file(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing anything that could hang or flood the process.

    A FIFO, a device (``/dev/zero``, ``/dev/stdin``), a socket or a folder is refused without
    reading from it (the open does not block), and so is a file larger than ``limit``.

    Args:
        path: The file.
        limit: Largest size accepted, in bytes (``None``: no limit).

    Returns:
        The content.

    Raises:
        FileNotFoundError: No such file.
        OSError: Not a regular file (``EINVAL``), larger than ``limit`` (``EFBIG``), unreadable.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if limit is not None and info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if limit is not None and sum(map(len, chunks)) > limit:  # grew while being read
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass
class JsonLines:
    """What :func:`read_jsonl` read: the good records and how many lines it skipped.

    Attributes:
        records: The JSON objects, in file order.
        skipped: Lines that are not a UTF-8 JSON object (bad bytes, cut, another type).
        incomplete: Whether the file ends in a line without its newline (being written, or cut
            by a crash); that line is never read, and not counted in ``skipped``.
    """

    records: list[JsonObject] = field(default_factory=list)
    skipped: int = 0
    incomplete: bool = False


def read_jsonl(path: str | Path) -> JsonLines:
    """Read a JSON-lines file tolerantly: each line decoded and parsed on its own.

    A line of bytes that are not UTF-8, a line that is not JSON or not an object is skipped and
    counted; the piece after the last newline is incomplete and skipped. A missing file reads as
    empty.

    Args:
        path: The file.

    Returns:
        The :class:`JsonLines`.

    Raises:
        StateError: The file exists but cannot be read (permissions, a folder).
    """
    p = Path(path)
    try:
        raw = read_regular_file(p)
    except FileNotFoundError:
        return JsonLines()
    except OSError as exc:
        raise StateError(f"cannot read {p}: {exc.strerror or exc}") from exc
    *lines, tail = raw.split(b"\n")
    out = JsonLines(incomplete=bool(tail.strip()))
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # bad bytes, bad JSON, a nesting bomb
            out.skipped += 1
            continue
        if isinstance(record, dict):
            out.records.append(record)
        else:
            out.skipped += 1
    return out


def load_npy(path: str | Path) -> np.ndarray:
    """Load an ``.npy`` file without pickle."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DamagedFileError(f"cannot read {path}: {exc}") from exc


def read_json(path: str | Path, expect: type | tuple[type, ...] | None = None) -> Any:
    """Read a JSON file, with a :class:`StateError` naming the file on failure.

    Args:
        path: The file.
        expect: The type the top-level value must have (e.g. ``dict``), if any.

    Raises:
        StateError: The file cannot be read, is not UTF-8 JSON, or holds another type.
    """
    try:  # a FIFO planted in the folder is refused, not read (it would hang)
        value = json.loads(read_regular_file(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise DamagedFileError(f"cannot read {path}: it does not exist") from exc
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DamagedFileError(f"cannot read {path}: {exc}; the file is damaged") from exc
    if expect is not None and not isinstance(value, expect):
        raise DamagedFileError(
            f"cannot read {path}: it holds a {type(value).__name__}, not what bo_voids wrote "
            "(the file is damaged)"
        )
    return value
