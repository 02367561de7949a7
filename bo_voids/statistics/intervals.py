"""Intervals that carry resampling error, and the checks that they cover.

* :func:`dirichlet_weights` — Bayesian-bootstrap weights over exchangeable units (target images
  of a folder, target clusters of a simulated set): each replicate re-weights the units with
  ``n · Dirichlet(1, …, 1)`` (Rubin 1981; the weighted likelihood bootstrap of Newton &
  Raftery 1994).
* :func:`one_step_bootstrap` — the estimator refitted under each replicate's weights, to first
  order: one Newton step from the fit, ``Δ_b = H⁻¹ Σ_c (w_bc − 1) s_c`` with ``s_c`` the
  gradient of unit ``c``'s log-likelihood at the fit and ``H`` the Hessian of the negative log
  posterior. Its spread is the sandwich ``H⁻¹ J H⁻¹``: the sampling error of the fit whether or
  not the model is right, where the Laplace ``H⁻¹`` is right only when it is.
* :func:`quantile_intervals`, :func:`binomial_interval`, :func:`coverage`,
  :func:`rank_statistic` — what a simulation-based calibration (Talts et al. 2018) reports:
  expected coverage per level with Clopper–Pearson intervals, and ranks of the truth among
  the posterior draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta

__all__ = [
    "COVERAGE_LEVELS",
    "binomial_interval",
    "coverage",
    "dirichlet_weights",
    "one_step_bootstrap",
    "quantile_intervals",
    "rank_statistic",
]

#: Levels at which expected coverage is reported.
COVERAGE_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)


def dirichlet_weights(n_units: int, n_replicates: int, seed: int) -> np.ndarray:
    """`(n_replicates, n_units)` Bayesian-bootstrap weights, each row summing to ``n_units``."""
    if n_units < 1 or n_replicates < 1:
        raise ValueError(f"need >= 1 unit and replicate, got {n_units}, {n_replicates}")
    gen = np.random.default_rng(seed)
    return gen.dirichlet(np.ones(int(n_units)), size=int(n_replicates)) * n_units


def one_step_bootstrap(
    unit_scores: ArrayLike, covariance: ArrayLike, weights: ArrayLike
) -> np.ndarray:
    """First-order refits of an M-estimator under bootstrap weights.

    Args:
        unit_scores: `(n, dim)` gradient of each unit's log-likelihood at the fit.
        covariance: `(dim, dim)` inverse Hessian of the negative log posterior at the fit.
        weights: `(B, n)` weights (e.g. :func:`dirichlet_weights`).

    Returns:
        `(B, dim)` shifts of the estimate, one per replicate (add them to the fit).
    """
    S = np.asarray(unit_scores, dtype=np.float64)
    C = np.asarray(covariance, dtype=np.float64)
    W = np.asarray(weights, dtype=np.float64)
    if S.ndim != 2 or W.ndim != 2 or W.shape[1] != S.shape[0] or C.shape != (S.shape[1],) * 2:
        raise ValueError(f"shapes do not match: scores {S.shape}, cov {C.shape}, w {W.shape}")
    return ((W - 1.0) @ S) @ C.T


def quantile_intervals(draws: ArrayLike, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` quantile range of each column of `(n, dim)` draws."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    X = np.asarray(draws, dtype=np.float64)
    lo, hi = np.quantile(X, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson interval of a proportion ``k / n``."""
    if n <= 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def rank_statistic(truth: float, draws: Sequence[float]) -> float:
    """Normalised rank of the truth among posterior draws (uniform on [0, 1] when calibrated)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.isfinite(truth):
        return float("nan")
    below = np.count_nonzero(d < truth)
    ties = np.count_nonzero(d == truth)
    return float((below + 0.5 * ties) / d.size)


def coverage(
    covered: Mapping[float, Sequence[bool]], *, confidence: float = 0.95
) -> dict[str, dict[str, float]]:
    """Expected coverage per nominal level with its Clopper–Pearson interval.

    Args:
        covered: ``{level: one bool per dataset}`` (whether the interval held the truth).
        confidence: Confidence of the binomial intervals.

    Returns:
        ``{"0.9": {"nominal", "rate", "lo", "hi", "n"}, ...}``.
    """
    out = {}
    for level, flags in covered.items():
        f = np.asarray(list(flags), dtype=bool)
        k, n = int(f.sum()), int(f.size)
        lo, hi = binomial_interval(k, n, confidence)
        out[f"{level:g}"] = {
            "nominal": float(level),
            "rate": k / n if n else float("nan"),
            "lo": lo,
            "hi": hi,
            "n": n,
        }
    return out
