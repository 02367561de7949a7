"""The experiment folder: the one place that writes a run to disk, and the one that reads it back.

Layout (see the README)::

    experiments/{experiment_name}/
      experiment.json      manifest: config, embedder identity, versions, seed, status, best
      history.csv          one row per evaluated parameter set (rebuilt from the iteration folders)
      .lock                pid + host of the process running the experiment
      .lock.flock          the operating-system lock that keeps a second process out
      iteration_0/         images/ (+ masks), embeddings.npy, pca_model.npz, pca_2d.npy,
                           metadata.json, scores.json
      iteration_k/         images/, embeddings.npy, pca_2d.npy, metadata.json, proposals.json,
                           scores.json (+ failures.json: parameter sets whose evaluation failed)
      plots/  report.html

Guarantees:

* every file is written atomically (temporary file in the same folder, ``fsync``, ``os.replace``);
* an iteration is assembled in ``iteration_k.partial/`` and renamed into place only once complete,
  so an ``iteration_k/`` folder is always whole; leftovers of an interrupted write are removed on
  resume;
* ``history.csv`` is derived data, rebuilt from the iteration folders;
* nothing is loaded with pickle: arrays are ``.npy``/``.npz`` read with ``allow_pickle=False``,
  everything else is JSON/CSV.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from bo_voids._io import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    to_jsonable,
    utc_timestamp,
)
from bo_voids.config import PARAMETER_NAMES, ExperimentConfig, config_from_dict
from bo_voids.exceptions import (
    ExperimentExistsError,
    ExperimentLockedError,
    ResumeMismatchError,
    StateError,
)
from bo_voids.scoring import RunScores

__all__ = [
    "EXPERIMENT_ENTRIES",
    "FAILURES",
    "FLOCK",
    "HISTORY",
    "HISTORY_COLUMNS",
    "LOCK",
    "LOCK_FILES",
    "MANIFEST",
    "PARTIAL_SUFFIX",
    "RESUMABLE_CHANGES",
    "ExperimentLock",
    "ExperimentRun",
    "ExperimentStore",
    "IterationRecord",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "config_differences",
    "describe_embedder",
    "load_experiment",
    "load_npy",
    "package_versions",
    "read_json",
    "utc_timestamp",
]

MANIFEST = "experiment.json"
HISTORY = "history.csv"
LOCK = ".lock"
#: The operating-system lock file beside :data:`LOCK` (kept: waiters must share its inode).
FLOCK = ".lock.flock"
#: Files of the lock, never cleared with the experiment's contents.
LOCK_FILES = frozenset({LOCK, FLOCK})
PARTIAL_SUFFIX = ".partial"
FAILURES = "failures.json"
#: The file of an iteration folder holding its run-level scores (:class:`RunScores`).
SCORES_FILE = "scores.json"
#: The file of an iteration folder holding the proposal made after that iteration.
PROPOSAL_FILE = "proposals.json"
#: Entries (besides hidden files and ``iteration_*``) a bo_voids experiment folder may hold.
EXPERIMENT_ENTRIES = frozenset(
    {
        MANIFEST,
        HISTORY,
        "plots",
        "report.html",
        "calibration.json",
        "events.jsonl",
        "retarget.json",
    }
)
#: Config keys that may change when an experiment is resumed.
RESUMABLE_CHANGES = frozenset({"max_iterations", "experiment_dir", "executor", "dask", "device"})
HISTORY_COLUMNS: tuple[str, ...] = (
    "iteration",
    "param_set_id",
    "dataset_type",
    *PARAMETER_NAMES,
    "mmd2",
    "n_images",
    "mean_nearest_real",
    "void_area_pct",
)


# ---------------------------------------------------------------------------------------------
# Reading back (the writes are :mod:`bo_voids._io`'s, re-exported here)
# ---------------------------------------------------------------------------------------------


def load_npy(path: str | Path) -> np.ndarray:
    """Load an ``.npy`` file without pickle."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with a :class:`StateError` naming the file on failure."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------------------------


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


def _read_holder(path: Path) -> dict[str, Any]:
    """The holder record in ``.lock``; empty while the holder has not written it yet."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass
class IterationRecord:
    """Everything persisted for one iteration."""

    iteration: int
    embeddings: np.ndarray
    metadata: list[dict[str, Any]]
    pca_2d: np.ndarray
    scores: RunScores = field(default_factory=lambda: RunScores.from_dict({}))
    proposals: dict[str, Any] | None = None
    folder: Path | None = None
    #: Parameter sets of this iteration whose evaluation failed (excluded from the history):
    #: ``{"param_set_id", "dataset_type", "params", "error"}`` each (``failures.json``).
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_evaluated(self) -> int:
        """Parameter sets evaluated in this iteration (failed ones included; loaded targets not)."""
        ids = {m["param_set_id"] for m in self.metadata if m.get("params") is not None}
        return len(ids) + len(self.failures)

    def image_path(self, index: int) -> Path:
        """Path of the ``index``-th image of this iteration."""
        assert self.folder is not None
        return self.folder / "images" / self.metadata[index]["image_file"]


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in (
        "bo_voids",
        "torch",
        "botorch",
        "gpytorch",
        "numpy",
        "scikit-learn",
        "scikit-image",
        "transformers",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def describe_embedder(info: Mapping[str, Any]) -> str:
    """An embedder record (``experiment.json``'s ``embedder``) as ``'name' (fingerprint)``."""
    return f"{info.get('name')!r} ({info.get('fingerprint')})"


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Top-level keys whose values differ (ignoring :data:`RESUMABLE_CHANGES`)."""
    keys = sorted((set(old) | set(new)) - RESUMABLE_CHANGES)
    return [k for k in keys if to_jsonable(old.get(k)) != to_jsonable(new.get(k))]


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class ExperimentStore:
    """Reads and writes one experiment folder.

    Args:
        root: The experiment folder (``experiments/{experiment_name}``).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- manifest --------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        """Path of ``experiment.json``."""
        return self.root / MANIFEST

    def exists(self) -> bool:
        """Whether an experiment was started in this folder."""
        return self.manifest_path.exists()

    def read_manifest(self) -> dict[str, Any]:
        """Read ``experiment.json``."""
        if not self.exists():
            raise StateError(f"{self.root} is not an experiment folder (no {MANIFEST})")
        return read_json(self.manifest_path)

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Write ``experiment.json`` (atomically), stamping ``updated``."""
        atomic_write_json(self.manifest_path, {**manifest, "updated": utc_timestamp()})

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest and write it back."""
        manifest = {**self.read_manifest(), **fields}
        self.write_manifest(manifest)
        return manifest

    def create(
        self,
        config: ExperimentConfig,
        embedder_info: Mapping[str, Any],
        *,
        overwrite: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start a new experiment folder.

        Raises:
            StateError: If the folder already holds an experiment and ``overwrite`` is false.
        """
        entries = (
            [p for p in self.root.iterdir() if p.name not in LOCK_FILES]
            if self.root.exists()
            else []
        )
        if entries:
            if not self.exists():
                foreign = sorted(p.name for p in entries if not _experiment_entry(p.name))
                if foreign:
                    raise ExperimentExistsError(
                        f"{self.root} is not empty and holds no experiment ({MANIFEST} missing); "
                        f"refusing to write into it or to clear it (it holds e.g. {foreign[:3]}). "
                        "Choose another experiment_dir"
                    )
            if not overwrite:
                if self.exists():
                    hint = "pass --resume to continue it or --overwrite to replace it"
                else:
                    hint = (
                        f"it holds leftovers of an experiment but no {MANIFEST} (an interrupted "
                        "start or --overwrite?); pass --overwrite to replace them"
                    )
                raise ExperimentExistsError(f"experiment folder {self.root} already exists; {hint}")
            self._clear()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {self.root}: {exc.strerror or exc}") from exc
        manifest = {
            "experiment_name": config.experiment_name,
            "status": "running",
            "created": utc_timestamp(),
            "seed": config.seed,
            "embedder": dict(embedder_info),
            "versions": package_versions(),
            "config": config.to_dict(),
            "iterations_completed": -1,
            **(extra or {}),
        }
        self.write_manifest(manifest)
        return manifest

    def check_resumable(
        self, config: ExperimentConfig, embedder_info: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Check that ``config`` and the embedder match the stored experiment.

        Raises:
            StateError: Naming the differing config keys or the embedder mismatch.
        """
        manifest = self.read_manifest()
        diffs = config_differences(manifest.get("config", {}), config.to_dict())
        if diffs:
            old, new = manifest["config"], config.to_dict()
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs[:5])
            raise ResumeMismatchError(
                f"cannot resume {self.root}: the config differs from the stored one ({detail}). "
                "Use the original config, or --overwrite to start again"
            )
        stored = manifest.get("embedder", {})
        if stored.get("fingerprint") != embedder_info.get("fingerprint"):
            was, now = describe_embedder(stored), describe_embedder(embedder_info)
            raise ResumeMismatchError(
                f"cannot resume {self.root}: it was run with embedder {was}, now {now}; results "
                "from different embedders must not be mixed"
            )
        return manifest

    def _clear(self) -> None:
        # the manifest goes first: a clear interrupted half-way never looks like an experiment
        try:
            self.manifest_path.unlink(missing_ok=True)
            for child in self.root.iterdir():
                if child.name in LOCK_FILES:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        except OSError as exc:
            raise StateError(f"cannot clear {self.root}: {exc.strerror or exc}") from exc

    # ---- iterations ------------------------------------------------------------------------

    def iteration_dir(self, k: int) -> Path:
        """Folder of iteration ``k``."""
        return self.root / f"iteration_{k}"

    def completed_iterations(self) -> list[int]:
        """Indices of the complete iteration folders, in order (must be 0..n-1)."""
        found = sorted(
            int(p.name.split("_", 1)[1])
            for p in self.root.glob("iteration_*")
            if p.is_dir() and p.name.split("_", 1)[1].isdigit()
        )
        expected = list(range(len(found)))
        if found != expected:
            raise StateError(f"{self.root}: iteration folders {found} are not contiguous from 0")
        return found

    def clean_partial(self) -> list[Path]:
        """Remove leftovers of an interrupted write; returns what was removed."""
        removed = []
        for p in self.root.glob(f"*{PARTIAL_SUFFIX}"):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        for p in [*self.root.glob(".*.tmp"), *self.root.glob("plots/.*.tmp")]:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
        return removed

    @contextlib.contextmanager
    def writing_iteration(self, k: int) -> Iterator[Path]:
        """Assemble iteration ``k`` in a partial folder, renamed into place on success.

        Yields:
            The partial folder to write into.
        """
        final = self.iteration_dir(k)
        if final.exists():
            raise StateError(f"{final} already exists; an iteration is never rewritten")
        partial = self.root / f"iteration_{k}{PARTIAL_SUFFIX}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            (partial / "images").mkdir(parents=True)
        except OSError as exc:
            raise StateError(f"cannot create {partial}: {exc.strerror or exc}") from exc
        try:
            yield partial
            _fsync_dir(partial)
            os.replace(partial, final)
            _fsync_dir(self.root)
        except OSError as exc:  # disk full, folder not writable, ...: nothing half-written
            shutil.rmtree(partial, ignore_errors=True)
            raise StateError(
                f"cannot write iteration {k} to {self.root}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
            ) from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def load_iteration(self, k: int) -> IterationRecord:
        """Read iteration ``k`` back."""
        folder = self.iteration_dir(k)
        if not folder.is_dir():
            raise StateError(f"{folder} does not exist")
        proposals_path = folder / PROPOSAL_FILE
        scores_path = folder / SCORES_FILE
        failures_path = folder / FAILURES
        return IterationRecord(
            iteration=k,
            embeddings=load_npy(folder / "embeddings.npy"),
            metadata=read_json(folder / "metadata.json"),
            pca_2d=load_npy(folder / "pca_2d.npy"),
            scores=RunScores.from_dict(
                read_json(scores_path) if scores_path.exists() else {"iteration": k}
            ),
            proposals=read_json(proposals_path) if proposals_path.exists() else None,
            folder=folder,
            failures=read_json(failures_path) if failures_path.exists() else [],
        )

    def load_all(self) -> list[IterationRecord]:
        """Read every complete iteration, in order."""
        return [self.load_iteration(k) for k in self.completed_iterations()]

    # ---- history ---------------------------------------------------------------------------

    def write_history(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write ``history.csv`` (one row per evaluated parameter set)."""
        buf = io.StringIO()
        extra = sorted({k for r in rows for k in r} - set(HISTORY_COLUMNS))
        writer = csv.DictWriter(buf, fieldnames=[*HISTORY_COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        atomic_write_text(self.root / HISTORY, buf.getvalue())

    def read_history(self) -> list[dict[str, str]]:
        """Read ``history.csv`` as a list of string dicts."""
        path = self.root / HISTORY
        if not path.exists():
            return []
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))


def _csv_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else repr(float(v))
    return v


def _experiment_entry(name: str) -> bool:
    """Whether a folder entry is something a bo_voids experiment writes."""
    return name.startswith(".") or name.startswith("iteration_") or name in EXPERIMENT_ENTRIES


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class ExperimentRun:
    """A finished or running experiment, read back from its folder (see :func:`load_experiment`).

    Attributes:
        root: The experiment folder.
        manifest: ``experiment.json``.
        config: The config snapshot the run used.
        iterations: Every complete iteration, in order.
        history: ``history.csv`` rows (strings, as read from the CSV).
    """

    root: Path
    manifest: dict[str, Any]
    config: ExperimentConfig
    iterations: list[IterationRecord]
    history: list[dict[str, str]]

    @property
    def scores(self) -> list[RunScores]:
        """Per-iteration run-level scores (``scores.json`` of each iteration)."""
        return [it.scores for it in self.iterations]

    @property
    def noise_floor(self) -> dict[str, float]:
        """MMD² between random halves of the real set (mean, std, q05, q95)."""
        return self.manifest.get("noise_floor") or self.iterations[0].scores.noise_floor or {}

    @property
    def current_best(self) -> list[dict[str, Any]]:
        """The best parameter sets as ranked by the optimiser at the end of the run."""
        return self.manifest.get("current_best", [])

    def all_embeddings(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Embeddings and metadata of every iteration, concatenated."""
        emb = np.concatenate([it.embeddings for it in self.iterations], axis=0)
        return emb, [m for it in self.iterations for m in it.metadata]

    def all_pca_2d(self) -> np.ndarray:
        """2-D PCA coordinates of every image (PCA fitted once on iteration 0)."""
        return np.concatenate([it.pca_2d for it in self.iterations], axis=0)


def load_experiment(path: str | Path) -> ExperimentRun:
    """Read an experiment folder back (complete iterations only).

    Args:
        path: The experiment folder (holding ``experiment.json``).

    Returns:
        The :class:`ExperimentRun`.

    Raises:
        StateError: If the folder is not an experiment or a file cannot be read.
    """
    store = ExperimentStore(path)
    manifest = store.read_manifest()
    return ExperimentRun(
        root=store.root,
        manifest=manifest,
        config=config_from_dict(manifest["config"], check_paths=False),
        iterations=store.load_all(),
        history=store.read_history(),
    )
