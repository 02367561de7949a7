"""Contract suite run over every registered optimiser."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bo_voids.config import load_config
from bo_voids.exceptions import ConfigError, FallbackWarning
from bo_voids.optimizers import (
    OPTIMIZERS,
    BoTorchOptimizer,
    CompositeGPOptimizer,
    RandomSearchOptimizer,
    make_optimizer,
    optimizer_from_config,
)
from bo_voids.optimizers.synthetic import SyntheticProblem
from bo_voids.space import SearchSpace

# Small budgets: the contract is about behaviour, not the quality of the search.
FAST: dict[str, dict] = {
    "random": {},
    "composite": {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "min_observations": 6},
    "botorch": {"num_restarts": 2, "raw_samples": 32, "maxiter": 30, "min_observations": 6},
}
assert set(FAST) == set(OPTIMIZERS), "add fast settings for every registered optimiser"


@pytest.fixture(scope="module")
def problem() -> SyntheticProblem:
    return SyntheticProblem(seed=0)


def history(problem: SyntheticProblem, n_sets: int, seed: int = 3, with_real: bool = True):
    """Iteration 0 (real rows + close sets) and iteration 1 (synthetic sets)."""
    sets = problem.space.sample_uniform(n_sets, seed)
    n0 = n_sets // 2
    e0, m0 = problem.evaluate(sets[:n0], 0, "close")
    e1, m1 = problem.evaluate(sets[n0:], 1, "synthetic")
    emb, meta = np.concatenate([e0, e1]), m0 + m1
    if with_real:
        real = problem.targets[:4]
        meta_real = [
            {
                "iteration": 0,
                "dataset_type": "real",
                "param_set_id": "real_000",
                "replication_seed": r,
                "params": dict(problem.optimum),
            }
            for r in range(len(real))
        ]
        emb, meta = np.concatenate([real, emb]), meta_real + meta
    return emb, meta, sets


def make(name: str, space: SearchSpace, seed: int = 0, **kw) -> object:
    return make_optimizer(name, space, seed=seed, **{**FAST[name], **kw})


def check_batch(space: SearchSpace, batch: list[dict], evaluated: list[dict], n: int) -> None:
    assert len(batch) == n
    keys = [space.key(p) for p in batch]
    assert len(set(keys)) == n, "two identical points in one batch"
    assert not set(keys) & {space.key(p) for p in evaluated}, "duplicate of an evaluated set"
    lo, hi = space.raw_bounds
    for p in batch:
        assert space.validate(p) == p
        raw = space.to_raw(p)
        assert np.all(raw >= lo) and np.all(raw <= hi)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_batch_is_valid_unique_and_new(problem, name):
    emb, meta, sets = history(problem, 12)
    out = make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
    check_batch(problem.space, out["next_params"], sets, 8)
    assert set(out) == {"next_params", "current_best", "scores", "info"}
    assert out["info"]["n_observations"] == 12
    # targets ('real') are not observations
    assert all(r["dataset_type"] != "real" for r in out["scores"]["per_set"])
    best = out["current_best"]
    assert len(best) == 5
    assert [b["predicted_mmd2"] for b in best] == sorted(b["predicted_mmd2"] for b in best)
    for b in best:
        assert set(b) >= {"params", "param_set_id", "iteration", "mmd2", "predicted_mmd2"}
        assert b["n_images"] == 3 and b["mmd2_var"] > 0
    scores = out["scores"]
    assert np.isfinite(scores["distribution_similarity"])
    assert scores["per_sample_distances"].shape == (36,)
    assert np.all(scores["per_sample_distances"] >= 0)
    assert all(r["mmd2_var"] > 0 for r in scores["per_set"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_reproducible_for_the_same_history(problem, name):
    emb, meta, _ = history(problem, 10)
    a = make(name, problem.space, seed=7).recommend_next_batch(emb, meta, problem.targets, 8)
    b = make(name, problem.space, seed=7).recommend_next_batch(emb, meta, problem.targets, 8)
    assert a["next_params"] == b["next_params"]  # bit-exact floats
    assert a["current_best"] == b["current_best"]
    c = make(name, problem.space, seed=8).recommend_next_batch(emb, meta, problem.targets, 8)
    assert c["next_params"] != a["next_params"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_global_rng_state_untouched(problem, name):
    emb, meta, _ = history(problem, 8)
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002
    make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 4)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nan_embeddings_excluded_with_warning(problem, name):
    emb, meta, sets = history(problem, 10)
    emb = emb.copy()
    bad = next(i for i, m in enumerate(meta) if m["dataset_type"] == "synthetic")
    emb[bad, 0] = np.nan
    uid = f"iter1/{meta[bad]['param_set_id']}"  # ids repeat per iteration in this history
    with pytest.warns(FallbackWarning, match=uid):
        out = make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
    check_batch(problem.space, out["next_params"], sets, 8)  # the failed set is not re-proposed
    assert out["info"]["n_observations"] == 9 and out["info"]["n_excluded"] == 1
    assert np.isnan(out["scores"]["per_sample_distances"]).sum() == 1
    assert uid not in {b["uid"] for b in out["current_best"]}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_single_observation(problem, name):
    emb, meta, sets = history(problem, 1, with_real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        out = make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
    check_batch(problem.space, out["next_params"], sets, 8)
    assert len(out["current_best"]) == 1


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_no_observations(problem, name):
    emb = np.zeros((0, problem.dim))
    out = make(name, problem.space).recommend_next_batch(emb, [], problem.targets, 3)
    check_batch(problem.space, out["next_params"], [], 3)
    assert out["current_best"] == [] and np.isnan(out["scores"]["distribution_similarity"])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_all_equal_scores(problem, name):
    emb, meta, sets = history(problem, 10, with_real=False)
    emb = np.tile(emb[:3], (10, 1))  # every set has the same images: a constant objective
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
    check_batch(problem.space, out["next_params"], sets, 8)
    if name == "botorch":
        assert any(issubclass(w.category, FallbackWarning) for w in caught)
        assert "constant" in out["info"]["fallback"]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_duplicates_of_history_are_replaced(problem, name):
    _, _, sets = history(problem, 6, with_real=False)
    opt = make(name, problem.space)
    rng = np.random.default_rng(0)
    evaluated = {problem.space.key(p) for p in sets}
    proposed = [sets[0], sets[0], sets[1], problem.space.sample_uniform(1, 9)[0]]
    out, replaced = opt._finalize(proposed, evaluated, 4, rng)
    check_batch(problem.space, out, sets, 4)
    assert replaced == 3
    assert out[3] == proposed[3]
    # perturbed copies stay close to the point they replace
    assert problem.space.normalized_distance(out[0], sets[0]) < 0.2


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_bad_inputs_raise(problem, name):
    emb, meta, _ = history(problem, 4)
    opt = make(name, problem.space)
    with pytest.raises(ValueError, match="rows"):
        opt.recommend_next_batch(emb[:-1], meta, problem.targets)
    with pytest.raises(ValueError, match="batch_size"):
        opt.recommend_next_batch(emb, meta, problem.targets, 0)
    with pytest.raises(ValueError, match="features"):
        opt.recommend_next_batch(emb, meta, problem.targets[:, :3])


def test_registry_and_unknown_names(problem):
    assert OPTIMIZERS == {
        "random": RandomSearchOptimizer,
        "botorch": BoTorchOptimizer,
        "composite": CompositeGPOptimizer,
    }
    with pytest.raises(
        ConfigError, match=r"valid optimizers: \['botorch', 'composite', 'random'\]"
    ):
        make_optimizer("tpe", problem.space)
    with pytest.raises(ConfigError, match="unknown option"):
        make_optimizer("random", problem.space, acquisition="ucb")
    with pytest.raises(ConfigError, match="acquisition"):
        make_optimizer("botorch", problem.space, acquisition="kg")
    with pytest.raises(ConfigError, match="top_k"):
        make_optimizer("random", problem.space, top_k=0)


def test_optimizer_from_config(config_path):
    cfg = load_config(config_path, check_paths=False)
    space = SearchSpace.from_config(cfg)
    cfg = cfg.replace(optimizer="botorch", acquisition_function="nei", seed=11)
    composite = optimizer_from_config(cfg, space)
    assert isinstance(composite, CompositeGPOptimizer)
    assert composite.options["acquisition"] == "nei"
    cfg = cfg.replace(bo={**cfg.to_dict()["bo"], "surrogate": "mixed"})
    opt = optimizer_from_config(cfg, space)
    assert isinstance(opt, BoTorchOptimizer)
    assert opt.seed == 11 and opt.options["acquisition"] == "nei"
    assert opt.options["num_restarts"] == cfg.bo.num_restarts
    assert opt.options["ucb_beta"] == cfg.bo.ucb_beta and opt.top_k == cfg.bo.top_k
    rnd = optimizer_from_config(cfg.replace(optimizer="random"), space)
    assert isinstance(rnd, RandomSearchOptimizer)


@pytest.mark.parametrize("name", ["botorch", "composite"])
def test_model_does_not_fall_back_on_a_healthy_problem(problem, name):
    emb, meta, _ = history(problem, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        out = make(name, problem.space).recommend_next_batch(emb, meta, problem.targets, 4)
    assert out["info"]["fallback"] is None and out["info"]["ranking"] == "model"


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_replicate_slots_re_evaluate_the_best_sets(problem, name):
    emb, meta, sets = history(problem, 12)
    opt = make(name, problem.space, replicate_slots=1)
    out = opt.recommend_next_batch(emb, meta, problem.targets, 4)
    best = out["current_best"][0]
    assert len(out["next_params"]) == 4
    assert problem.space.key(out["next_params"][-1]) == problem.space.key(best["params"])
    check_batch(problem.space, out["next_params"][:3], sets, 3)
