"""Draw solder voids on base chip images: the synthetic generator that the optimiser calibrates.

Rendering model (one image from one parameter dict and one integer seed):

* **Randomness.** Every draw comes from ``np.random.default_rng(seed)`` in a fixed order:
  base chip index, rotation, per-void size noise, positions, ellipse axis ratios and
  orientations, irregular-blob harmonics. All of them are drawn whatever ``void_shape`` is, and
  sizes are drawn as standard normals scaled by ``size_std``, so two parameter sets rendered
  with the same seed share the same random numbers (common random numbers: changing one
  parameter changes the image only through that parameter, which smooths the objective).
* **Pixel units.** ``base_size`` (a void *radius*), ``size_std`` and ``edge_blur`` are pixels at
  a reference resolution of ``reference_size`` (default 512 px, the size of the base chips) and
  are scaled by ``image_size / reference_size``, so an image rendered at 128 or 224 px looks like
  a downscaled 512 px image. Pass ``reference_size=image_size`` to use raw pixels instead. The
  per-void geometry in :class:`RenderedImage` is in pixels of the rendered image.
* **Sizes.** Void ``i`` has equivalent radius ``max(1, base_size + N(0, size_std))`` (reference
  px, and at least 1 rendered px): a circle has that radius, an ellipse and an irregular blob
  have the same *area* as that circle.
* **Position window.** Void centres are uniform in a square window of side
  ``position_spread * image_size`` centred on the image centre. The default base chips have
  their die centred there, so small spreads put the voids in the middle of the solder attach
  and a spread of 0.8 reaches the fillet and the substrate — what a process engineer sees
  going from centre voiding to voiding spread over the whole joint. The design's
  ``uniform([0, position_spread * img_size])`` is this window, shifted to the die centre.
* **Rotation** (uncontrolled, ``U(0, 360)`` degrees per image) rotates the void *layout* about
  the image centre and adds to each void's own orientation; the chip itself is not rotated.
  After rotation a centre can fall outside the image only when ``position_spread > 0.707``;
  such centres are clamped to the image border (the void is then partly cut off).
* **Shapes.** ``circle``; ``ellipse`` with axis ratio ``U(0.45, 0.8)`` and orientation
  ``U(0, 180)`` plus the rotation; ``irregular``: a star-shaped smooth blob whose radius is
  modulated by harmonics 2-5 with random phases and amplitudes (at most 0.56 in total, so no
  spikes or self-intersections), normalised to the target area.
* **Compositing.** Each void's anti-aliased coverage (1 px soft edge from its signed radial
  distance) is drawn only inside its bounding box; overlapping voids merge (union = maximum).
  The coverage map is blurred with a Gaussian of ``sigma = edge_blur`` (only around the voids)
  and composited as ``image = chip * (1 - coverage * (1 - brightness_factor))``: inside a void
  the chip is multiplied by ``brightness_factor``. Voids may overlap.
* **Ground truth.** ``mask = blurred coverage >= 0.5``; ``void_area_pct`` is the mask's share of
  the **whole image** in percent (a chip-independent denominator: the solder area of a user's
  base chip is not known). For the default chips the solder attach covers roughly 40-60 % of
  the image, so the IPC-style share of the solder area is roughly 2x ``void_area_pct``.

Parameter dicts hold exactly the keys of :data:`PARAM_KEYS`, plus ``imaging_<key>`` for each
nuisance parameter of the generator's imaging chain (:mod:`bo_voids.generation.imaging`, applied
after the voids are drawn; the identity by default). The renderer checks that values
are physically meaningful (e.g. ``0 <= brightness_factor <= 1``); the search bounds are the
business of :mod:`bo_voids.space`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import numpy as np
from PIL import Image
from scipy import ndimage

from bo_voids._io import utc_timestamp
from bo_voids.config import PARAMETER_NAMES, VOID_SHAPES, ImagingSettings
from bo_voids.exceptions import ConfigError
from bo_voids.generation.base_chips import load_base_images, write_png_atomic
from bo_voids.generation.imaging import ImagingChain, ImagingValues
from bo_voids.seeding import derive_seed

if TYPE_CHECKING:
    from bo_voids.space import ParamMapping, ParamSet

__all__ = [
    "PARAM_KEYS",
    "VOID_SHAPES",
    "RenderedImage",
    "VoidGenerator",
    "image_record",
    "save_png",
    "unit_float",
    "validate_params",
]

#: The six optimised parameters, in canonical order (defined once, in :mod:`bo_voids.config`).
PARAM_KEYS: tuple[str, ...] = PARAMETER_NAMES

_ELLIPSE_RATIO = (0.45, 0.8)
_HARMONICS = np.array([2, 3, 4, 5])
_HARMONIC_MAX_AMP = np.array([0.25, 0.15, 0.10, 0.06])


@dataclass(frozen=True)
class RenderedImage:
    """One rendered synthetic image with its ground truth.

    Attributes:
        image: ``float32`` ``(H, W)`` image in ``[0, 1]``.
        mask: ``bool`` ``(H, W)`` ground-truth void mask (blurred coverage ``>= 0.5``).
        base_image_id: File name of the base chip the voids were drawn on.
        uncontrolled_params: ``{"rotation": degrees, "edge_blur": px at reference size}``.
        voids: Per-void geometry in rendered-image pixels: ``shape``, ``center_x``,
            ``center_y``, ``radius`` (equivalent radius), ``semi_major``, ``semi_minor``,
            ``angle`` (degrees, counter-clockwise from the x axis in image coordinates),
            ``area_px`` (anti-aliased area inside the image, before blurring).
        void_area_pct: Percentage of the whole image covered by ``mask``.
        instance_labels: ``uint16`` ``(H, W)`` instance map, only when rendered with
            ``instances=True`` (else ``None``): pixel ``(y, x)`` holds ``i + 1`` where ``mask``
            belongs to void ``i`` of ``voids`` and 0 off the mask, so ``instance_labels > 0``
            equals ``mask``. Where voids overlap a pixel goes to the void covering it most
            (before blurring); a mask pixel no void covered (the blur can fill a narrow gap
            between voids) goes to the nearest labelled pixel.
    """

    image: np.ndarray
    mask: np.ndarray
    base_image_id: str
    uncontrolled_params: dict[str, float]
    voids: list[dict[str, Any]] = field(default_factory=list)
    void_area_pct: float = 0.0
    instance_labels: np.ndarray | None = None

    def save(self, path: str | Path, *, mask: bool = True) -> Path:
        """Write the image as an 8-bit grayscale PNG (and its void mask beside it).

        The ``float32`` image in ``[0, 1]`` is scaled to 0–255; the mask goes to
        ``<stem>_mask.png`` (0 / 255), the pipeline's layout. Both are written atomically.

        Args:
            path: The image's PNG file; parent folders are created.
            mask: Also write the mask.

        Returns:
            The image's path.

        Example:
            >>> VoidGenerator("data/base_chips").render(params, seed=0).save("out/a.png")
            ... # doctest: +SKIP
            PosixPath('out/a.png')
        """
        path = Path(path)
        save_png(path, self.image)
        if mask:
            save_png(path.with_name(f"{path.stem}_mask.png"), self.mask)
        return path


def validate_params(params: Mapping[str, object]) -> ParamSet:
    """Check a parameter dict and return it with plain Python types in canonical key order.

    Args:
        params: Mapping with exactly the keys of :data:`PARAM_KEYS`.

    Returns:
        A new dict: ``void_shape`` ``str``, ``void_count`` ``int``, the rest ``float``.

    Raises:
        ConfigError: If a key is missing or unknown, or a value has the wrong type or is not
            physically meaningful; the message names the key.
    """
    if not isinstance(params, Mapping):
        raise ConfigError(f"parameters must be a mapping, got {type(params).__name__}")
    for key in PARAM_KEYS:
        if key not in params:
            raise ConfigError(f"missing parameter {key!r} (expected keys: {', '.join(PARAM_KEYS)})")
    unknown = [k for k in params if k not in PARAM_KEYS]
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r} (expected: {', '.join(PARAM_KEYS)})")

    shape = params["void_shape"]
    if not isinstance(shape, str) or shape not in VOID_SHAPES:
        raise ConfigError(f"void_shape must be one of {VOID_SHAPES}, got {shape!r}")

    count = params["void_count"]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer, float, np.floating)):
        raise ConfigError(f"void_count must be an integer, got {count!r}")
    if not float(count).is_integer() or count < 0:
        raise ConfigError(f"void_count must be a non-negative integer, got {count!r}")

    out: ParamSet = {"void_shape": shape, "void_count": int(count)}
    limits = {
        "base_size": (0.0, math.inf, False),
        "brightness_factor": (0.0, 1.0, True),
        "size_std": (0.0, math.inf, True),
        "position_spread": (0.0, 1.0, False),
    }
    for key, (lo, hi, lo_inclusive) in limits.items():
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
        ok = math.isfinite(value) and value <= hi and (value >= lo if lo_inclusive else value > lo)
        if not ok:
            bracket = "[" if lo_inclusive else "("
            raise ConfigError(f"{key} must be in {bracket}{lo}, {hi}], got {value!r}")
        out[key] = value
    return out


def _to_uint8(array: np.ndarray) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def save_png(
    path: str | Path, array: np.ndarray, *, atomic: bool = True, compress_level: int = 6
) -> Path:
    """Save a 2-D image as a grayscale PNG, atomically (temporary file + rename) by default.

    Args:
        path: Destination file; parent folders are created.
        array: ``bool`` (written as 0/255), ``float`` in ``[0, 1]`` (scaled to 8 bit),
            ``uint8`` or ``uint16`` (written as is).
        atomic: Write through a temporary file and a rename. Pass ``False`` when the whole
            folder is itself renamed into place afterwards (the pipeline's iteration folders).
        compress_level: zlib level (0-9); 1 is several times faster at ~10 % larger files.

    Returns:
        The path written.

    Raises:
        ValueError: If ``array`` is not 2-D.
    """
    path = Path(path)
    arr = _to_uint8(array)
    if arr.ndim != 2:
        raise ValueError(f"save_png expects a 2-D array, got shape {arr.shape}")
    if atomic:
        write_png_atomic(path, arr, compress_level=compress_level)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(arr)).save(
            path, format="PNG", compress_level=compress_level
        )
    return path


class _Geometry(TypedDict, total=False):
    """The keys a rendered image adds to its :class:`ImageRecord`."""

    voids: list[dict[str, object]]
    void_area_pct: float


class ImageRecord(TypedDict):
    """The metadata record of one image (a ``metadata.json`` row), made by :func:`image_record`.

    ``voids`` and ``void_area_pct`` are present for a rendered image, ``source_file`` for a real
    image loaded from a folder.
    """

    sample_id: str | None
    iteration: int
    dataset_type: str
    param_set_id: str
    replication_seed: int | None
    render_seed: int | None
    base_image_id: str | None
    params: ParamSet | None
    uncontrolled_params: dict[str, float] | None
    timestamp: str
    voids: NotRequired[list[dict[str, object]]]
    void_area_pct: NotRequired[float]
    image_file: str | None
    mask_file: str | None
    source_file: NotRequired[str]
    #: A set carried over by a warm start: ``{"experiment", "iteration"}`` it came from.
    warm_start_from: NotRequired[dict[str, str | int]]


def image_record(
    *,
    iteration: int,
    dataset_type: str,
    param_set_id: str,
    replication_seed: int | None,
    render_seed: int | None = None,
    params: ParamMapping | None = None,
    rendered: RenderedImage | None = None,
    sample_id: str | None = None,
    image_file: str | None = None,
    mask_file: str | None = None,
    source_file: str | None = None,
) -> ImageRecord:
    """The metadata record of one image, in the design's schema (``metadata.json`` rows).

    Every record bo_voids writes is built here: by :meth:`VoidGenerator.generate_batch`, by the
    pipeline's evaluator and for real target images loaded from a folder (no ``rendered``).

    Args:
        iteration: Iteration the image belongs to.
        dataset_type: ``"real"``, ``"close"``, ``"far"`` or ``"synthetic"``.
        param_set_id: Id of the image's parameter set.
        replication_seed: Replication index within the set (``None`` for a loaded image).
        render_seed: Seed the image was rendered with (``None`` for a loaded image).
        params: The parameter set (``None`` for a loaded image).
        rendered: The rendered image: adds ``base_image_id``, ``uncontrolled_params``,
            ``voids`` and ``void_area_pct``.
        sample_id: The image's id (the pipeline numbers its images when it writes them).
        image_file: File name of the saved image, relative to its folder.
        mask_file: File name of the saved mask, relative to its folder.
        source_file: The file a loaded image was read from (appended at the end when given).

    Returns:
        ``sample_id``, ``iteration``, ``dataset_type``, ``param_set_id``, ``replication_seed``,
        ``render_seed``, ``base_image_id``, ``params``, ``uncontrolled_params``, ``timestamp``
        (UTC, to the second), then ``voids`` and ``void_area_pct`` for a rendered image, then
        ``image_file``, ``mask_file`` and ``source_file``.
    """
    geometry: _Geometry = (
        {"voids": rendered.voids, "void_area_pct": float(rendered.void_area_pct)}
        if rendered is not None
        else {}
    )
    record: ImageRecord = {
        "sample_id": sample_id,
        "iteration": int(iteration),
        "dataset_type": dataset_type,
        "param_set_id": param_set_id,
        "replication_seed": replication_seed,
        "render_seed": None if render_seed is None else int(render_seed),
        "base_image_id": rendered.base_image_id if rendered is not None else None,
        "params": dict(params) if params is not None else None,
        "uncontrolled_params": (
            dict(rendered.uncontrolled_params) if rendered is not None else None
        ),
        "timestamp": utc_timestamp(),
        **geometry,
        "image_file": image_file,
        "mask_file": mask_file,
    }
    if source_file is not None:
        record["source_file"] = source_file
    return record


class VoidGenerator:
    """Render synthetic X-ray void images on base chip images.

    Attributes:
        base_images: The loaded base chips, ``float32`` ``(image_size, image_size)`` in ``[0, 1]``.
        base_image_ids: Their file names, in the same (sorted) order.
        image_size: Side length of rendered images in pixels.
        edge_blur: Gaussian sigma of void edges, in reference pixels (fixed, uncontrolled).
        reference_size: Resolution at which ``base_size``, ``size_std`` and ``edge_blur`` are
            expressed in pixels.
        imaging: The detector's imaging chain applied after the voids are drawn (identity by
            default); its nuisance parameters are read from each parameter set.
    """

    def __init__(
        self,
        base_image_dir: str | Path,
        image_size: int = 512,
        edge_blur: float = 2.0,
        *,
        reference_size: int = 512,
        imaging: ImagingSettings | None = None,
    ) -> None:
        """Load the base chips.

        Args:
            base_image_dir: Folder of base chip images (see
                :func:`~bo_voids.generation.base_chips.load_base_images`).
            image_size: Side length of rendered images in pixels.
            edge_blur: Gaussian sigma of the void edges in reference pixels (0 = hard edges).
            reference_size: Resolution in which the pixel-valued parameters are expressed.
            imaging: The ``imaging:`` section (fixed values and nuisance bounds).

        Raises:
            ImageLoadError: If the folder is missing, empty, or holds unreadable images.
            ConfigError: If ``image_size``, ``edge_blur`` or ``reference_size`` is invalid.
        """
        if image_size < 8:
            raise ConfigError(f"image_size must be at least 8 px, got {image_size}")
        if not (math.isfinite(edge_blur) and edge_blur >= 0):
            raise ConfigError(f"edge_blur must be a non-negative number, got {edge_blur!r}")
        if reference_size < 1:
            raise ConfigError(f"reference_size must be positive, got {reference_size}")
        self.image_size = int(image_size)
        self.edge_blur = float(edge_blur)
        self.reference_size = int(reference_size)
        self.imaging = ImagingChain(imaging)
        self.base_images, self.base_image_ids = load_base_images(base_image_dir, self.image_size)

    def check_params(self, params: ParamMapping) -> ParamSet:
        """Validate a parameter set: the six design parameters and this chain's nuisance ones.

        Raises:
            ConfigError: Naming the invalid key.
        """
        design, _ = self.imaging.split(params)
        out = validate_params(design)
        out.update({n: float(params[n]) for n in self.imaging.nuisance_names})
        return out

    def _imaged(self, rendered: RenderedImage, values: ImagingValues, seed: int) -> RenderedImage:
        """The rendered image seen through the imaging chain (metadata records its values)."""
        if self.imaging.is_identity and values.is_identity:
            return rendered
        h, w = rendered.image.shape
        scale = min(h, w) / self.reference_size
        image = self.imaging.apply(rendered.image, values, seed, scale)
        uncontrolled = dict(rendered.uncontrolled_params)
        uncontrolled.update({f"imaging_{k}": v for k, v in values.to_dict().items()})
        return replace(rendered, image=image, uncontrolled_params=uncontrolled)

    # ------------------------------------------------------------------ public API

    def render(self, params: ParamMapping, seed: int, *, instances: bool = False) -> RenderedImage:
        """Render one image: pick a base chip with the seed's generator and draw the voids.

        Args:
            params: A parameter dict (see :func:`validate_params`).
            seed: Render seed; the same ``(params, seed)`` gives a bit-identical result.
            instances: Also build :attr:`RenderedImage.instance_labels` (per-void masks, for
                labelled exports); the image and mask are the same either way.

        Returns:
            The rendered image with mask and geometry.

        Raises:
            ConfigError: If ``params`` is invalid.
        """
        design, values = self.imaging.split(params)
        p = validate_params(design)
        gen = np.random.default_rng(seed)
        k = int(gen.integers(len(self.base_images)))
        rendered = self._render(
            self.base_images[k], self.base_image_ids[k], p, gen, instances=instances
        )
        return self._imaged(rendered, values, seed)

    def generate_single(self, base_chip: np.ndarray, params: ParamMapping, seed: int) -> np.ndarray:
        """Render voids on a given base chip (the design's signature).

        The random stream is the same as :meth:`render`'s (the chip-choice draw is made and
        discarded), so ``generate_single(base_images[k], p, s)`` equals ``render(p, s).image``
        whenever ``render`` picked chip ``k``.

        Args:
            base_chip: 2-D grayscale chip, ``float`` in ``[0, 1]`` or ``uint8`` / ``uint16``.
            params: A parameter dict (see :func:`validate_params`).
            seed: Render seed.

        Returns:
            The ``float32`` image in ``[0, 1]``, same shape as ``base_chip``.

        Raises:
            ConfigError: If ``params`` is invalid.
            ValueError: If ``base_chip`` is not 2-D.
        """
        design, values = self.imaging.split(params)
        p = validate_params(design)
        chip = np.asarray(base_chip)
        if chip.ndim != 2:
            raise ValueError(f"base_chip must be a 2-D grayscale image, got shape {chip.shape}")
        chip = unit_float(chip, clip=True)
        gen = np.random.default_rng(seed)
        gen.integers(len(self.base_images))  # keep the stream aligned with render()
        return self._imaged(self._render(chip, "<given>", p, gen), values, seed).image

    def render_many(
        self, items: Sequence[tuple[ParamMapping, int]], *, progress: bool = False
    ) -> list[RenderedImage]:
        """Render several ``(params, seed)`` pairs in order.

        Args:
            items: ``(params, seed)`` pairs.
            progress: Show a tqdm progress bar.

        Returns:
            One :class:`RenderedImage` per item.
        """
        iterable: Any = items
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(items, desc="render", unit="img")
        return [self.render(params, seed) for params, seed in iterable]

    def generate_batch(
        self,
        param_sets: Sequence[ParamMapping],
        replications: int = 3,
        save_dir: str | Path | None = None,
        *,
        seeds: Sequence[Sequence[int]] | None = None,
        param_set_ids: Sequence[str] | None = None,
        dataset_type: str = "synthetic",
        iteration: int = 0,
        sample_prefix: str | None = None,
    ) -> tuple[list[np.ndarray], list[ImageRecord]]:
        """Render ``replications`` images of each parameter set, with design-schema metadata.

        Images are ordered parameter set by parameter set, replication by replication, and
        numbered ``<prefix>_000``, ``<prefix>_001``, ... where the prefix is ``sample_prefix``
        or ``iter{iteration}_{dataset_type}``.

        Args:
            param_sets: Parameter dicts.
            replications: Images per parameter set.
            save_dir: If given, each image is written there as ``<sample_id>.png`` and its mask
                as ``<sample_id>_mask.png`` (8-bit grayscale).
            seeds: ``seeds[i][r]`` is the render seed of set ``i``, replication ``r``;
                defaults to ``derive_seed(i, r)``.
            param_set_ids: Ids of the parameter sets; default ``ps_000``, ``ps_001``, ...
            dataset_type: ``"real"``, ``"close"``, ``"far"`` or ``"synthetic"``.
            iteration: Iteration number recorded in the metadata.
            sample_prefix: Overrides the sample-id prefix.

        Returns:
            ``(images, metadata)``: ``float32`` images in ``[0, 1]`` and one metadata dict per
            image with the design's keys (``sample_id``, ``iteration``, ``dataset_type``,
            ``param_set_id``, ``replication_seed``, ``base_image_id``, ``params``,
            ``uncontrolled_params``, ``timestamp``) plus ``render_seed``, ``voids``,
            ``void_area_pct``, ``image_file`` and ``mask_file`` (file names relative to
            ``save_dir``, or ``None``).

        Raises:
            ConfigError: If a parameter set is invalid.
            ValueError: If ``replications``, ``seeds`` or ``param_set_ids`` do not match.
        """
        if replications < 1:
            raise ValueError(f"replications must be at least 1, got {replications}")
        n = len(param_sets)
        if seeds is not None:
            if len(seeds) != n or any(len(row) != replications for row in seeds):
                raise ValueError(
                    f"seeds must have shape ({n}, {replications}) to match param_sets and "
                    "replications"
                )
        if param_set_ids is not None and len(param_set_ids) != n:
            raise ValueError(f"param_set_ids has {len(param_set_ids)} entries, expected {n}")
        validated = [self.check_params(p) for p in param_sets]
        prefix = sample_prefix if sample_prefix is not None else f"iter{iteration}_{dataset_type}"
        out_dir = Path(save_dir) if save_dir is not None else None

        images: list[np.ndarray] = []
        metadata: list[ImageRecord] = []
        index = 0
        for i, p in enumerate(validated):
            ps_id = param_set_ids[i] if param_set_ids is not None else f"ps_{i:03d}"
            for r in range(replications):
                seed = int(seeds[i][r]) if seeds is not None else derive_seed(i, r)
                result = self.render(p, seed)
                sample_id = f"{prefix}_{index:03d}"
                image_file = mask_file = None
                if out_dir is not None:
                    image_file, mask_file = f"{sample_id}.png", f"{sample_id}_mask.png"
                    save_png(out_dir / image_file, result.image)
                    save_png(out_dir / mask_file, result.mask)
                images.append(result.image)
                metadata.append(
                    image_record(
                        iteration=iteration,
                        dataset_type=dataset_type,
                        param_set_id=ps_id,
                        replication_seed=r,
                        render_seed=seed,
                        params=p,
                        rendered=result,
                        sample_id=sample_id,
                        image_file=image_file,
                        mask_file=mask_file,
                    )
                )
                index += 1
        return images, metadata

    # ------------------------------------------------------------------ rendering core

    def _render(
        self,
        chip: np.ndarray,
        chip_id: str,
        p: Mapping[str, Any],
        gen: np.random.Generator,
        *,
        instances: bool = False,
    ) -> RenderedImage:
        h, w = chip.shape
        scale = min(h, w) / self.reference_size
        n = int(p["void_count"])

        # Fixed draw order, independent of the shape (common random numbers).
        rotation = float(gen.uniform(0.0, 360.0))
        size_noise = gen.standard_normal(n)
        offsets = gen.uniform(-0.5, 0.5, size=(n, 2)) * (p["position_spread"] * min(h, w))
        ratios = gen.uniform(*_ELLIPSE_RATIO, size=n)
        orients = gen.uniform(0.0, 180.0, size=n)
        amps = gen.uniform(0.0, 1.0, size=(n, _HARMONICS.size)) * _HARMONIC_MAX_AMP
        phases = gen.uniform(0.0, 2 * np.pi, size=(n, _HARMONICS.size))

        radii_ref = np.maximum(p["base_size"] + p["size_std"] * size_noise, 1.0)
        radii = np.maximum(radii_ref * scale, 1.0)
        theta = np.deg2rad(rotation)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        cx0, cy0 = (w - 1) / 2.0, (h - 1) / 2.0
        cxs = np.clip(cx0 + cos_t * offsets[:, 0] - sin_t * offsets[:, 1], 0.0, w - 1.0)
        cys = np.clip(cy0 + sin_t * offsets[:, 0] + cos_t * offsets[:, 1], 0.0, h - 1.0)

        coverage = np.zeros((h, w), dtype=np.float32)
        if instances and n > np.iinfo(np.uint16).max:
            raise ConfigError(f"instance labels hold at most 65535 voids, got void_count {n}")
        labels = np.zeros((h, w), dtype=np.uint16) if instances else None
        voids: list[dict[str, Any]] = []
        y_lo, y_hi, x_lo, x_hi = h, 0, w, 0
        shape = p["void_shape"]
        for i in range(n):
            r = float(radii[i])
            angle = (float(orients[i]) + rotation) % 360.0
            if shape == "circle":
                a = b = r
                extent = r
                angle = 0.0
            elif shape == "ellipse":
                q = float(ratios[i])
                a, b = r / math.sqrt(q), r * math.sqrt(q)
                extent = a
                angle %= 180.0
            else:
                amp = amps[i]
                norm = math.sqrt(1.0 + 0.5 * float(np.sum(amp**2)))
                extent = r * (1.0 + float(np.sum(amp))) / norm
                a, b = extent, r * max(1.0 - float(np.sum(amp)), 0.0) / norm
            cx, cy = float(cxs[i]), float(cys[i])
            x0, x1 = max(math.floor(cx - extent - 1), 0), min(math.ceil(cx + extent + 2), w)
            y0, y1 = max(math.floor(cy - extent - 1), 0), min(math.ceil(cy + extent + 2), h)
            area = 0.0
            if x1 > x0 and y1 > y0:
                dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
                dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
                rho = np.hypot(dx, dy)
                if shape == "circle":
                    boundary: np.ndarray | float = r
                else:
                    psi = np.arctan2(dy, dx) - np.float32(math.radians(angle))
                    if shape == "ellipse":
                        boundary = (a * b) / np.hypot(b * np.cos(psi), a * np.sin(psi))
                    else:
                        mod = np.ones_like(psi)
                        for k, ak, phk in zip(_HARMONICS, amps[i], phases[i], strict=True):
                            mod += np.float32(ak) * np.cos(k * psi + np.float32(phk))
                        boundary = (r / norm) * mod
                cov = np.clip(0.5 - (rho - boundary), 0.0, 1.0).astype(np.float32)
                area = float(cov.sum())
                region = coverage[y0:y1, x0:x1]
                if labels is not None:
                    labels[y0:y1, x0:x1][cov > region] = i + 1
                np.maximum(region, cov, out=region)
                y_lo, y_hi = min(y_lo, y0), max(y_hi, y1)
                x_lo, x_hi = min(x_lo, x0), max(x_hi, x1)
            voids.append(
                {
                    "shape": shape,
                    "center_x": cx,
                    "center_y": cy,
                    "radius": r,
                    "semi_major": float(a),
                    "semi_minor": float(b),
                    "angle": float(angle),
                    "area_px": area,
                }
            )

        sigma = self.edge_blur * scale
        if sigma > 0 and y_hi > y_lo:
            pad = math.ceil(4 * sigma) + 1
            ys = slice(max(y_lo - pad, 0), min(y_hi + pad, h))
            xs = slice(max(x_lo - pad, 0), min(x_hi + pad, w))
            blurred = ndimage.gaussian_filter(coverage[ys, xs], sigma=sigma, mode="nearest")
            blurred[blurred < 1e-4] = 0.0  # Gaussian round-off: leave the chip bit-exact
            coverage[ys, xs] = blurred

        darkening = np.float32(1.0 - p["brightness_factor"])
        image = chip.astype(np.float32, copy=True)
        image *= 1.0 - coverage * darkening
        np.clip(image, 0.0, 1.0, out=image)
        mask = coverage >= 0.5
        if labels is not None:
            _assign_instances(labels, mask)
        return RenderedImage(
            image=image,
            mask=mask,
            base_image_id=chip_id,
            uncontrolled_params={"rotation": rotation, "edge_blur": self.edge_blur},
            voids=voids,
            void_area_pct=float(100.0 * mask.mean()),
            instance_labels=labels,
        )


def _assign_instances(labels: np.ndarray, mask: np.ndarray, reach: int = 16) -> None:
    """Restrict ``labels`` to ``mask`` in place; unlabelled mask pixels take the nearest label.

    The nearest labelled pixel is looked for within ``reach`` px of the unlabelled ones (they
    lie at most a few blur widths from a void), image-wide only when none is that close.
    """
    labels[~mask] = 0
    missing = mask & (labels == 0)
    if not missing.any() or not labels.any():
        return
    rows, cols = np.flatnonzero(missing.any(axis=1)), np.flatnonzero(missing.any(axis=0))
    window = (
        slice(max(rows[0] - reach, 0), rows[-1] + reach + 1),
        slice(max(cols[0] - reach, 0), cols[-1] + reach + 1),
    )
    if not labels[window].any():
        window = (slice(None), slice(None))
    sub, gap = labels[window], missing[window]
    _, (iy, ix) = ndimage.distance_transform_edt(sub == 0, return_indices=True)
    sub[gap] = sub[iy[gap], ix[gap]]


def unit_float(image: np.ndarray, *, clip: bool = False) -> np.ndarray:
    """A grey image as float32 in the units of the generator: 8- and 16-bit scaled to [0, 1].

    Args:
        image: The image (``uint8``, ``uint16`` or float).
        clip: Clip a float image to ``[0, 1]`` (integer images are in range already).
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    out = image.astype(np.float32)
    return np.clip(out, 0.0, 1.0) if clip else out
