"""CompositeSurrogate: encoding, exact posterior, objective moments, acquisitions, warm starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bo_voids.exceptions import OptimizerError
from bo_voids.surrogates import ACQUISITIONS, CompositeSurrogate, FeatureEncoder
from bo_voids.surrogates.torch_context import seeded_exact
from bo_voids.testing.synthetic import default_space

FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "acqf_maxiter": 20, "maxiter": 30}
SPACE = default_space()
ENC = FeatureEncoder(SPACE)
K = 8
_GEN = np.random.default_rng(123)
_Q, _ = np.linalg.qr(_GEN.normal(size=(ENC.d_features, ENC.d_features)))
_A = _GEN.normal(size=(ENC.d_features, K)) * 1.5
_B = _GEN.uniform(0, 2 * np.pi, size=K)
X_STAR = np.array([1.0, 7.0, 18.5, 0.55, 6.2, 0.45])  # ellipse, 7 voids, ...
NOISE_SD = 0.15
REPS = 3


def f(X_raw: np.ndarray) -> np.ndarray:
    """A smooth, locally injective map of the mixed space to R^8 (linear plus a ripple)."""
    Z = ENC.to_features(X_raw)
    return 2.0 * Z @ _Q[:, :K] + 0.3 * np.sin(Z @ _A + _B)


TARGET = f(X_STAR[None])[0]


def sample_raw(n: int, seed: int) -> np.ndarray:
    return np.stack([SPACE.to_raw(p) for p in SPACE.sample_uniform(n, seed)])


def observe(X_raw: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-set means of REPS noisy replicates and their (known) variance."""
    F = f(X_raw)
    Y = F + np.random.default_rng(seed).normal(size=F.shape) * NOISE_SD / np.sqrt(REPS)
    return Y, np.full_like(Y, NOISE_SD**2 / REPS)


def param_error(X_raw: np.ndarray) -> np.ndarray:
    """RMS error over the numeric parameters, as a fraction of their ranges."""
    lo, hi = SPACE.raw_bounds
    return np.sqrt((((X_raw[:, 1:] - X_STAR[1:]) / (hi - lo)[1:]) ** 2).mean(axis=1))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = sample_raw(30, 0)
    Y, Yv = observe(X, 1)
    return X, Y, Yv


@pytest.fixture(scope="module")
def fitted(data) -> CompositeSurrogate:
    X, Y, Yv = data
    return CompositeSurrogate(SPACE, **FAST).fit(X, Y, Yv, TARGET, seed=0)


def assert_valid_raw(X: np.ndarray) -> None:
    lo, hi = SPACE.raw_bounds
    assert X.shape[1] == SPACE.dim and np.all(np.isfinite(X))
    assert np.all(X >= lo - 1e-12) and np.all(X <= hi + 1e-12)
    for col in SPACE.categorical_dims + SPACE.integer_dims:
        np.testing.assert_array_equal(X[:, col], np.rint(X[:, col]))


# ---- encoding ------------------------------------------------------------------------------


def test_encoder_round_trip_and_rounding():
    X = sample_raw(20, 3)
    Z = ENC.to_features(X)
    assert Z.shape == (20, 8) and Z.min() >= 0 and Z.max() <= 1
    np.testing.assert_array_equal(Z[:, :3].sum(axis=1), 1.0)
    np.testing.assert_allclose(ENC.to_raw(Z), X, rtol=0, atol=1e-12)
    relaxed = torch.rand(50, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X_r = ENC.to_raw(relaxed.numpy())
    assert_valid_raw(X_r)
    np.testing.assert_allclose(ENC.to_raw(ENC.to_features(X_r)), X_r, atol=1e-12)


def test_encoder_neighbours_change_one_discrete_column():
    z = torch.as_tensor(ENC.to_features(X_STAR[None])[0])
    neigh = ENC.neighbours(z)
    assert neigh.shape == (2 + 4, 8)  # two other shapes, count 5, 6, 8, 9
    for w in neigh:
        changed = (w != z).nonzero().reshape(-1).tolist()
        assert set(changed) <= set(ENC.discrete_features) and changed
        np.testing.assert_allclose(ENC.round_features(w).numpy(), w.numpy(), atol=1e-12)


# ---- posterior and objective ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("hyperparameters", "k"), [("shared", 3), ("independent", 3), ("shared", 1)]
)
def test_exact_posterior_equals_gpytorch(data, hyperparameters, k):
    X, Y, Yv = data
    sur = CompositeSurrogate(SPACE, hyperparameters=hyperparameters, maxiter=15)
    sur.fit(X, Y[:, :k], Yv[:, :k], TARGET[:k], seed=0)
    Zt = torch.rand(4, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), seeded_exact(0, 1):
        ref = sur.model.posterior(Zt)
        ours = sur._post.posterior(Zt)
        base = torch.randn(5, *ref.base_sample_shape, dtype=torch.float64)
        s_ref = ref.rsample_from_base_samples(torch.Size([5]), base)
        s_ours = ours.rsample_from_base_samples(torch.Size([5]), base)
    torch.testing.assert_close(ours.mean, ref.mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ours.variance, ref.variance, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(s_ours, s_ref, rtol=1e-6, atol=1e-8)


def test_predict_objective_matches_monte_carlo(fitted, data):
    W = np.diag(np.linspace(0.5, 2.0, K))
    W[0, 1] = W[1, 0] = 0.2
    sur = CompositeSurrogate(SPACE, **FAST).fit(*data, TARGET, weights=W, seed=0)
    pts = sample_raw(5, 9)
    mean, std = sur.predict_objective(pts)
    mu, var = sur.predict(pts)
    draws = mu + np.sqrt(var) * np.random.default_rng(0).normal(size=(200_000, *mu.shape))
    delta = draws - TARGET
    obj = -np.einsum("snk,kl,snl->sn", delta, W, delta)
    np.testing.assert_allclose(mean, obj.mean(axis=0), rtol=0.01)
    np.testing.assert_allclose(std, obj.std(axis=0), rtol=0.03)
    # Identity weights by default.
    m0, _ = fitted.predict_objective(pts)
    mu0, var0 = fitted.predict(pts)
    np.testing.assert_allclose(m0, -(((mu0 - TARGET) ** 2) + var0).sum(axis=1), rtol=1e-10)


def test_fit_on_subset_and_restricted_covariance():
    X = sample_raw(45, 5)
    Y, Yv = observe(X, 6)
    sur = CompositeSurrogate(SPACE, fit_subsample=20, max_exact=30, **FAST)
    sur.fit(X, Y, Yv, TARGET, seed=2)
    assert sur.fit_info["n_fit"] == 20 and sur.fit_info["n"] == 45
    assert sur._post.Lc.shape[-1] == 30
    mean, var = sur.predict(X)
    assert mean.shape == (45, K) and np.all(var > 0)
    cand, value = sur.propose(q=4, seed=1)
    assert cand.shape == (4, 6) and np.isfinite(value)
    assert_valid_raw(cand)


# ---- proposals -----------------------------------------------------------------------------


@pytest.mark.parametrize("acquisition", ACQUISITIONS)
def test_each_acquisition_proposes_a_valid_batch(data, acquisition):
    X, Y, Yv = data
    sur = CompositeSurrogate(SPACE, acquisition=acquisition, **FAST).fit(X, Y, Yv, TARGET, seed=0)
    cand, value = sur.propose(q=4, seed=3, X_pending=X[:2])
    assert cand.shape == (4, 6) and np.isfinite(value)
    assert_valid_raw(cand)
    info = sur.propose_info
    assert info["acquisition"] == acquisition and info["acq_value"] == value
    assert value >= info["acq_value_rounded"]  # sweeps and refinement only keep gains


def test_polish_is_never_worse_than_the_best_observed(fitted, data):
    X, _, _ = data
    x, mean, std = fitted.polish(seed=0)
    assert_valid_raw(x[None])
    observed, _ = fitted.predict_objective(X)
    assert mean >= observed.max() - 1e-12 and std >= 0
    np.testing.assert_allclose(fitted.predict_objective(x[None])[0], [mean])


def test_short_loop_recovers_the_optimum_better_than_random_search():
    X = sample_raw(16, 100)
    Y, Yv = observe(X, 200)
    state = None
    for it in range(4):
        sur = CompositeSurrogate(SPACE, acquisition="ei")
        sur.fit(X, Y, Yv, TARGET, warm_state=state, seed=it)
        state = sur.state_dict()
        cand, _ = sur.propose(q=8, seed=it)
        Yc, Yvc = observe(cand, 300 + it)
        X, Y, Yv = np.vstack([X, cand]), np.vstack([Y, Yc]), np.vstack([Yv, Yvc])
    sur = CompositeSurrogate(SPACE).fit(X, Y, Yv, TARGET, warm_state=state, seed=9)
    best = X[np.argmax(sur.predict_objective(X)[0])]
    # Random search, same budget, picks the set whose noisy summaries are closest.
    Xr = sample_raw(X.shape[0], 500)
    Yr, _ = observe(Xr, 600)
    rand_best = Xr[np.argmin(((Yr - TARGET) ** 2).sum(axis=1))]
    assert best[0] == X_STAR[0]  # the shape
    err_bo, err_random = param_error(best[None])[0], param_error(rand_best[None])[0]
    # the comparison is the claim; the absolute bound only catches a broken loop (one seed: the
    # error moved from < 0.06 to 0.066 with the library versions of December 2026)
    assert err_bo < 0.1 and err_bo < 0.5 * err_random


# ---- determinism and warm starts -----------------------------------------------------------


def _run(data, warm_state=None, seed=4):
    X, Y, Yv = data
    sur = CompositeSurrogate(SPACE, **FAST).fit(X, Y, Yv, TARGET, warm_state=warm_state, seed=seed)
    cand, value = sur.propose(q=4, seed=seed)
    return sur, cand, value


def test_same_inputs_and_seed_give_bit_identical_proposals(data):
    torch.manual_seed(123)
    s1, c1, v1 = _run(data)
    torch.rand(7)  # global RNG state must not matter
    s2, c2, v2 = _run(data)
    np.testing.assert_array_equal(c1, c2)
    assert v1 == v2 and s1.state_dict() == s2.state_dict()


def test_state_dict_round_trips_through_json_and_warm_start_is_reproducible(fitted, data):
    state = fitted.state_dict()
    text = json.dumps(state)
    assert json.loads(text) == state
    # An uninterrupted run warm-starts from the in-memory state, a resumed one from the file.
    s_mem, c_mem, v_mem = _run(data, warm_state=state)
    s_res, c_res, v_res = _run(data, warm_state=json.loads(text))
    np.testing.assert_array_equal(c_mem, c_res)
    assert v_mem == v_res and s_mem.state_dict() == s_res.state_dict()
    assert s_mem.fit_info["warm_start"] and s_mem.fit_info["maxiter"] == s_mem.warm_maxiter


def test_warm_state_of_another_structure_is_refused(fitted, data):
    X, Y, Yv = data
    state = fitted.state_dict()
    sur = CompositeSurrogate(SPACE, **FAST)
    with pytest.raises(ValueError, match="warm_state"):
        sur.fit(X, Y[:, :4], Yv[:, :4], TARGET[:4], warm_state=state)
    with pytest.raises(ValueError, match="warm_state"):
        sur.fit(X, Y, Yv, TARGET, warm_state={"format": 0})


# ---- input checks --------------------------------------------------------------------------


def test_bad_inputs_and_unfitted_use_raise(data):
    X, Y, Yv = data
    sur = CompositeSurrogate(SPACE)
    with pytest.raises(OptimizerError, match="not fitted"):
        sur.propose()
    with pytest.raises(ValueError, match="Yvar"):
        sur.fit(X, Y, -Yv, TARGET)
    with pytest.raises(ValueError, match="target"):
        sur.fit(X, Y, Yv, TARGET[:3])
    with pytest.raises(ValueError, match="X_raw"):
        sur.fit(X[:, :4], Y, Yv, TARGET)
    with pytest.raises(ValueError, match="NaN"):
        sur.fit(X, np.where(Y > 10, Y, np.nan), Yv, TARGET)
    with pytest.raises(ValueError, match="weight"):
        sur.fit(X, Y, Yv, TARGET, weights=-np.eye(K))
    with pytest.raises(ValueError, match="acquisition"):
        CompositeSurrogate(SPACE, acquisition="kg")
    with pytest.raises(ValueError, match="num_restarts"):
        CompositeSurrogate(SPACE, num_restarts=0)


def test_single_summary_works_end_to_end(data):
    X, Y, Yv = data
    sur = CompositeSurrogate(SPACE, acquisition="nei", **FAST)
    sur.fit(X, Y[:, :1], Yv[:, :1], TARGET[:1], seed=0)
    cand, value = sur.propose(q=3, seed=0)
    assert cand.shape == (3, 6) and np.isfinite(value)
    mean, std = sur.predict_objective(cand)
    assert mean.shape == (3,) and np.all(std >= 0)
