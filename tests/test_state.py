"""The experiment folder's building blocks: atomic writes, timestamps, the lock, reading back."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bo_voids._io import atomic_open, read_npz, write_npz
from bo_voids.exceptions import ExperimentLockedError, StateError
from bo_voids.state import (
    FLOCK,
    LOCK,
    ExperimentLock,
    ExperimentStore,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    load_npy,
    read_json,
    utc_timestamp,
)
from bo_voids.testing.runs import tiny_config

# ---------------------------------------------------------------------------------------------
# Atomic writes and timestamps
# ---------------------------------------------------------------------------------------------


def test_atomic_files_no_npy_suffix_no_nan_in_json(tmp_path: Path) -> None:
    atomic_save_npy(tmp_path / "emb.partial", np.arange(6.0).reshape(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["emb.partial"]  # no "emb.partial.npy"
    np.testing.assert_array_equal(load_npy(tmp_path / "emb.partial"), np.arange(6.0).reshape(2, 3))
    obj = {"a": math.nan, "b": [math.inf, 1.0], "c": np.float64("nan"), "d": np.float32(-np.inf)}
    obj["e"] = np.array([np.nan, 2.0])
    atomic_write_json(tmp_path / "s.json", obj)

    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    loaded = json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)
    assert loaded == {"a": None, "b": [None, 1.0], "c": None, "d": None, "e": [None, 2.0]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.partial", "s.json"]  # no temps


def test_atomic_files_get_the_permissions_of_a_plain_file(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.npz"
    atomic_write_text(target, "old")
    with pytest.raises(ZeroDivisionError), atomic_open(target) as fh:
        fh.write(b"half")
        raise ZeroDivisionError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.npz"]
    with atomic_open(target) as fh:  # any writer that takes a binary handle
        np.savez(fh, x=np.arange(3))
    np.testing.assert_array_equal(np.load(target)["x"], np.arange(3))


def test_an_unwritable_folder_is_a_state_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a folder should be: fails even as root
    with pytest.raises(StateError, match=r"cannot write .*a_file/x\.json"):
        atomic_write_json(blocker / "x.json", {})


def test_npz_round_trip_without_pickle_and_its_checks(tmp_path: Path) -> None:
    path = tmp_path / "model"  # no extension: the name is kept as given
    write_npz(path, {"w": np.eye(2), "names": np.array(["a", "b"])}, format_version=3)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    back = read_npz(path, ["w", "names"], kind="Model", format_version=3)
    assert sorted(back) == ["names", "w"]  # the format version is checked, not returned
    np.testing.assert_array_equal(back["w"], np.eye(2))
    assert back["names"].tolist() == ["a", "b"]
    with pytest.raises(StateError, match="not a saved Model .*'bias'"):
        read_npz(path, ["w", "bias"], kind="Model", format_version=3)
    with pytest.raises(StateError, match="unsupported Model format version 3"):
        read_npz(path, ["w"], kind="Model", format_version=4)
    with pytest.raises(StateError, match="cannot read Model file"):
        read_npz(tmp_path / "missing", ["w"], kind="Model", format_version=3)
    with pytest.raises(ValueError, match="without pickle"):
        write_npz(tmp_path / "obj", {"o": np.array([{}], dtype=object)}, format_version=1)
    with pytest.raises(ValueError, match="format_version"):
        write_npz(tmp_path / "v", {"format_version": 1}, format_version=1)
    np.savez(tmp_path / "pickled.npz", format_version=1, o=np.array([{}], dtype=object))
    with pytest.raises(StateError, match="cannot read Model file"):  # never unpickled
        read_npz(tmp_path / "pickled.npz", ["o"], kind="Model", format_version=1)


def test_utc_timestamp_format() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_timestamp())


def test_unreadable_state_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(StateError, match="bad.npy"):
        load_npy(tmp_path / "bad.npy")
    # an object array would need pickle: refused
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StateError, match="obj.npy"):
        load_npy(tmp_path / "obj.npy")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StateError, match="bad.json"):
        read_json(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

HOLD = (
    "import sys; from pathlib import Path; from bo_voids.state import ExperimentLock; "
    "lock = ExperimentLock(Path(sys.argv[1])).acquire(); "  # kept referenced: held until exit
    "print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``tmp_path`` until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_another_process_is_refused_naming_the_holder(
    tmp_path: Path, other_process: subprocess.Popen[str]
) -> None:
    holder = json.loads((tmp_path / LOCK).read_text())
    assert holder["pid"] == other_process.pid and holder["host"] == socket.gethostname()
    with pytest.raises(ExperimentLockedError) as info:
        ExperimentLock(tmp_path).acquire()
    message = str(info.value)
    assert f"in use by process {other_process.pid} on {socket.gethostname()}" in message
    assert f"since {holder['since']}" in message
    assert json.loads((tmp_path / LOCK).read_text()) == holder, "someone else's lock is kept"


def test_the_lock_of_a_killed_process_is_free(
    tmp_path: Path, other_process: subprocess.Popen[str]
) -> None:
    other_process.send_signal(signal.SIGKILL)
    other_process.wait()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == other_process.pid  # left behind
    with ExperimentLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()


def test_a_second_holder_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with ExperimentLock(tmp_path) as lock:
        assert lock.acquire() is lock  # taking a held lock again is a no-op
        with pytest.raises(ExperimentLockedError, match=f"in use by process {os.getpid()}"):
            ExperimentLock(tmp_path).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FLOCK]  # the OS lock file stays
    with ExperimentLock(tmp_path):
        pass


def test_a_stale_or_unreadable_holder_file_is_replaced(tmp_path: Path) -> None:
    for stale in (json.dumps({"pid": 2**22 + 12345, "host": "elsewhere"}), "", "[1]"):
        (tmp_path / LOCK).write_text(stale)
        with ExperimentLock(tmp_path):
            assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_release_never_deletes_a_holder_file_that_is_not_ours(tmp_path: Path) -> None:
    lock = ExperimentLock(tmp_path).acquire()
    (tmp_path / LOCK).write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    lock.release()
    assert (tmp_path / LOCK).exists()
    with ExperimentLock(tmp_path):  # released all the same
        pass


def test_the_lock_files_are_not_part_of_the_experiment(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    with ExperimentLock(store.root):
        store.create(cfg, {"name": "handcrafted", "fingerprint": "x"})
        store.create(cfg, {"name": "handcrafted", "fingerprint": "x"}, overwrite=True)
        assert {LOCK, FLOCK} <= {p.name for p in store.root.iterdir()}  # cleared around them
