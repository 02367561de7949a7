"""The distribution a fitted mixture implies, in the config's ``param_distributions`` form.

A mixture component is a point in parameter space, so the mixture's spread is the spread
*between* components (the rendering noise within a component is not parameter spread). Numeric
parameters get the weighted mean and standard deviation over the weighted point cloud of
components, the shape its probabilities.

**Small-sample correction of the std.** The weighted cloud's variance ``Σ w (x - x̄)²`` is the
variance of a sample of ``n_eff = 1 / Σ w²`` effective points around its own mean, and so too
small by the factor ``1 - Σw² = (n_eff - 1) / n_eff`` (Bessel's correction with reliability
weights; a handful of components reproduces a handful of realised target sets, whose spread
underestimates their population's). :func:`implied_distribution` divides the variance by it
by default (``std_correction="n_eff"``); with a single component (``n_eff = 1``) there is no
spread to correct and the std stays 0.

Example:
    >>> comps = [({"void_count": 5, ...}, 0.5), ({"void_count": 9, ...}, 0.5)]  # doctest: +SKIP
    >>> implied_distribution(comps, cfg.param_bounds)["void_count"]  # doctest: +SKIP
    {'mean': 7.0, 'std': 2.828427}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.config import (
    PARAMETER_NAMES,
    CategoricalBounds,
    ExperimentConfig,
    NormalDistribution,
    ParameterBounds,
    ParameterDistribution,
    config_from_dict,
)
from bo_voids.exceptions import ConfigError
from bo_voids.schema import NUISANCE_PREFIX
from bo_voids.space import ParamMapping

__all__ = [
    "STD_CORRECTIONS",
    "distribution_errors",
    "distribution_from_yaml",
    "effective_sample_size",
    "implied_distribution",
    "point_distribution",
    "std_correction_factor",
    "typed_distribution",
    "yaml_snippet",
]

#: Accepted values of ``std_correction``.
STD_CORRECTIONS: tuple[str, ...] = ("n_eff", "none")


def effective_sample_size(weights: Sequence[float] | np.ndarray) -> float:
    """Kish's effective sample size ``1 / Σ w²`` of normalised non-negative weights.

    Raises:
        ValueError: No positive weight.
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if not w.size or w.sum() <= 0:
        raise ValueError("need at least one positive weight")
    w = w / w.sum()
    return float(1.0 / np.sum(w**2))


def std_correction_factor(n_eff: float) -> float:
    """Factor ``sqrt(n_eff / (n_eff - 1))`` applied to the weighted std (1 when ``n_eff ≤ 1``)."""
    return float(math.sqrt(n_eff / (n_eff - 1.0))) if n_eff > 1.0 + 1e-12 else 1.0


def _round_probabilities(probs: Mapping[str, float], decimals: int) -> dict[str, float]:
    out = {k: round(max(0.0, float(v)), decimals) for k, v in probs.items()}
    top = max(out, key=out.__getitem__)
    out[top] = round(out[top] + (1.0 - sum(out.values())), decimals)
    return out


def implied_distribution(
    components: Sequence[tuple[ParamMapping, float]],
    bounds: Mapping[str, ParameterBounds],
    *,
    std_floor: float = 0.0,
    decimals: int = 6,
    std_correction: str = "n_eff",
) -> dict[str, dict[str, float]]:
    """The distribution a weighted mixture of parameter sets implies, in the config's form.

    Numeric parameters (continuous and the integer count) get the weighted mean of the
    components' values (clipped into the bounds) and their weighted standard deviation,
    multiplied by :func:`std_correction_factor` of the weights' :func:`effective_sample_size`
    unless ``std_correction="none"``, then floored at ``std_floor`` × the parameter's range.
    ``void_shape`` gets the weight of each shape (every allowed shape listed, 0 included),
    rounded so the probabilities sum to 1 (within ``10**-decimals``).

    Args:
        components: ``(params, weight)`` pairs; weights are renormalised.
        bounds: ``param_bounds`` of the config.
        std_floor: Minimum std as a fraction of each numeric parameter's range (0 = none).
        decimals: Decimal places kept.
        std_correction: ``"n_eff"`` (default: small-sample corrected std) or ``"none"`` (the
            plain weighted std of the component cloud).

    Returns:
        ``{"void_shape": {shape: p}, "void_count": {"mean", "std"}, ...}``, which
        :func:`bo_voids.config.config_from_dict` accepts as a ``param_distributions`` entry.

    Raises:
        ValueError: No component with positive weight, or an unknown ``std_correction``.
    """
    if std_correction not in STD_CORRECTIONS:
        raise ValueError(f"std_correction must be one of {STD_CORRECTIONS}, got {std_correction!r}")
    weights = np.array([max(0.0, float(w)) for _, w in components])
    if not len(weights) or weights.sum() <= 0:
        raise ValueError("need at least one component with positive weight")
    weights = weights / weights.sum()
    factor = 1.0
    if std_correction == "n_eff":
        factor = std_correction_factor(effective_sample_size(weights))
    out: dict[str, dict[str, float]] = {}
    for name in PARAMETER_NAMES:
        b = bounds[name]
        values = [p[name] for p, _ in components]
        if isinstance(b, CategoricalBounds):
            probs = {
                s: float(sum(w for v, w in zip(values, weights, strict=True) if v == s))
                for s in b.choices
            }
            out[name] = _round_probabilities(probs, decimals)
            continue
        x = np.asarray(values, dtype=np.float64)
        mean = float(np.clip(weights @ x, b.low, b.high))
        std = factor * float(np.sqrt(max(0.0, weights @ (x - weights @ x) ** 2)))
        std = max(std, float(std_floor) * (float(b.high) - float(b.low)))
        out[name] = {
            "mean": float(np.clip(round(mean, decimals), b.low, b.high)),
            "std": round(std, decimals),
        }
    return out


def point_distribution(
    params: ParamMapping, bounds: Mapping[str, ParameterBounds]
) -> dict[str, dict[str, float]]:
    """A single parameter set as a (degenerate) config-form distribution."""
    out: dict[str, dict[str, float]] = {}
    for name in PARAMETER_NAMES:
        b = bounds[name]
        if isinstance(b, CategoricalBounds):
            out[name] = {s: float(params[name] == s) for s in b.choices}
        else:
            out[name] = {"mean": float(params[name]), "std": 0.0}
    return out


def distribution_from_yaml(
    distribution: Mapping[str, object], config: ExperimentConfig
) -> dict[str, ParameterDistribution]:
    """Validate a ``param_distributions``-style mapping through the config loader.

    The mapping is put in place of ``param_distributions.real`` of ``config`` and the whole
    config re-validated with :func:`~bo_voids.config.config_from_dict`, so it is exactly what
    pasting it into the YAML would give.

    Args:
        distribution: ``{"void_shape": {...}, "void_count": {"mean": .., "std": ..}, ...}``.
        config: The experiment's config (bounds, other distributions).

    Returns:
        The typed distributions, usable with :meth:`SearchSpace.sample`.

    Raises:
        ConfigError: If the mapping is not a valid distribution for these bounds.
    """
    raw = config.to_dict()
    named = raw["param_distributions"]
    assert isinstance(named, Mapping)  # to_dict writes the distributions as a mapping
    raw["param_distributions"] = {**named, "real": _plain(distribution)}
    return config_from_dict(raw, check_paths=False).param_distributions["real"]


def typed_distribution(
    distribution: Mapping[str, ParameterDistribution | Mapping[str, float]],
    config: ExperimentConfig,
) -> Mapping[str, ParameterDistribution]:
    """Typed distributions from a config-form or already typed mapping.

    The design parameters are validated through the config loader
    (:func:`distribution_from_yaml`); imaging nuisance parameters (a population fit ψ of a run
    with an ``imaging:`` block holds them) become normal distributions, clipped to their bounds
    when drawn.

    Raises:
        ConfigError: An invalid distribution, or a nuisance parameter the config lacks.
    """
    already = {k: v for k, v in distribution.items() if not isinstance(v, Mapping)}
    if len(already) == len(distribution):
        return already
    nuisance_bounds = config.imaging.nuisance_bounds()
    nuisance = {k: v for k, v in distribution.items() if k.startswith(NUISANCE_PREFIX)}
    unknown = sorted(set(nuisance) - set(nuisance_bounds))
    if unknown:
        raise ConfigError(
            f"unknown imaging parameter(s) {unknown}; the experiment's nuisance parameters are "
            f"{sorted(nuisance_bounds)}"
        )
    design = {k: v for k, v in distribution.items() if k not in nuisance}
    typed: dict[str, ParameterDistribution] = dict(distribution_from_yaml(design, config))
    for name, d in nuisance.items():
        if not isinstance(d, Mapping):
            raise ConfigError(f"{name} must be given as {{mean, std}} here, got {d!r}")
        typed[name] = NormalDistribution(float(d["mean"]), float(d["std"]))
    return typed


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def yaml_snippet(distribution: Mapping[str, Mapping[str, float]], name: str = "real") -> str:
    """The distribution as YAML lines to paste under ``param_distributions:``.

    Args:
        distribution: The config-form distribution.
        name: Key to put it under (``real`` to replace the simulated targets' distribution).

    Returns:
        A YAML string: a ``real:`` line, then one ``name: {...}`` line per parameter.
    """
    lines = [f"  {name}:"]
    for key, value in distribution.items():
        inner = ", ".join(f"{k}: {float(v):.6g}" for k, v in value.items())
        lines.append(f"    {key}: {{{inner}}}")
    return "\n".join(lines) + "\n"


def distribution_errors(
    estimate: Mapping[str, Mapping[str, float]],
    truth: Mapping[str, Mapping[str, float]],
    bounds: Mapping[str, ParameterBounds],
) -> JsonObject:
    """Errors of a config-form distribution against a known one.

    Args:
        estimate: The estimated distribution.
        truth: The true distribution (same form).
        bounds: ``param_bounds`` (ranges normalise the errors).

    Returns:
        ``{"per_parameter": {name: {"mean_error", "std_error"} or {"tv"}}, "mean_error",
        "std_error", "shape_tv"}``: numeric errors are ``|estimate - truth| / range``; the
        summary ``mean_error`` / ``std_error`` average them over the numeric parameters;
        ``shape_tv`` is the total-variation distance of the shape probabilities.
    """
    per: dict[str, dict[str, float]] = {}
    mean_errs, std_errs, tv = [], [], math.nan
    for name in PARAMETER_NAMES:
        b = bounds[name]
        est, tru = estimate[name], truth[name]
        if isinstance(b, CategoricalBounds):
            keys = set(est) | set(tru)
            tv = 0.5 * sum(abs(float(est.get(k, 0.0)) - float(tru.get(k, 0.0))) for k in keys)
            per[name] = {"tv": float(tv)}
            continue
        span = float(b.high) - float(b.low)
        me = abs(float(est["mean"]) - float(tru["mean"])) / span
        se = abs(float(est["std"]) - float(tru["std"])) / span
        per[name] = {"mean_error": me, "std_error": se}
        mean_errs.append(me)
        std_errs.append(se)
    return {
        "per_parameter": per,
        "mean_error": float(np.mean(mean_errs)),
        "std_error": float(np.mean(std_errs)),
        "shape_tv": float(tv),
    }
