"""Offline handcrafted void-statistics embedder: no download, deterministic, ~10 ms per image.

This is the embedder a fresh machine uses, and its MMD² is the objective the optimiser
minimises, so each feature is chosen to respond to one of the generator's parameters, computed
from the image alone (never from a ground-truth mask):

1. **Background and ratio image.** The image is resized to a working size (default 256 px on the
   shorter side; lengths are normalised by it, so features do not depend on the input
   resolution), lightly smoothed, and its void-free background is estimated by a grey closing
   with a large square (fills dark features narrower than ~30 % of the image; square-shaped die
   edges survive it). ``ratio = image / background`` is ≈ 1 on the chip and ≈
   ``brightness_factor`` inside a void.
2. **Void candidates.** A small closing of the ratio image removes thin dark structures (bond
   wires, die rims); hysteresis thresholding and connected components give dark regions;
   elongated or huge regions (border strips) are rejected.
3. **Features** (group → parameters it mostly tracks):
   ``darkness`` (dark-area fractions at several ratio levels, the darkness of region cores →
   ``brightness_factor``, total void area), ``count`` (log number of regions, log density of
   small blobs → ``void_count``), ``size`` (equivalent-radius quantiles, mean, spread and
   coefficient of variation → ``base_size``, ``size_std``), ``shape`` (axis ratio, solidity,
   boundary roughness, area-weighted → ``void_shape``), ``spatial`` (radial distance of region
   centroids and of dark mass from the image centre, nearest-neighbour spacing →
   ``position_spread``) and a low-weight ``texture`` group (global intensity summaries).
4. **Scaling.** Each feature is standardised with a *fixed* centre and scale (median and robust
   spread over images rendered from uniformly random parameters with a fixed seed; see
   :func:`calibrate_scaling`, constants stored in :data:`FEATURE_SCALING`), then each group is
   weighted so that no group dominates the squared distance by its number of features.
5. **Parameter-estimate head.** A fixed ridge regression (:data:`PARAM_HEAD`, fitted once on
   the same reference sample by :func:`fit_param_head`) maps the standardised features and
   their squares to the six parameters divided by their ranges (shape as a one-hot). Distances
   in this block approximate the normalised parameter distance, which makes the MMD² rank
   parameter sets by how far they are from the targets (the raw features alone rank them
   poorly: a large change of one weakly visible parameter can move the image less than a
   small change of brightness). The embedding is ``[0.25 x features, 3 x head]`` by default.

Image only: the ground-truth mask is never used; the head's regression targets come from the
generator's parameters of the *reference sample* only, never from an experiment's images.

The constants are part of :meth:`HandcraftedEmbedder.fingerprint`, so embeddings computed with
different settings are never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from bo_voids.embedding.base import Embedder, as_image_list, short_hash, to_gray
from bo_voids.exceptions import EmbeddingError

__all__ = [
    "DEFAULT_GROUP_WEIGHTS",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FEATURE_SCALING",
    "HEAD_TARGETS",
    "PARAM_HEAD",
    "HandcraftedEmbedder",
    "HandcraftedSettings",
    "calibrate_scaling",
    "fit_param_head",
    "segment_voids",
    "void_features",
]

FEATURE_VERSION = "hc-1"

#: Ratio levels at which dark-area fractions are measured.
_DARK_LEVELS: tuple[float, ...] = (0.85, 0.78, 0.7, 0.62, 0.54, 0.46, 0.38)

#: Feature name → group. Order defines the embedding's coordinates.
FEATURE_GROUPS: dict[str, str] = {
    **{f"dark_frac_{t:.2f}": "darkness" for t in _DARK_LEVELS},
    "core_ratio_median": "darkness",
    "core_ratio_q25": "darkness",
    "area_frac": "darkness",
    "log_count": "count",
    "log_count_small": "count",
    "log_count_large": "count",
    "log_edt_peaks": "count",
    "radius_mean": "size",
    "radius_q10": "size",
    "radius_q50": "size",
    "radius_q90": "size",
    "radius_max": "size",
    "radius_std": "size",
    "radius_cv": "size",
    "axis_ratio_median": "shape",
    "axis_ratio_q25": "shape",
    "frac_elongated": "shape",
    "solidity_median": "shape",
    "frac_nonconvex": "shape",
    "roughness_median": "shape",
    "ellipse_residual_median": "shape",
    "ellipse_residual_q75": "shape",
    "centroid_r_mean": "spatial",
    "centroid_r_max": "spatial",
    "centroid_r_std": "spatial",
    "mass_r_gyration": "spatial",
    "nn_dist_mean": "spatial",
    "extent": "spatial",
    "img_mean": "texture",
    "img_std": "texture",
    "ratio_std": "texture",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_GROUPS)

#: Outputs of the parameter-estimate head: shape one-hot scores, then range-normalised values.
SHAPE_TARGETS: tuple[str, ...] = ("shape_circle", "shape_ellipse", "shape_irregular")
HEAD_TARGETS: tuple[str, ...] = (
    *SHAPE_TARGETS,
    "void_count",
    "base_size",
    "brightness_factor",
    "size_std",
    "position_spread",
)

#: Total weight of each group in the squared distance (spread evenly over its features).
DEFAULT_GROUP_WEIGHTS: dict[str, float] = {
    "darkness": 1.0,
    "count": 1.0,
    "size": 1.0,
    "shape": 1.0,
    "spatial": 1.0,
    "texture": 0.25,
}


@dataclass(frozen=True)
class HandcraftedSettings:
    """Settings of the handcrafted feature extractor (all lengths relative to the work size).

    Attributes:
        work_size: Shorter side of the working copy of each image, in pixels.
        smooth_sigma: Gaussian smoothing before background estimation (fraction of work size).
        background_size: Side of the square grey closing that estimates the background
            (fraction of the work size); must exceed the largest void diameter.
        wire_size: Side of the small closing that removes thin dark structures (fraction).
        low_threshold: Hysteresis low threshold on the ratio image (region extent).
        high_threshold: Hysteresis high threshold (a region needs a pixel darker than this).
        min_area: Smallest region kept, as a fraction of the work image area.
        max_area: Largest region kept (larger ones are chip structures), fraction of area.
        min_axis_ratio: Regions more elongated than this (minor / major) are rejected.
        group_weights: Total weight of each feature group.
        raw_weight: Multiplier of the standardised feature block of the embedding.
        head_weight: Multiplier of the parameter-estimate block (see :data:`PARAM_HEAD`).
        shape_weight: Distance between two different one-hot shape estimates, relative to
            the full range of a numeric parameter (before ``head_weight``).
    """

    work_size: int = 256
    smooth_sigma: float = 1.5 / 256
    background_size: float = 0.3
    wire_size: float = 7.0 / 256
    low_threshold: float = 0.88
    high_threshold: float = 0.82
    min_area: float = 6.0 / 256**2
    max_area: float = 0.15
    min_axis_ratio: float = 0.2
    group_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GROUP_WEIGHTS))
    raw_weight: float = 0.25
    head_weight: float = 3.0
    shape_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise EmbeddingError(f"work_size must be >= 32 px, got {self.work_size}")
        if not 0 < self.high_threshold <= self.low_threshold < 1:
            raise EmbeddingError(
                "thresholds must satisfy 0 < high_threshold <= low_threshold < 1, got "
                f"{self.high_threshold} and {self.low_threshold}"
            )
        unknown = set(self.group_weights) - set(DEFAULT_GROUP_WEIGHTS)
        if unknown:
            raise EmbeddingError(
                f"unknown feature groups {sorted(unknown)}; "
                f"expected {sorted(DEFAULT_GROUP_WEIGHTS)}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (for fingerprints and the experiment record)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["group_weights"] = {
            g: float(self.group_weights.get(g, 1.0)) for g in DEFAULT_GROUP_WEIGHTS
        }
        return d


class HandcraftedEmbedder(Embedder):
    """Offline embedder of void statistics (see the module docstring for the features).

    The embedding concatenates two blocks:

    * the standardised features (:data:`FEATURE_NAMES`, fixed centre/scale, group-weighted),
      times ``raw_weight``;
    * the *parameter-estimate head*: a fixed ridge regression (:data:`PARAM_HEAD`) from the
      standardised features and their squares to the generator parameters, each divided by its
      search range (``void_shape`` as a one-hot of weight ``shape_weight / sqrt(2)``), times
      ``head_weight``. Distances in this block approximate the normalised parameter distance the
      optimiser should minimise; it dominates the embedding by default.

    Args:
        settings: Feature-extraction settings (default :class:`HandcraftedSettings`).
        scaling: Per-feature ``(centre, scale)``; default :data:`FEATURE_SCALING`.
        head: Parameter-estimate head, mapping of target name to coefficients; default
            :data:`PARAM_HEAD`.
        **overrides: Individual :class:`HandcraftedSettings` fields (e.g. ``work_size=192``).

    Example:
        >>> emb = HandcraftedEmbedder()
        >>> emb.embed([np.full((128, 128), 0.8, dtype=np.float32)]).shape
        (1, 46)
    """

    name = "handcrafted"
    default_batch_size = 64

    def __init__(
        self,
        settings: HandcraftedSettings | None = None,
        *,
        scaling: Mapping[str, tuple[float, float]] | None = None,
        head: Mapping[str, Sequence[float]] | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or HandcraftedSettings()
        if overrides:
            base = HandcraftedSettings(**{**base.as_dict(), **overrides})
        self.settings = base
        self.scaling = dict(scaling or FEATURE_SCALING)
        self.head = {k: list(map(float, v)) for k, v in (head or PARAM_HEAD).items()}
        missing = [n for n in FEATURE_NAMES if n not in self.scaling]
        if missing:
            raise EmbeddingError(f"scaling lacks features {missing}")
        n_coef = 1 + 2 * len(FEATURE_NAMES)
        if list(self.head) != list(HEAD_TARGETS) or any(
            len(v) != n_coef for v in self.head.values()
        ):
            raise EmbeddingError(
                f"head must map {list(HEAD_TARGETS)} to {n_coef} coefficients each; "
                "regenerate it with `python -m benchmarks.embedder_sensitivity --calibrate`"
            )
        self.dim = len(FEATURE_NAMES) + len(HEAD_TARGETS)
        centre = np.array([self.scaling[n][0] for n in FEATURE_NAMES], dtype=np.float64)
        scale = np.array([self.scaling[n][1] for n in FEATURE_NAMES], dtype=np.float64)
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise EmbeddingError("feature scales must be finite and > 0")
        sizes = {
            g: sum(FEATURE_GROUPS[n] == g for n in FEATURE_NAMES) for g in DEFAULT_GROUP_WEIGHTS
        }
        gw = [float(base.group_weights.get(FEATURE_GROUPS[n], 1.0)) for n in FEATURE_NAMES]
        weight = np.sqrt(
            [w / sizes[FEATURE_GROUPS[n]] for w, n in zip(gw, FEATURE_NAMES, strict=True)]
        )
        self._centre, self._scale, self._group = centre, scale, weight
        self._head_w = np.array([self.head[t] for t in HEAD_TARGETS], dtype=np.float64).T
        out_w = np.ones(len(HEAD_TARGETS))
        out_w[: len(SHAPE_TARGETS)] = base.shape_weight / math.sqrt(2.0)
        self._head_out = out_w

    def raw_features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Unscaled features `N x n_features` (float64), in :data:`FEATURE_NAMES` order."""
        imgs = as_image_list(images)
        rows = [void_features(to_gray(im), self.settings) for im in imgs]
        return np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=np.float64).reshape(
            len(imgs), len(FEATURE_NAMES)
        )

    def standardize(self, raw: np.ndarray) -> np.ndarray:
        """Standardise raw features with the fixed scaling (clipped to ±6)."""
        return np.clip((np.asarray(raw, np.float64) - self._centre) / self._scale, -6.0, 6.0)

    def estimate_parameters(self, raw: np.ndarray) -> np.ndarray:
        """Head output `N x 8`: shape scores and range-normalised parameter estimates."""
        z = self.standardize(raw)
        design = np.concatenate([np.ones((len(z), 1)), z, z**2], axis=1)
        return design @ self._head_w

    def embed_raw(self, raw: np.ndarray) -> np.ndarray:
        """Embedding (`N x dim` float32) from :meth:`raw_features` output."""
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
        s = self.settings
        feat = self.standardize(raw) * self._group * s.raw_weight
        head = self.estimate_parameters(raw) * self._head_out * s.head_weight
        return np.concatenate([feat, head], axis=1).astype(np.float32)

    def _embed_batch(self, images: list[np.ndarray]) -> np.ndarray:
        return self.embed_raw(self.raw_features(images))

    def fingerprint(self) -> str:
        """Return ``handcrafted:<version>:<hash of settings, scaling and head>``."""
        payload = {
            "settings": self.settings.as_dict(),
            "scaling": {n: list(map(float, self.scaling[n])) for n in FEATURE_NAMES},
            "head": self.head,
        }
        return f"handcrafted:{FEATURE_VERSION}:{short_hash(payload, 16)}"

    def describe(self) -> dict[str, Any]:
        """Return the embedder's identity and settings for ``experiment.json``."""
        return {
            "name": self.name,
            "version": FEATURE_VERSION,
            "dim": self.dim,
            "features": list(FEATURE_NAMES),
            "head_targets": list(HEAD_TARGETS),
            "settings": self.settings.as_dict(),
            "fingerprint": self.fingerprint(),
        }


# ---------------------------------------------------------------------- feature extraction


def void_features(
    image: np.ndarray, settings: HandcraftedSettings | None = None
) -> dict[str, float]:
    """Compute the raw (unscaled) void-statistics features of one grayscale image.

    Args:
        image: `H x W` float image in ``[0, 1]``.
        settings: Extraction settings (default :class:`HandcraftedSettings`).

    Returns:
        Mapping of :data:`FEATURE_NAMES` to finite floats. Lengths are fractions of the working
        image side, areas fractions of its area.
    """
    s = settings or HandcraftedSettings()
    img, ratio, keep_mask, regions, fine_mask = segment_voids(image, s)
    h, w = img.shape
    side = float(min(h, w))
    area_total = float(h * w)

    f: dict[str, float] = {}
    # --- darkness: fractions of the image darker than each level, inside kept regions
    r_in = ratio[keep_mask]
    for t in _DARK_LEVELS:
        f[f"dark_frac_{t:.2f}"] = math.sqrt(float(np.count_nonzero(r_in < t)) / area_total)
    area = float(np.count_nonzero(keep_mask)) / area_total
    f["area_frac"] = math.sqrt(area)
    if regions:
        core = ndi.binary_erosion(keep_mask, iterations=max(1, round(2 * side / 256)))
        core_vals = ratio[core] if core.any() else r_in
        f["core_ratio_median"] = float(np.median(core_vals))
        f["core_ratio_q25"] = float(np.percentile(core_vals, 25))
    else:
        f["core_ratio_median"] = 1.0
        f["core_ratio_q25"] = 1.0

    # --- count
    n = len(regions)
    radii = np.array([math.sqrt(rp.area / math.pi) / side for rp in regions])
    f["log_count"] = math.log1p(n)
    f["log_count_small"] = math.log1p(float(np.sum(radii < 0.03)))
    f["log_count_large"] = math.log1p(float(np.sum(radii >= 0.06)))
    f["log_edt_peaks"] = math.log1p(_count_edt_peaks(keep_mask, side))

    # --- size
    if n:
        q10, q50, q90 = np.percentile(radii, [10, 50, 90])
        f.update(
            radius_mean=float(radii.mean()),
            radius_q10=float(q10),
            radius_q50=float(q50),
            radius_q90=float(q90),
            radius_max=float(radii.max()),
            radius_std=float(radii.std()),
            radius_cv=float(radii.std() / max(radii.mean(), 1e-6)),
        )
    else:
        f.update(
            radius_mean=0.0, radius_q10=0.0, radius_q50=0.0, radius_q90=0.0, radius_max=0.0,
            radius_std=0.0, radius_cv=0.0,
        )  # fmt: skip

    # --- shape: medians and fractions over the fine regions large enough to have a shape
    from skimage import measure

    fine_regions = [
        rp
        for rp in measure.regionprops(measure.label(fine_mask, connectivity=1))
        if rp.area >= 30 * (side / 256) ** 2
    ]
    if fine_regions:
        ar = np.array(
            [rp.axis_minor_length / max(rp.axis_major_length, 1e-6) for rp in fine_regions]
        )
        sol = np.array([rp.solidity for rp in fine_regions])
        rough = np.array(
            [rp.perimeter / (2.0 * math.sqrt(math.pi * rp.area)) for rp in fine_regions]
        )
        f.update(
            axis_ratio_median=float(np.median(ar)),
            axis_ratio_q25=float(np.percentile(ar, 25)),
            frac_elongated=float(np.mean(ar < 0.8)),
            solidity_median=float(np.median(sol)),
            frac_nonconvex=float(np.mean(sol < 0.94)),
            roughness_median=float(np.median(rough)),
        )
        res = np.array([_ellipse_residual(rp) for rp in fine_regions])
        f["ellipse_residual_median"] = float(np.median(res))
        f["ellipse_residual_q75"] = float(np.percentile(res, 75))
    else:
        f.update(
            axis_ratio_median=1.0, axis_ratio_q25=1.0, frac_elongated=0.0, solidity_median=1.0,
            frac_nonconvex=0.0, roughness_median=1.0, ellipse_residual_median=0.0,
            ellipse_residual_q75=0.0,
        )  # fmt: skip

    # --- spatial (relative to the image centre, in units of the working side)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    if n:
        cen = np.array([rp.centroid for rp in regions]) / side
        rad = np.hypot(cen[:, 0] - cy / side, cen[:, 1] - cx / side)
        f["centroid_r_mean"] = float(rad.mean())
        f["centroid_r_max"] = float(rad.max())
        f["centroid_r_std"] = float(rad.std())
        if n >= 2:
            d = np.sqrt(((cen[:, None, :] - cen[None, :, :]) ** 2).sum(-1))
            np.fill_diagonal(d, np.inf)
            f["nn_dist_mean"] = float(d.min(1).mean())
            f["extent"] = float(np.sqrt(np.linalg.eigvalsh(np.cov(cen.T)).clip(0).sum()))
        else:
            f["nn_dist_mean"] = 0.0
            f["extent"] = 0.0
        yy, xx = np.nonzero(keep_mask)
        wdark = 1.0 - ratio[yy, xx]
        wdark = np.clip(wdark, 0.0, None) + 1e-9
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / side**2
        f["mass_r_gyration"] = float(np.sqrt((wdark * r2).sum() / wdark.sum()))
    else:
        f.update(
            centroid_r_mean=0.0, centroid_r_max=0.0, centroid_r_std=0.0, nn_dist_mean=0.0,
            extent=0.0, mass_r_gyration=0.0,
        )  # fmt: skip

    # --- texture / intensity summaries (low weight)
    f["img_mean"] = float(img.mean())
    f["img_std"] = float(img.std())
    f["ratio_std"] = float(ratio.std())
    return f


def fit_param_head(
    raw: np.ndarray,
    params: Sequence[Mapping[str, Any]],
    bounds: Mapping[str, tuple[float, float]],
    scaling: Mapping[str, tuple[float, float]],
    ridge: float = 3.0,
) -> dict[str, list[float]]:
    """Fit the parameter-estimate head (ridge regression on standardised features and squares).

    Args:
        raw: `N x n_features` raw features of images rendered from ``params``.
        params: The ``N`` parameter dicts (uniform over the search space).
        bounds: ``(low, high)`` of each numeric parameter, to normalise targets to ``[0, 1]``.
        scaling: Feature scaling used to standardise (as :func:`calibrate_scaling` returns).
        ridge: L2 penalty (on all coefficients but the intercept).

    Returns:
        Mapping of :data:`HEAD_TARGETS` to ``1 + 2 * n_features`` coefficients.
    """
    emb = HandcraftedEmbedder(scaling=scaling, head=_identity_head())
    z = emb.standardize(raw)
    X = np.concatenate([np.ones((len(z), 1)), z, z**2], axis=1)
    Y = np.array(
        [
            [float(p["void_shape"] == t.removeprefix("shape_")) for t in SHAPE_TARGETS]
            + [
                (float(p[k]) - bounds[k][0]) / (bounds[k][1] - bounds[k][0])
                for k in HEAD_TARGETS[len(SHAPE_TARGETS) :]
            ]
            for p in params
        ]
    )
    pen = ridge * np.eye(X.shape[1])
    pen[0, 0] = 0.0
    W = np.linalg.solve(X.T @ X + pen, X.T @ Y)
    return {t: [float(f"{w:.6g}") for w in W[:, j]] for j, t in enumerate(HEAD_TARGETS)}


def _identity_head() -> dict[str, list[float]]:
    return {t: [0.0] * (1 + 2 * len(FEATURE_NAMES)) for t in HEAD_TARGETS}


def segment_voids(
    image: np.ndarray, settings: HandcraftedSettings | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any], np.ndarray]:
    """Find void candidates in one image (the first stage of :func:`void_features`).

    Args:
        image: `H x W` float image in ``[0, 1]``.
        settings: Extraction settings.

    Returns:
        ``(work_image, ratio, mask, regions, fine_mask)``: the resized image, the
        background-ratio image, the boolean mask of kept regions, their ``skimage``
        ``RegionProperties``, and a finer mask of the same voids for shape statistics.
    """
    from skimage import measure
    from skimage.filters import apply_hysteresis_threshold

    s = settings or HandcraftedSettings()
    img = _resize_short_side(np.asarray(image, dtype=np.float32), s.work_size)
    h, w = img.shape
    side = float(min(h, w))
    area_total = float(h * w)

    sm = ndi.gaussian_filter(img, s.smooth_sigma * side) if s.smooth_sigma > 0 else img
    k = max(3, round(s.background_size * side) | 1)
    bg = ndi.grey_closing(sm, size=(k, k), mode="reflect")
    ratio = sm / np.maximum(bg, 1e-3)
    rw = max(1, round(s.wire_size * side / 2))
    ratio = ndi.grey_closing(ratio, footprint=_disk(rw), mode="nearest")
    # Normalise by the chip's typical ratio (closing estimates the upper envelope of texture).
    med = max(float(np.median(ratio)), 1e-3)
    ratio = ratio / med
    np.clip(ratio, 0.0, 1.5, out=ratio)

    cand = apply_hysteresis_threshold(-ratio, -s.low_threshold, -s.high_threshold)
    labels = measure.label(cand, connectivity=2)
    props = measure.regionprops(labels)
    keep_mask = np.zeros_like(cand)
    regions = []
    for rp in props:
        a = rp.area / area_total
        if a < s.min_area or a > s.max_area:
            continue
        major = max(rp.axis_major_length, 1e-6)
        if rp.area >= 20 and rp.axis_minor_length / major < s.min_axis_ratio:
            continue
        minr, minc, maxr, maxc = rp.bbox
        if max(maxr - minr, maxc - minc) > 0.9 * side:  # strips along the chip / image border
            continue
        regions.append(rp)
        keep_mask[minr:maxr, minc:maxc] |= rp.image

    # A finer mask for shape statistics: little smoothing and no wire closing (which would fill
    # the concavities of irregular voids), restricted to the neighbourhood of the kept regions.
    # Its threshold is halfway between the chip (1) and the darkness of the voids, where the
    # blurred void edge is.
    fine = ndi.gaussian_filter(img, side / 256) / np.maximum(bg, 1e-3) / med
    near = ndi.binary_dilation(keep_mask, iterations=max(1, round(2 * side / 256)))
    t_fine = 0.5 * (1.0 + float(np.median(ratio[keep_mask]))) if keep_mask.any() else 0.0
    fine_mask = (fine < min(t_fine, s.low_threshold)) & near
    return img, ratio, keep_mask, regions, fine_mask


def calibrate_scaling(raw: np.ndarray) -> dict[str, tuple[float, float]]:
    """Derive fixed per-feature ``(centre, scale)`` from raw features of a reference sample.

    Centre is the median; scale is the mean of the normalised IQR and the standard deviation
    (robust, but never zero for features that are constant in most images), floored at 1e-6.

    Args:
        raw: `N x dim` raw features (:meth:`HandcraftedEmbedder.raw_features`) of images rendered
            from uniformly random parameters.

    Returns:
        Mapping feature name → ``(centre, scale)``, usable as ``scaling=``.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(FEATURE_NAMES):
        raise EmbeddingError(f"expected raw features of shape (N, {len(FEATURE_NAMES)})")
    med = np.median(raw, axis=0)
    q75, q25 = np.percentile(raw, [75, 25], axis=0)
    scale = np.maximum(0.5 * ((q75 - q25) / 1.349 + raw.std(axis=0)), 1e-6)
    return {
        n: (float(f"{med[i]:.6g}"), float(f"{scale[i]:.6g}")) for i, n in enumerate(FEATURE_NAMES)
    }


def _count_edt_peaks(mask: np.ndarray, side: float) -> float:
    """Number of maxima of the distance transform inside ``mask`` (≈ voids, merged or not)."""
    if not mask.any():
        return 0.0
    from skimage.feature import peak_local_max

    edt = ndi.distance_transform_edt(mask)
    md = max(2, round(4 * side / 256))
    peaks = peak_local_max(
        edt, min_distance=md, threshold_abs=1.5 * side / 256, exclude_border=False
    )
    return float(len(peaks))


def _ellipse_residual(rp: Any) -> float:
    """Relative spread of the boundary around the region's moment ellipse (0 for an ellipse).

    Boundary pixels are mapped to the normalised ellipse radius
    ``sqrt((u / a)^2 + (v / b)^2)`` in the frame of the region's principal axes; its
    coefficient of variation is small for circles and ellipses and large for irregular blobs.
    """
    im = rp.image
    edge = im & ~ndi.binary_erosion(im)
    rr, cc = np.nonzero(edge)
    r0, c0 = rp.centroid_local
    y, x = rr - r0, cc - c0
    th = rp.orientation
    u = y * math.cos(th) + x * math.sin(th)
    v = -y * math.sin(th) + x * math.cos(th)
    a = max(rp.axis_major_length / 2.0, 1e-6)
    b = max(rp.axis_minor_length / 2.0, 1e-6)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return float(rho.std() / max(rho.mean(), 1e-6))


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (yy**2 + xx**2) <= radius * (radius + 1)


def _resize_short_side(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (bilinear, antialiased when shrinking)."""
    h, w = img.shape
    if min(h, w) == size:
        return img
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    if h % new[0] == 0 and w % new[1] == 0:  # exact integer factor: block mean
        fy, fx = h // new[0], w // new[1]
        return img.reshape(new[0], fy, new[1], fx).mean(axis=(1, 3), dtype=np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    out = F.interpolate(t, size=new, mode="bilinear", align_corners=False, antialias=scale < 1)
    return out[0, 0].numpy()


# ---------------------------------------------------------------------- generated constants
# Generated by `python -m benchmarks.embedder_sensitivity --calibrate` from images rendered with
# uniformly random parameters over the design's bounds (default base chips, rendered at 160, 256,
# 384 and 512 px in turn, stream "calibration", seed 0: disjoint from the benchmark's and the
# pipeline's seeds). Do not edit
# by hand; regenerate when the features change (and bump FEATURE_VERSION).

#: Fixed (centre, scale) of each feature (median and robust spread over the reference sample).
FEATURE_SCALING: dict[str, tuple[float, float]] = {
    "dark_frac_0.85": (0.224108, 0.103748),
    "dark_frac_0.78": (0.194843, 0.109226),
    "dark_frac_0.70": (0.153888, 0.127326),
    "dark_frac_0.62": (0.10927, 0.139124),
    "dark_frac_0.54": (0.0, 0.117567),
    "dark_frac_0.46": (0.0, 0.0803752),
    "dark_frac_0.38": (0.0, 0.0315508),
    "core_ratio_median": (0.637791, 0.168169),
    "core_ratio_q25": (0.591587, 0.171184),
    "area_frac": (0.242093, 0.104606),
    "log_count": (1.38629, 0.537475),
    "log_count_small": (0.0, 0.207137),
    "log_count_large": (0.693147, 0.539065),
    "log_edt_peaks": (1.94591, 0.719607),
    "radius_mean": (0.069107, 0.0375501),
    "radius_q10": (0.0505, 0.0343967),
    "radius_q50": (0.0640434, 0.0382486),
    "radius_q90": (0.0878239, 0.0437713),
    "radius_max": (0.0956081, 0.0470983),
    "radius_std": (0.013673, 0.0165539),
    "radius_cv": (0.240222, 0.211023),
    "axis_ratio_median": (0.725921, 0.151017),
    "axis_ratio_q25": (0.655927, 0.160224),
    "frac_elongated": (0.666667, 0.410458),
    "solidity_median": (0.917944, 0.0639062),
    "frac_nonconvex": (0.666667, 0.415455),
    "roughness_median": (1.16314, 0.206067),
    "ellipse_residual_median": (0.107052, 0.078998),
    "ellipse_residual_q75": (0.155283, 0.0919747),
    "centroid_r_mean": (0.198656, 0.102416),
    "centroid_r_max": (0.280455, 0.159579),
    "centroid_r_std": (0.0567376, 0.0540114),
    "mass_r_gyration": (0.200452, 0.0936936),
    "nn_dist_mean": (0.184259, 0.11052),
    "extent": (0.213916, 0.13028),
    "img_mean": (0.623029, 0.0447185),
    "img_std": (0.157723, 0.0224955),
    "ratio_std": (0.146659, 0.0286991),
}

#: Parameter-estimate head: target → [intercept, linear coefs, square coefs].
PARAM_HEAD: dict[str, list[float]] = {
    "shape_circle": [
        0.345351,
        -0.0465966,
        -0.158152,
        0.0425643,
        0.0164103,
        -0.00684992,
        0.00569889,
        0.00833241,
        -0.0688219,
        0.102135,
        0.162371,
        -0.0449219,
        0.0297589,
        -0.0185429,
        0.0620729,
        0.080986,
        0.0146149,
        -0.02287,
        0.0609969,
        -0.0487323,
        0.0728212,
        -0.0812707,
        0.285226,
        -0.120188,
        -0.124212,
        -0.0936642,
        -0.0664561,
        0.0365408,
        -0.164409,
        -0.011497,
        -0.00872239,
        0.0839159,
        -0.0552107,
        -0.0280263,
        0.0459208,
        -0.0719969,
        0.0173447,
        0.00826708,
        -0.0679534,
        -0.0216166,
        -0.00254112,
        -0.00533662,
        -0.0687212,
        0.0368935,
        -0.00169471,
        -0.00169053,
        -0.0778814,
        0.040013,
        0.0671679,
        -0.0108386,
        -0.00308225,
        0.00209991,
        -0.0447809,
        0.0241986,
        -0.0318745,
        0.0590447,
        -0.107651,
        0.00144203,
        -0.00194917,
        0.0154578,
        0.119258,
        0.00605456,
        -0.121767,
        -0.0105695,
        -0.0401057,
        -0.0195098,
        0.032319,
        0.0117767,
        -0.0392793,
        0.0130321,
        -0.00594351,
        -0.0356385,
        -0.00373728,
        0.0916445,
        0.0261864,
        -0.0132176,
        0.0196818,
    ],
    "shape_ellipse": [
        0.226081,
        -0.00318613,
        0.0125597,
        -0.0582546,
        0.0969318,
        -0.0574719,
        0.0508662,
        -0.0213648,
        0.024761,
        -0.0245333,
        -0.0241233,
        0.0138327,
        0.013019,
        0.0201197,
        0.0074951,
        0.0572852,
        0.0474721,
        -0.144856,
        0.00971271,
        -0.035183,
        0.0200566,
        -0.0023825,
        -0.198449,
        0.020828,
        0.206748,
        -0.0519322,
        -0.0142516,
        0.220143,
        -0.364182,
        0.0605562,
        -0.0713811,
        0.0589028,
        -0.00216931,
        -0.0318208,
        -0.026602,
        0.11994,
        -0.00960223,
        0.00168329,
        0.00651281,
        -0.054416,
        -0.0150344,
        0.0361972,
        -0.010521,
        -0.00350761,
        -0.0163427,
        0.00434626,
        0.0538044,
        -0.039059,
        0.053353,
        -0.0297933,
        -0.00140373,
        0.00639302,
        0.0379908,
        -0.0781689,
        0.0156624,
        0.0480389,
        0.0696017,
        -0.0291059,
        -0.00386846,
        0.00630261,
        -0.0489949,
        -0.0422874,
        0.281224,
        -0.0262742,
        -0.0505205,
        -0.0398505,
        0.0957395,
        -0.018585,
        0.0480278,
        -0.0404455,
        0.0145777,
        0.00374346,
        -0.00838383,
        -0.0179706,
        -0.00696279,
        -0.00649892,
        0.00142924,
    ],
    "shape_irregular": [
        0.428568,
        0.0497827,
        0.145592,
        0.0156903,
        -0.113342,
        0.0643218,
        -0.0565651,
        0.0130324,
        0.0440608,
        -0.0776014,
        -0.138248,
        0.0310892,
        -0.0427779,
        -0.0015768,
        -0.069568,
        -0.138271,
        -0.062087,
        0.167726,
        -0.0707096,
        0.0839153,
        -0.0928778,
        0.0836533,
        -0.0867765,
        0.0993596,
        -0.0825368,
        0.145596,
        0.0807077,
        -0.256684,
        0.528591,
        -0.0490592,
        0.0801035,
        -0.142819,
        0.05738,
        0.0598471,
        -0.0193187,
        -0.047943,
        -0.00774249,
        -0.00995037,
        0.0614406,
        0.0760326,
        0.0175756,
        -0.0308606,
        0.0792423,
        -0.0333859,
        0.0180374,
        -0.00265573,
        0.0240771,
        -0.000953923,
        -0.120521,
        0.0406319,
        0.00448597,
        -0.00849293,
        0.00679014,
        0.0539703,
        0.016212,
        -0.107084,
        0.0380492,
        0.0276639,
        0.00581762,
        -0.0217604,
        -0.0702627,
        0.0362328,
        -0.159457,
        0.0368437,
        0.0906262,
        0.0593604,
        -0.128059,
        0.00680833,
        -0.00874854,
        0.0274134,
        -0.00863423,
        0.031895,
        0.0121211,
        -0.0736739,
        -0.0192236,
        0.0197166,
        -0.0211111,
    ],
    "void_count": [
        0.307178,
        0.161879,
        -0.0788098,
        0.00786248,
        -0.0865194,
        0.038668,
        -0.0191547,
        0.00348375,
        -0.088769,
        0.0971479,
        -0.178138,
        0.142261,
        0.0249997,
        -0.0271225,
        0.115423,
        0.0820025,
        0.0132161,
        -0.00700116,
        -0.00115552,
        0.0287273,
        -0.0415405,
        0.0832075,
        0.0215539,
        -0.0311645,
        -0.00269375,
        -0.0335401,
        0.0448872,
        -0.00665949,
        -0.0130355,
        0.0323017,
        0.0243106,
        -0.0395725,
        -0.0244933,
        -0.0449186,
        -0.072441,
        0.00904681,
        -0.0415733,
        0.0119394,
        0.161017,
        0.115859,
        -0.0111304,
        0.00713417,
        -0.000652977,
        -0.00676359,
        -0.000476773,
        -0.00247633,
        -0.055882,
        0.0499466,
        -0.0764851,
        0.0227521,
        -0.00323395,
        -0.00656425,
        0.0654473,
        0.00230352,
        0.00243706,
        -0.0143579,
        0.0344706,
        -0.0395284,
        0.0110967,
        -0.00414862,
        -0.00019547,
        0.00181978,
        0.014637,
        -0.00955233,
        0.0116223,
        0.00149519,
        -0.00729122,
        0.00118242,
        0.122508,
        -0.0587253,
        0.0645757,
        -0.0323144,
        0.0328981,
        -0.115369,
        0.00120168,
        0.0132036,
        -0.0195952,
    ],
    "base_size": [
        0.548626,
        0.199304,
        -0.0482665,
        -0.0499411,
        -0.060468,
        -0.0661874,
        -0.0863777,
        -0.0296767,
        -0.00609581,
        -0.0107252,
        0.117716,
        -0.0868157,
        -0.0315759,
        -0.0330582,
        -0.0901283,
        -0.0253401,
        0.0474092,
        0.026253,
        -0.0328299,
        0.0367597,
        -0.0348734,
        0.00553577,
        -0.0171742,
        0.0037963,
        -0.00550158,
        0.0671458,
        -0.0346431,
        -0.000645319,
        0.0379993,
        -0.0192552,
        0.0328369,
        -0.0536765,
        0.0243424,
        -0.0175806,
        0.00157645,
        0.0592736,
        0.00334127,
        -0.0190092,
        0.269145,
        -0.101131,
        0.0145433,
        0.0080258,
        -0.00668259,
        0.00646295,
        0.0162264,
        0.00086414,
        0.0113092,
        0.0227032,
        0.0378979,
        -1.88873e-05,
        0.00483009,
        0.0159276,
        -0.0148524,
        -0.0184038,
        -0.0167208,
        0.00797929,
        0.0139812,
        0.0141864,
        -0.00210916,
        -0.00999512,
        0.00967802,
        0.0032124,
        0.0109401,
        0.00658203,
        -0.0193482,
        0.00679016,
        -0.00986984,
        0.00359632,
        -0.0027702,
        0.0109442,
        -0.00688786,
        -0.000452718,
        -0.0112751,
        0.0142731,
        0.00976526,
        0.0100324,
        -0.0383027,
    ],
    "brightness_factor": [
        0.602441,
        0.144849,
        0.0207371,
        -0.0171685,
        -0.0616829,
        -0.0467554,
        -0.0177798,
        -0.0099593,
        -0.0665989,
        0.256342,
        0.0298855,
        -0.0530511,
        0.0209418,
        -0.00506252,
        -0.02154,
        -0.0237657,
        -0.0529943,
        -0.0453395,
        0.0434775,
        0.00476215,
        -0.010897,
        -0.0358625,
        0.0077352,
        -0.00948368,
        0.0133789,
        0.0422638,
        0.0146475,
        0.0202228,
        0.0242447,
        -0.0177629,
        0.0391333,
        -0.0123462,
        -0.0121768,
        0.00972312,
        0.0139143,
        -0.0230073,
        0.00323014,
        -0.00241708,
        -0.080166,
        -0.176155,
        0.006967,
        0.0521057,
        0.0337816,
        0.0108228,
        0.00452706,
        0.00167003,
        -0.0330806,
        0.00815728,
        0.111139,
        0.00902558,
        -0.00562712,
        0.00300841,
        -0.0156786,
        -0.0154211,
        0.00387639,
        0.0245062,
        -0.0299188,
        0.00771194,
        0.00584194,
        -0.0130069,
        -0.000677625,
        -0.00338434,
        0.0136842,
        0.00867678,
        -0.00131506,
        -0.00135292,
        -0.0118235,
        0.0103894,
        -0.0164227,
        0.0162133,
        0.000812479,
        -0.0184927,
        0.00640272,
        0.00621082,
        0.00222909,
        0.00102786,
        -0.000434407,
    ],
    "size_std": [
        0.603248,
        -0.138505,
        -0.0274229,
        0.00729662,
        -0.0116942,
        -0.146689,
        -0.0552965,
        0.00698071,
        0.0641377,
        -0.187924,
        0.175737,
        0.0112251,
        0.0125259,
        0.0224532,
        -0.145048,
        0.133392,
        -0.419064,
        0.0777649,
        0.190587,
        0.00539632,
        -0.068469,
        -0.00249966,
        -0.00115673,
        0.00906121,
        0.0289368,
        -0.00376995,
        -0.0146404,
        0.0544952,
        -0.00474998,
        -0.0474657,
        0.059431,
        -0.00918855,
        -0.00616634,
        -0.0134205,
        0.0081829,
        -0.0314995,
        -0.0199373,
        -0.0120002,
        0.0485917,
        -0.0958481,
        -0.0142641,
        -0.000255184,
        0.0293083,
        0.0373891,
        -0.000274491,
        -0.0017249,
        -0.0404597,
        0.069775,
        0.116898,
        0.01973,
        -0.00421002,
        -0.00925802,
        -0.06005,
        -0.0466196,
        0.0466553,
        0.0224594,
        -0.00517696,
        -0.0141894,
        -0.0286129,
        0.0661264,
        -0.00702654,
        -0.00641591,
        0.0130833,
        -0.00324537,
        0.00550301,
        -0.00811474,
        0.00833117,
        0.00842811,
        -0.0888673,
        0.0381697,
        -0.0216066,
        -0.00252342,
        0.0119766,
        0.0546179,
        -0.00255621,
        -0.00744465,
        -0.00988233,
    ],
    "position_spread": [
        0.541239,
        0.117728,
        0.0550573,
        -0.00584117,
        0.0235012,
        0.00251087,
        0.00579675,
        -0.000974974,
        -0.0230734,
        0.0191279,
        -0.0423699,
        -0.134649,
        0.000555764,
        -0.00522353,
        0.0254781,
        -0.0598949,
        -0.0267158,
        0.00776787,
        -0.014846,
        -0.00255618,
        -0.0462347,
        0.0218499,
        0.0001217,
        -0.00277249,
        0.00781991,
        0.0383159,
        -0.0122761,
        -0.0270701,
        0.0255901,
        -0.00755712,
        0.10828,
        -0.0816972,
        0.0615466,
        0.213065,
        0.02313,
        0.0570903,
        -0.00682717,
        0.0055369,
        -0.055302,
        -0.101797,
        0.00523977,
        -0.0098809,
        -0.000150632,
        -0.00742918,
        -0.000971432,
        -0.00126912,
        -0.0138387,
        0.0403624,
        0.0755002,
        0.042352,
        0.000523885,
        0.0137301,
        -0.0160308,
        0.0532767,
        -0.0245544,
        0.00494602,
        -0.0157235,
        0.00925972,
        0.00516555,
        0.00324053,
        -0.00723461,
        0.00639527,
        0.000589705,
        0.0109958,
        -0.010747,
        0.00425618,
        -0.00656431,
        0.00730929,
        -0.0653443,
        0.06873,
        -0.075377,
        -0.0107813,
        -0.0242709,
        0.0667294,
        0.000857387,
        -0.00233805,
        0.0163162,
    ],
}
