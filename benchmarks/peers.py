"""Peer optimisers for the benchmarks: Optuna's TPE and GP samplers behind :class:`BaseOptimizer`.

A user who does not pick BoTorch would most likely pick Optuna, so the acquisition benchmark
(:mod:`benchmarks.compare_acquisitions`) runs its two model-based samplers through exactly the same
interface, scores and contract as the package's own optimisers:

* they receive the same :class:`~bo_voids.scoring.ObservationSet` as the package's optimisers
  (target-fitted kernel, unbiased MMD², merged replications), so Optuna sees the same objective
  values as the GP and random search;
* the optimisers are **stateless** like the others: each call rebuilds an in-memory study from the
  whole history (``study.add_trial(optuna.trial.create_trial(...))``, one completed trial per
  scored set), then calls ``study.ask()`` ``batch_size`` times with a sampler seeded by the call
  seed, so a resumed run proposes exactly what the uninterrupted one would have. The asked
  trials stay ``RUNNING``: TPE's ``constant_liar`` and GPSampler's handling of running trials
  spread the batch out;
* proposals go through the base class's validation and de-duplication; ``current_best`` is ranked
  by the raw per-set MMD² (Optuna exposes no posterior mean).

Optuna is imported lazily (it is a benchmark-only dependency, not a core one). The peers are not
in the package's registry (:data:`bo_voids.optimizers.OPTIMIZERS`, which stays unchanged);
:func:`make_benchmark_optimizer` builds a peer or a package optimiser by name.

Example:
    >>> from benchmarks.peers import make_benchmark_optimizer
    >>> opt = make_benchmark_optimizer("optuna_tpe", space, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from bo_voids.exceptions import ConfigError
from bo_voids.optimizers import OPTIMIZERS, make_optimizer
from bo_voids.optimizers.base import BaseOptimizer, Proposal, ProposalRequest

if TYPE_CHECKING:
    from bo_voids.space import SearchSpace

__all__ = [
    "PEERS",
    "OptunaGPOptimizer",
    "OptunaOptimizer",
    "OptunaTPEOptimizer",
    "make_benchmark_optimizer",
    "optuna_available",
]

logger = logging.getLogger(__name__)


def optuna_available() -> bool:
    """Whether Optuna can be imported (the ``bench`` extra is installed)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the Optuna peer optimisers need optuna: pip install 'optuna>=4' (the bench extra)"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of the search space's parameters (same bounds, same kinds).

    Args:
        space: The search space.

    Returns:
        ``{name: CategoricalDistribution | IntDistribution | FloatDistribution}``.
    """
    optuna = _import_optuna()
    dist = optuna.distributions
    out: dict[str, Any] = {}
    for p in space.parameters:
        if p.kind == "categorical":
            out[p.name] = dist.CategoricalDistribution(list(p.choices))
        elif p.kind == "integer":
            out[p.name] = dist.IntDistribution(int(p.low), int(p.high))
        else:
            out[p.name] = dist.FloatDistribution(float(p.low), float(p.high))
    return out


class OptunaOptimizer(BaseOptimizer):
    """Base of the Optuna peers: rebuild a study from the history, ask a seeded sampler.

    Args:
        space: The search space.
        seed: Experiment seed.
        top_k: Number of sets in ``current_best``.
        **options: Sampler options (see each subclass's ``default_options``).
    """

    name: ClassVar[str] = "optuna"
    default_options: ClassVar[dict[str, Any]] = {}

    def make_sampler(self, seed: int) -> Any:
        """The Optuna sampler of one call, seeded by that call's seed.

        Args:
            seed: The call seed.

        Returns:
            An ``optuna.samplers.BaseSampler``.
        """
        raise NotImplementedError

    def _propose(self, request: ProposalRequest) -> Proposal:
        """Rebuild the study from the scored sets and ask ``batch_size`` trials.

        Args:
            request: The observations, batch size, seed and warm state of this call.

        Returns:
            A :class:`~bo_voids.optimizers.base.Proposal` ranked by the raw scores.
        """
        observations, batch_size, seed = request.observations, request.batch_size, request.seed
        optuna = _import_optuna()
        distributions = optuna_distributions(self.space)
        with warnings.catch_warnings():
            # ExperimentalWarning (GPSampler), independent-sampling notes: not the user's concern
            warnings.simplefilter("ignore")
            study = optuna.create_study(
                direction="minimize", sampler=self.make_sampler(seed % 2**32)
            )
            for s in observations:
                study.add_trial(
                    optuna.trial.create_trial(
                        params={k: s.params[k] for k in distributions},
                        distributions=distributions,
                        value=float(s.mmd2),
                    )
                )
            params = []
            for _ in range(batch_size):
                trial = study.ask(fixed_distributions=distributions)
                params.append(dict(trial.params))
        info = {"model": type(study.sampler).__name__, "n_trials": len(observations)}
        return Proposal(next_params=tuple(params), info=info)


class OptunaTPEOptimizer(OptunaOptimizer):
    """Optuna's Tree-structured Parzen Estimator (multivariate, constant liar for the batch).

    Options:
        n_startup_trials: Random trials before TPE is used (the 16 sets of iteration 0 exceed the
            default 10, so TPE is used from iteration 1 on).
        multivariate: Model the parameters jointly.
        constant_liar: Treat the batch's running trials as bad so the batch spreads out.
    """

    name: ClassVar[str] = "optuna_tpe"
    default_options: ClassVar[dict[str, Any]] = {
        "n_startup_trials": 10,
        "multivariate": True,
        "constant_liar": True,
    }

    def make_sampler(self, seed: int) -> Any:
        """A seeded ``TPESampler`` (see the class options)."""
        optuna = _import_optuna()
        o = self.options
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=int(o["n_startup_trials"]),
            multivariate=bool(o["multivariate"]),
            constant_liar=bool(o["constant_liar"]),
        )


class OptunaGPOptimizer(OptunaOptimizer):
    """Optuna's Gaussian-process sampler (log EI; running trials handled by the sampler).

    Options:
        n_startup_trials: Random trials before the GP is used.
        deterministic_objective: ``False``: the per-set MMD² is noisy, so the GP learns a noise.
    """

    name: ClassVar[str] = "optuna_gp"
    default_options: ClassVar[dict[str, Any]] = {
        "n_startup_trials": 10,
        "deterministic_objective": False,
    }

    def make_sampler(self, seed: int) -> Any:
        """A seeded ``GPSampler`` (see the class options)."""
        optuna = _import_optuna()
        o = self.options
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=int(o["n_startup_trials"]),
            deterministic_objective=bool(o["deterministic_objective"]),
        )


#: The peer optimisers by registry name.
PEERS: dict[str, type[BaseOptimizer]] = {
    OptunaTPEOptimizer.name: OptunaTPEOptimizer,
    OptunaGPOptimizer.name: OptunaGPOptimizer,
}


def make_benchmark_optimizer(name: str, space: SearchSpace, **kwargs: Any) -> BaseOptimizer:
    """Build a peer (``optuna_tpe``, ``optuna_gp``) or a package optimiser by name.

    Args:
        name: A key of :data:`PEERS` or of :data:`bo_voids.optimizers.OPTIMIZERS`.
        space: The search space.
        **kwargs: Passed to the optimiser.

    Returns:
        The optimiser.

    Raises:
        ConfigError: Unknown name, or a peer asked for without Optuna installed.
    """
    if name in PEERS:
        if not optuna_available():
            raise ConfigError(f"{name} needs optuna: pip install -e '.[bench]'")
        return PEERS[name](space, **kwargs)
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {sorted({*PEERS, *OPTIMIZERS})}")
    return make_optimizer(name, space, **kwargs)
