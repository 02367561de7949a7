"""Uniform random search: the baseline every optimiser is compared with.

Example:
    >>> opt = RandomSearchOptimizer(space, seed=0)  # doctest: +SKIP
    >>> opt.propose(book.observations(), 8, seed=1).next_params  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bo_voids.optimizers.base import BaseOptimizer, Proposal, ProposalRequest


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
    """

    name: ClassVar[str] = "random"
    default_options: ClassVar[dict[str, Any]] = {}

    def _propose(self, request: ProposalRequest) -> Proposal:
        """Draw ``request.batch_size`` uniform parameter sets (from ``request.seed`` alone).

        Args:
            request: The observations, batch size, seed and warm state of this call.

        Returns:
            A :class:`~bo_voids.optimizers.base.Proposal` ranked by the raw scores.
        """
        params = self.space.sample_uniform(request.batch_size, np.random.default_rng(request.seed))
        return Proposal(next_params=tuple(params), info={"model": "none"})
