"""Interval machinery: the bootstrap covers a known truth at its nominal rate."""

from __future__ import annotations

import numpy as np
import pytest

from bo_voids.statistics.intervals import (
    binomial_interval,
    coverage,
    dirichlet_weights,
    one_step_bootstrap,
    quantile_intervals,
    rank_statistic,
)


def _mean_and_log_sd_interval(x: np.ndarray, level: float, seed: int) -> np.ndarray:
    """One-step Bayesian bootstrap of the Gaussian MLE (mean, log sd) of ``x``."""
    n = x.size
    mu, sd = x.mean(), x.std()
    # per-unit scores of (mu, log sd) and the Hessian of the negative log-likelihood
    z = (x - mu) / sd
    scores = np.stack([z / sd, z**2 - 1.0], axis=1)
    cov = np.diag([sd**2 / n, 1.0 / (2.0 * n)])
    shifts = one_step_bootstrap(scores, cov, dirichlet_weights(n, 2000, seed))
    lo, hi = quantile_intervals(np.array([mu, np.log(sd)]) + shifts, level)
    return np.stack([lo, hi])


def test_bootstrap_covers_a_known_truth_at_its_nominal_rate() -> None:
    g = np.random.default_rng(0)
    truth = np.array([1.5, np.log(2.0)])
    runs = 400
    hits = {0.5: np.zeros(2), 0.9: np.zeros(2)}
    for i in range(runs):
        # the MLE of log sd is biased by about -1/n: n large enough that it is small
        x = 1.5 + 2.0 * g.standard_normal(200)
        for level in hits:
            lo, hi = _mean_and_log_sd_interval(x, level, i)
            hits[level] += (lo <= truth) & (truth <= hi)
    # binomial sd over 400 runs: 0.025 at 0.5, 0.015 at 0.9
    assert np.all(np.abs(hits[0.5] / runs - 0.5) < 0.08)
    assert np.all(np.abs(hits[0.9] / runs - 0.9) < 0.05)


def test_weights_and_shapes() -> None:
    w = dirichlet_weights(7, 50, 3)
    assert w.shape == (50, 7) and np.allclose(w.sum(axis=1), 7.0) and (w > 0).all()
    assert np.array_equal(w, dirichlet_weights(7, 50, 3))
    with pytest.raises(ValueError, match="shapes"):
        one_step_bootstrap(np.zeros((7, 2)), np.eye(3), w)
    # equal weights move nothing
    assert np.allclose(one_step_bootstrap(np.ones((7, 2)), np.eye(2), np.ones((4, 7))), 0.0)


def test_binomial_interval_and_coverage_table() -> None:
    lo, hi = binomial_interval(90, 100)
    assert 0.82 < lo < 0.84 and 0.94 < hi < 0.96
    assert binomial_interval(0, 10)[0] == 0.0 and binomial_interval(10, 10)[1] == 1.0
    table = coverage({0.9: [True] * 9 + [False], 0.5: [True, False]})
    assert table["0.9"]["rate"] == pytest.approx(0.9) and table["0.9"]["n"] == 10
    assert table["0.5"]["lo"] < 0.5 < table["0.5"]["hi"]


def test_rank_statistic_is_uniform_when_calibrated() -> None:
    g = np.random.default_rng(2)
    ranks = [rank_statistic(g.normal(), g.normal(size=200)) for _ in range(2000)]
    hist, _ = np.histogram(ranks, bins=5, range=(0, 1))
    assert hist.min() > 330 and hist.max() < 470  # 400 expected per bin
