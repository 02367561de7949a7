"""The composite optimiser's population slots and its emulator (beyond the shared contract)."""

from __future__ import annotations

import numpy as np
import pytest

from bo_voids.exceptions import ConfigError
from bo_voids.optimizers import CompositeGPOptimizer
from bo_voids.scoring import ScoreBook
from bo_voids.testing import SyntheticProblem
from bo_voids.testing.optimizer_contract import check_batch, synthetic_history

FAST = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 32, "min_observations": 6}


@pytest.fixture(scope="module")
def problem() -> SyntheticProblem:
    return SyntheticProblem()


def _observations(problem: SyntheticProblem, n_sets: int = 16):
    emb, meta, sets = synthetic_history(problem, n_sets)
    book = ScoreBook(problem.space, problem.targets[:4])
    book.add(emb, meta)
    return book.observations(), sets


def test_population_slot_draws_from_the_fitted_population(problem: SyntheticProblem) -> None:
    obs, sets = _observations(problem)
    opt = CompositeGPOptimizer(problem.space, seed=0, population_slots=2, **FAST)
    proposal = opt.propose(obs, 6, seed=1)
    pop = proposal.info["population"]
    assert pop["slots"] == 2 and np.isfinite(pop["log_likelihood"])
    assert set(pop["psi"]) == {p.name for p in problem.space.parameters}
    assert proposal.state is not None and proposal.state["population"] == pop["psi"]
    check_batch(problem.space, proposal.next_params, sets, 6)
    # the next call starts from the stored population and is reproducible
    again = opt.propose(obs, 6, seed=1, warm_state=proposal.state)
    twice = opt.propose(obs, 6, seed=1, warm_state=proposal.state)
    assert again.next_params == twice.next_params


def test_no_population_slot_when_disabled(problem: SyntheticProblem) -> None:
    obs, _ = _observations(problem)
    opt = CompositeGPOptimizer(problem.space, seed=0, population_slots=0, **FAST)
    proposal = opt.propose(obs, 4, seed=1)
    assert "population" not in proposal.info
    assert proposal.state is not None and "population" not in proposal.state
    with pytest.raises(ConfigError, match="population_slots"):
        CompositeGPOptimizer(problem.space, population_slots=-1)


def test_emulator_carries_targets_and_within_covariance(problem: SyntheticProblem) -> None:
    obs, _ = _observations(problem)
    emu = CompositeGPOptimizer(problem.space, seed=0, **FAST).emulator(obs, seed=0)
    k = emu.summary_map.n_summaries
    assert emu.within_cov.shape == (k, k)
    assert np.all(np.linalg.eigvalsh(emu.within_cov) > -1e-9)
    # no target groups given: every target image is its own cluster (an iid folder)
    assert emu.target_means.shape == (4, k) and emu.target_sizes.tolist() == [1.0] * 4
    model, fit = emu.fit_population(n_draws=32, seed=0)
    assert model.k == k and np.isfinite(fit.log_posterior)
    best = emu.best_sets(3)
    assert len(best) == 3 and all(b in emu.sets for b in best)
