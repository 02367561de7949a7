"""The mixed search space: six parameters, their encoding for the GP, and seeded sampling.

This is the only module that knows how a categorical, an integer and a continuous parameter become
numbers. Two encodings are offered:

* **unit** (:meth:`SearchSpace.encode`): every column in ``[0, 1]`` — continuous parameters
  scaled by their bounds; a categorical or integer parameter with ``k`` values splits ``[0, 1]``
  into ``k`` equal cells, value ``i`` (the ``i``-th category, or ``low + i``) owning
  ``[i / k, (i + 1) / k)`` and encoded by the cell's centre ``(i + 0.5) / k``. Used for
  distances and for samplers that want a box (Sobol, random search).
* **raw** (:meth:`SearchSpace.to_raw`): natural units — the categorical column holds the category
  index ``0..k-1`` (for a categorical kernel), the integer column the integer, continuous columns
  their value. The BoTorch optimiser works here with a ``Normalize`` input transform built from
  :attr:`SearchSpace.raw_bounds`.

Decoding (either form) clips to bounds and restores the category and the integer, so any point an
acquisition optimiser returns becomes a valid parameter set. The unit decode takes the cell a
coordinate falls in (``floor(u · k)``, ``u = 1`` belonging to the last cell), so a uniform draw
on the cube gives every category and every integer value, the end values included, the same
probability ``1 / k``; rounding ``u · (k - 1)`` instead would give the two end values half the
mass of the others. The raw decode rounds to the nearest index or integer, which is what an
optimiser working in raw units expects.

Example:
    >>> space = SearchSpace.from_config(cfg)  # doctest: +SKIP
    >>> params = space.sample("real", 5, random_state=0)  # doctest: +SKIP
    >>> space.decode(space.encode(params[0])) == params[0]  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from bo_voids.config import (
    PARAMETER_KINDS,
    PARAMETER_NAMES,
    CategoricalBounds,
    CategoricalDistribution,
    ExperimentConfig,
    NormalDistribution,
    NumericBounds,
    ParameterBounds,
    ParameterDistribution,
)
from bo_voids.exceptions import ConfigError

ParamValue = int | float | str
"""One parameter's value: a category name, an integer or a continuous number."""
ParamSet = dict[str, ParamValue]
"""A parameter set as the space makes it: values by parameter name."""
ParamMapping = Mapping[str, ParamValue]
"""A parameter set as readers take it (read-only)."""
RandomState = int | np.random.Generator | None


def as_generator(random_state: RandomState) -> np.random.Generator:
    """Turn an int seed, a generator or ``None`` into a :class:`numpy.random.Generator`."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


@dataclass(frozen=True)
class Parameter:
    """One search dimension."""

    name: str
    kind: str  # "categorical" | "integer" | "continuous"
    bounds: ParameterBounds

    @property
    def choices(self) -> tuple[str, ...]:
        """Categories (categorical parameters only)."""
        assert isinstance(self.bounds, CategoricalBounds)
        return self.bounds.choices

    @property
    def low(self) -> float:
        """Lower bound in raw units (0 for a categorical)."""
        return 0.0 if isinstance(self.bounds, CategoricalBounds) else float(self.bounds.low)

    @property
    def high(self) -> float:
        """Upper bound in raw units (``k - 1`` for a categorical)."""
        if isinstance(self.bounds, CategoricalBounds):
            return float(len(self.bounds.choices) - 1)
        return float(self.bounds.high)


class SearchSpace:
    """The six void parameters with their kinds and bounds, then any nuisance parameters.

    Nuisance parameters (the imaging chain's, ``imaging_<key>``) are continuous columns after
    the six design parameters: every encoding, sampler and optimiser treats them like the
    others, while :attr:`design_names` and :attr:`nuisance_names` let readers report them apart.
    A named distribution (``real`` / ``close`` / ``far``) says nothing about them: they are
    drawn uniformly over their bounds, and their "mean" is the centre of the bounds.

    Args:
        bounds: Bounds per parameter name (as in ``ExperimentConfig.param_bounds``).
        distributions: Named sampling distributions (``real`` / ``close`` / ``far``), optional.
        nuisance: Bounds of the nuisance parameters by name (as in
            ``ImagingSettings.nuisance_bounds()``), optional.
    """

    def __init__(
        self,
        bounds: Mapping[str, ParameterBounds],
        distributions: Mapping[str, Mapping[str, ParameterDistribution]] | None = None,
        nuisance: Mapping[str, NumericBounds] | None = None,
    ) -> None:
        missing = [n for n in PARAMETER_NAMES if n not in bounds]
        if missing:
            raise ConfigError(f"param_bounds is missing {missing}")
        clash = sorted(set(nuisance or {}) & set(PARAMETER_NAMES))
        if clash:
            raise ConfigError(f"nuisance parameters may not reuse design names: {clash}")
        self.parameters: tuple[Parameter, ...] = tuple(
            Parameter(n, PARAMETER_KINDS[n], bounds[n]) for n in PARAMETER_NAMES
        ) + tuple(Parameter(n, "continuous", b) for n, b in (nuisance or {}).items())
        self.distributions: dict[str, Mapping[str, ParameterDistribution]] = dict(
            distributions or {}
        )

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> SearchSpace:
        """Build the space (its distributions and imaging nuisance parameters) from a config."""
        return cls(cfg.param_bounds, cfg.param_distributions, cfg.imaging.nuisance_bounds())

    @property
    def design_names(self) -> tuple[str, ...]:
        """The six design parameters (the answer a calibration reports)."""
        return PARAMETER_NAMES

    @property
    def nuisance_names(self) -> tuple[str, ...]:
        """The nuisance parameters (the imaging chain's), reported apart from the design's."""
        return tuple(p.name for p in self.parameters[len(PARAMETER_NAMES) :])

    def design_part(self, params: ParamMapping) -> ParamSet:
        """The six design parameters of a parameter set."""
        return {n: params[n] for n in PARAMETER_NAMES}

    def nuisance_part(self, params: ParamMapping) -> ParamSet:
        """The nuisance parameters of a parameter set (empty without nuisance)."""
        return {n: params[n] for n in self.nuisance_names if n in params}

    # ---- structure -----------------------------------------------------------------------------

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Column order of every encoding."""
        return tuple(p.name for p in self.parameters)

    @property
    def dim(self) -> int:
        """Number of columns (6, plus one per nuisance parameter)."""
        return len(self.parameters)

    @property
    def bounds(self) -> dict[str, ParameterBounds]:
        """Bounds per parameter name."""
        return {p.name: p.bounds for p in self.parameters}

    def dims_of_kind(self, kind: str) -> list[int]:
        """Column indices of the parameters of one kind."""
        return [i for i, p in enumerate(self.parameters) if p.kind == kind]

    @property
    def categorical_dims(self) -> list[int]:
        """Columns holding a category index."""
        return self.dims_of_kind("categorical")

    @property
    def integer_dims(self) -> list[int]:
        """Columns holding an integer."""
        return self.dims_of_kind("integer")

    @property
    def continuous_dims(self) -> list[int]:
        """Columns holding a continuous value."""
        return self.dims_of_kind("continuous")

    @property
    def raw_bounds(self) -> np.ndarray:
        """``2 x d`` lower/upper bounds of the raw encoding."""
        return np.array([[p.low for p in self.parameters], [p.high for p in self.parameters]])

    def raw_discrete_values(self) -> dict[int, list[float]]:
        """Allowed raw values of each categorical and integer column."""
        out: dict[int, list[float]] = {}
        for i, p in enumerate(self.parameters):
            if p.kind != "continuous":
                out[i] = [float(v) for v in range(int(p.low), int(p.high) + 1)]
        return out

    # ---- validation ----------------------------------------------------------------------------

    def validate(self, params: Mapping[str, object]) -> ParamSet:
        """Check a parameter set and return it with plain Python types.

        Raises:
            ConfigError: Naming the parameter that is missing, unknown, of the wrong type or out of
                bounds.
        """
        unknown = sorted(set(params) - set(self.parameter_names))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {unknown}; expected {list(self.parameter_names)}"
            )
        out: ParamSet = {}
        for p in self.parameters:
            if p.name not in params:
                raise ConfigError(f"parameter set is missing {p.name!r}")
            v = params[p.name]
            if p.kind == "categorical":
                if v not in p.choices:
                    raise ConfigError(f"{p.name} must be one of {list(p.choices)}, got {v!r}")
                out[p.name] = str(v)
                continue
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise ConfigError(f"{p.name} must be a number, got {v!r}")
            if not np.isfinite(v) or not p.low <= float(v) <= p.high:
                raise ConfigError(f"{p.name} must lie within [{p.low:g}, {p.high:g}], got {v!r}")
            if p.kind == "integer":
                if float(v) != round(float(v)):
                    raise ConfigError(f"{p.name} must be an integer, got {v!r}")
                out[p.name] = round(float(v))
            else:
                out[p.name] = float(v)
        return out

    # ---- encodings -----------------------------------------------------------------------------

    def to_raw(self, params: ParamMapping) -> np.ndarray:
        """Encode one parameter set in raw units (category index, integer, values): ``(d,)``."""
        params = self.validate(params)
        return np.array(
            [
                float(p.choices.index(params[p.name]))
                if p.kind == "categorical"
                else float(params[p.name])
                for p in self.parameters
            ]
        )

    def from_raw(self, x: Sequence[float] | np.ndarray) -> ParamSet:
        """Decode a raw-unit point: round categorical and integer columns, clip to bounds."""
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape[0] != self.dim or not np.all(np.isfinite(x)):
            raise ValueError(f"expected {self.dim} finite raw values, got {x!r}")
        out: ParamSet = {}
        for v, p in zip(x, self.parameters, strict=True):
            v = float(np.clip(v, p.low, p.high))
            if p.kind == "categorical":
                out[p.name] = p.choices[int(np.rint(v))]
            elif p.kind == "integer":
                out[p.name] = int(np.rint(v))
            else:
                out[p.name] = v
        return out

    def _n_levels(self, p: Parameter) -> int:
        """Number of values of a categorical or integer parameter (its unit-cube cells)."""
        return round(p.high - p.low) + 1

    def encode(self, params: ParamMapping) -> np.ndarray:
        """Encode one parameter set into the unit cube: ``(d,)`` with values in ``[0, 1]``.

        Continuous values are scaled by their bounds; a categorical or integer value ``i``
        (counted from the lower bound) of ``k`` becomes the centre ``(i + 0.5) / k`` of its cell,
        so :meth:`decode` maps it back exactly.
        """
        raw = self.to_raw(params)
        lo, hi = self.raw_bounds
        out = np.empty(self.dim)
        for j, p in enumerate(self.parameters):
            if p.kind == "continuous":
                out[j] = (raw[j] - lo[j]) / (hi[j] - lo[j]) if hi[j] > lo[j] else 0.0
            else:
                out[j] = (raw[j] - lo[j] + 0.5) / self._n_levels(p)
        return out

    def decode(self, u: Sequence[float] | np.ndarray) -> ParamSet:
        """Decode a unit-cube point (clipping, restoring the category and the integer).

        A categorical or integer column with ``k`` values takes value ``min(floor(u · k), k - 1)``
        (counted from the lower bound), so uniform ``u`` gives each value mass ``1 / k``.
        ``decode(encode(p))`` restores categories and integers exactly and continuous values to
        within floating-point rounding (about ``1e-15`` of the range); see :meth:`same`.
        """
        unit = np.clip(np.asarray(u, dtype=float).reshape(-1), 0.0, 1.0)
        if unit.shape[0] != self.dim or not np.all(np.isfinite(unit)):
            raise ValueError(f"expected {self.dim} finite unit-cube values, got {unit!r}")
        lo, hi = self.raw_bounds
        raw = lo + unit * (hi - lo)
        for j, p in enumerate(self.parameters):
            if p.kind != "continuous":
                k = self._n_levels(p)
                raw[j] = lo[j] + min(int(np.floor(unit[j] * k)), k - 1)
        return self.from_raw(raw)

    def decode_many(self, u: np.ndarray) -> list[ParamSet]:
        """Decode the rows of an ``n x d`` unit-cube array."""
        return [self.decode(row) for row in np.atleast_2d(u)]

    # ---- model features: one-hot categories, numbers scaled to [0, 1] -------------------------

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature columns (``void_shape=circle``, ..., ``void_count``, ...)."""
        return feature_names(self.parameters)

    def raw_to_features(self, X_raw: ArrayLike) -> np.ndarray:
        """Model features of raw points (see :func:`raw_to_features`): ``(n, d_f)``."""
        return raw_to_features(self.parameters, X_raw)

    def to_features(self, param_sets: Sequence[ParamMapping]) -> np.ndarray:
        """Model features of parameter sets: ``(n, d_f)``, one row per set."""
        raw = np.array([self.to_raw(p) for p in param_sets]).reshape(len(param_sets), self.dim)
        return self.raw_to_features(raw)

    def loose_raw(self, params: Mapping[str, object]) -> np.ndarray:
        """Raw encoding of a possibly invalid parameter set.

        An unknown category reads as the first, a missing or non-numeric value as the lower
        bound; :meth:`from_raw` clips the rest.
        """
        out = []
        for p in self.parameters:
            v = params.get(p.name)
            if p.kind == "categorical":
                out.append(float(p.choices.index(v)) if v in p.choices else 0.0)
            else:
                try:
                    out.append(float(v))  # type: ignore[arg-type]  # anything: caught below
                except (TypeError, ValueError):
                    out.append(float(p.low))
        return np.array(out)

    def same(self, a: ParamMapping, b: ParamMapping, rtol: float = 1e-9) -> bool:
        """Whether two parameter sets are equal (continuous values within ``rtol`` of the range)."""
        for p in self.parameters:
            if p.kind == "continuous":
                if abs(float(a[p.name]) - float(b[p.name])) > rtol * (p.high - p.low):
                    return False
            elif a[p.name] != b[p.name]:
                return False
        return True

    def key(self, params: ParamMapping, decimals: int = 9) -> tuple[ParamValue, ...]:
        """A hashable identity of a parameter set, for duplicate detection."""
        return tuple(
            params[p.name] if p.kind != "continuous" else round(float(params[p.name]), decimals)
            for p in self.parameters
        )

    def normalized_distance(
        self, a: ParamMapping, b: ParamMapping, shape_weight: float = 1.0
    ) -> float:
        """Euclidean distance with numeric parameters divided by their range.

        A shape mismatch adds ``shape_weight`` (1 = as far as the two ends of a range).
        """
        total = 0.0
        for p in self.parameters:
            if p.kind == "categorical":
                total += shape_weight**2 * float(a[p.name] != b[p.name])
            else:
                total += ((float(a[p.name]) - float(b[p.name])) / (p.high - p.low)) ** 2
        return float(np.sqrt(total))

    # ---- sampling ------------------------------------------------------------------------------

    def sample_uniform(self, n: int, random_state: RandomState = None) -> list[ParamSet]:
        """Draw ``n`` parameter sets uniformly over the bounds (categories and integers too)."""
        gen = as_generator(random_state)
        out = []
        for _ in range(n):
            params: ParamSet = {}
            for p in self.parameters:
                if p.kind == "categorical":
                    params[p.name] = p.choices[int(gen.integers(len(p.choices)))]
                elif p.kind == "integer":
                    params[p.name] = int(gen.integers(int(p.low), int(p.high) + 1))
                else:
                    params[p.name] = float(gen.uniform(p.low, p.high))
            out.append(params)
        return out

    def distribution(
        self, name: str | Mapping[str, ParameterDistribution]
    ) -> Mapping[str, ParameterDistribution]:
        """Look a named distribution up (or pass a mapping through)."""
        if isinstance(name, str):
            if name not in self.distributions:
                raise KeyError(f"no distribution {name!r}; have {sorted(self.distributions)}")
            return self.distributions[name]
        return name

    def sample(
        self,
        distribution: str | Mapping[str, ParameterDistribution],
        n: int,
        random_state: RandomState = None,
    ) -> list[ParamSet]:
        """Draw ``n`` parameter sets from a distribution.

        Normal draws are clipped to the bounds (integers rounded first); categories are drawn by
        their probabilities; nuisance parameters the distribution leaves out are drawn uniformly
        over their bounds.

        Args:
            distribution: ``"real"``, ``"close"``, ``"far"`` or a mapping of per-parameter
                distributions.
            n: Number of parameter sets.
            random_state: Seed or generator.

        Returns:
            ``n`` valid parameter sets.
        """
        dist = self.distribution(distribution)
        gen = as_generator(random_state)
        out = []
        for _ in range(n):
            params: ParamSet = {}
            for p in self.parameters:
                d = dist.get(p.name)
                if d is None and p.name in self.nuisance_names:
                    params[p.name] = float(gen.uniform(p.low, p.high))
                    continue
                if d is None:
                    raise KeyError(f"the distribution gives nothing for {p.name!r}")
                if isinstance(d, CategoricalDistribution):
                    names = list(d.probabilities)
                    probs = np.array([d.probabilities[k] for k in names], dtype=float)
                    params[p.name] = names[int(gen.choice(len(names), p=probs / probs.sum()))]
                elif isinstance(d, NormalDistribution):
                    v = gen.normal(d.mean, d.std) if d.std > 0 else d.mean
                    if p.kind == "integer":
                        params[p.name] = int(np.clip(np.rint(v), p.low, p.high))
                    else:
                        params[p.name] = float(np.clip(v, p.low, p.high))
                else:  # pragma: no cover - config validation prevents this
                    raise TypeError(f"unsupported distribution {d!r} for {p.name}")
            out.append(params)
        return out

    def distribution_means(
        self, distribution: str | Mapping[str, ParameterDistribution]
    ) -> ParamSet:
        """The centre of a distribution: means of numeric parameters, the modal category."""
        dist = self.distribution(distribution)
        out: ParamSet = {}
        for p in self.parameters:
            d = dist.get(p.name)
            if d is None and p.name in self.nuisance_names:
                out[p.name] = 0.5 * (p.low + p.high)
                continue
            if d is None:
                raise KeyError(f"the distribution gives nothing for {p.name!r}")
            if isinstance(d, CategoricalDistribution):
                out[p.name] = max(d.probabilities, key=d.probabilities.__getitem__)
            elif p.kind == "integer":
                out[p.name] = int(np.clip(np.rint(d.mean), p.low, p.high))
            else:
                out[p.name] = float(d.mean)
        return out


def feature_names(parameters: Sequence[Parameter]) -> list[str]:
    """Names of the model feature columns of ``parameters`` (see :func:`raw_to_features`)."""
    names: list[str] = []
    for p in parameters:
        names += [f"{p.name}={c}" for c in p.choices] if p.kind == "categorical" else [p.name]
    return names


def raw_to_features(parameters: Sequence[Parameter], X_raw: ArrayLike) -> np.ndarray:
    """The model features of raw points: one-hot categories, numeric columns scaled to [0, 1].

    The one encoding every model of the package reads (the composite surrogate, the summaries'
    parameter head); out-of-range values are clipped.

    Args:
        parameters: The space's parameters.
        X_raw: `(n, d)` raw encodings (category index, integer, values).

    Returns:
        `(n, d_f)` features in ``[0, 1]``.

    Raises:
        ValueError: ``X_raw`` has the wrong number of columns.
    """
    X = np.atleast_2d(np.asarray(X_raw, dtype=np.float64))
    if X.shape[1] != len(parameters):
        raise ValueError(f"X_raw must have {len(parameters)} columns, got shape {X.shape}")
    blocks = []
    for i, p in enumerate(parameters):
        if p.kind == "categorical":
            idx = np.clip(np.rint(X[:, i]), 0, len(p.choices) - 1).astype(np.int64)
            blocks.append(np.eye(len(p.choices))[idx])
        else:
            span = p.high - p.low
            col = np.clip((X[:, i] - p.low) / span, 0.0, 1.0) if span > 0 else 0.0 * X[:, i]
            blocks.append(col[:, None])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((X.shape[0], 0))
