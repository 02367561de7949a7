"""Export a labelled synthetic training set from a calibrated experiment (``bo-voids export``).

A calibrated generator is the start of a user's work: they want images *with labels*, drawn
from the calibrated distribution, to train or test a void detector. This module renders ``n``
images whose parameter sets are drawn from

* ``psi`` (default): the experiment's population fit ψ (``calibration.json``'s
  ``population.psi``, written by ``bo-voids calibrate``);
* ``recommendation``: the run's recommended parameter set (``current_best[0]``), every image
  with its own render seed;
* ``real``: the ``real`` entry of ``param_distributions`` of the experiment's config, or of
  another config given with ``config=``,

with the experiment's generator settings (:func:`generator_settings`, the one place that reads
them, so imaging settings plug in there), and writes::

    OUT/
      export.json                  manifest: source, ψ / parameters, seed, generator, versions
      images/synth_000000.png      8-bit grayscale image
      masks/synth_000000.png       16-bit instance map: 0 background, k = void k-1 of the image
      metadata/synth_000000.json   parameters, render seed, chip, void geometry, annotations
      annotations.json             COCO instances (one annotation per visible void, RLE)

**Determinism.** Image ``i`` uses the parameter draw ``rng(seed, "export", "params", i)`` and
the render seed ``derive_seed(seed, "export", "render", i)``: the same experiment, source, seed
and size give byte-identical files (nothing time-stamped is written), and the first ``m``
images of an export of ``n > m`` images equal an export of ``m``.

**Resuming.** ``metadata/<id>.json`` is written last for each image (every file atomically), so
an image whose metadata exists is complete; ``resume=True`` renders only the missing ones
after checking that the manifest's plan matches. ``annotations.json`` is assembled from the
metadata files at the end.

**COCO.** Category 1 is ``void``. Each void that keeps at least one pixel of the mask becomes
one annotation with an uncompressed RLE ``segmentation`` (``{"size": [h, w], "counts": [...]}``,
column-major, as ``pycocotools.mask.frPyObjects`` reads it), a tight ``bbox`` ``[x, y, w, h]``
and ``area`` (pixels); ``iscrowd`` is 0. Decoding every annotation of an image gives exactly
its instance map (``masks/<id>.png``), whose non-zero pixels are the generator's ground-truth
mask. Voids hidden under others (or blurred away) get no annotation; their geometry stays in
the metadata with ``mask_area_px`` 0.

Example:
    >>> from bo_voids.export import export_dataset
    >>> result = export_dataset("experiments/quickstart", "exports/qs", n=100)  # doctest: +SKIP
    >>> result.coco_path  # doctest: +SKIP
    PosixPath('exports/qs/annotations.json')
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bo_voids._io import atomic_write_json, atomic_write_text
from bo_voids._types import JsonObject, JsonValue
from bo_voids.coco import coco_document, void_annotations
from bo_voids.config import ExperimentConfig, config_from_dict, load_config
from bo_voids.exceptions import (
    BoVoidsError,
    ConfigError,
    ExportError,
    StateError,
    UserInputError,
)
from bo_voids.generation.voids import VoidGenerator
from bo_voids.schema import ImagingSettings
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import ParamSet, SearchSpace
from bo_voids.state import ExperimentStore

__all__ = [
    "COCO_FILE",
    "EXPORT_MANIFEST",
    "SOURCES",
    "ExportPlan",
    "ExportResult",
    "GeneratorSettings",
    "export_dataset",
    "generator_settings",
    "main",
    "parameter_draws",
    "plan_export",
]

EXPORT_MANIFEST = "export.json"
COCO_FILE = "annotations.json"
#: Where an export's parameter sets come from (the first is the default).
SOURCES: tuple[str, ...] = ("psi", "recommendation", "real")
FORMAT_VERSION = 1
_SUBFOLDERS = ("images", "masks", "metadata")
_NAME_RE = re.compile(r"^synth_\d{6,}\.(png|json)$")
#: zlib level and strategy of the written PNGs: level 1 with run-length encoding (zlib's Z_RLE,
#: 3) encodes an X-ray image ~20 % faster than level 1's default and ~15 % smaller.
_PNG_LEVEL = 1
_PNG_STRATEGY = 3


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything the renderer needs, read from an experiment by :func:`generator_settings`."""

    base_image_dir: str
    image_size: int
    edge_blur: float
    #: The run's imaging chain: fixed values are applied to every image; nuisance parameters
    #: come with each parameter set (ψ's draws, the recommendation).
    imaging: ImagingSettings = field(default_factory=ImagingSettings)

    def build(self) -> VoidGenerator:
        """Load the base chips into a :class:`~bo_voids.generation.voids.VoidGenerator`."""
        return VoidGenerator(
            self.base_image_dir,
            image_size=self.image_size,
            edge_blur=self.edge_blur,
            imaging=self.imaging,
        )


def generator_settings(
    config: ExperimentConfig, image_size: int | None = None
) -> GeneratorSettings:
    """The generator settings of an experiment: the one place an export reads them.

    Args:
        config: The experiment's stored config.
        image_size: Render at this size instead of the experiment's (the parameters are in
            reference pixels, so the voids scale with the image).

    Returns:
        The settings.

    Raises:
        ExportError: If ``image_size`` is smaller than 8 px.
    """
    size = config.image_size if image_size is None else int(image_size)
    if size < 8:
        raise ExportError(f"--image-size must be at least 8 px, got {size}")
    return GeneratorSettings(
        str(config.base_image_dir), size, float(config.edge_blur), imaging=config.imaging
    )


@dataclass(frozen=True)
class ExportPlan:
    """What an export renders: enough to reproduce every file it writes.

    Attributes:
        experiment: The experiment folder (absolute path).
        source: One of :data:`SOURCES`.
        n: Number of images.
        seed: Seed of the parameter draws and render seeds.
        generator: The generator settings.
        distribution: The config-form distribution the parameters are drawn from
            (``psi`` and ``real``), else ``None``.
        params: The one parameter set (``recommendation``), else ``None``.
        origin: Where the distribution or parameter set came from (file, key, set id).
    """

    experiment: str
    source: str
    n: int
    seed: int
    generator: GeneratorSettings
    distribution: dict[str, dict[str, float]] | None
    params: dict[str, Any] | None
    origin: dict[str, Any]

    def to_dict(self) -> JsonObject:
        """The JSON form stored in ``export.json`` (``plan``)."""
        return asdict(self)


def _fail_unfinished(store: ExperimentStore, manifest: Mapping[str, Any], what: str) -> None:
    status = manifest.get("status", "unknown")
    if status != "completed":
        raise ExportError(
            f"experiment {store.root} is unfinished (status {status!r}) and has no {what}; "
            f"resume it with `bo-voids run --config ... --resume`, or export --source real"
        )


def plan_export(
    experiment_dir: str | Path,
    n: int,
    *,
    source: str = "psi",
    seed: int | None = None,
    image_size: int | None = None,
    config: str | Path | None = None,
) -> ExportPlan:
    """Read an experiment and fix what its export renders.

    Args:
        experiment_dir: The experiment folder (holding ``experiment.json``).
        n: Number of images (at least 1).
        source: ``"psi"``, ``"recommendation"`` or ``"real"`` (see the module docstring).
        seed: Seed of the export (default: the experiment's seed).
        image_size: Render size (default: the experiment's).
        config: With ``source="real"``, a YAML config whose ``real`` distribution to use
            (default: the experiment's own).

    Returns:
        The plan.

    Raises:
        ExportError: The experiment is missing or unfinished, has no calibration, or an option
            is invalid (the CLI exits with code 2).
    """
    if source not in SOURCES:
        raise ExportError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    if int(n) < 1:
        raise ExportError(f"--n must be at least 1, got {n}")
    if config is not None and source != "real":
        raise ExportError("--config only applies to --source real")
    store = ExperimentStore(experiment_dir)
    if not store.exists():
        raise ExportError(
            f"no experiment at {store.root} (no experiment.json); run `bo-voids run` first"
        )
    try:
        manifest = store.read_manifest()
        cfg = config_from_dict(manifest["config"], check_paths=False)
    except (StateError, KeyError, ConfigError) as exc:
        raise ExportError(f"cannot read the experiment {store.root}: {exc}") from exc
    seed = cfg.seed if seed is None else int(seed)
    if seed < 0:
        raise ExportError(f"--seed must be >= 0, got {seed}")
    distribution: dict[str, dict[str, float]] | None = None
    params: dict[str, Any] | None = None
    if source == "psi":
        calibration = store.read_calibration()
        if calibration is None:
            _fail_unfinished(store, manifest, "calibration.json")
            raise ExportError(
                f"{store.root} has no calibration.json: run `bo-voids calibrate {store.root}` "
                "first, or export --source recommendation"
            )
        population = calibration.get("population") or {}
        if not population.get("psi"):
            why = calibration.get("population_error") or "no population section"
            raise ExportError(
                f"{store.root}/calibration.json holds no population fit ψ ({why}); "
                "export --source recommendation or --source real instead"
            )
        distribution = population["psi"]
        origin: dict[str, JsonValue] = {"file": "calibration.json", "key": "population.psi"}
    elif source == "recommendation":
        best = manifest.get("current_best") or []
        if not best:
            _fail_unfinished(store, manifest, "recommendation")
            raise ExportError(f"experiment {store.root} has no recommendation (current_best)")
        params = dict(best[0]["params"])
        origin = {
            "file": "experiment.json",
            "key": "current_best[0]",
            "param_set_id": best[0].get("param_set_id"),
            "iteration": best[0].get("iteration"),
        }
    else:
        if config is not None:
            cfg_real = load_config(config, check_paths=False).param_distributions.get("real")
            origin = {"file": str(config), "key": "param_distributions.real"}
        else:
            cfg_real = cfg.param_distributions.get("real")
            origin = {"file": "experiment.json", "key": "config.param_distributions.real"}
        if not cfg_real:
            raise ExportError(f"{origin['file']} has no param_distributions.real")
        distribution = {k: d.to_yaml() for k, d in cfg_real.items()}
    return ExportPlan(
        experiment=str(Path(experiment_dir).resolve()),
        source=source,
        n=int(n),
        seed=seed,
        generator=generator_settings(cfg, image_size),
        distribution=distribution,
        params=params,
        origin=origin,
    )


def parameter_draws(
    plan: ExportPlan, config: ExperimentConfig, indices: Iterable[int]
) -> list[tuple[int, ParamSet, int]]:
    """``(index, params, render_seed)`` of each image, each from its own seeded stream.

    Args:
        plan: The export plan (its distribution or parameter set, and seed).
        config: The experiment's config (bounds of the parameters).
        indices: Image indices.

    Returns:
        One ``(index, params, render_seed)`` per index.

    Raises:
        ExportError: If the plan's distribution is not valid for the config's bounds.
    """
    space = SearchSpace.from_config(config)
    typed = None
    if plan.distribution is not None:
        from bo_voids.calibration.distribution import typed_distribution

        try:
            typed = typed_distribution(plan.distribution, config)
        except ConfigError as exc:
            raise ExportError(f"the {plan.source} distribution is not valid: {exc}") from exc
    out = []
    for i in indices:
        if typed is None:
            params = dict(plan.params or {})
        else:
            (params,) = space.sample(typed, 1, rng(plan.seed, "export", "params", i))
        out.append((i, params, derive_seed(plan.seed, "export", "render", i)))
    return out


# ---------------------------------------------------------------------------------------------
# Rendering (runs in worker processes: plain arguments only)
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _generator(settings: GeneratorSettings) -> VoidGenerator:
    return settings.build()


def _stem(i: int) -> str:
    return f"synth_{i:06d}"


def _png_bytes(array: np.ndarray) -> bytes:
    """A 2-D ``uint8``/``uint16`` array (or a ``[0, 1]`` float image, scaled) as PNG bytes."""
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(
        buf, format="PNG", compress_level=_PNG_LEVEL, compress_type=_PNG_STRATEGY
    )
    return buf.getvalue()


def _write_replace(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, without ``fsync``.

    An interrupted export (Ctrl-C, a killed process) never leaves a half-written file under the
    final name; an image is complete once its metadata file exists (written last). Syncing
    every one of three files per image to disk would double the export's time, so unlike the
    experiment's files these are not made durable against a power cut (resume checks that each
    complete image's files are present and non-empty).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _render_chunk(out: str, settings: GeneratorSettings, source: str, items: Sequence[Any]) -> int:
    """Render and write one chunk of ``(index, params, render_seed)``; returns how many."""
    gen = _generator(settings)
    root = Path(out)
    for i, params, seed in items:
        rendered = gen.render(params, seed, instances=True)
        labels = rendered.instance_labels
        assert labels is not None
        stem = _stem(i)
        _write_replace(root / "images" / f"{stem}.png", _png_bytes(rendered.image))
        _write_replace(root / "masks" / f"{stem}.png", _png_bytes(labels))
        voids = [dict(v) for v in rendered.voids]
        annotations = void_annotations(labels, voids)
        record = {
            "index": i,
            "image_id": i + 1,
            "file_name": f"images/{stem}.png",
            "mask_file": f"masks/{stem}.png",
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "source": source,
            "params": params,
            "render_seed": int(seed),
            "base_image_id": rendered.base_image_id,
            "uncontrolled_params": rendered.uncontrolled_params,
            "void_area_pct": rendered.void_area_pct,
            "voids": voids,
            "annotations": annotations,
        }
        # written last: its presence marks the image complete (see resume)
        _write_replace(root / "metadata" / f"{stem}.json", (json.dumps(record) + "\n").encode())
    return len(items)


# ---------------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_dataset` wrote.

    Attributes:
        out: The export folder.
        n: Images in the export.
        rendered: Images rendered by this call (fewer than ``n`` when resumed).
        n_annotations: Annotations (visible voids) in the COCO file.
        seconds: Wall-clock time of the call.
        manifest_path: ``export.json``.
        coco_path: ``annotations.json``.
    """

    out: Path
    n: int
    rendered: int
    n_annotations: int
    seconds: float
    manifest_path: Path
    coco_path: Path


def _manifest(plan: ExportPlan, complete: bool, n_annotations: int | None) -> dict[str, Any]:
    from bo_voids import __version__

    versions = {"bo_voids": __version__}
    import importlib.metadata as md

    for name in ("numpy", "scipy", "pillow"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return {
        "format_version": FORMAT_VERSION,
        "plan": plan.to_dict(),
        "seeds": {
            "params": "rng(seed, 'export', 'params', index)",
            "render": "derive_seed(seed, 'export', 'render', index)",
        },
        "layout": {
            "images": "images/synth_NNNNNN.png (8-bit grayscale)",
            "masks": "masks/synth_NNNNNN.png (16-bit instance map: 0 background, k = void k-1)",
            "metadata": "metadata/synth_NNNNNN.json",
            "coco": COCO_FILE,
        },
        "versions": versions,
        "complete": complete,
        "n_annotations": n_annotations,
    }


def _prepare_folder(out: Path, plan: ExportPlan, *, force: bool, resume: bool) -> set[int]:
    """Check or clear ``out``; returns the indices already complete (resume)."""
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    manifest_path = out / EXPORT_MANIFEST
    if entries and resume:
        if not manifest_path.exists():
            raise ExportError(f"cannot resume: {out} holds no {EXPORT_MANIFEST}")
        try:
            stored = json.loads(manifest_path.read_text(encoding="utf-8"))["plan"]
        except (OSError, ValueError, KeyError) as exc:
            raise ExportError(f"cannot resume: {manifest_path} is unreadable ({exc})") from exc
        current = json.loads(json.dumps(plan.to_dict()))
        diffs = sorted(k for k in current if stored.get(k) != current[k] and k != "n")
        if diffs:
            raise ExportError(
                f"cannot resume {out}: its export differs in {', '.join(diffs)}; "
                "pass --force to replace it or choose another --out"
            )
        _remove_temporaries(out)
        return {i for i in range(plan.n) if _complete(out, i)}
    if entries and not force:
        raise ExportError(
            f"--out {out} is not empty; pass --resume to continue an export there or --force "
            "to write into it"
        )
    if entries and force and manifest_path.exists():
        # a previous export: its own files go (nothing else in the folder is touched)
        for sub in _SUBFOLDERS:
            folder = out / sub
            if folder.is_dir():
                for p in folder.iterdir():
                    if _NAME_RE.match(p.name):
                        p.unlink()
        (out / COCO_FILE).unlink(missing_ok=True)
        _remove_temporaries(out)
    return set()


def _complete(out: Path, i: int) -> bool:
    """Whether image ``i``'s three files are all there and non-empty."""
    stem = _stem(i)
    paths = (
        out / "metadata" / f"{stem}.json",
        out / "images" / f"{stem}.png",
        out / "masks" / f"{stem}.png",
    )
    try:
        return all(p.stat().st_size > 0 for p in paths)
    except OSError:
        return False


def _remove_temporaries(out: Path) -> None:
    """Temporary files an interrupted export left behind (``.synth_*.tmp``)."""
    for sub in _SUBFOLDERS:
        for p in (out / sub).glob(".synth_*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()


def _stored_config(experiment_dir: str | Path) -> ExperimentConfig:
    """The config snapshot in the experiment's manifest (read after :func:`plan_export`)."""
    manifest = ExperimentStore(experiment_dir).read_manifest()
    return config_from_dict(manifest["config"], check_paths=False)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def export_dataset(
    experiment_dir: str | Path,
    out: str | Path,
    n: int,
    *,
    source: str = "psi",
    seed: int | None = None,
    image_size: int | None = None,
    config: str | Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> ExportResult:
    """Render ``n`` labelled images of an experiment into ``out`` (see the module docstring).

    Args:
        experiment_dir: The experiment folder.
        out: The export folder (created; must be empty unless ``force`` or ``resume``).
        n: Number of images.
        source: ``"psi"`` (default), ``"recommendation"`` or ``"real"``.
        seed: Seed of the export (default: the experiment's).
        image_size: Render size (default: the experiment's).
        config: With ``source="real"``, a YAML config whose ``real`` distribution to use.
        jobs: Worker processes (default: the CPU count; 1 renders in this process).
        force: Write into a non-empty folder (a previous export's files there are replaced;
            nothing else is deleted).
        resume: Continue an interrupted export of the same plan in ``out``.
        progress: Show a tqdm progress bar with ETA.

    Returns:
        The :class:`ExportResult`.

    Raises:
        ExportError: Missing or unfinished experiment, non-empty ``out``, mismatched resume,
            invalid option (the CLI exits with code 2).
    """
    t0 = time.perf_counter()
    plan = plan_export(
        experiment_dir, n, source=source, seed=seed, image_size=image_size, config=config
    )
    cfg = _stored_config(experiment_dir)
    out = Path(out)
    done = _prepare_folder(out, plan, force=force, resume=resume)
    try:
        _generator(plan.generator)  # a missing chip folder fails here, once, before any work
        for sub in _SUBFOLDERS:
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from exc
    manifest_path = out / EXPORT_MANIFEST
    atomic_write_json(manifest_path, _manifest(plan, complete=False, n_annotations=None))
    todo = [i for i in range(plan.n) if i not in done]
    items = parameter_draws(plan, cfg, todo)
    n_jobs = max(1, int(jobs if jobs is not None else (os.cpu_count() or 1)))
    from tqdm.auto import tqdm

    bar = tqdm(
        total=plan.n, initial=plan.n - len(todo), desc="export", unit="img", disable=not progress
    )
    try:
        if n_jobs == 1 or len(items) < 32:
            for chunk in _chunks(items, 8):
                bar.update(_render_chunk(str(out), plan.generator, plan.source, chunk))
        else:
            from joblib import Parallel, delayed

            size = max(4, min(32, len(items) // (4 * n_jobs)))
            tasks = (
                delayed(_render_chunk)(str(out), plan.generator, plan.source, chunk)
                for chunk in _chunks(items, size)
            )
            with Parallel(n_jobs=n_jobs, return_as="generator_unordered") as parallel:
                for count in parallel(tasks):
                    bar.update(count)
    finally:
        bar.close()
    n_annotations = _write_coco(out, plan)
    atomic_write_json(manifest_path, _manifest(plan, complete=True, n_annotations=n_annotations))
    return ExportResult(
        out=out,
        n=plan.n,
        rendered=len(todo),
        n_annotations=n_annotations,
        seconds=time.perf_counter() - t0,
        manifest_path=manifest_path,
        coco_path=out / COCO_FILE,
    )


def _write_coco(out: Path, plan: ExportPlan) -> int:
    """Assemble ``annotations.json`` from the per-image metadata; returns the annotation count."""
    from bo_voids import __version__

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(plan.n):
        path = out / "metadata" / f"{_stem(i)}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {path}: {exc}") from exc
        images.append(
            {
                "id": record["image_id"],
                "file_name": record["file_name"],
                "width": record["width"],
                "height": record["height"],
                "mask_file": record["mask_file"],
            }
        )
        for ann in record["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": record["image_id"], **ann})
    coco = coco_document(
        images,
        annotations,
        description=f"bo_voids synthetic voids ({plan.source} of {plan.experiment})",
        version=__version__,
    )
    atomic_write_text(out / COCO_FILE, json.dumps(coco) + "\n")
    return len(annotations)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.export") -> int:
    """Command line: ``bo-voids export EXPERIMENT_DIR --n N --out DIR [options]``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in the help.

    Returns:
        The exit status: 0 on success, 2 on a user error (missing or unfinished experiment,
        non-empty ``--out``, bad option).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Render N labelled synthetic images (PNG images, instance masks, per-image metadata "
            "and a COCO instances file) from a calibrated experiment."
        ),
    )
    parser.add_argument("experiment_dir", help="the experiment folder (holding experiment.json)")
    parser.add_argument("--n", type=int, required=True, help="number of images to render")
    parser.add_argument("--out", required=True, help="export folder (must be empty or new)")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="psi",
        help="draw parameters from the population fit ψ of calibration.json (default), use the "
        "run's recommendation, or a config's `real` distribution",
    )
    parser.add_argument(
        "--config", default=None, help="with --source real: the YAML config to take `real` from"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed (default: the experiment's)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="render size in px (default: experiment's)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: the CPU count)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted export")
    group.add_argument(
        "--force", action="store_true", help="write into a non-empty --out (replaces an export)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = export_dataset(
            args.experiment_dir,
            args.out,
            args.n,
            source=args.source,
            seed=args.seed,
            image_size=args.image_size,
            config=args.config,
            jobs=args.jobs,
            force=args.force,
            resume=args.resume,
            progress=not args.quiet,
        )
    except BoVoidsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2 if isinstance(exc, UserInputError) else 1
    except KeyboardInterrupt:
        print(
            "\nexport stopped; the images written are kept: run the same command with --resume "
            "to finish it",
            file=sys.stderr,
        )
        raise
    print(
        f"wrote {result.n} images ({result.rendered} rendered now, {result.n_annotations} voids "
        f"annotated) to {result.out} in {result.seconds:.1f} s; COCO file {result.coco_path}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
