"""Tests, null bands and the held-out scheme of the validation (calibration.validate)."""

from __future__ import annotations

import numpy as np
import pytest

from bo_voids.calibration import TargetDesign, target_folds
from bo_voids.calibration.validate import Rendered
from bo_voids.metrics import MMDScorer
from bo_voids.statistics import permutation_test, pool_null_band, stratified_permutation_test

D, REPS = 4, 3


def _sets(g: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` Gaussian "parameter sets" × ``REPS`` renders, and the set label of each image."""
    means = g.normal(size=(n, D)) + shift
    X = np.vstack([m + 0.5 * g.normal(size=(REPS, D)) for m in means])
    return X, np.repeat(np.arange(n), REPS)


def _pool(X: np.ndarray, groups: np.ndarray) -> Rendered:
    n = int(groups.max()) + 1
    return Rendered("null_pool", [{}] * n, REPS, X, groups, [0] * len(X))


# --------------------------------------------------------------------------------------------
# Stratified permutation test
# --------------------------------------------------------------------------------------------
def test_one_stratum_equals_the_cluster_permutation_test() -> None:
    g = np.random.default_rng(0)
    X, xg = _sets(g, 4)
    Y, yg = _sets(g, 4)
    bw = MMDScorer().fit(Y).bandwidths_
    assert bw is not None
    ours, perm = stratified_permutation_test([(X, Y, xg, yg)], 500, 0, bandwidths=bw)
    ref = permutation_test(X, Y, 500, 0, bandwidth=list(bw), x_groups=xg, y_groups=yg)
    assert ours.exact and ref.exact and ours.scheme == ref.scheme == "cluster"
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.p_value)
    assert ours.n_distinct_splits == ref.n_distinct_splits == 70
    assert ours.min_attainable_p == pytest.approx(ref.min_attainable_p)
    assert perm.size == 70 and perm[0] == pytest.approx(ours.statistic)


def test_stratified_test_is_valid_under_the_null_and_rejects_a_shift() -> None:
    """200 seeded null draws (3 folds: 3 fresh sets vs 1 held-out cluster each)."""
    g = np.random.default_rng(1)
    bw = (1.5, 3.0)

    def draw(shift: float) -> float:
        strata = []
        for _ in range(3):
            X, xg = _sets(g, 3, shift)
            Y, yg = _sets(g, 1)
            strata.append((X, Y, xg, yg))
        res, _ = stratified_permutation_test(strata, 200, int(g.integers(1 << 30)), bandwidths=bw)
        assert res.exact and res.n_distinct_splits == 4**3 and res.scheme == "cluster"
        return res.p_value

    null = np.array([draw(0.0) for _ in range(200)])
    assert 0.02 <= np.mean(null <= 0.05) <= 0.09
    alt = np.array([draw(3.0) for _ in range(20)])
    assert np.mean(alt <= 0.05) >= 0.9


def test_stratified_test_random_branch_and_image_scheme() -> None:
    g = np.random.default_rng(2)
    strata = [(g.normal(size=(9, D)), g.normal(size=(6, D)), None, None) for _ in range(3)]
    res, perm = stratified_permutation_test(strata, 300, 0, bandwidths=(2.0,))
    assert not res.exact and res.scheme == "image"
    assert res.n_permutations == 300 and res.min_attainable_p == pytest.approx(1 / 301)
    assert res.n_distinct_splits == 5005**3
    assert perm.size == 301
    with pytest.raises(ValueError, match="stratum"):
        stratified_permutation_test([], bandwidths=(1.0,))


# --------------------------------------------------------------------------------------------
# Simulated null band from a rendered pool
# --------------------------------------------------------------------------------------------
def test_pool_band_statistic_is_the_scorers() -> None:
    g = np.random.default_rng(3)
    T, _ = _sets(g, 5)
    P, pg = _sets(g, 6)
    scorer = MMDScorer().fit(T)
    band = pool_null_band(_pool(P, pg), [T], 6, scorer, n_draws=10)
    assert band.scheme == "simulated" and band.n_draws == 10
    assert band.mean == pytest.approx(scorer.score(P)) and band.std == pytest.approx(0, abs=1e-12)
    # too small a pool: a NaN band with a reason, not an exception
    small = pool_null_band(_pool(P, pg), [T], 7, scorer)
    assert not small.available and small.reason


def test_pool_band_coverage_on_a_true_null() -> None:
    """Share of fresh true-null samples above the band's q95, over 200 seeded (pool, sample)."""
    g = np.random.default_rng(4)
    T, _ = _sets(g, 5)
    scorer = MMDScorer().fit(T)
    above = 0
    for i in range(200):
        band = pool_null_band(_pool(*_sets(g, 16)), [T], 5, scorer, random_state=i)
        above += scorer.score(_sets(g, 5)[0]) > band.q95
    assert 0.02 <= above / 200 <= 0.09


# --------------------------------------------------------------------------------------------
# Held-out folds
# --------------------------------------------------------------------------------------------
def _design(groups: list[str], source: str = "simulated") -> TargetDesign:
    return TargetDesign.from_groups(np.asarray(groups), source)


def test_design_of_clustered_and_iid_targets() -> None:
    clustered = _design([f"real_ps_{i}" for i in range(5) for _ in range(3)])
    assert clustered.clustered and clustered.cluster_size == 3 and clustered.n_units == 5
    assert clustered.scheme == "cluster" and clustered.test_groups is not None
    iid = _design([f"image_{i}" for i in range(7)], "folder")
    assert not iid.clustered and iid.cluster_size == 1 and iid.test_groups is None
    assert iid.scheme == "image"


def test_folds_leave_one_cluster_out_and_partition_the_targets() -> None:
    design = _design([f"real_ps_{i}" for i in range(5) for _ in range(3)])
    folds, scheme = target_folds(design, 5, random_state=0)
    assert scheme == "leave-one-cluster-out" and len(folds) == 5
    assert all(len(f.units) == 1 and f.held_out.sum() == 3 for f in folds)
    assert np.array_equal(np.sum([f.held_out for f in folds], axis=0), np.ones(15))
    folds3, scheme3 = target_folds(design, 3, random_state=0)
    assert scheme3 == "3-fold over clusters" and len(folds3) == 3


@pytest.mark.parametrize(("m", "k"), [(15, 5), (5, 2), (4, 2)])
def test_folds_over_images_of_an_iid_folder(m: int, k: int) -> None:
    folds, scheme = target_folds(_design([f"image_{i}" for i in range(m)], "folder"))
    assert scheme == f"{k}-fold over images" and len(folds) == k
    assert all(f.held_out.sum() >= 2 and m - f.held_out.sum() >= 2 for f in folds)


@pytest.mark.parametrize("m", [2, 3])
def test_too_few_targets_for_held_out(m: int) -> None:
    folds, reason = target_folds(_design([f"image_{i}" for i in range(m)], "folder"))
    assert folds == [] and "held-out validation needs" in reason and f"{m} target" in reason
