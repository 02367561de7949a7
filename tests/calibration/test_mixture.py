"""The simplex mixture fit (bo_voids.calibration.mixture)."""

from __future__ import annotations

import numpy as np
import pytest

from bo_voids.calibration import fit_mixture, mixture_terms
from bo_voids.metrics import MMDScorer, rbf_kernel


def _gaussian_sets(
    seed: int = 0, n_sets: int = 12, reps: int = 6, d: int = 6
) -> tuple[dict[str, np.ndarray], np.random.Generator, list[np.ndarray]]:
    g = np.random.default_rng(seed)
    means = [g.normal(0.0, 3.0, size=d) for _ in range(n_sets)]
    sets = {f"ps_{i:02d}": mu + 0.5 * g.normal(size=(reps, d)) for i, mu in enumerate(means)}
    return sets, g, means


@pytest.mark.parametrize("within", ["biased", "unbiased"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_concentrate_on_the_two_true_components(seed: int, within: str) -> None:
    sets, g, means = _gaussian_sets(seed)
    a, b = 2, 7
    targets = np.vstack(
        [means[a] + 0.5 * g.normal(size=(20, 6)), means[b] + 0.5 * g.normal(size=(20, 6))]
    )
    fit = fit_mixture(sets, targets, MMDScorer().fit(targets), within=within)
    w = dict(zip(fit.ids, fit.weights, strict=True))
    assert w["ps_02"] + w["ps_07"] > 0.9
    assert w["ps_02"] == pytest.approx(0.5, abs=0.15)
    assert w["ps_07"] == pytest.approx(0.5, abs=0.15)
    assert 2 <= fit.n_components <= 4
    assert fit.weights.sum() == pytest.approx(1.0) and (fit.weights >= 0).all()
    assert fit.mmd2 < fit.per_set_mmd2.min()  # the mixture beats every single set


def test_dropping_same_seed_pairs_recovers_independent_cross_terms() -> None:
    """Under a shared seed block, A_01 without the same-seed pairs matches independent renders."""
    g = np.random.default_rng(0)
    d, reps, bw = 4, 3, (1.5,)
    mu0, mu1 = np.zeros(d), np.full(d, 0.3)
    T = g.normal(size=(4, d))
    drop, keep, indep = [], [], []
    for _ in range(300):
        block = g.normal(size=(reps, d))  # replication r of both sets: one chip, one rotation
        X0 = mu0 + block + 0.3 * g.normal(size=(reps, d))
        X1 = mu1 + block + 0.3 * g.normal(size=(reps, d))
        X1_fresh = mu1 + g.normal(size=(reps, d)) + 0.3 * g.normal(size=(reps, d))
        seeds = [[0, 1, 2], [0, 1, 2]]
        drop.append(mixture_terms([X0, X1], T, bw, set_seeds=seeds)[0][0, 1])
        keep.append(mixture_terms([X0, X1], T, bw)[0][0, 1])
        indep.append(mixture_terms([X0, X1_fresh], T, bw)[0][0, 1])
    assert np.mean(drop) == pytest.approx(np.mean(indep), abs=0.03)
    assert np.mean(keep) > np.mean(indep) + 0.1  # shared seeds inflate the cross term


def test_same_seed_cross_pairs_are_dropped() -> None:
    sets, g, _ = _gaussian_sets(6, n_sets=3, reps=3)
    targets = g.normal(size=(10, 6))
    bw = MMDScorer().fit(targets).bandwidths_
    assert bw is not None
    arrays = list(sets.values())
    seeds = [[1, 2, 3], [1, 2, 4], [None, None, None]]  # sets 0 and 1 share seeds 1 and 2
    A, b, c = mixture_terms(arrays, targets, bw, set_seeds=seeds)
    A_all, b_all, c_all = mixture_terms(arrays, targets, bw)
    K01 = rbf_kernel(arrays[0], arrays[1], bw)
    keep = np.ones((3, 3), bool)
    keep[0, 0] = keep[1, 1] = False
    assert A[0, 1] == pytest.approx(K01[keep].mean()) and A[1, 0] == A[0, 1]
    assert A_all[0, 1] == pytest.approx(K01.mean())
    # unknown seeds never match; within-set terms, b and c are untouched
    np.testing.assert_allclose(A[[0, 1], 2], A_all[[0, 1], 2])
    np.testing.assert_allclose(np.diag(A), np.diag(A_all))
    np.testing.assert_allclose(b, b_all)
    assert c == c_all
    with pytest.raises(ValueError, match="seeds"):
        mixture_terms(arrays, targets, bw, set_seeds=[[1, 2], [1, 2, 3], [4, 5, 6]])


def test_per_set_terms_equal_the_scorer() -> None:
    sets, g, _ = _gaussian_sets(3)
    targets = g.normal(size=(15, 6))
    scorer = MMDScorer().fit(targets)
    assert scorer.bandwidths_ is not None
    A, b, c = mixture_terms(list(sets.values()), targets, scorer.bandwidths_)
    per_set = np.diag(A) - 2 * b + c
    expected = [scorer.score(x) for x in sets.values()]
    np.testing.assert_allclose(per_set, expected, rtol=1e-9, atol=1e-12)
    # biased within-set form, uniform weights: exactly the V-statistic of the pooled sets
    w = np.full(len(sets), 1 / len(sets))
    Ab, bb, cb = mixture_terms(list(sets.values()), targets, scorer.bandwidths_, within="biased")
    v_scorer = MMDScorer(bandwidth=scorer.bandwidths_, unbiased=False).fit(targets)
    pooled = v_scorer.score(np.vstack(list(sets.values())))
    assert float(w @ Ab @ w - 2 * bb @ w + cb) == pytest.approx(pooled, abs=1e-9)


def test_pruning_limits_components() -> None:
    sets, g, means = _gaussian_sets(4)
    targets = np.vstack([m + 0.5 * g.normal(size=(4, 6)) for m in means[:6]])
    fit = fit_mixture(sets, targets, MMDScorer().fit(targets), max_components=3, min_weight=0.05)
    assert 1 <= fit.n_components <= 3
    assert all(w >= 0.05 for _, w in fit.components)
    with pytest.raises(ValueError, match="max_components"):
        fit_mixture(sets, targets, MMDScorer().fit(targets), max_components=0)
