"""Uniform random search: the baseline, and the GP's initial design and fallback.

Example:
    >>> opt = RandomSearchOptimizer(space, seed=0)  # doctest: +SKIP
    >>> opt.recommend_next_batch(emb, meta, targets)["next_params"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bo_voids.optimizers.base import BaseOptimizer, Proposal, SetRecord


class RandomSearchOptimizer(BaseOptimizer):
    """Propose parameter sets drawn uniformly over the bounds.

    Categories and integers are uniform over their values, continuous parameters uniform over
    their range (:meth:`~bo_voids.space.SearchSpace.sample_uniform`). The draw is seeded by the
    experiment seed and the number of observations, so the same history gives the same batch.
    ``current_best`` is ranked by the raw per-set MMD² (there is no model to smooth it).

    Args:
        space: The search space.
        seed: Experiment seed.
        top_k: Number of sets in ``current_best``.
        bandwidth: MMD² kernel bandwidth (``"multi"`` or ``"median"``).
    """

    name: ClassVar[str] = "random"
    default_options: ClassVar[dict[str, Any]] = {}

    def _propose(self, observations: list[SetRecord], batch_size: int, seed: int) -> Proposal:
        """Draw ``batch_size`` uniform parameter sets.

        Args:
            observations: Scored sets (unused except for their count, which is in ``seed``).
            batch_size: Number of sets wanted.
            seed: The seed of this call.

        Returns:
            A :class:`~bo_voids.optimizers.base.Proposal` ranked by the raw scores.
        """
        params = self.space.sample_uniform(batch_size, np.random.default_rng(seed))
        return Proposal(params=params, predicted_mmd2=None, info={"model": "none"})
