"""The contract every optimiser keeps, as pytest test classes to inherit (``optuna.testing`` style).

A test module subclasses :class:`OptimizerContract` (or :class:`ModelOptimizerContract` for an
optimiser that fits a surrogate model) and provides the ``make`` fixture; pytest then runs every
inherited ``test_*`` method against that optimiser::

    class TestMyOptimizer(OptimizerContract):
        @pytest.fixture
        def make(self):
            return lambda space, seed=0, **options: MyOptimizer(space, seed=seed, **options)

The histories come from :class:`~bo_voids.testing.synthetic.SyntheticProblem` (no rendering):
iteration 0 holds real target rows and ``close`` sets, iteration 1 ``synthetic`` sets, with the
metadata schema of a pipeline run. The contract is about behaviour — valid, new, reproducible
batches, scores and rankings of the right shape, inputs checked, global random state untouched —
not about how well the optimiser searches.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from bo_voids.exceptions import FallbackWarning
from bo_voids.generation.voids import ImageRecord, image_record
from bo_voids.optimizers.base import BaseOptimizer
from bo_voids.space import ParamMapping, ParamSet, SearchSpace
from bo_voids.testing.synthetic import SyntheticProblem

__all__ = ["ModelOptimizerContract", "OptimizerContract", "check_batch", "synthetic_history"]

#: ``make(space, seed=0, **options)`` builds the optimiser under test.
OptimizerFactory = Callable[..., BaseOptimizer]


def synthetic_history(
    problem: SyntheticProblem, n_sets: int, seed: int = 3, with_real: bool = True
) -> tuple[np.ndarray, list[ImageRecord], list[ParamSet]]:
    """A two-iteration history of ``n_sets`` uniformly drawn parameter sets.

    Args:
        problem: The synthetic problem that "renders" the sets.
        n_sets: Parameter sets: the first half in iteration 0 (``close``), the rest in
            iteration 1 (``synthetic``).
        seed: Seed of the uniform draw.
        with_real: Prepend 4 real target rows (``dataset_type`` ``real``), as a run has.

    Returns:
        ``(embeddings, metadata, param_sets)``: one metadata record per embedding row, and the
        evaluated sets in draw order.
    """
    sets = problem.space.sample_uniform(n_sets, seed)
    n0 = n_sets // 2
    e0, m0 = problem.evaluate(sets[:n0], 0, "close")
    e1, m1 = problem.evaluate(sets[n0:], 1, "synthetic")
    emb, meta = np.concatenate([e0, e1]), m0 + m1
    if with_real:
        real = problem.targets[:4]
        meta_real = [
            image_record(
                iteration=0,
                dataset_type="real",
                param_set_id="real_000",
                replication_seed=r,
                params=problem.optimum,
            )
            for r in range(len(real))
        ]
        emb, meta = np.concatenate([real, emb]), meta_real + meta
    return emb, meta, sets


def check_batch(
    space: SearchSpace,
    batch: Sequence[ParamMapping],
    evaluated: Sequence[ParamMapping],
    n: int,
) -> None:
    """Assert that ``batch`` holds ``n`` valid, distinct sets inside the bounds, none evaluated.

    Raises:
        AssertionError: On the first violation.
    """
    assert len(batch) == n
    keys = [space.key(p) for p in batch]
    assert len(set(keys)) == n, "two identical points in one batch"
    assert not set(keys) & {space.key(p) for p in evaluated}, "duplicate of an evaluated set"
    lo, hi = space.raw_bounds
    for p in batch:
        assert space.validate(p) == p
        raw = space.to_raw(p)
        assert np.all(raw >= lo) and np.all(raw <= hi)


class OptimizerContract:
    """Behaviour every optimiser guarantees, whatever its search strategy."""

    @pytest.fixture
    def make(self) -> OptimizerFactory:
        """The optimiser under test: ``make(space, seed=0, **options)``. Override it."""
        raise NotImplementedError("a contract test class provides the `make` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def problem(cls) -> SyntheticProblem:
        """The synthetic problem the histories are drawn from."""
        return SyntheticProblem(seed=0)

    def test_batch_is_valid_unique_and_new(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """Valid, distinct, new sets; best sets ranked; scores of the observations only."""
        emb, meta, sets = synthetic_history(problem, 12)
        out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
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

    def test_reproducible_for_the_same_history(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """Same history and seed: the same batch, bit for bit; another seed: another batch."""
        emb, meta, _ = synthetic_history(problem, 10)
        a = make(problem.space, seed=7).recommend_next_batch(emb, meta, problem.targets, 4)
        b = make(problem.space, seed=7).recommend_next_batch(emb, meta, problem.targets, 4)
        assert a["next_params"] == b["next_params"]  # bit-exact floats
        assert a["current_best"] == b["current_best"]
        c = make(problem.space, seed=8).recommend_next_batch(emb, meta, problem.targets, 4)
        assert c["next_params"] != a["next_params"]

    def test_global_rng_state_untouched(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """The global torch and numpy random states are not touched."""
        emb, meta, _ = synthetic_history(problem, 8)
        torch_state = torch.get_rng_state()
        np_state = _legacy_numpy_state()
        make(problem.space).recommend_next_batch(emb, meta, problem.targets, 4)
        assert torch.equal(torch.get_rng_state(), torch_state)
        assert np.array_equal(_legacy_numpy_state(), np_state)

    def test_nan_embeddings_excluded_with_warning(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """A set with a non-finite embedding is excluded, named in a warning, not re-proposed."""
        emb, meta, sets = synthetic_history(problem, 10)
        emb = emb.copy()
        bad = next(i for i, m in enumerate(meta) if m["dataset_type"] == "synthetic")
        emb[bad, 0] = np.nan
        uid = f"iter1/{meta[bad]['param_set_id']}"  # ids repeat per iteration in this history
        with pytest.warns(FallbackWarning, match=uid):
            out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
        check_batch(problem.space, out["next_params"], sets, 8)  # the failed set is not re-proposed
        assert out["info"]["n_observations"] == 9 and out["info"]["n_excluded"] == 1
        assert np.isnan(out["scores"]["per_sample_distances"]).sum() == 1
        assert uid not in {b["uid"] for b in out["current_best"]}

    def test_single_observation(self, problem: SyntheticProblem, make: OptimizerFactory) -> None:
        """One observed set is enough for a full batch."""
        emb, meta, sets = synthetic_history(problem, 1, with_real=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
        check_batch(problem.space, out["next_params"], sets, 8)
        assert len(out["current_best"]) == 1

    def test_no_observations(self, problem: SyntheticProblem, make: OptimizerFactory) -> None:
        """No observation: a batch all the same, no best set, a NaN similarity."""
        emb = np.zeros((0, problem.dim))
        out = make(problem.space).recommend_next_batch(emb, [], problem.targets, 3)
        check_batch(problem.space, out["next_params"], [], 3)
        assert out["current_best"] == [] and np.isnan(out["scores"]["distribution_similarity"])

    def test_all_equal_scores(self, problem: SyntheticProblem, make: OptimizerFactory) -> None:
        """A constant objective still gives a valid batch."""
        emb, meta, sets = synthetic_history(problem, 10, with_real=False)
        emb = np.tile(emb[:3], (10, 1))  # every set has the same images: a constant objective
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FallbackWarning)
            out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 8)
        check_batch(problem.space, out["next_params"], sets, 8)

    def test_duplicates_of_history_are_replaced(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """Proposals repeating the history or the batch are replaced by nearby new sets."""
        _, _, sets = synthetic_history(problem, 6, with_real=False)
        opt = make(problem.space)
        rng = np.random.default_rng(0)
        evaluated = {problem.space.key(p) for p in sets}
        proposed = [sets[0], sets[0], sets[1], problem.space.sample_uniform(1, 9)[0]]
        out, replaced = opt._finalize(proposed, evaluated, 4, rng)
        check_batch(problem.space, out, sets, 4)
        assert replaced == 3
        assert out[3] == proposed[3]
        # perturbed copies stay close to the point they replace
        assert problem.space.normalized_distance(out[0], sets[0]) < 0.2

    def test_bad_inputs_raise(self, problem: SyntheticProblem, make: OptimizerFactory) -> None:
        """Mismatched rows, a zero batch size and a wrong feature count raise ``ValueError``."""
        emb, meta, _ = synthetic_history(problem, 4)
        opt = make(problem.space)
        with pytest.raises(ValueError, match="rows"):
            opt.recommend_next_batch(emb[:-1], meta, problem.targets)
        with pytest.raises(ValueError, match="batch_size"):
            opt.recommend_next_batch(emb, meta, problem.targets, 0)
        with pytest.raises(ValueError, match="features"):
            opt.recommend_next_batch(emb, meta, problem.targets[:, :3])

    def test_replicate_slots_re_evaluate_the_best_sets(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """A replicate slot re-proposes the best-ranked set at the end of the batch."""
        emb, meta, sets = synthetic_history(problem, 12)
        opt = make(problem.space, replicate_slots=1)
        out = opt.recommend_next_batch(emb, meta, problem.targets, 4)
        best = out["current_best"][0]
        assert len(out["next_params"]) == 4
        assert problem.space.key(out["next_params"][-1]) == problem.space.key(best["params"])
        check_batch(problem.space, out["next_params"][:3], sets, 3)


class ModelOptimizerContract(OptimizerContract):
    """The contract of an optimiser that fits a surrogate model, plus: it really uses the model."""

    def test_model_does_not_fall_back_on_a_healthy_problem(
        self, problem: SyntheticProblem, make: OptimizerFactory
    ) -> None:
        """On a healthy problem the model ranks and proposes: no fallback warning."""
        emb, meta, _ = synthetic_history(problem, 16)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FallbackWarning)
            out = make(problem.space).recommend_next_batch(emb, meta, problem.targets, 4)
        assert out["info"]["fallback"] is None and out["info"]["ranking"] == "model"


def _legacy_numpy_state() -> np.ndarray:
    """A copy of the global (legacy) numpy RNG's key array: the state under test."""
    state = np.random.get_state(legacy=True)  # noqa: NPY002
    assert isinstance(state, tuple)
    return np.asarray(state[1]).copy()
