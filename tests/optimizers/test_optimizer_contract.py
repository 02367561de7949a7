"""Every registered optimiser runs the contract of :mod:`bo_voids.testing.optimizer_contract`."""

from __future__ import annotations

import numpy as np
import pytest

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
from bo_voids.space import SearchSpace
from bo_voids.testing import SyntheticProblem
from bo_voids.testing.optimizer_contract import (
    ModelOptimizerContract,
    OptimizerContract,
    OptimizerFactory,
    check_batch,
    synthetic_history,
)
from bo_voids.testing.synthetic import nuisance_problem

# Small budgets: the contract is about behaviour, not the quality of the search.
FAST: dict[str, dict] = {
    "random": {},
    "composite": {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "min_observations": 6},
    "botorch": {
        "num_restarts": 2,
        "raw_samples": 32,
        "maxiter": 30,
        "acqf_alternating_steps": 1,
        "min_observations": 6,
    },
}


def registered(name: str) -> OptimizerFactory:
    """The registered optimiser ``name`` with the small budgets of :data:`FAST`."""

    def make(space: SearchSpace, seed: int = 0, **options):
        return make_optimizer(name, space, seed=seed, **{**FAST[name], **options})

    return make


class TestRandomSearch(OptimizerContract):
    registered_name = "random"

    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered(self.registered_name)


class TestBoTorch(ModelOptimizerContract):
    registered_name = "botorch"

    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered(self.registered_name)

    def test_constant_objective_falls_back(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        emb, meta, sets = synthetic_history(problem, 10, with_real=False)
        emb = np.tile(emb[:3], (10, 1))  # every set has the same images: a constant objective
        with pytest.warns(FallbackWarning):
            out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
        check_batch(problem.space, out["next_params"], sets, 8)
        assert "constant" in out["info"]["fallback"]


class TestCompositeGP(ModelOptimizerContract):
    registered_name = "composite"

    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered(self.registered_name)


CONTRACT_CLASSES = (TestRandomSearch, TestBoTorch, TestCompositeGP)


class _WithNuisance:
    """The contract again, on a space with two imaging nuisance parameters (8 columns)."""

    @pytest.fixture(scope="class")
    @classmethod
    def problem(cls) -> SyntheticProblem:
        return nuisance_problem(seed=0)


class TestRandomSearchWithNuisance(_WithNuisance, OptimizerContract):
    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered("random")


@pytest.mark.slow  # the scalar GP is not the default; random and composite run by default
class TestBoTorchWithNuisance(_WithNuisance, ModelOptimizerContract):
    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered("botorch")


class TestCompositeGPWithNuisance(_WithNuisance, ModelOptimizerContract):
    @pytest.fixture
    def make(self) -> OptimizerFactory:
        return registered("composite")


def test_every_registered_optimizer_runs_the_contract() -> None:
    assert {c.registered_name for c in CONTRACT_CLASSES} == set(OPTIMIZERS) == set(FAST)


def test_nuisance_parameters_are_proposed_within_their_bounds() -> None:
    """Every optimiser searches the nuisance columns too: values vary and stay in bounds."""
    problem = nuisance_problem(seed=0)
    emb, meta, _ = synthetic_history(problem, 12)
    for name in OPTIMIZERS:
        out = registered(name)(problem.space, seed=1).recommend_next_batch(
            emb, meta, problem.targets, 6
        )
        values = [p["imaging_gamma"] for p in out["next_params"]]
        assert all(0.6 <= v <= 1.6 for v in values)
        assert len(set(values)) > 1, name


def test_registry_and_unknown_names() -> None:
    space = SyntheticProblem(seed=0).space
    assert OPTIMIZERS == {
        "random": RandomSearchOptimizer,
        "botorch": BoTorchOptimizer,
        "composite": CompositeGPOptimizer,
    }
    with pytest.raises(
        ConfigError, match=r"valid optimizers: \['botorch', 'composite', 'random'\]"
    ):
        make_optimizer("tpe", space)
    with pytest.raises(ConfigError, match="unknown option"):
        make_optimizer("random", space, acquisition="ucb")
    with pytest.raises(ConfigError, match="acquisition"):
        make_optimizer("botorch", space, acquisition="kg")
    with pytest.raises(ConfigError, match="top_k"):
        make_optimizer("random", space, top_k=0)


def test_optimizer_from_config(config_path) -> None:
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
