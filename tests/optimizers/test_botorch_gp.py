"""BoTorchOptimizer: model, acquisitions, noise, fallbacks, and search efficiency vs random."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from botorch.exceptions import ModelFittingError
from linear_operator.utils.errors import NotPSDError

import bo_voids.optimizers.botorch_gp as botorch_gp
from bo_voids.exceptions import ConfigError, FallbackWarning
from bo_voids.optimizers import BoTorchOptimizer, RandomSearchOptimizer
from bo_voids.scoring import ScoreBook
from bo_voids.testing.synthetic import SyntheticProblem, run_loop

FAST = {"num_restarts": 2, "raw_samples": 32, "maxiter": 30, "min_observations": 6}


@pytest.fixture(scope="module")
def problem() -> SyntheticProblem:
    return SyntheticProblem(seed=0)


@pytest.fixture(scope="module")
def data(problem):
    sets = problem.space.sample_uniform(14, 4)
    emb, meta = problem.evaluate(sets, 0, "close")
    return emb, meta, sets


@pytest.mark.parametrize("acquisition", ["ucb", "ei", "nei", "pi"])
def test_each_acquisition_runs_without_fallback(problem, data, acquisition):
    emb, meta, _ = data
    opt = BoTorchOptimizer(problem.space, acquisition=acquisition, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        out = opt.recommend_next_batch(emb, meta, problem.targets, 4)
    info = out["info"]
    assert info["fallback"] is None and info["model"] == "MixedSingleTaskGP"
    assert info["acquisition"] == acquisition and np.isfinite(info["acq_value"])
    assert info["fit_seconds"] > 0 and info["propose_seconds"] > 0
    assert len(out["next_params"]) == 4


@pytest.mark.parametrize(
    ("surrogate", "noise", "model"),
    [
        ("onehot", "fixed+learned", "SingleTaskGP"),
        ("mixed", "fixed", "MixedSingleTaskGP"),
        ("onehot", "learned", "SingleTaskGP"),
    ],
)
def test_surrogates_and_noise_models(problem, data, surrogate, noise, model):
    emb, meta, _ = data
    opt = BoTorchOptimizer(problem.space, surrogate=surrogate, noise=noise, **FAST)
    out = opt.recommend_next_batch(emb, meta, problem.targets, 3)
    assert out["info"]["model"] == model and out["info"]["fallback"] is None


def test_enumerate_acquisition_optimizer(problem, data):
    emb, meta, sets = data
    opt = BoTorchOptimizer(problem.space, acqf_optimizer="enumerate", **FAST)
    out = opt.recommend_next_batch(emb, meta, problem.targets, 3)
    assert out["info"]["fallback"] is None
    keys = {problem.space.key(p) for p in out["next_params"]}
    assert len(keys) == 3 and not keys & {problem.space.key(p) for p in sets}


@pytest.mark.parametrize("surrogate", ["mixed", "onehot"])
def test_joint_acquisition_optimizer(problem, data, surrogate):
    """One batched optimisation of the whole batch: valid, new, exact categories, reproducible."""
    emb, meta, sets = data
    kw = {"surrogate": surrogate, "acqf_optimizer": "joint", "replicate_slots": 0, **FAST}
    out = BoTorchOptimizer(problem.space, seed=3, **kw).recommend_next_batch(
        emb, meta, problem.targets, 8
    )
    assert out["info"]["fallback"] is None
    batch = out["next_params"]
    keys = {problem.space.key(p) for p in batch}
    assert len(keys) == 8 and not keys & {problem.space.key(p) for p in sets}
    for p in batch:
        assert problem.space.validate(p) == p
    again = BoTorchOptimizer(problem.space, seed=3, **kw).recommend_next_batch(
        emb, meta, problem.targets, 8
    )
    assert again["next_params"] == batch


def test_current_best_ranked_by_posterior_mean(problem, data):
    emb, meta, _ = data
    out = BoTorchOptimizer(problem.space, **FAST).recommend_next_batch(
        emb, meta, problem.targets, 2
    )
    best = out["current_best"]
    assert out["info"]["ranking"] == "model"
    predicted = [b["predicted_mmd2"] for b in best]
    assert predicted == sorted(predicted)
    # the posterior mean smooths the raw score: not identical to it
    assert any(abs(b["predicted_mmd2"] - b["mmd2"]) > 1e-9 for b in best)


def test_too_few_observations_fall_back_to_sobol(problem, data):
    emb, meta, _ = data
    opt = BoTorchOptimizer(problem.space, **{**FAST, "min_observations": 20})
    with pytest.warns(FallbackWarning, match="min_observations=20"):
        out = opt.recommend_next_batch(emb, meta, problem.targets, 8)
    assert out["info"]["model"] == "sobol" and "14 scored" in out["info"]["fallback"]
    assert out["info"]["ranking"] == "raw"
    assert len({problem.space.key(p) for p in out["next_params"]}) == 8


@pytest.mark.parametrize(
    "error",
    [ModelFittingError("boom"), NotPSDError("not p.d."), torch.linalg.LinAlgError("linalg")],
)
def test_fit_failure_falls_back(problem, data, monkeypatch, error):
    emb, meta, _ = data

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(botorch_gp, "fit_gpytorch_mll", fail)
    opt = BoTorchOptimizer(problem.space, **FAST)
    with pytest.warns(FallbackWarning, match=type(error).__name__):
        out = opt.recommend_next_batch(emb, meta, problem.targets, 5)
    assert out["info"]["model"] == "sobol" and type(error).__name__ in out["info"]["fallback"]
    assert len(out["next_params"]) == 5


def test_nonfinite_candidates_fall_back(problem, data, monkeypatch):
    emb, meta, _ = data
    monkeypatch.setattr(
        BoTorchOptimizer,
        "optimize_acquisition",
        lambda self, acqf, q: (np.full((q, 6), np.nan), 0.0),
    )
    with pytest.warns(FallbackWarning, match="non-finite"):
        out = BoTorchOptimizer(problem.space, **FAST).recommend_next_batch(
            emb, meta, problem.targets, 2
        )
    assert out["info"]["model"] == "sobol"


def test_duplicate_candidates_are_replaced(problem, data, monkeypatch):
    emb, meta, sets = data
    first = problem.space.to_raw(sets[0])
    monkeypatch.setattr(
        BoTorchOptimizer,
        "optimize_acquisition",
        lambda self, acqf, q: (np.tile(first, (q, 1)), 0.0),
    )
    out = BoTorchOptimizer(problem.space, **FAST).recommend_next_batch(
        emb, meta, problem.targets, 4
    )
    keys = {problem.space.key(p) for p in out["next_params"]}
    assert len(keys) == 4 and problem.space.key(sets[0]) not in keys
    assert out["info"]["n_duplicates_replaced"] == 4


def test_invalid_options(problem):
    with pytest.raises(ConfigError, match="surrogate"):
        BoTorchOptimizer(problem.space, surrogate="forest")
    with pytest.raises(ConfigError, match="num_restarts"):
        BoTorchOptimizer(problem.space, num_restarts=0)
    with pytest.raises(ConfigError, match="ucb_beta"):
        BoTorchOptimizer(problem.space, ucb_beta=-1.0)
    with pytest.raises(ConfigError, match="noise"):
        BoTorchOptimizer(problem.space, noise="none")


def test_programming_errors_are_not_hidden_by_the_fallback(problem, data, monkeypatch):
    emb, meta, _ = data

    def bug(*args, **kwargs):
        raise TypeError("a programming error")

    monkeypatch.setattr(botorch_gp, "fit_gpytorch_mll", bug)
    with pytest.raises(TypeError, match="programming error"):
        BoTorchOptimizer(problem.space, **FAST).recommend_next_batch(emb, meta, problem.targets, 4)


def _efficiency(problem, seeds, n_iter, batch_size=8, **kw):
    gp, rnd = [], []
    for s in seeds:
        gp.append(
            run_loop(
                BoTorchOptimizer(problem.space, seed=s, **kw), problem, n_iter=n_iter, init_seed=s
            )
        )
        rnd.append(
            run_loop(
                RandomSearchOptimizer(problem.space, seed=s), problem, n_iter=n_iter, init_seed=s
            )
        )
    return np.array(gp), np.array(rnd)


@pytest.mark.slow
def test_gp_beats_random_quick(problem):
    """3 seeds x 3 iterations of 4 after 16 initial points, cheap acquisition settings."""
    gp, rnd = _efficiency(
        problem,
        seeds=[0, 1, 2],
        n_iter=3,
        batch_size=4,
        num_restarts=2,
        raw_samples=32,
        maxiter=50,
        acqf_alternating_steps=2,
    )
    assert np.median(gp[:, -1]) < 0.8 * np.median(rnd[:, -1])
    assert np.sum(gp[:, -1] <= rnd[:, -1]) >= 2


@pytest.mark.slow
def test_gp_beats_random_default_settings(problem):
    """5 seeds x 4 iterations of 8 after 16 initial points, the package defaults."""
    gp, rnd = _efficiency(problem, seeds=range(5), n_iter=4, acquisition="ucb")
    assert np.median(gp[:, -1]) < 0.7 * np.median(rnd[:, -1])
    assert np.sum(gp[:, -1] < rnd[:, -1]) >= 4


def test_hyperparameters_fitted_on_a_subset_for_long_histories(problem, data):
    emb, meta, _ = data
    opt = BoTorchOptimizer(problem.space, fit_subsample=10, **FAST)
    book = ScoreBook(problem.space, problem.targets)
    book.add(emb, meta)
    obs = list(book.observations().sets)
    model = opt.fit_model(obs)
    assert model.train_inputs[0].shape[0] == 14  # conditioned on every set
    again = opt.fit_model(obs)
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert a.shape == b.shape and bool((a == b).all()), name  # the subset is seeded
    out = opt.recommend_next_batch(emb, meta, problem.targets, 2)
    assert out["info"]["fallback"] is None
