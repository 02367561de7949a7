"""The parameter schema: bounds and distributions of a parameter, and the imaging chain's settings.

Plain frozen dataclasses, built and validated by :mod:`bo_voids.config` (which re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The ``imaging:`` keys' widest ranges and the values that leave an image unchanged (their
#: meaning: :mod:`bo_voids.generation.imaging`).
IMAGING_LIMITS: dict[str, tuple[float, float]] = dict(
    psf_sigma=(0.0, 20.0), gamma=(0.2, 5.0), contrast=(0.1, 5.0), gaussian_noise=(0.0, 0.5),
    poisson_noise=(0.0, 0.5),
)  # fmt: skip
IMAGING_IDENTITY: dict[str, float] = dict(
    psf_sigma=0.0, gamma=1.0, contrast=1.0, gaussian_noise=0.0, poisson_noise=0.0
)
#: Prefix of a nuisance imaging parameter in the search space (``imaging_gamma``).
NUISANCE_PREFIX = "imaging_"


@dataclass(frozen=True)
class CategoricalBounds:
    """Allowed values of a categorical parameter."""

    choices: tuple[str, ...]

    def to_yaml(self) -> list[str]:
        """Return the YAML form (a list of choices)."""
        return list(self.choices)


@dataclass(frozen=True)
class NumericBounds:
    """Inclusive ``[low, high]`` bounds of an integer or continuous parameter."""

    low: float
    high: float
    integer: bool = False

    def to_yaml(self) -> list[float]:
        """Return the YAML form (``[low, high]``)."""
        if self.integer:
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class CategoricalDistribution:
    """Probabilities of each category."""

    probabilities: dict[str, float]

    def to_yaml(self) -> dict[str, float]:
        """Return the YAML form (``{category: probability}``)."""
        return dict(self.probabilities)


@dataclass(frozen=True)
class NormalDistribution:
    """A normal distribution, clipped to the parameter's bounds when sampled."""

    mean: float
    std: float

    def to_yaml(self) -> dict[str, float]:
        """Return the YAML form (``{mean: .., std: ..}``)."""
        return {"mean": self.mean, "std": self.std}


ParameterBounds = CategoricalBounds | NumericBounds
ParameterDistribution = CategoricalDistribution | NormalDistribution


ImagingValue = float | NumericBounds


@dataclass(frozen=True)
class ImagingSettings:
    """The detector's imaging chain (``imaging:`` section), applied after the voids are drawn.

    Each entry is either a fixed number or :class:`NumericBounds`: a *nuisance* parameter that
    joins the search space as ``imaging_<key>`` and is calibrated with the six design parameters.
    The defaults leave images unchanged (simulated targets keep their behaviour).
    """

    psf_sigma: ImagingValue = 0.0
    gamma: ImagingValue = 1.0
    contrast: ImagingValue = 1.0
    gaussian_noise: ImagingValue = 0.0
    poisson_noise: ImagingValue = 0.0

    def nuisance_bounds(self) -> dict[str, NumericBounds]:
        """Bounds of the nuisance parameters, by search-space name (``imaging_<key>``)."""
        return {
            NUISANCE_PREFIX + k: v
            for k in IMAGING_LIMITS
            if isinstance(v := getattr(self, k), NumericBounds)
        }

    @property
    def is_identity(self) -> bool:
        """Whether the chain leaves every image unchanged (all fixed at their identity)."""
        return all(getattr(self, k) == IMAGING_IDENTITY[k] for k in IMAGING_LIMITS)

    def to_yaml(self) -> dict[str, float | list[float]]:
        """Return the YAML form (a number or ``[low, high]`` per key)."""
        values = {k: getattr(self, k) for k in IMAGING_LIMITS}
        return {
            k: v.to_yaml() if isinstance(v, NumericBounds) else float(v) for k, v in values.items()
        }
