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
   :func:`calibrate_scaling`, constants in :data:`FEATURE_SCALING`), then each group is
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

Both fitted constants are package data (``bo_voids/embedding/data/handcrafted_<version>.json``,
read with :mod:`importlib.resources`); :func:`refit_constants` regenerates that file from the
generator, and must be rerun (with a new :data:`FEATURE_VERSION`) whenever the features change.
The constants are part of :meth:`HandcraftedEmbedder.fingerprint`, so embeddings computed with
different settings or constants are never mixed.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import numpy as np
from scipy import ndimage as ndi

from bo_voids._io import atomic_write_text
from bo_voids._types import JsonObject
from bo_voids.embedding.base import Embedder, as_image_list, short_hash, to_gray
from bo_voids.exceptions import EmbeddingError
from bo_voids.space import ParamMapping

if TYPE_CHECKING:
    from skimage.measure._regionprops import RegionProperties

    from bo_voids.space import SearchSpace

__all__ = [
    "CALIBRATION_SIZES",
    "DEFAULT_GROUP_WEIGHTS",
    "FEATURE_GROUPS",
    "FEATURE_NAMES",
    "FEATURE_SCALING",
    "FEATURE_VERSION",
    "HEAD_TARGETS",
    "PARAM_HEAD",
    "HandcraftedConstants",
    "HandcraftedEmbedder",
    "HandcraftedOverrides",
    "HandcraftedSettings",
    "calibrate_scaling",
    "constants_path",
    "fit_constants",
    "fit_param_head",
    "load_constants",
    "refit_constants",
    "segment_voids",
    "void_features",
    "write_constants",
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

#: Image sizes the reference sample is rendered at, in turn, so that one set of constants holds
#: from quickstart (160 px) to full-size (512 px) images.
CALIBRATION_SIZES: tuple[int, ...] = (160, 256, 384, 512)


# ---------------------------------------------------------------------- fitted constants


@dataclass(frozen=True)
class HandcraftedConstants:
    """The fitted constants of one feature version (the content of its package-data file).

    Attributes:
        scaling: Feature name → ``(centre, scale)``, in :data:`FEATURE_NAMES` order.
        head: Head target → ``1 + 2 * n_features`` coefficients (intercept, linear, squares),
            in :data:`HEAD_TARGETS` order.
        reference: How the reference sample was drawn (for the reader; not used).
    """

    scaling: dict[str, tuple[float, float]]
    head: dict[str, list[float]]
    reference: dict[str, Any] = field(default_factory=dict)


def constants_path(version: str = FEATURE_VERSION) -> Path:
    """Where the package data of ``version`` lives in the source tree.

    Regenerated files are written here; reading goes through :func:`load_constants`, which also
    works from a zip or wheel install.
    """
    return Path(__file__).resolve().parent / "data" / f"handcrafted_{version}.json"


def load_constants(path: str | Path | None = None) -> HandcraftedConstants:
    """Read fitted constants from ``path`` (default: the package data of this version).

    Args:
        path: A file written by :func:`write_constants`; ``None`` for the packaged one.

    Returns:
        The constants, validated against :data:`FEATURE_NAMES` and :data:`HEAD_TARGETS`.

    Raises:
        EmbeddingError: If the file is missing, of another feature version or incomplete.
    """
    name = f"handcrafted_{FEATURE_VERSION}.json"
    try:
        if path is None:
            text = resources.files(__package__).joinpath("data", name).read_text("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise EmbeddingError(
            f"cannot read the handcrafted constants {path or name}: {exc}"
        ) from exc
    if data.get("feature_version") != FEATURE_VERSION:
        raise EmbeddingError(
            f"constants are for feature version {data.get('feature_version')!r}, "
            f"this code computes {FEATURE_VERSION!r}; regenerate them with refit_constants()"
        )
    scaling = {n: (float(c), float(s)) for n, (c, s) in data["feature_scaling"].items()}
    head = {t: [float(w) for w in v] for t, v in data["param_head"].items()}
    if list(scaling) != list(FEATURE_NAMES) or list(head) != list(HEAD_TARGETS):
        raise EmbeddingError("constants do not match this version's features and head targets")
    return HandcraftedConstants(scaling, head, dict(data.get("reference_sample", {})))


def write_constants(path: str | Path, constants: HandcraftedConstants) -> Path:
    """Write ``constants`` as the JSON :func:`load_constants` reads (atomically).

    One line per feature and per head target keeps the file short and its diffs readable.
    Floats are written by ``repr``, which round-trips exactly.

    Returns:
        The path written.
    """
    scaling = ",\n".join(
        f"    {json.dumps(n)}: {json.dumps(list(constants.scaling[n]))}" for n in FEATURE_NAMES
    )
    head = ",\n".join(f"    {json.dumps(t)}: {json.dumps(constants.head[t])}" for t in HEAD_TARGETS)
    header = {
        "feature_version": FEATURE_VERSION,
        "generated_by": "bo_voids.embedding.handcrafted.refit_constants (do not edit by hand)",
        "reference_sample": constants.reference,
    }
    lines = ["{", *(f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items())]
    lines += ['  "feature_scaling": {', scaling, "  },", '  "param_head": {', head, "  }", "}"]
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


#: Fixed ``(centre, scale)`` of each feature (median and robust spread over the reference sample).
FEATURE_SCALING: dict[str, tuple[float, float]]
#: Parameter-estimate head: target → ``[intercept, linear coefs, square coefs]``.
PARAM_HEAD: dict[str, list[float]]
# Both are left unbound here: the module's ``__getattr__`` reads them from the package data on
# first use, so that after a feature-version bump this module still imports and can refit.


@functools.cache
def _packaged() -> HandcraftedConstants:
    return load_constants()


def __getattr__(name: str) -> Any:
    """:data:`FEATURE_SCALING` and :data:`PARAM_HEAD`, read from the package data on first use."""
    if name == "FEATURE_SCALING":
        return _packaged().scaling
    if name == "PARAM_HEAD":
        return _packaged().head
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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

    def as_dict(self) -> JsonObject:
        """Plain-dict form (for fingerprints and the experiment record)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["group_weights"] = {
            g: float(self.group_weights.get(g, 1.0)) for g in DEFAULT_GROUP_WEIGHTS
        }
        return d


class HandcraftedOverrides(TypedDict, total=False):
    """Keyword overrides of :class:`HandcraftedSettings` (any subset of its fields)."""

    work_size: int
    smooth_sigma: float
    background_size: float
    wire_size: float
    low_threshold: float
    high_threshold: float
    min_area: float
    max_area: float
    min_axis_ratio: float
    group_weights: Mapping[str, float]
    raw_weight: float
    head_weight: float
    shape_weight: float


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
        **overrides: Unpack[HandcraftedOverrides],
    ) -> None:
        base = settings or HandcraftedSettings()
        if overrides:
            # through as_dict: the group weights are completed with their defaults
            fields: dict[str, Any] = {**base.as_dict(), **overrides}
            base = HandcraftedSettings(**fields)
        self.settings = base
        self.scaling = dict(_packaged().scaling if scaling is None else scaling)
        head = _packaged().head if head is None else head
        self.head = {k: list(map(float, v)) for k, v in head.items()}
        missing = [n for n in FEATURE_NAMES if n not in self.scaling]
        if missing:
            raise EmbeddingError(f"scaling lacks features {missing}")
        n_coef = 1 + 2 * len(FEATURE_NAMES)
        if list(self.head) != list(HEAD_TARGETS) or any(
            len(v) != n_coef for v in self.head.values()
        ):
            raise EmbeddingError(
                f"head must map {list(HEAD_TARGETS)} to {n_coef} coefficients each; "
                "regenerate the constants with refit_constants()"
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
        return _raw_features(images, self.settings)

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

    def describe(self) -> JsonObject:
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


def _raw_features(
    images: Sequence[np.ndarray] | np.ndarray, settings: HandcraftedSettings
) -> np.ndarray:
    imgs = as_image_list(images)
    rows = [void_features(to_gray(im), settings) for im in imgs]
    return np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=np.float64).reshape(
        len(imgs), len(FEATURE_NAMES)
    )


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


def segment_voids(
    image: np.ndarray, settings: HandcraftedSettings | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[RegionProperties], np.ndarray]:
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


# ---------------------------------------------------------------------- fitting the constants


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


def fit_param_head(
    raw: np.ndarray,
    params: Sequence[ParamMapping],
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


def fit_constants(
    space: SearchSpace,
    base_image_dir: str | Path,
    *,
    n_images: int = 1200,
    sizes: Sequence[int] = CALIBRATION_SIZES,
    seed: int = 0,
) -> HandcraftedConstants:
    """Fit the scaling and the head on a fresh reference sample of the generator.

    The sample is ``n_images`` parameter sets drawn uniformly over ``space`` (one image each),
    rendered at ``sizes`` in turn, from the random stream ``(seed, "calibration")``: disjoint from
    the seeds of the pipeline and the benchmarks.

    Args:
        space: Search space whose bounds the parameters are drawn from and normalised by.
        base_image_dir: Base chip images of the generator.
        n_images: Size of the reference sample.
        sizes: Image sizes, used in turn.
        seed: Seed of the reference sample.

    Returns:
        Constants ready for :func:`write_constants`.
    """
    from bo_voids.generation.voids import VoidGenerator
    from bo_voids.seeding import derive_seed

    gens = [VoidGenerator(base_image_dir, image_size=s) for s in sizes]
    sets = space.sample_uniform(n_images, derive_seed(seed, "calibration"))
    settings = HandcraftedSettings()
    raw = np.empty((n_images, len(FEATURE_NAMES)))
    # One image at a time: the whole sample at full size would hold ~1 GB of pixels.
    for i, p in enumerate(sets):
        image = gens[i % len(gens)].render(p, derive_seed(seed, "calibration", i)).image
        raw[i] = _raw_features([image], settings)[0]
    scaling = calibrate_scaling(raw)
    bounds = {p.name: (p.low, p.high) for p in space.parameters if p.kind != "categorical"}
    head = fit_param_head(raw, sets, bounds, scaling)
    reference = {
        "n_images": n_images,
        "image_sizes": list(sizes),
        "seed": seed,
        "stream": "calibration",
        "base_image_dir": Path(base_image_dir).name,
        "parameters": "uniform over these bounds",
        "bounds": {
            p.name: list(p.choices) if p.kind == "categorical" else [p.low, p.high]
            for p in space.parameters
        },
    }
    return HandcraftedConstants(scaling, head, reference)


def refit_constants(
    space: SearchSpace,
    base_image_dir: str | Path,
    path: str | Path | None = None,
    *,
    n_images: int = 1200,
    sizes: Sequence[int] = CALIBRATION_SIZES,
    seed: int = 0,
) -> HandcraftedConstants:
    """Fit the constants (:func:`fit_constants`) and write them to ``path``.

    Args:
        space: Search space of the reference sample (the design's bounds).
        base_image_dir: Base chip images of the generator.
        path: Output file; default the package data of this version (:func:`constants_path`).
        n_images: Images of the reference sample (see :func:`fit_constants`).
        sizes: Image sizes the sample is rendered at.
        seed: Seed of the sample.

    Returns:
        The constants written.
    """
    constants = fit_constants(space, base_image_dir, n_images=n_images, sizes=sizes, seed=seed)
    write_constants(constants_path() if path is None else path, constants)
    if path is None:
        _packaged.cache_clear()
    return constants
