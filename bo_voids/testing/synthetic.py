"""A known smooth synthetic calibration problem, for optimiser tests and benchmarks.

No images are rendered: the "embedding" of an image is a smooth feature map of its parameter set
plus seeded Gaussian noise per replication, and the targets are embeddings at a chosen optimum.
The per-set MMD² then grows smoothly with the distance of a set to the optimum (the shape adds a
fixed offset), is noisy (a few replications), and has a known minimiser — so an optimiser's
progress can be measured as the distance of its best evaluated set to the optimum.

Example:
    >>> problem = SyntheticProblem(seed=0)
    >>> emb, meta = problem.evaluate(problem.space.sample_uniform(4, 0), iteration=0)
    >>> emb.shape
    (12, 16)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bo_voids.config import VOID_SHAPES, CategoricalBounds, NumericBounds
from bo_voids.generation.voids import ImageRecord, image_record
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import ParamMapping, SearchSpace

if TYPE_CHECKING:
    from bo_voids.optimizers.base import BaseOptimizer

__all__ = [
    "DEFAULT_OPTIMUM",
    "NUISANCE_OPTIMUM",
    "SyntheticProblem",
    "default_space",
    "nuisance_problem",
    "run_loop",
]

#: The optimum used by default (the design's example parameter set).
DEFAULT_OPTIMUM: dict[str, Any] = {
    "void_shape": "ellipse",
    "void_count": 7,
    "base_size": 18.5,
    "brightness_factor": 0.55,
    "size_std": 6.2,
    "position_spread": 0.45,
}


def default_space() -> SearchSpace:
    """The synthetic problem's search space: 3 shapes, count 3..20, four continuous ranges.

    It differs from the design's bounds (``configs/experiment_config.yaml``) in ``size_std``
    (from 1, not 0) and ``position_spread`` (up to 0.9, not 0.8); the recorded benchmark and
    test numbers on this problem depend on these exact bounds.
    """
    return SearchSpace(
        {
            "void_shape": CategoricalBounds(VOID_SHAPES),
            "void_count": NumericBounds(3, 20, integer=True),
            "base_size": NumericBounds(5.0, 40.0),
            "brightness_factor": NumericBounds(0.3, 0.8),
            "size_std": NumericBounds(1.0, 15.0),
            "position_spread": NumericBounds(0.1, 0.9),
        }
    )


#: The imaging nuisance values of :func:`nuisance_problem`'s optimum.
NUISANCE_OPTIMUM: dict[str, float] = {"imaging_psf_sigma": 1.2, "imaging_gamma": 1.3}


def nuisance_problem(seed: int = 0) -> SyntheticProblem:
    """The synthetic problem with two imaging nuisance parameters (blur and gamma) in its space.

    The nuisance columns enter the feature map like any numeric parameter, so an optimiser must
    search eight dimensions; the optimum is :data:`DEFAULT_OPTIMUM` plus
    :data:`NUISANCE_OPTIMUM`.
    """
    base = default_space()
    space = SearchSpace(
        base.bounds,
        nuisance={
            "imaging_psf_sigma": NumericBounds(0.0, 3.0),
            "imaging_gamma": NumericBounds(0.6, 1.6),
        },
    )
    return SyntheticProblem(space=space, optimum={**DEFAULT_OPTIMUM, **NUISANCE_OPTIMUM}, seed=seed)


@dataclass
class SyntheticProblem:
    """A seeded synthetic embedding model with a known optimum.

    Args:
        space: The search space (default: :func:`default_space`).
        optimum: The parameter set the targets are drawn at.
        dim: Embedding dimension.
        noise: Standard deviation of the per-image noise.
        n_targets: Number of target embeddings.
        replications: Images per evaluated parameter set.
        seed: Seed of the feature map, the targets and the per-image noise.
    """

    space: SearchSpace = field(default_factory=default_space)
    optimum: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIMUM))
    dim: int = 16
    noise: float = 0.25
    n_targets: int = 16
    replications: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        g = rng(self.seed, "synthetic", 0)
        n_num = len(self.space.continuous_dims) + len(self.space.integer_dims)
        k = len(self.space.parameters[self.space.categorical_dims[0]].choices)
        self._W = g.normal(0.0, 1.5, size=(n_num, self.dim))
        self._b = g.uniform(0.0, 2 * np.pi, size=self.dim)
        self._shape = g.normal(0.0, 0.35, size=(k, self.dim))
        self.optimum = self.space.validate(self.optimum)
        self.targets = self.embed(self.optimum, self.n_targets, key=("target",))

    # ---- the model -----------------------------------------------------------------------------

    def features(self, params: ParamMapping) -> np.ndarray:
        """Noise-free feature vector of a parameter set: `(dim,)`."""
        u = self.space.encode(params)
        cat = self.space.categorical_dims[0]
        num = np.delete(u, cat)
        shape = self.space.parameters[cat].choices.index(params[self.space.parameter_names[cat]])
        return np.sin(num @ self._W + self._b) + self._shape[shape]

    def embed(self, params: ParamMapping, n: int, key: tuple[int | str, ...]) -> np.ndarray:
        """`(n, dim)` noisy embeddings of ``n`` images of one parameter set."""
        g = np.random.default_rng(derive_seed(self.seed, "render", *key))
        return self.features(params)[None, :] + self.noise * g.normal(size=(n, self.dim))

    def distance(self, params: ParamMapping) -> float:
        """Normalised distance of a parameter set to the optimum (the regret measure)."""
        return self.space.normalized_distance(params, self.optimum)

    # ---- histories -----------------------------------------------------------------------------

    def evaluate(
        self,
        param_sets: Sequence[ParamMapping],
        iteration: int,
        dataset_type: str = "synthetic",
    ) -> tuple[np.ndarray, list[ImageRecord]]:
        """Embeddings and metadata of ``replications`` images of each parameter set.

        Args:
            param_sets: The sets to "render".
            iteration: Iteration number written in the metadata.
            dataset_type: ``dataset_type`` written in the metadata.

        Returns:
            `(len(param_sets) * replications, dim)` embeddings and one metadata record per row.
        """
        rows: list[np.ndarray] = []
        meta: list[ImageRecord] = []
        for j, params in enumerate(param_sets):
            params = self.space.validate(params)
            rows.append(self.embed(params, self.replications, key=(iteration, j)))
            meta.extend(
                image_record(
                    iteration=iteration,
                    dataset_type=dataset_type,
                    param_set_id=f"ps_{j:03d}",
                    replication_seed=r,
                    params=params,
                )
                for r in range(self.replications)
            )
        if not rows:
            return np.zeros((0, self.dim)), []
        return np.concatenate(rows), meta


def run_loop(
    optimizer: BaseOptimizer,
    problem: SyntheticProblem,
    *,
    n_init: int = 16,
    n_iter: int = 4,
    batch_size: int = 8,
    init_seed: int = 0,
) -> list[float]:
    """Run an ask/evaluate loop on the synthetic problem and trace the best distance found.

    Args:
        optimizer: The optimiser under test.
        problem: The synthetic problem.
        n_init: Uniform random sets of iteration 0 (``dataset_type='close'``).
        n_iter: Iterations of ``batch_size`` proposals.
        batch_size: Sets per iteration.
        init_seed: Seed of the initial design (the same for every optimiser compared).

    Returns:
        ``n_iter + 1`` values: the smallest normalised distance to the optimum among the sets
        evaluated after iteration 0, 1, ..., ``n_iter``.
    """
    init = problem.space.sample_uniform(n_init, derive_seed(init_seed, "synthetic", 1))
    emb, meta = problem.evaluate(init, 0, "close")
    best = [min(problem.distance(p) for p in init)]
    for it in range(1, n_iter + 1):
        out = optimizer.recommend_next_batch(emb, meta, problem.targets, batch_size)
        e, m = problem.evaluate(out["next_params"], it)
        emb, meta = np.concatenate([emb, e]), meta + m
        best.append(min(best[-1], *(problem.distance(p) for p in out["next_params"])))
    return best
