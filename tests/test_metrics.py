from __future__ import annotations

import json

import numpy as np
import pytest

from bo_voids.exceptions import BoVoidsError, StateError
from bo_voids.metrics import (
    MULTI_BANDWIDTH_MULTIPLIERS,
    MMDScorer,
    epsilon_ball_share,
    epsilon_from_real,
    kid,
    median_bandwidth,
    mmd2,
    nearest_real_distances,
    pairwise_sq_dists,
    per_set_mmd2,
    pooled_mmd2,
    rbf_kernel,
    resolve_bandwidths,
)
from bo_voids.seeding import rng
from bo_voids.statistics import (
    NullBand,
    PermutationResult,
    half_split_noise_floor,
    null_band_from_statistics,
    null_variance_factor,
    permutation_test,
    rescale_noise_floor,
    split_null_band,
)


def _gauss(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    x = rng(seed, "test-metrics", n, d).normal(size=(n, d))
    x[:, 0] += shift
    return x


# ----------------------------------------------------------------------------------- distances
def test_pairwise_sq_dists_matches_brute_force() -> None:
    X, Y = _gauss(1, 7, 5), _gauss(2, 4, 5)
    brute = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_sq_dists(X, Y), brute, rtol=1e-10, atol=1e-12)
    same = pairwise_sq_dists(X)
    assert np.all(np.diag(same) == 0.0) and np.all(same >= 0.0)
    np.testing.assert_allclose(same, same.T)


def test_median_bandwidth_on_hand_built_points() -> None:
    # distances 1, 3, 2 -> median 2
    assert median_bandwidth(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(2.0)
    # pooled: same three points split over X and Y
    assert median_bandwidth(np.array([[0.0]]), np.array([[1.0], [3.0]])) == pytest.approx(2.0)


def test_median_bandwidth_guards_against_zero() -> None:
    dup = np.array([[0.0], [0.0], [0.0], [0.0], [2.0]])  # 6 of 10 pairs are duplicates
    assert median_bandwidth(dup) == pytest.approx(2.0)
    assert median_bandwidth(np.zeros((4, 3))) == 1.0


def test_rbf_kernel_is_mean_over_bandwidths() -> None:
    X = np.array([[0.0], [1.0]])
    K = rbf_kernel(X, None, [1.0, 2.0])
    np.testing.assert_allclose(np.diag(K), 1.0)
    expected = 0.5 * (np.exp(-0.5) + np.exp(-1 / 8))
    assert K[0, 1] == pytest.approx(expected)


def test_resolve_bandwidths() -> None:
    X = np.array([[0.0], [1.0], [3.0]])
    assert resolve_bandwidths("median", X) == pytest.approx((2.0,))
    multi = resolve_bandwidths("multi", X)
    assert multi == pytest.approx(tuple(2.0 * m for m in MULTI_BANDWIDTH_MULTIPLIERS))
    assert resolve_bandwidths(0.5, X) == (0.5,)
    with pytest.raises(ValueError, match="bandwidth"):
        resolve_bandwidths("silverman", X)
    with pytest.raises(ValueError, match="> 0"):
        resolve_bandwidths([1.0, -1.0], X)


# ----------------------------------------------------------------------------------------- MMD
def test_identical_sets() -> None:
    X = _gauss(3, 30, 6)
    assert mmd2(X, X, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # unbiased on the *same* rows: 2 (mean_offdiag - 1) / n, so within [-2/n, 0]
    val = mmd2(X, X)
    assert -2.0 / 30 - 1e-12 <= val <= 1e-12


@pytest.mark.parametrize("bandwidth", ["median", "multi", "fixed"])
def test_shifted_gaussians_analytic_ordering(bandwidth: str) -> None:
    d, n = 8, 60
    bw = [np.sqrt(2 * d)] if bandwidth == "fixed" else bandwidth
    means = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        vals = [mmd2(_gauss(r, n, d), _gauss(100 + r, n, d, shift), bandwidth=bw) for r in range(5)]
        means.append(np.mean(vals))
    assert abs(means[0]) < 0.02
    assert means[0] < means[1] < means[2] < means[3]


def test_unbiased_estimator_mean_is_zero_for_same_distribution() -> None:
    d, n, reps = 4, 12, 300
    bw = [np.sqrt(2 * d)]
    unb = np.array(
        [mmd2(_gauss(r, n, d), _gauss(10_000 + r, n, d), bandwidth=bw) for r in range(reps)]
    )
    biased = np.array(
        [
            mmd2(_gauss(r, n, d), _gauss(10_000 + r, n, d), bandwidth=bw, unbiased=False)
            for r in range(reps)
        ]
    )
    se = unb.std(ddof=1) / np.sqrt(reps)
    assert abs(unb.mean()) < 4 * se
    assert (unb < 0).any()  # the U-statistic can be negative
    assert biased.mean() > unb.mean() + 10 * se  # the V-statistic is biased upwards
    assert (biased >= -1e-12).all()


def test_mmd2_is_symmetric_and_row_order_invariant() -> None:
    X, Y = _gauss(4, 10, 3), _gauss(5, 13, 3, 0.7)
    for bw in ("median", "multi", [1.0, 3.0]):
        a = mmd2(X, Y, bandwidth=bw)
        assert mmd2(Y, X, bandwidth=bw) == pytest.approx(a, abs=1e-12)
        assert mmd2(X[::-1], Y[::-1], bandwidth=bw) == pytest.approx(a, abs=1e-12)


def test_multi_bandwidth_does_not_saturate() -> None:
    d, n = 4, 20
    X = _gauss(6, n, d)
    med = [mmd2(X, _gauss(7, n, d, s), bandwidth=[2.0]) for s in (20.0, 40.0)]
    multi = [
        mmd2(X, _gauss(7, n, d, s), bandwidth=[2.0 * m for m in MULTI_BANDWIDTH_MULTIPLIERS])
        for s in (20.0, 40.0)
    ]
    assert med[1] - med[0] < 1e-6  # a single σ has saturated (far sets look alike)
    assert multi[1] > multi[0] + 1e-3  # the mixture keeps growing


def test_mmd2_input_errors() -> None:
    X = _gauss(8, 5, 3)
    with pytest.raises(ValueError, match="different numbers of features"):
        mmd2(X, _gauss(9, 5, 4))
    with pytest.raises(ValueError, match="Y needs at least 2"):
        mmd2(X, X[:1])
    assert np.isfinite(mmd2(X, X[:1], unbiased=False))
    with pytest.raises(ValueError, match="2-D"):
        mmd2(X[0], X)


@pytest.mark.parametrize(
    "call",
    [
        lambda X, Y: mmd2(X, Y),
        lambda X, Y: mmd2(X, Y, bandwidth=[1.0]),
        lambda X, Y: kid(X, Y),
        lambda X, Y: permutation_test(X, Y, n_permutations=10),
        lambda X, Y: nearest_real_distances(X, Y),
        lambda X, Y: epsilon_ball_share(X, Y, 1.0),
        lambda X, Y: MMDScorer().fit(Y).score(X),
    ],
)
def test_nan_rejected(call) -> None:
    X, Y = _gauss(10, 6, 3), _gauss(11, 6, 3)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        call(X, Y)
    Y2 = Y.copy()
    Y2[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        call(np.nan_to_num(X), Y2)


# ----------------------------------------------------------------------------------------- KID
def test_kid_ordering_and_null() -> None:
    d, n = 8, 60
    vals = [
        np.mean([kid(_gauss(r, n, d), _gauss(200 + r, n, d, s)) for r in range(5)])
        for s in (0.0, 0.5, 1.0, 2.0)
    ]
    assert vals[0] < vals[1] < vals[2] < vals[3]
    assert abs(vals[0]) < 0.1 * vals[3]


def test_kid_matches_definition() -> None:
    X, Y = _gauss(12, 5, 3), _gauss(13, 4, 3)
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(X[i], X[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(Y[i], Y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(X[i], Y[j]) for i in range(5) for j in range(4)) / 20
    assert kid(X, Y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


# -------------------------------------------------------------------------- permutation test
def test_permutation_test_matches_mmd2_and_is_deterministic() -> None:
    X, Y = _gauss(14, 24, 16), _gauss(15, 16, 16, 0.3)
    result = permutation_test(X, Y, n_permutations=200, random_state=3)
    stat, p = result  # unpacks like the historical (statistic, p_value) tuple
    assert stat == pytest.approx(mmd2(X, Y), abs=1e-12)
    assert permutation_test(X, Y, n_permutations=200, random_state=3) == result
    assert 1 / 201 <= p <= 1.0
    assert (result.scheme, result.exact, result.n_permutations) == ("image", False, 200)
    assert result.min_attainable_p == pytest.approx(1 / 201)
    stat_b, _ = permutation_test(X, Y, n_permutations=20, unbiased=False, bandwidth="multi")
    assert stat_b == pytest.approx(mmd2(X, Y, unbiased=False, bandwidth="multi"), abs=1e-12)
    gen = np.random.default_rng(0)
    assert 0 < permutation_test(X, Y, n_permutations=20, random_state=gen).p_value <= 1


def test_permutation_p_value_roughly_uniform_under_null() -> None:
    ps = np.array(
        [
            permutation_test(
                _gauss(r, 15, 4), _gauss(5000 + r, 15, 4), n_permutations=200, random_state=r
            ).p_value
            for r in range(100)
        ]
    )
    assert np.mean(ps < 0.05) <= 0.15
    assert 0.35 <= ps.mean() <= 0.65


def test_permutation_p_value_small_under_clear_shift() -> None:
    X, Y = _gauss(16, 24, 8), _gauss(17, 16, 8, 3.0)
    _, p = permutation_test(X, Y, n_permutations=1000, random_state=0)
    assert p < 0.01
    assert p == pytest.approx(1 / 1001)


def test_permutation_test_rejects_bad_count() -> None:
    with pytest.raises(ValueError, match="n_permutations"):
        permutation_test(_gauss(1, 4, 2), _gauss(2, 4, 2), n_permutations=0)


# --------------------------------------------------------- clustered samples: model and tests
# Simulated clustered model (the shape of sets × renders): cluster means ~ N(0, τ² I), renders
# ~ N(mean, σ² I). Sibling renders are closer to each other than to other clusters, as target
# renders of one parameter set are.
D, TAU, SIGMA, SETS, REPS = 8, 1.0, 0.5, 5, 3
GROUPS = np.repeat(np.arange(SETS), REPS)


def _clustered(g: np.random.Generator, sets: int = SETS, shift: float = 0.0) -> np.ndarray:
    means = g.normal(0.0, TAU, size=(sets, D)) + shift
    return (means[:, None, :] + g.normal(0.0, SIGMA, size=(sets, REPS, D))).reshape(-1, D)


def _rates(shift: float, draws: int, seed: int) -> tuple[float, float]:
    """Rejection rates at α = 0.05 of the cluster and the image test, fresh 5 × 3 vs 5 × 3."""
    g = np.random.default_rng(seed)
    cluster = image = 0
    for i in range(draws):
        T = _clustered(g)
        X = _clustered(g, shift=shift)
        bw = list(MMDScorer().fit(T).bandwidths_)  # the run's kernel: fixed by the targets
        res = permutation_test(X, T, 500, i, bandwidth=bw, x_groups=GROUPS, y_groups=GROUPS)
        assert res.scheme == "cluster" and res.exact
        cluster += res.rejects(0.05)
        if shift == 0.0:
            image += permutation_test(X, T, 500, i, bandwidth=bw).rejects(0.05)
    return cluster / draws, image / draws


def test_cluster_permutation_test_holds_its_level_and_image_level_does_not() -> None:
    """On a clustered null the cluster test rejects ≈ 5 %; permuting images rejects most draws.

    The exact cluster test's rate is 12/252 = 0.048 in expectation; 300 draws give sd 0.012.
    The image-level test treats 15 correlated renders as 15 independent images, so its permuted
    statistics are too small: it rejects a true null ≈ 90 % of the time here (73 % on the real
    generator, see ``benchmarks/null_calibration.py``).
    """
    cluster, image = _rates(0.0, draws=300, seed=0)
    assert 0.02 <= cluster <= 0.09
    assert image > 0.5


def test_cluster_permutation_test_rejects_a_clear_alternative() -> None:
    cluster, _ = _rates(1.5, draws=100, seed=1)  # every cluster mean shifted by 1.5 τ per axis
    assert cluster >= 0.8


def test_exact_enumeration_of_cluster_splits() -> None:
    g = np.random.default_rng(2)
    X, Y = _clustered(g), _clustered(g, shift=10.0)  # nothing in common
    res = permutation_test(X, Y, 1000, x_groups=GROUPS, y_groups=GROUPS)
    assert res.exact and res.n_distinct_splits == 252 and res.n_permutations == 252
    assert (res.n_x_units, res.n_y_units) == (5, 5)
    # the observed split and its mirror (X and Y swapped) give the same MMD²
    assert res.min_attainable_p == pytest.approx(2 / 252)
    assert res.p_value == pytest.approx(2 / 252)
    sampled = permutation_test(X, Y, 100, random_state=0, x_groups=GROUPS, y_groups=GROUPS)
    assert not sampled.exact and sampled.n_distinct_splits == 252
    assert sampled.n_permutations == 100 and sampled.min_attainable_p == pytest.approx(1 / 101)
    assert sampled.p_value == pytest.approx(1 / 101)
    # iid images are enumerated too when there are few splits: C(6, 3) = 20
    tiny = permutation_test(X[:3], Y[:3], 1000)
    assert tiny.scheme == "image" and tiny.exact and tiny.n_distinct_splits == 20
    assert tiny.p_value == pytest.approx(2 / 20)


def test_permutation_result_serialises_and_labels_are_per_sample() -> None:
    g = np.random.default_rng(3)
    X, Y = _clustered(g), _clustered(g)
    res = permutation_test(X, Y, 300, random_state=0, x_groups=GROUPS, y_groups=GROUPS)
    assert isinstance(res, PermutationResult)
    data = json.loads(json.dumps(res.to_dict()))
    assert data["scheme"] == "cluster" and data["n_distinct_splits"] == 252
    # labels are namespaced per sample: "0" in X and "0" in Y are different clusters
    named = permutation_test(
        X, Y, 300, x_groups=[f"s{i}" for i in GROUPS], y_groups=[f"s{i}" for i in GROUPS]
    )
    assert named == res
    with pytest.raises(ValueError, match="x_groups has 14 labels"):
        permutation_test(X, Y, x_groups=GROUPS[:-1])


def test_mixed_cluster_sizes_skip_splits_with_too_few_images() -> None:
    g = np.random.default_rng(4)
    one_set = _clustered(g, sets=1)  # 3 renders of a single set
    iid = g.normal(size=(5, D))  # 5 independent images: 5 units of size 1
    res = permutation_test(one_set, iid, 1000, x_groups=[0, 0, 0])
    # 6 units, 1 goes to X: only the 3-render cluster leaves X with 2 images, so the observed
    # split is the only valid one and the test can say nothing
    assert res.scheme == "cluster" and res.exact
    assert res.n_distinct_splits == 1 and res.p_value == 1.0 and res.min_attainable_p == 1.0


# ------------------------------------------------------------------------------- null bands
def test_simulated_null_band_covers_fresh_null_draws() -> None:
    """The band of simulated null draws is exceeded by ≈ 5 % of fresh null draws."""
    g = np.random.default_rng(5)
    exceed = total = 0
    for _ in range(5):  # a few target folders, 200 band draws and 200 fresh draws each
        T = _clustered(g)
        scorer = MMDScorer().fit(T)
        sims = [scorer.score(_clustered(g)) for _ in range(200)]
        band = null_band_from_statistics(sims, n_sets=SETS, n_reps=REPS, n_reference=len(T))
        assert band.scheme == "simulated" and band.n_draws == 200 and band.n_judged == 15
        assert band.q05 < band.q50 < band.q95
        # sibling renders make the clustered null's mean positive even for the unbiased MMD²
        assert band.mean > 0
        fresh = np.array([scorer.score(_clustered(g)) for _ in range(200)])
        exceed += int(np.sum(fresh > band.q95))
        total += fresh.size
        assert band.contains(band.q50) and not band.contains(band.q95 + 1.0)
    assert 0.02 <= exceed / total <= 0.09


def test_cluster_split_band_covers_fresh_null_draws() -> None:
    """Whole-cluster splits of the targets, rescaled to the judged sizes, give a ≈ 5 % band.

    Targets: 15 clusters × 3 renders (with 5 target clusters the band has only 10 distinct
    values and is exceeded ≈ 13 % of the time, as documented in ``split_null_band``). The old
    half-split floor, by contrast, is exceeded by most fresh null draws.
    """
    g = np.random.default_rng(6)
    groups = np.repeat(np.arange(15), REPS)
    draws = 250
    exceed = exceed_old = 0
    for i in range(draws):
        T = _clustered(g, sets=15)
        scorer = MMDScorer().fit(T)
        band = split_null_band(T, groups, SETS, REPS, scorer=scorer, random_state=i)
        x = scorer.score(_clustered(g))
        exceed += x > band.q95
        exceed_old += x > half_split_noise_floor(scorer, n_splits=50, random_state=i)["q95"]
    assert band.scheme == "cluster-split" and band.split == (5, 10)
    assert band.n_distinct == 3003 and band.n_draws == 200 and band.sibling_excess > 0
    assert 0.02 <= exceed / draws <= 0.09
    assert exceed_old / draws > 0.3


def test_split_band_enumerates_small_folders_and_rescales() -> None:
    g = np.random.default_rng(7)
    T = _clustered(g)  # 5 clusters: a 5-set pseudo-sample would leave nothing to score against
    band = split_null_band(T, GROUPS, SETS, REPS, n_splits=200)
    assert band.split == (3, 2) and band.n_distinct == 10 and band.n_draws == 10
    assert 0 < band.scale < 1  # 3 vs 2 clusters spread more than 5 vs 5 would
    assert "10 distinct splits" in band.note
    iid = split_null_band(g.normal(size=(16, D)), None, 8, n_splits=100, random_state=0)
    assert iid.scheme == "image-split" and iid.split == (8, 8)
    # 8 vs the 8 left over, rescaled to 8 vs all 16 targets
    assert iid.scale == pytest.approx(
        np.sqrt(null_variance_factor(8, 16) / null_variance_factor(8, 8))
    )
    assert iid.sibling_excess == 0.0 and iid.note is None and iid.n_draws == 100
    assert abs(iid.mean) < iid.std  # iid unbiased null: mean 0
    noted = split_null_band(g.normal(size=(16, D)), None, 4, 3, n_splits=50)
    assert "iid" in noted.note
    assert split_null_band(T, GROUPS, 5, 3, n_splits=50, random_state=1) == split_null_band(
        T, GROUPS, 5, 3, n_splits=50, random_state=1
    )


@pytest.mark.parametrize(
    ("n_targets", "groups", "n_sets", "n_reps", "needs"),
    [
        (9, np.repeat([0, 1, 2], 3), 5, 3, "at least 4 target clusters"),
        (6, np.repeat([0, 1], 3), 1, 3, "at least 3 target clusters"),
        (3, None, 3, None, "at least 4 target images"),
        (3, None, 1, 3, "at least 4 target images"),
        (12, None, 1, None, "judged sample has 1 image"),
    ],
)
def test_split_band_degrades_to_nan_with_a_reason(
    n_targets: int, groups: object, n_sets: int, n_reps: int | None, needs: str
) -> None:
    T = np.random.default_rng(8).normal(size=(n_targets, D))
    band = split_null_band(T, groups, n_sets, n_reps)
    assert not band.available and np.isnan(band.q95) and needs in band.reason
    assert band.contains(0.0) is None and band.n_draws == 0


def test_split_band_minimum_cases_run() -> None:
    g = np.random.default_rng(9)
    assert split_null_band(_clustered(g, sets=3), np.repeat([0, 1, 2], 3), 1, 3).available
    assert split_null_band(_clustered(g, sets=4), np.repeat(range(4), 3), 5, 3).available
    assert split_null_band(g.normal(size=(4, D)), None, 2).available
    with pytest.raises(StateError):
        split_null_band(g.normal(size=(8, D)), None, 2, scorer=MMDScorer())
    with pytest.raises(ValueError, match="groups has 3 labels"):
        split_null_band(g.normal(size=(8, D)), [0, 0, 1], 2)


def test_null_band_round_trip_and_degenerate_statistics() -> None:
    band = null_band_from_statistics(np.linspace(0, 1, 11), n_sets=5, n_reps=3, n_reference=15)
    assert band.q50 == pytest.approx(0.5) and band.q95 == pytest.approx(0.95)
    data = json.loads(json.dumps(band.to_dict()))
    assert data["n_judged"] == 15 and NullBand.from_dict(data) == band
    split = split_null_band(_clustered(np.random.default_rng(10)), GROUPS, 5, 3)
    again = NullBand.from_dict(json.loads(json.dumps(split.to_dict())))
    assert again == split and again.split == (3, 2)
    empty = null_band_from_statistics([np.nan, 1.0], n_sets=5, n_reference=15)
    assert not empty.available and "1 finite" in empty.reason and empty.n_reps == 1
    rebuilt = NullBand.from_dict(json.loads(json.dumps(empty.to_dict())))
    assert rebuilt.reason == empty.reason and np.isnan(rebuilt.q95)
    with pytest.raises(ValueError, match="scheme"):
        NullBand.from_dict({**data, "scheme": "half-split"})
    with pytest.raises(ValueError, match="NullBand"):
        NullBand.from_dict({"scheme": "simulated"})


# ------------------------------------------------------------------------------- per sample
def test_nearest_distances_and_epsilon_ball_on_hand_built_points() -> None:
    real = np.array([[0.0, 0.0], [10.0, 0.0]])
    syn = np.array([[1.0, 0.0], [10.0, 2.0], [5.0, 0.0]])
    np.testing.assert_allclose(nearest_real_distances(syn, real), [1.0, 2.0, 5.0])
    np.testing.assert_allclose(nearest_real_distances(syn, real, chunk_size=1), [1.0, 2.0, 5.0])
    assert epsilon_ball_share(syn, real, epsilon=2.0) == pytest.approx(2 / 3)  # inclusive
    assert epsilon_ball_share(syn, real, epsilon=0.5) == 0.0

    line = np.array([[0.0], [1.0], [3.0], [7.0]])  # leave-one-out NN distances 1, 1, 2, 4
    assert epsilon_from_real(line) == pytest.approx(1.5)
    assert epsilon_from_real(line, "median") == pytest.approx(1.5)
    assert epsilon_from_real(line, 1.0) == pytest.approx(4.0)
    assert epsilon_from_real(line, 0.0) == pytest.approx(1.0)
    # default epsilon = median LOO distance of the real set (1.5)
    assert epsilon_ball_share(np.array([[0.5], [5.0], [8.4]]), line) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="quantile"):
        epsilon_from_real(line, 1.5)
    # across clusters: {0, 1} and {3, 7}; a sibling is never a neighbour -> 3, 2, 2, 6
    assert epsilon_from_real(line, groups=["a", "a", "b", "b"]) == pytest.approx(2.5)
    assert epsilon_from_real(line, 1.0, groups=[0, 0, 1, 1]) == pytest.approx(6.0)
    assert np.isnan(epsilon_from_real(line, groups=[0, 0, 0, 0]))
    assert np.isnan(epsilon_from_real(line[:1], groups=[0]))
    share = epsilon_ball_share(np.array([[0.5], [5.0]]), line, real_groups=[0, 0, 1, 1])
    assert share == pytest.approx(1.0)  # ε = 2.5: both within 2.5 of a real point
    assert np.isnan(epsilon_ball_share(line, line, real_groups=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match="epsilon"):
        epsilon_ball_share(line, line, -1.0)


# -------------------------------------------------------------------------------- MMDScorer
def test_scorer_equals_mmd2_with_fixed_bandwidths() -> None:
    T = _gauss(20, 16, 12)
    for unbiased in (True, False):
        scorer = MMDScorer(unbiased=unbiased).fit(T)
        med = median_bandwidth(T)
        assert scorer.median_distance_ == pytest.approx(med)
        assert scorer.bandwidths_ == pytest.approx(
            tuple(med * m for m in MULTI_BANDWIDTH_MULTIPLIERS)
        )
        for shift in (0.0, 1.0):
            X = _gauss(21, 9, 12, shift)
            expected = mmd2(X, T, bandwidth=scorer.bandwidths_, unbiased=unbiased)
            assert scorer.score(X) == pytest.approx(expected, abs=1e-12)
    assert MMDScorer("median").fit(T).bandwidths_ == pytest.approx((median_bandwidth(T),))
    assert MMDScorer([1.5, 3.0]).fit(T).bandwidths_ == (1.5, 3.0)


def test_scorer_bandwidths_do_not_depend_on_scored_set() -> None:
    T = _gauss(22, 16, 6)
    scorer = MMDScorer().fit(T)
    before = scorer.bandwidths_
    far, near = _gauss(23, 10, 6, 5.0), _gauss(24, 10, 6, 0.0)
    many = scorer.score_many([near, far])
    assert scorer.bandwidths_ == before
    assert many.shape == (2,) and many[0] < many[1]


def test_scorer_noise_floor() -> None:
    scorer = MMDScorer().fit(_gauss(25, 16, 10))
    nf = half_split_noise_floor(scorer, n_splits=50, random_state=0)
    assert set(nf) >= {"mean", "std", "q05", "q95", "n_splits"}
    assert nf["n_splits"] == 50 and nf["half_size"] == 8
    assert all(np.isfinite(nf[k]) for k in ("mean", "std", "q05", "q95"))
    assert nf["std"] > 0 and nf["q95"] > 0 and nf["q05"] < nf["q95"]
    assert abs(nf["mean"]) < nf["std"]  # unbiased: ~0 in expectation over splits
    assert half_split_noise_floor(scorer, n_splits=50, random_state=0) == nf
    assert half_split_noise_floor(scorer, n_splits=50, random_state=1) != nf
    biased = half_split_noise_floor(
        MMDScorer(unbiased=False).fit(_gauss(25, 16, 10)),
    )
    assert biased["mean"] > 0


def test_scorer_dict_round_trip() -> None:
    T = _gauss(26, 16, 8)
    scorer = MMDScorer().fit(T)
    data = json.loads(json.dumps(scorer.to_dict()))
    restored = MMDScorer.from_dict(data)
    assert not restored.fitted
    # refit on *different* targets keeps the stored bandwidths
    restored.fit(T[:10])
    assert restored.bandwidths_ == pytest.approx(scorer.bandwidths_, rel=1e-15)
    again = MMDScorer.from_dict(data, targets=T)
    X = _gauss(27, 12, 8, 0.5)
    assert again.score(X) == pytest.approx(scorer.score(X), abs=1e-14)
    assert again.to_dict()["bandwidths"] == data["bandwidths"]
    with pytest.raises(ValueError, match="features"):
        MMDScorer.from_dict(data, targets=_gauss(28, 10, 9))
    with pytest.raises(ValueError, match="version"):
        MMDScorer.from_dict({**data, "version": 99})
    with pytest.raises(ValueError, match="MMDScorer"):
        MMDScorer.from_dict({"bandwidths": [1.0]})


def test_scorer_errors() -> None:
    scorer = MMDScorer()
    with pytest.raises(StateError, match="fit"):
        scorer.score(_gauss(1, 4, 3))
    assert issubclass(StateError, BoVoidsError)
    with pytest.raises(ValueError, match="bandwidth"):
        MMDScorer("scott")
    scorer.fit(_gauss(2, 6, 3))
    with pytest.raises(ValueError, match="features"):
        scorer.score(_gauss(3, 4, 5))
    with pytest.raises(ValueError, match="X needs at least 2"):
        scorer.score(_gauss(3, 1, 3))
    with pytest.raises(ValueError, match="target_embeddings"):
        MMDScorer().fit(_gauss(4, 1, 3))


def test_per_set_and_pooled_helpers() -> None:
    T = _gauss(30, 16, 5)
    scorer = MMDScorer().fit(T)
    E = np.vstack([_gauss(31, 6, 5), _gauss(32, 6, 5, 1.0), _gauss(33, 6, 5, 3.0)])
    ids = np.repeat([7, 3, 9], 6)
    per = per_set_mmd2(E, ids, scorer)
    assert list(per) == [7, 3, 9] and all(type(k) is int for k in per)
    for k, rows in zip((7, 3, 9), (E[:6], E[6:12], E[12:]), strict=True):
        assert per[k] == pytest.approx(scorer.score(rows))
    assert per[7] < per[3] < per[9]
    assert pooled_mmd2(E, ids, scorer) == pytest.approx(scorer.score(E))
    assert pooled_mmd2(E, ids, scorer, include=[3, 7]) == pytest.approx(scorer.score(E[:12]))
    assert per_set_mmd2(E, ["a"] * 9 + ["b"] * 9, scorer).keys() == {"a", "b"}
    with pytest.raises(ValueError, match="set_ids"):
        per_set_mmd2(E, ids[:-1], scorer)
    with pytest.raises(ValueError, match="include"):
        pooled_mmd2(E, ids, scorer, include=[42])


def test_multi_bandwidth_kernel_matches_direct_exponentials() -> None:
    X = _gauss(40, 30, 6)
    d2 = pairwise_sq_dists(X)
    bws = [1.3 * m for m in MULTI_BANDWIDTH_MULTIPLIERS] + [0.77]
    direct = np.mean([np.exp(-d2 / (2 * s**2)) for s in bws], axis=0)
    np.testing.assert_allclose(rbf_kernel(X, None, bws), direct, rtol=1e-12, atol=1e-15)


def test_rescaled_noise_floor_matches_direct_null_spread() -> None:
    """The half-split floor rescaled to n vs m tracks the null spread measured at n vs m."""

    rng = np.random.default_rng(0)
    direct, scaled = [], []
    for _ in range(30):
        targets = rng.normal(size=(16, 4))
        scorer = MMDScorer("multi").fit(targets)
        floor = half_split_noise_floor(scorer, n_splits=60, random_state=1)
        scaled.append(rescale_noise_floor(floor, 15, 16)["std"])
        bw = scorer.bandwidths_
        direct.append(mmd2(rng.normal(size=(15, 4)), targets, bandwidth=list(bw)))
    ratio = np.mean(scaled) / np.std(direct)
    assert 0.5 < ratio < 2.0
    floor = {"mean": 0.0, "std": 1.0, "q05": -1.0, "q95": 2.0, "half_size": 8}
    out = rescale_noise_floor(floor, 8, 16)
    assert out["scale"] == pytest.approx(1.0, rel=0.6) and out["q95"] > 0
