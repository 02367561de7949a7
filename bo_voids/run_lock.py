"""The lock of an experiment folder: one process runs an experiment at a time.

A run takes :class:`ExperimentLock` on its folder for as long as it writes there; readers ask
:func:`lock_is_held`, and :func:`effective_status` reads a manifest's ``running`` left behind by a
process that died as ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from bo_voids._io import atomic_write_text, utc_timestamp
from bo_voids.exceptions import ExperimentLockedError, StateError

__all__ = ["FLOCK", "LOCK", "ExperimentLock", "effective_status", "lock_is_held"]

LOCK = ".lock"
#: The operating-system lock file beside :data:`LOCK` (kept: waiters must share its inode).
FLOCK = ".lock.flock"


class ExperimentLock:
    """An exclusive lock so that two processes never run the same experiment.

    The exclusion itself is an operating-system file lock (:class:`filelock.FileLock` on
    ``.lock.flock``, which stays in the folder): the kernel drops it when its holder exits,
    however it exits (``SIGKILL`` included), so the lock of a dead run never has to be detected
    or taken over. Once the lock is held, ``.lock`` beside it records who holds it (JSON: pid,
    host, since) for the message a second process gets; it is removed again on release. The
    lock is held as long as this object lives: keep a reference until :meth:`release`.

    Raises:
        ExperimentLockedError: If another process holds the lock (the message names its pid,
            host and start time).
        StateError: If the folder is not writable.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self._flock = FileLock(self.path.with_name(FLOCK), timeout=0, thread_local=False)
        self._content = ""

    def acquire(self) -> ExperimentLock:
        """Take the lock (see the class docstring)."""
        if self._content:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._flock.acquire()
        except Timeout:
            holder = _read_holder(self.path)
            raise ExperimentLockedError(
                f"experiment {self.path.parent} is in use by process {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')} since {holder.get('since', '?')}; wait for it "
                "to finish"
            ) from None
        except OSError as exc:
            raise StateError(f"cannot take the lock {self.path}: {exc.strerror or exc}") from exc
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_timestamp()}
        content = json.dumps(info)
        try:
            atomic_write_text(self.path, content)
        except BaseException:
            self._flock.release()
            raise
        self._content = content
        return self

    def release(self) -> None:
        """Release the lock if held; ``.lock`` is removed only while it still names this holder."""
        if not self._content:
            return
        with contextlib.suppress(OSError):
            if self.path.read_text(encoding="utf-8") == self._content:
                self.path.unlink()
        self._content = ""
        self._flock.release()

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_is_held(folder: str | Path) -> bool | None:
    """Whether a live process holds the experiment lock of ``folder``.

    Returns:
        ``True`` or ``False``; ``None`` when it cannot be told (e.g. a read-only folder).
    """
    flock_path = Path(folder) / FLOCK
    if not flock_path.exists():
        return False
    probe = FileLock(flock_path, timeout=0, thread_local=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return None
    probe.release()
    return False


def effective_status(folder: str | Path, manifest: Mapping[str, object]) -> str:
    """The run's status: the manifest's, with a stale ``running`` read as ``interrupted``.

    A manifest that says ``running`` while no process holds the lock was left by a run that died
    without saying so (``kill -9``, a power cut).
    """
    status = str(manifest.get("status", "unknown"))
    if status == "running" and lock_is_held(folder) is False:
        return "interrupted"
    return status


def _read_holder(path: Path) -> dict[str, Any]:
    """The holder record in ``.lock``; empty while the holder has not written it yet."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
