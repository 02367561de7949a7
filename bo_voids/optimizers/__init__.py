"""Optimisers that propose the next parameter sets, swappable by name.

* ``"random"``: :class:`RandomSearchOptimizer`, uniform sampling (baseline and fallback).
* ``"botorch"``: :class:`BoTorchOptimizer`, a GP surrogate of the per-set MMD² with a batch
  acquisition optimised over the mixed space.

Example:
    >>> from bo_voids.optimizers import make_optimizer
    >>> opt = make_optimizer("botorch", space, seed=0, acquisition="nei")  # doctest: +SKIP
"""

from __future__ import annotations

from bo_voids.config import SURROGATES
from bo_voids.optimizers.base import (
    BaseOptimizer,
    BatchRecommendation,
    Proposal,
    ProposalRequest,
)
from bo_voids.optimizers.botorch_gp import ACQUISITIONS, BoTorchOptimizer
from bo_voids.optimizers.composite_gp import CompositeGPOptimizer
from bo_voids.optimizers.random_search import RandomSearchOptimizer
from bo_voids.optimizers.registry import OPTIMIZERS, make_optimizer, optimizer_from_config

__all__ = [
    "ACQUISITIONS",
    "OPTIMIZERS",
    "SURROGATES",
    "BaseOptimizer",
    "BatchRecommendation",
    "BoTorchOptimizer",
    "CompositeGPOptimizer",
    "Proposal",
    "ProposalRequest",
    "RandomSearchOptimizer",
    "make_optimizer",
    "optimizer_from_config",
]
