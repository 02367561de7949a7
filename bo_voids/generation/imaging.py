"""The detector's imaging chain: point-spread blur, sensor noise and a contrast/gamma curve.

A real X-ray image is not the void pattern itself but what a detector makes of it: the
transmitted intensity is blurred by the point-spread function, counted with shot (Poisson) and
read (Gaussian) noise, and mapped to grey values by a response curve. :class:`ImagingChain`
applies that chain to a rendered image, in that physical order:

1. blur: Gaussian point spread of ``psf_sigma`` reference pixels (scaled with the image size, as
   ``edge_blur`` is);
2. shot noise: ``Poisson(x · N) / N`` with ``N = 1 / poisson_noise²`` photons at full intensity;
3. read noise: additive Gaussian of sd ``gaussian_noise``;
4. response curve: ``0.5 + contrast · (x ** gamma − 0.5)``, clipped to ``[0, 1]``.

Each quantity is fixed or a *nuisance* parameter (see :class:`~bo_voids.config.ImagingSettings`);
a nuisance value is read from the parameter set under ``imaging_<key>``. The noise draws come from
a stream derived from the render seed, so the void geometry of a seed is the same with the chain
on or off (common random numbers), and ``(params, seed)`` gives a bit-identical image.

Example:
    >>> from bo_voids.config import ImagingSettings, NumericBounds
    >>> chain = ImagingChain(ImagingSettings(gamma=NumericBounds(0.6, 1.6), psf_sigma=1.5))
    >>> chain.nuisance_names
    ('imaging_gamma',)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from bo_voids.config import (
    IMAGING_IDENTITY,
    IMAGING_LIMITS,
    NUISANCE_PREFIX,
    ImagingSettings,
    NumericBounds,
)
from bo_voids.exceptions import ConfigError
from bo_voids.seeding import derive_seed

__all__ = ["ImagingChain", "ImagingValues", "nuisance_name"]


def nuisance_name(key: str) -> str:
    """The search-space name of an imaging key (``gamma`` → ``imaging_gamma``)."""
    return NUISANCE_PREFIX + key


@dataclass(frozen=True)
class ImagingValues:
    """The imaging chain's values for one image (every key resolved to a number)."""

    psf_sigma: float = IMAGING_IDENTITY["psf_sigma"]
    gamma: float = IMAGING_IDENTITY["gamma"]
    contrast: float = IMAGING_IDENTITY["contrast"]
    gaussian_noise: float = IMAGING_IDENTITY["gaussian_noise"]
    poisson_noise: float = IMAGING_IDENTITY["poisson_noise"]

    @property
    def is_identity(self) -> bool:
        """Whether these values leave an image unchanged."""
        return all(getattr(self, k) == v for k, v in IMAGING_IDENTITY.items())

    def to_dict(self) -> dict[str, float]:
        """Plain form, recorded in each image's metadata."""
        return asdict(self)


class ImagingChain:
    """Applies the configured imaging chain to rendered images.

    Args:
        settings: The ``imaging:`` section (default: the identity chain).
    """

    def __init__(self, settings: ImagingSettings | None = None) -> None:
        self.settings = settings or ImagingSettings()
        self.nuisance_bounds: dict[str, NumericBounds] = self.settings.nuisance_bounds()

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        """Search-space names of the nuisance parameters, in :data:`IMAGING_LIMITS` order."""
        return tuple(self.nuisance_bounds)

    @property
    def is_identity(self) -> bool:
        """Whether the chain never changes an image (all fixed at their identity values)."""
        return self.settings.is_identity

    def split(self, params: Mapping[str, object]) -> tuple[dict[str, object], ImagingValues]:
        """Separate a parameter set into its design parameters and the chain's values.

        Args:
            params: A parameter set; it holds ``imaging_<key>`` for every nuisance parameter.

        Returns:
            ``(design parameters, imaging values)``.

        Raises:
            ConfigError: If a nuisance value is missing, not a number or outside its limits.
        """
        design = {k: v for k, v in params.items() if not k.startswith(NUISANCE_PREFIX)}
        values: dict[str, float] = {}
        for key, (lo, hi) in IMAGING_LIMITS.items():
            setting = getattr(self.settings, key)
            if not isinstance(setting, NumericBounds):
                values[key] = float(setting)
                continue
            name = nuisance_name(key)
            if name not in params:
                raise ConfigError(
                    f"parameter set is missing the nuisance imaging parameter {name!r} "
                    f"(imaging.{key} has bounds [{setting.low:g}, {setting.high:g}])"
                )
            v = params[name]
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise ConfigError(f"{name} must be a number, got {v!r}")
            if not (np.isfinite(v) and lo <= float(v) <= hi):
                raise ConfigError(f"{name} must lie within [{lo:g}, {hi:g}], got {v!r}")
            values[key] = float(v)
        unknown = sorted(
            k for k in params if k.startswith(NUISANCE_PREFIX) and k not in self.nuisance_bounds
        )
        if unknown:
            raise ConfigError(
                f"unknown imaging parameter(s) {unknown}; this generator's nuisance parameters "
                f"are {list(self.nuisance_names)} (set bounds in the imaging: section)"
            )
        return design, ImagingValues(**values)

    def apply(
        self, image: np.ndarray, values: ImagingValues, seed: int, scale: float = 1.0
    ) -> np.ndarray:
        """Image an ``float32`` ``(H, W)`` picture in ``[0, 1]`` through the chain.

        Args:
            image: The rendered image (not modified).
            values: The chain's values for this image.
            seed: The render seed; the noise stream is derived from it.
            scale: Rendered pixels per reference pixel (scales ``psf_sigma``).

        Returns:
            A new ``float32`` image in ``[0, 1]`` (``image`` itself when ``values`` are the
            identity).
        """
        if values.is_identity:
            return image
        out = image.astype(np.float64, copy=True)
        sigma = values.psf_sigma * scale
        if sigma > 0:
            out = ndimage.gaussian_filter(out, sigma=sigma, mode="reflect")
        gen = np.random.default_rng(derive_seed(seed, "imaging"))
        if values.poisson_noise > 0:
            photons = 1.0 / values.poisson_noise**2
            out = gen.poisson(np.clip(out, 0.0, None) * photons) / photons
        if values.gaussian_noise > 0:
            out = out + gen.normal(0.0, values.gaussian_noise, size=out.shape)
        np.clip(out, 0.0, 1.0, out=out)
        if values.gamma != 1.0:
            out = out**values.gamma
        if values.contrast != 1.0:
            out = 0.5 + values.contrast * (out - 0.5)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
