"""Void metrics in the units of X-ray inspection, measured alike on real and synthetic images.

An inspection report judges a solder joint by its voids: the voided share of the area, the
largest void's share, the number of voids and their sizes (the figures of IPC-7095-style
acceptance criteria). This module measures them with **one** detector, applied the same way to
real target images and to synthetic ones, so a real-vs-synthetic comparison compares like with
like; on synthetic images the generator's ground-truth masks give the detector's own error,
which is reported beside every comparison.

**The detector** (:func:`detect_voids`, scikit-image / SciPy, no learning). Voids are darker
than the joint around them (the generator multiplies the chip by ``brightness_factor``).

1. *Background.* The void-free image is estimated twice, each estimate too bright where the
   other is right, and the lower one kept: a median over a window of ``background_window``
   reference px (computed on a copy reduced to about 64 px, robust to texture, too bright at
   the corners of dark regions) and a grey closing of the slightly smoothed image with a square
   of ``closing_size`` reference px (keeps large dark regions such as a die whole, too bright on
   textured areas).
2. *Candidates.* Pixels darker than the background by at least ``min_contrast`` (relative).
3. *Edges at half depth.* Each candidate region's depth is its 5th-percentile darkening; its
   pixels darker than half that depth form the void (the generator's own mask is the blurred
   coverage at one half: the same rule for an isolated void).
4. *Shape filter.* Regions smaller than ``min_area`` reference px², elongated beyond
   ``max_elongation`` (axis ratio: wires, traces) or with a solidity under ``min_solidity``
   (ragged strips along dark edges) are dropped. Touching voids stay one region, as they
   would for an inspection tool.

Every size is in *reference pixels* (``reference_size`` = 512, the generator's convention), so
the detector behaves the same on a 160 px and a 512 px image. Percentages are of the **whole
image**, like the generator's ``void_area_pct`` (the solder area of a user's chip is unknown).

Example:
    >>> from bo_voids.void_metrics import image_void_metrics
    >>> image_void_metrics(image)["void_area_pct"]  # doctest: +SKIP
    4.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from scipy import ndimage
from skimage import measure, morphology

from bo_voids._types import JsonObject
from bo_voids.generation.voids import unit_float
from bo_voids.seeding import derive_seed

__all__ = [
    "DIAMETER_BINS",
    "FIGURES",
    "DetectorSettings",
    "ImageVoidMetrics",
    "compare_void_metrics",
    "detect_voids",
    "detector_accuracy",
    "image_void_metrics",
    "measure_voids",
    "summarize_metrics",
]

#: Class edges of the size distribution: equivalent-circle diameters in reference px.
DIAMETER_BINS: tuple[float, ...] = (0.0, 15.0, 25.0, 40.0, 60.0, math.inf)
#: The per-image figures compared between real and synthetic images.
FIGURES: tuple[str, ...] = ("void_area_pct", "largest_void_pct", "void_count")


@dataclass(frozen=True)
class DetectorSettings:
    """Settings of :func:`detect_voids` (sizes in reference px, see the module docstring)."""

    reference_size: int = 512
    background_window: float = 160.0
    closing_size: float = 110.0
    min_contrast: float = 0.2
    min_area: float = 100.0
    max_elongation: float = 4.0
    min_solidity: float = 0.7
    opening_radius: float = 3.0


class ImageVoidMetrics(TypedDict):
    """The inspection figures of one image.

    Attributes:
        void_area_pct: Voided share of the image, in percent.
        largest_void_pct: The largest void's share of the image, in percent.
        void_count: Number of voids (touching voids count once).
        diameters: Equivalent-circle diameter of each void, in reference px, largest first.
        size_classes: Voids per diameter class (:data:`DIAMETER_BINS`).
    """

    void_area_pct: float
    largest_void_pct: float
    void_count: int
    diameters: list[float]
    size_classes: list[int]


def _background(image: np.ndarray, s: DetectorSettings, scale: float) -> np.ndarray:
    h, w = image.shape
    factor = max(1, round(min(h, w) / 64))
    hh, ww = h // factor * factor, w // factor * factor
    small = image[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))
    window = max(3, round(s.background_window * scale / factor) | 1)
    median = ndimage.median_filter(small, size=window, mode="nearest")
    median = ndimage.zoom(median, (h / median.shape[0], w / median.shape[1]), order=1)
    size = max(3, round(s.closing_size * scale) | 1)
    smooth = ndimage.gaussian_filter(image, 2.0 * scale)
    closing = ndimage.grey_closing(smooth, size=(size, size), mode="nearest")
    return np.minimum(median[:h, :w], closing)


def detect_voids(image: np.ndarray, settings: DetectorSettings | None = None) -> np.ndarray:
    """Find the voids of one grayscale image (see the module docstring for the method).

    Args:
        image: 2-D image, ``float`` in ``[0, 1]`` (or ``uint8``/``uint16``, rescaled).
        settings: Detector settings (default :class:`DetectorSettings`).

    Returns:
        An ``int32`` label image: 0 background, ``1..k`` the detected voids.

    Raises:
        ValueError: If ``image`` is not 2-D.
    """
    s = settings or DetectorSettings()
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"detect_voids expects a 2-D image, got shape {img.shape}")
    img = unit_float(img)
    scale = min(img.shape) / s.reference_size
    ratio = ndimage.gaussian_filter(img, 0.5 * scale) / np.maximum(_background(img, s, scale), 1e-3)
    candidates, _ = ndimage.label(ratio < 1.0 - s.min_contrast)
    voids = np.zeros(img.shape, dtype=bool)
    for k, sl in enumerate(ndimage.find_objects(candidates)):
        if sl is None:
            continue
        region = candidates[sl] == k + 1
        local = ratio[sl]
        depth = 1.0 - float(np.percentile(local[region], 5))
        voids[sl] |= region & (local <= 1.0 - depth / 2.0)
    radius = s.opening_radius * scale
    if radius >= 1.0:  # cut thin dark structures (wires, traces) off the voids they touch
        voids = ndimage.binary_opening(voids, structure=morphology.disk(round(radius)))
    labels, _ = ndimage.label(voids)
    keep = np.bincount(labels.ravel()) >= s.min_area * scale**2
    keep[0] = False
    labels[~keep[labels]] = 0
    for prop in measure.regionprops(labels):
        elongation = prop.axis_major_length / max(prop.axis_minor_length, 1.0)
        keep[prop.label] = (
            prop.area >= s.min_area * scale**2
            and elongation <= s.max_elongation
            and prop.solidity >= s.min_solidity
        )
    out, _ = ndimage.label(keep[labels])
    return out.astype(np.int32)


def measure_voids(labels: np.ndarray, reference_size: int = 512) -> ImageVoidMetrics:
    """The inspection figures of a void label image or binary mask.

    Args:
        labels: Label image (0 background) or boolean mask (split into connected voids).
        reference_size: Side length, in px, that diameters are expressed at.

    Returns:
        The figures (:class:`ImageVoidMetrics`).
    """
    arr = np.asarray(labels)
    if arr.dtype == np.bool_:
        arr, _ = ndimage.label(arr)
    areas = np.bincount(arr.ravel())[1:]
    areas = np.sort(areas[areas > 0])[::-1]
    scale = reference_size / min(arr.shape)
    diameters = 2.0 * np.sqrt(areas / math.pi) * scale
    classes, _ = np.histogram(diameters, bins=np.asarray(DIAMETER_BINS))
    total = float(arr.size)
    return {
        "void_area_pct": 100.0 * float(areas.sum()) / total,
        "largest_void_pct": 100.0 * float(areas[0]) / total if areas.size else 0.0,
        "void_count": int(areas.size),
        "diameters": [round(float(d), 3) for d in diameters],
        "size_classes": [int(c) for c in classes],
    }


def image_void_metrics(
    image: np.ndarray, settings: DetectorSettings | None = None
) -> ImageVoidMetrics:
    """Detect the voids of one image and measure them (the one path for real and synthetic)."""
    s = settings or DetectorSettings()
    return measure_voids(detect_voids(image, s), s.reference_size)


def detector_accuracy(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    settings: DetectorSettings | None = None,
    *,
    detected: Sequence[np.ndarray] | None = None,
) -> JsonObject:
    """The detector's error on images with known void masks (synthetic images).

    Args:
        images: The images.
        masks: Their ground-truth masks (the generator's).
        settings: Detector settings.
        detected: The detector's label images of ``images`` when already computed.

    Returns:
        ``n_images``; ``area_pct``: the error of the void area share in percentage points
        (``bias``: detected - true, mean; ``mae``; ``true_mean``); ``count``: the error of the
        void count against the connected voids of the mask (``bias``, ``mae``, ``true_mean``);
        ``iou``: mean intersection over union of detected and true void pixels.
    """
    s = settings or DetectorSettings()
    area_err, count_err, ious, true_area, true_count = [], [], [], [], []
    found_labels = detected if detected is not None else [detect_voids(im, s) for im in images]
    for labels, mask in zip(found_labels, masks, strict=True):
        found, truth = measure_voids(labels, s.reference_size), measure_voids(np.asarray(mask))
        area_err.append(found["void_area_pct"] - truth["void_area_pct"])
        count_err.append(found["void_count"] - truth["void_count"])
        true_area.append(truth["void_area_pct"])
        true_count.append(truth["void_count"])
        found_mask, true_mask = labels > 0, np.asarray(mask, dtype=bool)
        union = np.count_nonzero(found_mask | true_mask)
        ious.append(np.count_nonzero(found_mask & true_mask) / union if union else 1.0)

    def _errors(err: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
        e = np.asarray(err, dtype=float)
        return {
            "bias": float(e.mean()) if e.size else math.nan,
            "mae": float(np.abs(e).mean()) if e.size else math.nan,
            "true_mean": float(np.mean(truth)) if truth else math.nan,
        }

    return {
        "n_images": len(area_err),
        "area_pct": _errors(area_err, true_area),
        "count": _errors(count_err, true_count),
        "iou": float(np.mean(ious)) if ious else math.nan,
        "detector": asdict(s),
    }


def summarize_metrics(metrics: Sequence[ImageVoidMetrics]) -> JsonObject:
    """Quartiles of each figure and the pooled size distribution of a group of images.

    Returns:
        ``n_images``; per figure of :data:`FIGURES` ``{"median", "q25", "q75", "mean"}``;
        ``size_classes``: the voids per diameter class, pooled over the images.
    """
    out: dict[str, Any] = {"n_images": len(metrics)}
    for figure in FIGURES:
        values = np.asarray([float(m[figure]) for m in metrics])  # type: ignore[literal-required]
        q25, q50, q75 = np.percentile(values, [25, 50, 75]) if values.size else [math.nan] * 3
        out[figure] = {
            "median": float(q50),
            "q25": float(q25),
            "q75": float(q75),
            "mean": float(values.mean()) if values.size else math.nan,
        }
    pooled = np.zeros(len(DIAMETER_BINS) - 1, dtype=int)
    for m in metrics:
        pooled += np.asarray(m["size_classes"], dtype=int)
    out["size_classes"] = pooled.tolist()
    return out


def _group(name: str, labels: Sequence[np.ndarray], s: DetectorSettings) -> dict[str, Any]:
    per_image = [measure_voids(lab, s.reference_size) for lab in labels]
    return {"label": name, "per_image": per_image, "summary": summarize_metrics(per_image)}


def compare_void_metrics(
    experiment_dir: str | Path,
    *,
    calibration: Mapping[str, Any] | None = None,
    n_images: int = 24,
    seed: int | None = None,
    settings: DetectorSettings | None = None,
) -> JsonObject:
    """Void metrics of the real targets next to the recommendation's and ψ's fresh renders.

    The targets are the real images of iteration 0 (a folder of real images or the simulated
    ones). ``n_images`` images are rendered from the recommendation (``current_best[0]``, one
    render seed each) and from parameter sets drawn from the population fit ψ (when
    ``calibration`` holds one), with seeds of their own stream, not seen by the optimiser.
    The detector's error is measured on those renders against the generator's masks.

    Args:
        experiment_dir: The experiment folder.
        calibration: The calibration result (``calibration.json``) holding ``population.psi``;
            default: read from the folder when there.
        n_images: Images rendered per synthetic group.
        seed: Seed of the renders (default: the experiment's).
        settings: Detector settings.

    Returns:
        ``groups``: ``{"targets" | "recommendation" | "psi": {"label", "per_image",
        "summary"}}`` (groups that cannot be built are left out and named in ``missing``);
        ``detector_accuracy`` (:func:`detector_accuracy` on the synthetic renders);
        ``figures``, ``diameter_bins``, ``units`` and ``method``.
    """
    from bo_voids.export import parameter_draws, plan_export
    from bo_voids.generation.base_chips import load_image
    from bo_voids.state import ExperimentStore, load_experiment

    s = settings or DetectorSettings()
    run = load_experiment(experiment_dir)
    store = ExperimentStore(experiment_dir)
    stream = derive_seed(run.config.seed if seed is None else int(seed), "void_metrics")
    groups: dict[str, Any] = {}
    missing: dict[str, str] = {}
    first = run.iterations[0] if run.iterations else None
    real_idx = (
        [i for i, m in enumerate(first.metadata) if m.get("dataset_type") == "real"]
        if first
        else []
    )
    if first is not None and real_idx:
        targets = [detect_voids(load_image(first.image_path(i)), s) for i in real_idx]
        groups["targets"] = _group("real targets", targets, s)
    else:
        missing["targets"] = "no real images in iteration 0"
    if calibration is None:
        calibration = store.read_calibration()
    sources = {"recommendation": "recommendation (fresh renders)", "psi": "ψ samples"}
    rendered_images, rendered_masks, rendered_labels = [], [], []
    for source, label in sources.items():
        if source == "psi" and not ((calibration or {}).get("population") or {}).get("psi"):
            missing[source] = "no population fit ψ in calibration.json"
            continue
        if source == "recommendation" and not run.current_best:
            missing[source] = "no recommendation (unfinished run)"
            continue
        if source == "psi":
            psi = dict(calibration["population"]["psi"])  # type: ignore[index]
            plan = plan_export(experiment_dir, n_images, source="real", seed=stream)
            plan = replace(plan, source="psi", distribution=psi, origin={"key": "population.psi"})
        else:
            plan = plan_export(experiment_dir, n_images, source=source, seed=stream)
        generator = plan.generator.build()
        images = []
        for _, params, render_seed in parameter_draws(plan, run.config, range(n_images)):
            out = generator.render(params, render_seed)
            images.append(out.image)
            rendered_masks.append(out.mask)
        labels = [detect_voids(image, s) for image in images]
        rendered_images.extend(images)
        rendered_labels.extend(labels)
        groups[source] = _group(label, labels, s)
    return {
        "groups": groups,
        "missing": missing,
        "detector_accuracy": detector_accuracy(
            rendered_images, rendered_masks, s, detected=rendered_labels
        )
        if rendered_images
        else None,
        "figures": list(FIGURES),
        "diameter_bins": [b if math.isfinite(b) else None for b in DIAMETER_BINS],
        "units": {
            "void_area_pct": "% of the image",
            "largest_void_pct": "% of the image",
            "void_count": "voids per image (touching voids count once)",
            "diameters": (
                f"equivalent-circle diameter, px at {s.reference_size} px (smallest detected: "
                f"{2 * math.sqrt(s.min_area / math.pi):.1f})"
            ),
        },
        "seed": stream,
        "method": (
            "one detector (local-background contrast, half-depth edges, shape filter) on every "
            "image; synthetic groups rendered fresh with seeds of the 'void_metrics' stream"
        ),
    }
