"""The experiment folder: the one place that writes a run to disk, and the one that reads it back.

Layout (see the README)::

    experiments/{experiment_name}/
      experiment.json      manifest: config, embedder identity, versions, seed, status, best
      history.csv          one row per evaluated parameter set (rebuilt from the iteration folders)
      .lock                pid + host of the process running the experiment
      .lock.flock          the operating-system lock that keeps a second process out
      .replaced/           the experiment an ``--overwrite`` replaces, until the new one has
                           its iteration 0 (then deleted; restored if the new run fails first)
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
* ``--overwrite`` deletes nothing until the new run has started cleanly: the old experiment is
  moved into ``.replaced/`` inside the folder, deleted once the new iteration 0 is in place and
  moved back if the new run stops before that; a folder holding anything bo_voids did not write
  is never cleared;
* a file that cannot be trusted is refused with a :class:`StateError` naming it; derived files
  (``history.csv``, ``events.jsonl``) are read tolerantly and rebuilt by a resume;
* nothing is loaded with pickle: arrays are ``.npy``/``.npz`` read with ``allow_pickle=False``,
  everything else is JSON/CSV.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import platform
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np

from bo_voids._io import (
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_npy,
    read_json,
    read_regular_file,
    to_jsonable,
    utc_timestamp,
)
from bo_voids._types import JsonObject, JsonScalar, JsonValue
from bo_voids.config import PARAMETER_NAMES, ExperimentConfig, config_from_dict
from bo_voids.exceptions import (
    BoVoidsWarning,
    DamagedFileError,
    ExperimentExistsError,
    ResumeMismatchError,
    StateError,
)
from bo_voids.generation.voids import ImageRecord, save_png
from bo_voids.run_lock import FLOCK, LOCK, ExperimentLock, effective_status, lock_is_held
from bo_voids.run_scores import RunScores
from bo_voids.scoring import TARGET_TYPES, ObservationRecord, RankedSet
from bo_voids.space import ParamSet

__all__ = [
    "EXPERIMENT_ENTRIES",
    "FAILURES",
    "FLOCK",
    "HISTORY",
    "HISTORY_COLUMNS",
    "LAYOUT_VERSION",
    "LOCK",
    "LOCK_FILES",
    "MANIFEST",
    "PARTIAL_SUFFIX",
    "REPLACED",
    "RESUMABLE_CHANGES",
    "ExperimentLock",
    "ExperimentRun",
    "ExperimentStore",
    "IterationRecord",
    "Manifest",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "config_differences",
    "describe_embedder",
    "effective_status",
    "load_experiment",
    "load_npy",
    "lock_is_held",
    "package_versions",
    "read_json",
    "utc_timestamp",
]

MANIFEST = "experiment.json"
HISTORY = "history.csv"
#: Files of the lock, never cleared with the experiment's contents.
LOCK_FILES = frozenset({LOCK, FLOCK})
PARTIAL_SUFFIX = ".partial"
#: Where ``--overwrite`` keeps the replaced experiment until the new one has started cleanly.
REPLACED = ".replaced"
#: Version of the folder's layout, stored in the manifest; a resume refuses any other.
LAYOUT_VERSION = 1
FAILURES = "failures.json"
#: The file of an iteration folder holding its run-level scores (:class:`RunScores`).
SCORES_FILE = "scores.json"
#: The file of an iteration folder holding the proposal made after that iteration.
PROPOSAL_FILE = "proposals.json"
#: The cached reference design of the summaries (:mod:`bo_voids.reference_design`).
REFERENCE_DESIGN = "reference_design.npz"
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
        REFERENCE_DESIGN,
    }
)
#: Names of the iteration folders (and their partial versions) a run writes.
_ITERATION_ENTRY = re.compile(r"iteration_\d+(\.partial)?")
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


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


class Manifest(TypedDict, total=False):
    """``experiment.json``: what a run is, where it stands and what it found.

    Written by :meth:`ExperimentStore.create` and :meth:`ExperimentStore.update_manifest`; every
    key but ``config`` may be missing from a manifest of an older or an interrupted run.
    """

    experiment_name: str
    status: str
    created: str
    updated: str
    seed: int
    #: The embedder's identity (:meth:`~bo_voids.embedding.base.Embedder.identity`).
    embedder: JsonObject
    #: Versions of the packages that determine results (:func:`package_versions`).
    versions: dict[str, str]
    #: The config snapshot (:meth:`~bo_voids.config.ExperimentConfig.to_dict`).
    config: JsonObject
    layout_version: int
    iterations_completed: int
    failed_evaluations: int
    #: The null band's record, with its ``stop_threshold``.
    noise_floor: JsonObject
    #: The last iteration's run-level scores (``scores.json`` less ``scorer`` and ``per_set``).
    latest_scores: JsonObject
    current_best: list[RankedSet]
    next_params: list[ParamSet]
    #: Seconds spent per stage.
    timings: dict[str, float]
    stop_reason: str
    #: Why a run failed (``status`` ``failed``).
    error: str
    #: Where a re-targeted run's evaluations come from (:mod:`bo_voids.retarget`).
    retargeted_from: JsonObject


@dataclass
class IterationRecord:
    """Everything persisted for one iteration."""

    iteration: int
    embeddings: np.ndarray
    metadata: list[ImageRecord]
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
        name = self.metadata[index]["image_file"]
        assert name is not None, f"image {index} of iteration {self.iteration} has no file"
        return self.folder / "images" / name


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


def describe_embedder(info: Mapping[str, object]) -> str:
    """An embedder record (``experiment.json``'s ``embedder``) as ``'name' (fingerprint)``."""
    return f"{info.get('name')!r} ({info.get('fingerprint')})"


def config_differences(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
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

    def read_manifest(self) -> Manifest:
        """Read ``experiment.json``."""
        if not self.exists():
            raise StateError(f"{self.root} is not an experiment folder (no {MANIFEST})")
        manifest = read_json(self.manifest_path, dict)
        if not isinstance(manifest.get("config"), dict):
            raise DamagedFileError(
                f"cannot read {self.manifest_path}: it has no config record (the file is damaged "
                "or not a bo_voids manifest)"
            )
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        """Write ``experiment.json`` (atomically), stamping ``updated``."""
        atomic_write_json(self.manifest_path, {**manifest, "updated": utc_timestamp()})

    def update_manifest(self, **fields: Unpack[Manifest]) -> Manifest:
        """Merge ``fields`` into the manifest and write it back."""
        manifest: Manifest = {**self.read_manifest(), **fields}
        self.write_manifest(manifest)
        return manifest

    def create(
        self,
        config: ExperimentConfig,
        embedder_info: Mapping[str, JsonValue],
        *,
        overwrite: bool = False,
        extra: Manifest | None = None,
    ) -> Manifest:
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
            foreign = sorted(p.name for p in entries if not _experiment_entry(p.name))
            if foreign and not self.exists():
                raise ExperimentExistsError(
                    f"{self.root} is not empty and holds no experiment ({MANIFEST} missing); "
                    f"refusing to write into it or to clear it (it holds e.g. {foreign[:3]}). "
                    "Choose another experiment_dir"
                )
            if foreign and overwrite:
                raise ExperimentExistsError(
                    f"refusing to replace {self.root}: it holds files bo_voids did not write "
                    f"(e.g. {foreign[:3]}); move them out of the folder, or choose another "
                    "experiment_dir"
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
            self._set_aside()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {self.root}: {exc.strerror or exc}") from exc
        manifest: Manifest = {
            "experiment_name": config.experiment_name,
            "status": "running",
            "created": utc_timestamp(),
            "seed": config.seed,
            "embedder": dict(embedder_info),
            "versions": package_versions(),
            "config": config.to_dict(),
            "layout_version": LAYOUT_VERSION,
            "iterations_completed": -1,
            **(extra or {}),
        }
        self.write_manifest(manifest)
        return manifest

    def check_resumable(
        self, config: ExperimentConfig, embedder_info: Mapping[str, JsonValue]
    ) -> Manifest:
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
        layout = manifest.get("layout_version", LAYOUT_VERSION)
        if layout != LAYOUT_VERSION:
            raise ResumeMismatchError(
                f"cannot resume {self.root}: its folder layout is version {layout!r}, this "
                f"bo_voids {package_versions().get('bo_voids', '?')} reads version "
                f"{LAYOUT_VERSION}; resume it with the bo_voids version that wrote it "
                f"({(manifest.get('versions') or {}).get('bo_voids', '?')}) or start again"
            )
        written_by = (manifest.get("versions") or {}).get("bo_voids")
        running = package_versions().get("bo_voids")
        if written_by and running and written_by != running:
            warnings.warn(
                f"resuming {self.root}, written by bo_voids {written_by}, with bo_voids "
                f"{running}: the folder layout is the same, but results may differ from an "
                "uninterrupted run of either version",
                BoVoidsWarning,
                stacklevel=2,
            )
        return manifest

    # ---- replacing (--overwrite) -----------------------------------------------------------

    @property
    def replaced_dir(self) -> Path:
        """Where the experiment an ``--overwrite`` replaces waits (see the module docstring)."""
        return self.root / REPLACED

    def _set_aside(self) -> None:
        """Move the folder's contents into :attr:`replaced_dir` (renames only: nothing deleted).

        A ``.replaced/`` left by an interrupted ``--overwrite`` is read by what stands beside it:

        * no manifest beside it: a set-aside or a restore was cut short, so everything beside it
          is the old experiment's too, and joins it;
        * a manifest but no iteration 0: the new run never started cleanly; ``.replaced/`` still
          holds the experiment the user had and is kept, the new run's files are cleared;
        * a manifest and an iteration 0: the new run had started, the old one was due for
          deletion (and is deleted now).
        """
        aside = self.replaced_dir
        moved: list[Path] = []
        try:
            if aside.is_dir() and self.exists() and self.iteration_dir(0).is_dir():
                shutil.rmtree(aside)
            if aside.is_dir() and self.exists():
                self.manifest_path.unlink()  # first: a clear cut short never looks like a run
                for child in self._own_entries():
                    _remove(child)
            else:
                aside.mkdir(exist_ok=True)
                # the manifest goes first, so a move cut short never looks like an experiment
                moving = sorted(self._own_entries(), key=lambda c: c.name != MANIFEST)
                for child in moving:
                    if (aside / child.name).exists():  # cannot happen unless tampered: keep both
                        raise OSError(f"{aside / child.name} exists already")
                    os.replace(child, aside / child.name)
                    moved.append(child)
            _fsync_dir(self.root)
        except OSError as exc:
            for child in reversed(moved):  # put back what this call moved (manifest last)
                with contextlib.suppress(OSError):
                    os.replace(aside / child.name, child)
            raise StateError(
                f"cannot set aside the experiment in {self.root}: {exc.strerror or exc}"
            ) from exc

    def _own_entries(self) -> list[Path]:
        return [c for c in self.root.iterdir() if c.name not in LOCK_FILES and c.name != REPLACED]

    def discard_replaced(self) -> None:
        """Delete the replaced experiment (the new run has its iteration 0)."""
        if self.replaced_dir.is_dir():
            shutil.rmtree(self.replaced_dir, ignore_errors=True)

    def restore_replaced(self) -> bool:
        """Put the replaced experiment back after a new run that stopped before its iteration 0.

        Returns:
            Whether an experiment was restored.
        """
        aside = self.replaced_dir
        if not aside.is_dir() or self.iteration_dir(0).is_dir():
            return False
        try:
            self.manifest_path.unlink(missing_ok=True)
            for child in self._own_entries():
                _remove(child)
            for child in sorted(aside.iterdir(), key=lambda c: c.name == MANIFEST):
                os.replace(child, self.root / child.name)  # the manifest last: whole again
            aside.rmdir()
        except OSError as exc:
            raise StateError(
                f"cannot restore the replaced experiment from {aside}: {exc.strerror or exc}; "
                f"it is still there: move its contents back into {self.root} by hand"
            ) from exc
        return True

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
            raise DamagedFileError(
                f"{self.root}: iteration folders {found} are not contiguous from 0"
            )
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
            if k == 0:
                self.discard_replaced()  # the new run has started cleanly
        except OSError as exc:  # disk full, folder not writable, ...: nothing half-written
            shutil.rmtree(partial, ignore_errors=True)
            raise StateError(
                f"cannot write iteration {k} to {self.root}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if getattr(exc, "filename", None) else "")
            ) from exc
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def write_iteration(
        self,
        record: IterationRecord,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        *,
        pca_model: Callable[[Path], object] | None = None,
        before_commit: Callable[[], None] = lambda: None,
    ) -> Path:
        """Write an iteration's folder as a whole: it appears complete or not at all.

        Args:
            record: The iteration; its metadata gain a ``mask_file`` for every image with a mask.
            images: The images, in the order of ``record.metadata``.
            masks: Their ground-truth masks (``None`` where there is none).
            pca_model: Writes the projection model to the path it is given (iteration 0).
            before_commit: Called once every file is written, before the folder is renamed into
                place (where a crash leaves a different state on disk).

        Returns:
            The iteration's folder.
        """
        k, metadata = record.iteration, record.metadata
        with self.writing_iteration(k) as tmp:
            for img, mask, m in zip(images, masks, metadata, strict=True):
                # the folder is renamed into place as a whole: no per-file atomicity needed
                assert m["image_file"] is not None, "write_iteration needs each image's file name"
                save_png(tmp / "images" / m["image_file"], img, atomic=False, compress_level=1)
                if mask is not None:
                    mask_file = m["mask_file"] = f"{m['sample_id']}_mask.png"
                    save_png(tmp / "images" / mask_file, mask, atomic=False, compress_level=1)
            atomic_save_npy(tmp / "embeddings.npy", record.embeddings)
            atomic_save_npy(tmp / "pca_2d.npy", record.pca_2d)
            if pca_model is not None:
                pca_model(tmp / "pca_model.npz")
            atomic_write_json(tmp / "metadata.json", metadata)
            atomic_write_json(tmp / SCORES_FILE, record.scores.to_dict())
            if record.proposals is not None:
                atomic_write_json(tmp / PROPOSAL_FILE, record.proposals)
            if record.failures:
                atomic_write_json(tmp / FAILURES, list(record.failures))
            before_commit()
        record.folder = self.iteration_dir(k)
        return record.folder

    def load_iteration(self, k: int) -> IterationRecord:
        """Read iteration ``k`` back."""
        folder = self.iteration_dir(k)
        if not folder.is_dir():
            raise StateError(f"{folder} does not exist")
        proposals_path = folder / PROPOSAL_FILE
        scores_path = folder / SCORES_FILE
        failures_path = folder / FAILURES
        metadata = read_json(folder / "metadata.json", list)
        failures = read_json(failures_path, list) if failures_path.exists() else []
        for name, items in (("metadata.json", metadata), (FAILURES, failures)):
            if not all(isinstance(m, dict) for m in items):
                raise DamagedFileError(
                    f"cannot read {folder / name}: an entry is not a record (the file is damaged)"
                )
        return IterationRecord(
            iteration=k,
            embeddings=load_npy(folder / "embeddings.npy"),
            metadata=metadata,
            pca_2d=load_npy(folder / "pca_2d.npy"),
            scores=_run_scores(scores_path, k),
            proposals=read_json(proposals_path, dict) if proposals_path.exists() else None,
            folder=folder,
            failures=failures,
        )

    def load_all(self) -> list[IterationRecord]:
        """Read every complete iteration, in order."""
        return [self.load_iteration(k) for k in self.completed_iterations()]

    # ---- history ---------------------------------------------------------------------------

    def write_history(
        self,
        observations: Sequence[ObservationRecord],
        first_metadata: Sequence[ImageRecord],
    ) -> None:
        """Write ``history.csv``: one row per evaluated parameter set, then the simulated targets.

        Args:
            observations: Every observation of the run (replications merged).
            first_metadata: Iteration 0's per-image metadata (the simulated target sets).
        """
        rows = history_rows(observations, first_metadata)
        buf = io.StringIO()
        extra = sorted({k for r in rows for k in r} - set(HISTORY_COLUMNS))
        writer = csv.DictWriter(buf, fieldnames=[*HISTORY_COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
        atomic_write_text(self.root / HISTORY, buf.getvalue())

    def write_derived(
        self,
        observations: Sequence[ObservationRecord],
        records: Sequence[IterationRecord],
        noise_floor: Mapping[str, JsonValue],
    ) -> None:
        """Rebuild what derives from the iterations: ``history.csv`` and the manifest's progress.

        Args:
            observations: Every observation of the run (replications merged).
            records: The complete iterations, in order (at least iteration 0).
            noise_floor: The run's null band record.
        """
        self.write_history(observations, records[0].metadata)
        latest = records[-1].scores.to_dict()
        self.update_manifest(
            iterations_completed=len(records) - 1,
            failed_evaluations=sum(len(r.failures) for r in records),
            noise_floor=dict(noise_floor),
            latest_scores={k: v for k, v in latest.items() if k not in {"scorer", "per_set"}},
        )

    def view(self, config: ExperimentConfig, records: Sequence[IterationRecord]) -> ExperimentRun:
        """The run as a writer holds it in memory (only the small manifest and history are read)."""
        return ExperimentRun(
            root=self.root,
            manifest=self.read_manifest(),
            config=config,
            iterations=list(records),
            history=self.read_history(),
        )

    def read_calibration(self) -> dict[str, Any] | None:
        """Read ``calibration.json`` (``bo-voids calibrate``'s result); ``None`` if absent."""
        path = self.root / "calibration.json"
        return read_json(path) if path.exists() else None

    def read_history(self) -> list[dict[str, str]]:
        """Read ``history.csv`` as a list of string dicts, skipping damaged rows.

        The file is derived (a resume rewrites it from the iterations), so damage is tolerated:
        bytes that are not UTF-8 are replaced, and a row with a NUL byte or the wrong number of
        fields is skipped; a warning counts the skipped rows.
        """
        path = self.root / HISTORY
        try:
            raw = read_regular_file(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
        lines = raw.decode("utf-8", errors="replace").splitlines()
        if not lines:
            return []
        rows: list[dict[str, str]] = []
        skipped = 0
        header = next(csv.reader([lines[0].replace("\0", "")]), [])
        for line in lines[1:]:
            try:
                (values,) = list(csv.reader([line], strict=True)) or [[]]
            except (csv.Error, ValueError):
                skipped += 1
                continue
            if len(values) != len(header) or "\0" in line:
                skipped += bool(line.strip())
                continue
            rows.append(dict(zip(header, values, strict=True)))
        if skipped:
            warnings.warn(
                f"{path}: {skipped} damaged row(s) skipped (--resume rewrites the file from the "
                "iterations)",
                BoVoidsWarning,
                stacklevel=2,
            )
        return rows


def _run_scores(path: Path, k: int) -> RunScores:
    """``scores.json`` of iteration ``k`` (a missing file reads as empty scores)."""
    if not path.exists():
        return RunScores.from_dict({"iteration": k})
    try:
        return RunScores.from_dict(read_json(path, dict))
    except (TypeError, ValueError, AttributeError) as exc:  # valid JSON, wrong content
        raise DamagedFileError(f"cannot read {path}: {exc}; the file is damaged") from exc


def _csv_value(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else repr(float(v))
    return v


def _experiment_entry(name: str) -> bool:
    """Whether a folder entry is something a bo_voids experiment writes."""
    hidden_own = name in LOCK_FILES or name == REPLACED or name.endswith(".tmp")
    if name.startswith("."):
        return hidden_own
    return _ITERATION_ENTRY.fullmatch(name) is not None or name in EXPERIMENT_ENTRIES


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


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
        status: Where the run stands (:func:`effective_status`: ``running``, ``completed``,
            ``interrupted``, ``failed``); default: the manifest's.
    """

    root: Path
    manifest: Manifest
    config: ExperimentConfig
    iterations: list[IterationRecord]
    history: list[dict[str, str]]
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = str(self.manifest.get("status", "unknown"))

    @property
    def scores(self) -> list[RunScores]:
        """Per-iteration run-level scores (``scores.json`` of each iteration)."""
        return [it.scores for it in self.iterations]

    @property
    def noise_floor(self) -> JsonObject:
        """MMD² between random halves of the real set (mean, std, q05, q95)."""
        return self.manifest.get("noise_floor") or self.iterations[0].scores.noise_floor or {}

    @property
    def current_best(self) -> list[RankedSet]:
        """The best parameter sets as ranked by the optimiser at the end of the run."""
        return self.manifest.get("current_best", [])

    def all_embeddings(self) -> tuple[np.ndarray, list[ImageRecord]]:
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
        status=effective_status(store.root, manifest),
    )


def history_rows(
    observations: Sequence[ObservationRecord], first_metadata: Sequence[ImageRecord]
) -> list[dict[str, JsonScalar]]:
    """The rows of ``history.csv`` (see :meth:`ExperimentStore.write_history`)."""
    rows: list[dict[str, JsonScalar]] = [
        {
            "iteration": rec["iteration"],
            "param_set_id": rec["uid"],
            "dataset_type": rec["dataset_type"],
            **{name: rec["params"].get(name) for name in PARAMETER_NAMES},
            "mmd2": rec["mmd2"],
            "n_images": rec["n_images"],
            "mean_nearest_real": rec["mean_nearest_real"],
            "void_area_pct": rec["void_area_pct"],
            "iterations": " ".join(str(i) for i in rec["iterations"]),
        }
        for rec in observations
    ]
    real_sets: dict[str, tuple[str, ParamSet]] = {}
    counts: dict[str, int] = {}
    for m in first_metadata:
        params = m["params"]
        if m["dataset_type"] in TARGET_TYPES and params is not None:
            real_sets.setdefault(m["param_set_id"], (m["dataset_type"], params))
            counts[m["param_set_id"]] = counts.get(m["param_set_id"], 0) + 1
    for ps_id, (dataset_type, params) in real_sets.items():
        rows.append(
            {
                "iteration": 0,
                "param_set_id": ps_id,
                "dataset_type": dataset_type,
                **{name: params[name] for name in PARAMETER_NAMES},
                "mmd2": math.nan,
                "n_images": counts[ps_id],
                "mean_nearest_real": math.nan,
                "void_area_pct": math.nan,
                "iterations": "0",
            }
        )
    return rows
