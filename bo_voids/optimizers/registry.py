"""The optimisers by name, and building one from a config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bo_voids.exceptions import ConfigError
from bo_voids.optimizers.base import BaseOptimizer
from bo_voids.optimizers.botorch_gp import BoTorchOptimizer
from bo_voids.optimizers.composite_gp import CompositeGPOptimizer
from bo_voids.optimizers.random_search import RandomSearchOptimizer

if TYPE_CHECKING:
    from bo_voids.config import ExperimentConfig
    from bo_voids.space import SearchSpace

__all__ = ["OPTIMIZERS", "make_optimizer", "optimizer_from_config"]

#: Registered optimisers by name.
OPTIMIZERS: dict[str, type[BaseOptimizer]] = {
    RandomSearchOptimizer.name: RandomSearchOptimizer,
    BoTorchOptimizer.name: BoTorchOptimizer,
    CompositeGPOptimizer.name: CompositeGPOptimizer,
}


def make_optimizer(
    name: str, space: SearchSpace, *, seed: int = 0, top_k: int = 5, **options: object
) -> BaseOptimizer:
    """Build a registered optimiser by name.

    Args:
        name: A key of :data:`OPTIMIZERS` (``"random"``, ``"botorch"``).
        space: The search space.
        seed: The optimiser's seed.
        top_k: How many best sets it reports.
        **options: The optimiser's options (checked by the optimiser).

    Returns:
        The optimiser.

    Raises:
        ConfigError: Unknown name (the message lists the valid ones) or invalid arguments.
    """
    try:
        cls = OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown optimizer {name!r}; valid optimizers: {sorted(OPTIMIZERS)}"
        ) from None
    return cls(space, seed=seed, top_k=top_k, **options)


def optimizer_from_config(cfg: ExperimentConfig, space: SearchSpace) -> BaseOptimizer:
    """Build the optimiser an experiment config asks for.

    Maps ``cfg.optimizer``, ``cfg.seed``, ``cfg.bo.top_k`` and, for
    ``"botorch"``, ``cfg.acquisition_function`` and the other ``cfg.bo`` settings.

    Args:
        cfg: The validated experiment config.
        space: The search space (``SearchSpace.from_config(cfg)``).

    Returns:
        The optimiser.

    Raises:
        ConfigError: Unknown optimiser or invalid settings.
    """
    kwargs: dict[str, Any] = {"seed": cfg.seed, "top_k": cfg.bo.top_k}
    if cfg.optimizer != BoTorchOptimizer.name:
        return make_optimizer(cfg.optimizer, space, **kwargs)
    bo = cfg.bo
    kwargs.update(
        acquisition=cfg.acquisition_function,
        ucb_beta=bo.ucb_beta,
        maxiter=bo.maxiter,
        min_observations=bo.min_observations,
        replicate_slots=bo.replicate_slots,
    )
    if bo.surrogate == "composite":
        kwargs["population_slots"] = bo.population_slots
        return make_optimizer(CompositeGPOptimizer.name, space, **kwargs)
    kwargs.update(surrogate=bo.surrogate, num_restarts=bo.num_restarts, raw_samples=bo.raw_samples)
    return make_optimizer(cfg.optimizer, space, **kwargs)
