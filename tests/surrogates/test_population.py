"""Population parameters ψ: coordinates, moments, recovery on a known emulator, intervals, paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bo_voids.config import CategoricalDistribution, NormalDistribution
from bo_voids.surrogates import CompositeSurrogate, FeatureEncoder
from bo_voids.surrogates.population import (
    STD_MAX,
    STD_MIN,
    PopulationModel,
    PopulationParameters,
    cluster_means,
    fit_population,
    pooled_within_covariance,
    population_intervals,
    starts_from_sets,
)
from bo_voids.testing.synthetic import default_space

SPACE = default_space()
ENC = FeatureEncoder(SPACE)
K = 10
_GEN = np.random.default_rng(7)
#: A known linear emulator of the features: every parameter moves the summaries.
_A = torch.as_tensor(_GEN.normal(size=(ENC.d_features, K)) * 3.0)
SIGMA_W = 0.3
TRUTH = PopulationParameters(
    probabilities={"void_shape": {"circle": 0.2, "ellipse": 0.5, "irregular": 0.3}},
    means={
        "void_count": 9.0,
        "base_size": 20.0,
        "brightness_factor": 0.6,
        "size_std": 6.0,
        "position_spread": 0.45,
    },
    stds={
        "void_count": 2.5,
        "base_size": 4.0,
        "brightness_factor": 0.08,
        "size_std": 1.5,
        "position_spread": 0.1,
    },
)


def linear_f(Z: torch.Tensor) -> torch.Tensor:
    return Z @ _A


def simulate_clusters(
    psi: PopulationParameters, n: int, reps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Target cluster means of ``n`` sets × ``reps`` renders under the linear emulator."""
    gen = np.random.default_rng(seed)
    sets = SPACE.sample(psi.to_typed(), n, gen)
    Z = torch.as_tensor(ENC.to_features(np.stack([SPACE.to_raw(p) for p in sets])))
    F = linear_f(Z).numpy()
    images = np.repeat(F, reps, axis=0) + gen.normal(size=(n * reps, K)) * SIGMA_W
    return cluster_means(images, np.repeat(np.arange(n), reps))


def make_model(n_draws: int = 128) -> PopulationModel:
    return PopulationModel(SPACE, linear_f, np.eye(K) * SIGMA_W**2, n_draws=n_draws, seed=0)


def test_coordinates_round_trip_and_config_form() -> None:
    model = make_model()
    u = model.pack(TRUTH)
    assert u.shape == (model.dim,) == (2 + 2 * 5,)
    back = model.parameters(u)
    for name, v in TRUTH.means.items():
        assert back.means[name] == pytest.approx(v, rel=1e-6)
        assert back.stds[name] == pytest.approx(TRUTH.stds[name], rel=1e-6)
    for c, p in TRUTH.probabilities["void_shape"].items():
        assert back.probabilities["void_shape"][c] == pytest.approx(p, rel=1e-6)
    dist = back.to_distribution()
    assert sum(dist["void_shape"].values()) == pytest.approx(1.0, abs=1e-12)
    again = PopulationParameters.from_distribution(dist, SPACE)
    assert again.to_distribution() == dist
    typed = again.to_typed()
    assert isinstance(typed["void_shape"], CategoricalDistribution)
    assert isinstance(typed["void_count"], NormalDistribution)
    with pytest.raises(ValueError, match="void_count"):
        PopulationParameters.from_distribution({"void_shape": {"circle": 1.0}}, SPACE)


def test_stds_stay_inside_their_range() -> None:
    model = make_model()
    for u in (np.full(model.dim, -12.0), np.full(model.dim, 12.0)):
        psi = model.parameters(u)
        for p in SPACE.parameters:
            if p.kind == "categorical":
                continue
            span = p.high - p.low
            assert STD_MIN * span * 0.999 <= psi.stds[p.name] <= STD_MAX * span * 1.001
            assert p.low <= psi.means[p.name] <= p.high


def test_moments_match_monte_carlo_of_the_sampler() -> None:
    model = make_model(n_draws=512)
    mu, B = model.moments(torch.as_tensor(model.pack(TRUTH)))
    sets = SPACE.sample(TRUTH.to_typed(), 20000, np.random.default_rng(1))
    F = linear_f(torch.as_tensor(ENC.to_features(np.stack([SPACE.to_raw(p) for p in sets]))))
    F = F.numpy()
    scale = np.sqrt(np.diag(np.cov(F.T)))
    # the sampler rounds the integer count; the model relaxes it (variance 1/12 apart)
    np.testing.assert_allclose(mu.detach().numpy(), F.mean(0), atol=0.05 * scale.max())
    np.testing.assert_allclose(
        np.sqrt(np.diag(B.detach().numpy())), scale, rtol=0.08, atol=0.02 * scale.max()
    )


def test_fit_recovers_a_known_population() -> None:
    means, sizes = simulate_clusters(TRUTH, 300, 3, seed=2)
    model = make_model()
    fit = fit_population(model, means, sizes)
    assert fit.converged
    for p in SPACE.parameters:
        if p.kind == "categorical":
            for c, v in TRUTH.probabilities[p.name].items():
                assert fit.psi.probabilities[p.name][c] == pytest.approx(v, abs=0.08)
            continue
        span = p.high - p.low
        assert abs(fit.psi.means[p.name] - TRUTH.means[p.name]) / span < 0.03, p.name
        assert abs(fit.psi.stds[p.name] - TRUTH.stds[p.name]) / span < 0.03, p.name


def test_intervals_contain_the_mode_and_shrink_with_more_clusters() -> None:
    model = make_model(n_draws=64)
    widths = []
    for n in (10, 80):
        means, sizes = simulate_clusters(TRUTH, n, 3, seed=3)
        fit = fit_population(model, means, sizes, starts=[TRUTH])
        population_intervals(model, fit, means, sizes, n_draws=300, seed=0)
        assert fit.intervals is not None and fit.draws is not None
        for name, value in fit.psi.to_distribution().items():
            for part, v in value.items():
                lo, hi = fit.intervals[name][part]
                assert lo <= v + 1e-6 and v - 1e-6 <= hi, (name, part)
        widths.append(np.mean([hi - lo for lo, hi in fit.intervals["base_size"].values()]))
    assert widths[1] < widths[0]
    with pytest.raises(ValueError, match="level"):
        population_intervals(model, fit, means, sizes, level=1.5)


def test_emulator_variance_narrows_the_fitted_spread() -> None:
    """Variance the emulator cannot explain is not read as population spread."""
    means, sizes = simulate_clusters(TRUTH, 200, 3, seed=6)
    plain = fit_population(make_model(64), means, sizes, starts=[TRUTH])
    extra = 0.5**2

    def var_fn(Z: torch.Tensor) -> torch.Tensor:
        return torch.full((Z.shape[0], K), extra, dtype=Z.dtype)

    noisy = means + np.random.default_rng(1).normal(size=means.shape) * 0.5
    wide = fit_population(make_model(64), noisy, sizes, starts=[TRUTH])
    model = PopulationModel(SPACE, linear_f, np.eye(K) * SIGMA_W**2, n_draws=64, var_fn=var_fn)
    aware = fit_population(model, noisy, sizes, starts=[TRUTH])
    for name in ("base_size", "void_count"):
        assert wide.psi.stds[name] > aware.psi.stds[name]
        assert abs(aware.psi.stds[name] - plain.psi.stds[name]) < abs(
            wide.psi.stds[name] - plain.psi.stds[name]
        )


def test_within_covariance_and_cluster_means() -> None:
    gen = np.random.default_rng(0)
    S = gen.normal(size=(3000, 2)) * [1.0, 2.0] + np.repeat(gen.normal(size=(1000, 2)) * 5, 3, 0)
    groups = np.repeat(np.arange(1000), 3)
    W = pooled_within_covariance(S, groups)
    np.testing.assert_allclose(np.diag(W), [1.0, 4.0], rtol=0.1)
    means, sizes = cluster_means(S, groups)
    assert means.shape == (1000, 2) and np.all(sizes == 3)
    with pytest.raises(ValueError, match="two images"):
        pooled_within_covariance(S[:3], np.arange(3))


def test_starts_from_sets_reads_the_sets() -> None:
    sets = SPACE.sample(TRUTH.to_typed(), 50, np.random.default_rng(4))
    start = starts_from_sets(SPACE, sets)
    assert start.means["base_size"] == pytest.approx(np.mean([s["base_size"] for s in sets]))
    assert sum(start.probabilities["void_shape"].values()) == pytest.approx(1.0)


def test_function_samples_reproduce_the_posterior_at_anchors() -> None:
    gen = np.random.default_rng(5)
    X = np.stack([SPACE.to_raw(p) for p in SPACE.sample_uniform(40, gen)])
    Z = torch.as_tensor(ENC.to_features(X))
    Y = linear_f(Z).numpy()[:, :3] + gen.normal(size=(40, 3)) * 0.1
    sur = CompositeSurrogate(SPACE, maxiter=30).fit(X, Y, np.full_like(Y, 0.01), Y.mean(0))
    anchors = np.stack([SPACE.to_raw(p) for p in SPACE.sample_uniform(30, gen)])
    paths = sur.function_samples(anchors, 400, seed=1)
    ZA = torch.as_tensor(ENC.to_features(anchors))
    with torch.no_grad():
        values = torch.stack([p(ZA) for p in paths]).numpy()  # (s, a, k)
    mean, var = sur.predict(anchors)
    sd = np.sqrt(var)
    with torch.no_grad():
        np.testing.assert_allclose(sur.mean_function()(ZA).numpy(), mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(sur.variance_function()(ZA).numpy(), var, rtol=1e-7, atol=1e-12)
    assert np.all(np.abs(values.mean(0) - mean) < 0.25 * sd + 1e-6)
    ratio = values.std(0) / sd
    assert 0.75 < np.median(ratio) < 1.25
    # the same seed gives the same paths; gradients flow to the features
    again = sur.function_samples(anchors, 400, seed=1)
    with torch.no_grad():
        np.testing.assert_array_equal(again[3](ZA).numpy(), values[3])
    Zg = ZA.clone().requires_grad_(True)
    paths[0](Zg).sum().backward()
    assert Zg.grad is not None and torch.isfinite(Zg.grad).all()
    # a per-output sd scale widens each path's deviation from the mean by exactly that factor
    scale = np.array([1.0, 2.0, 3.5])
    wide = sur.function_samples(anchors, 400, seed=1, sd_scale=scale)
    with torch.no_grad():
        np.testing.assert_allclose(wide[3](ZA).numpy() - mean, (values[3] - mean) * scale)
    with pytest.raises(ValueError, match="sd_scale"):
        sur.function_samples(anchors, 4, seed=1, sd_scale=np.array([1.0, -1.0, 1.0]))


# the bootstrap is not the default interval method (the calibration benchmark chose Laplace)
@pytest.mark.parametrize("method", ["laplace", pytest.param("bootstrap", marks=pytest.mark.slow)])
def test_intervals_cover_a_known_population_at_about_their_level(method: str) -> None:
    """On the cheap linear toy, 90 % intervals of every component hold the truth ~90 % of runs."""
    model = make_model(n_draws=64)
    truth = TRUTH.flat()
    hits, total = 0, 0
    for seed in range(30):
        means, sizes = simulate_clusters(TRUTH, 40, 3, seed=100 + seed)
        fit = fit_population(model, means, sizes, starts=[TRUTH], default_start=False)
        population_intervals(
            model, fit, means, sizes, n_draws=400, seed=seed, level=0.9, method=method
        )
        assert fit.intervals is not None and fit.info["interval_method"] == method
        for key, value in truth.items():
            name, part = key.split(".", 1)
            lo, hi = fit.intervals[name][part]
            hits += lo <= value <= hi
            total += 1
    # pooled over 13 components x 30 datasets (correlated within a dataset)
    assert 0.8 <= hits / total <= 0.98, hits / total


@pytest.mark.parametrize("sizes", [(1, 1, 1, 1), (1, 3, 3, 2)])
def test_shared_discrepancy_is_the_exact_marginal(sizes: tuple[int, ...]) -> None:
    """With a shift δ ~ N(0, D) shared by the clusters, the likelihood is the joint Gaussian."""
    d = np.linspace(0.05, 0.5, K)
    plain = make_model(n_draws=16)
    model = PopulationModel(
        SPACE, linear_f, np.eye(K) * SIGMA_W**2, n_draws=16, seed=0, discrepancy=d
    )
    u = torch.as_tensor(model.pack(TRUTH))
    M = torch.as_tensor(np.random.default_rng(3).normal(size=(len(sizes), K)))
    R = torch.as_tensor(np.array(sizes, dtype=np.float64))
    mu, B = plain.moments(u)
    n = len(sizes)
    cov = torch.zeros(n * K, n * K, dtype=torch.float64)
    scale = float(torch.diagonal(plain.within).mean())
    for i, r in enumerate(sizes):
        block = B + plain.within / r + 1e-6 * scale * torch.eye(K, dtype=torch.float64)
        cov[i * K : (i + 1) * K, i * K : (i + 1) * K] = block
    cov = cov + torch.kron(torch.ones(n, n, dtype=torch.float64), torch.diag(torch.as_tensor(d)))
    joint = torch.distributions.MultivariateNormal(mu.repeat(n), covariance_matrix=cov)
    expected = float(joint.log_prob(M.reshape(-1)))
    assert float(model.log_likelihood(u, M, R)) == pytest.approx(expected, rel=1e-8, abs=1e-8)
    # and no discrepancy is the plain likelihood
    assert float(plain.log_likelihood(u, M, R)) != pytest.approx(expected, rel=1e-3)


def test_discrepancy_widens_the_intervals_of_a_mean() -> None:
    means, sizes = simulate_clusters(TRUTH, 15, 1, seed=4)
    widths = []
    for d in (None, np.full(K, 4.0)):
        model = PopulationModel(
            SPACE, linear_f, np.eye(K) * SIGMA_W**2, n_draws=64, seed=0, discrepancy=d
        )
        fit = fit_population(model, means, sizes)
        population_intervals(model, fit, means, sizes, n_draws=200, seed=1)
        assert fit.intervals is not None
        lo, hi = fit.intervals["base_size"]["mean"]
        widths.append(hi - lo)
    assert widths[1] > 1.5 * widths[0]


def test_a_bad_discrepancy_is_refused() -> None:
    with pytest.raises(ValueError, match="discrepancy"):
        PopulationModel(SPACE, linear_f, np.eye(K), discrepancy=np.full(K, -1.0))
