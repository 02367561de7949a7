"""Composite (grey-box) BO: a multi-output GP on embedding summaries, the target distance known.

The scalar GPs of :mod:`bo_voids.optimizers.botorch_gp` model the per-set MMD² of three images: a
noisy number (sd 0.02–0.07 near the optimum, the size of the differences that matter) whose
lowest observed value is mostly a lucky draw. This optimiser instead models *what the images look
like* and computes the objective itself:

1. **Summaries** (:class:`~bo_voids.summaries.SummaryMap`, fitted once on the observed sets of the
   first iteration and carried in the proposal's warm-start state, so a run uses one map; its
   fingerprint is in ``info``): the top principal components of the embeddings, whitened by the
   within-set (replicate) covariance, plus a ridge "parameter head" ``E[θ | e]`` fitted on the
   synthetic images (Fearnhead & Prangle 2012). Any embedder works.
2. **Model** (:class:`~bo_voids.surrogates.composite.CompositeSurrogate`): a batched multi-output
   GP of each set's *mean* summary (its noise, the variance of a mean, is known from the
   replicates and shrinks as a set is replicated).
3. **Objective**: ``-‖f(x) − t‖²`` with ``t`` the targets' mean summary, through BoTorch's MC
   acquisitions (``ucb | ei | nei | pi``) under a ``GenericMCObjective``; the ``q`` points are
   optimised jointly.
4. **Ranking**: the posterior mean of the distance at the observed sets ranks them (the
   recommendation); ``predicted_mmd2`` holds that predicted distance, on its own scale.

Falls back to a scrambled Sobol batch (with a :class:`~bo_voids.exceptions.FallbackWarning`)
below ``min_observations`` or on a numerical failure of the fit or the acquisition.

Example:
    >>> opt = CompositeGPOptimizer(space, seed=0, acquisition="ei")  # doctest: +SKIP
    >>> proposal = opt.propose(book.observations(), 8, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bo_voids.config import BOSettings
from bo_voids.exceptions import ConfigError
from bo_voids.optimizers.base import BaseOptimizer, Proposal, ProposalRequest
from bo_voids.optimizers.botorch_gp import ACQUISITIONS, GP_OPTIONS, RECOVERABLE
from bo_voids.scoring import Observation, ObservationSet
from bo_voids.seeding import rng
from bo_voids.summaries import SummaryMap, head_targets, set_statistics

if TYPE_CHECKING:
    from bo_voids.reference_design import ReferenceDesign
from bo_voids._types import JsonValue
from bo_voids.space import SearchSpace
from bo_voids.surrogates.composite import CompositeSurrogate
from bo_voids.surrogates.population import (
    PopulationFit,
    PopulationModel,
    PopulationParameters,
    cluster_means,
    fit_population,
    pooled_within_covariance,
    starts_from_sets,
)

logger = logging.getLogger(__name__)

#: Best-ranked observed sets whose spread starts the population fit.
_POPULATION_START_SETS = 8


@dataclass
class Emulator:
    """The fitted composite surrogate and everything needed to use it as an image emulator.

    Attributes:
        summary_map: The summaries (embedding → `k` numbers).
        surrogate: The multi-output GP of per-set mean summaries.
        sets: The observations it was fitted on.
        X: `(n, d)` raw inputs of ``sets``.
        within_cov: `(k, k)` pooled within-set covariance of single-image summaries.
        target_summaries: `(M, k)` summaries of the targets.
        target_means: `(c, k)` mean summary of each target cluster.
        target_sizes: `(c,)` images per target cluster.
    """

    summary_map: SummaryMap
    surrogate: CompositeSurrogate
    sets: tuple[Observation, ...]
    X: np.ndarray
    within_cov: np.ndarray
    target_summaries: np.ndarray
    target_means: np.ndarray
    target_sizes: np.ndarray

    def population_model(self, n_draws: int = 128, seed: int = 0) -> PopulationModel:
        """A :class:`~bo_voids.surrogates.population.PopulationModel` on the posterior mean.

        Its likelihood includes the posterior variance of ``f`` (see the module's notes).
        """
        return PopulationModel(
            self.surrogate.space,
            self.surrogate.mean_function(),
            self.within_cov,
            n_draws=n_draws,
            seed=seed,
            var_fn=self.surrogate.variance_function(),
        )

    def best_sets(self, n: int) -> list[Observation]:
        """The ``n`` observed sets with the best posterior-mean distance to the targets."""
        neg, _ = self.surrogate.predict_objective(self.X)
        return [self.sets[int(i)] for i in np.argsort(-neg, kind="stable")[:n]]

    def fit_population(
        self,
        *,
        mask: np.ndarray | None = None,
        start: PopulationParameters | None = None,
        only_start: bool = False,
        n_draws: int = 128,
        seed: int = 0,
        maxiter: int = 200,
        weights: np.ndarray | None = None,
    ) -> tuple[PopulationModel, PopulationFit]:
        """Fit ψ to the target clusters (``mask``: a boolean selection of them).

        Starts from the spread of the best-ranked observed sets, ``start`` and the centre of
        the bounds (only from ``start`` with ``only_start``, e.g. a refit on part of the
        targets from the fit on all of them); returns the model and the fit. ``weights``
        re-weights the selected clusters (a bootstrap replicate).
        """
        means, sizes = self.target_means, self.target_sizes
        if mask is not None:
            means, sizes = means[mask], sizes[mask]
        model = self.population_model(n_draws=n_draws, seed=seed)
        if start is not None and only_start:
            return model, fit_population(
                model,
                means,
                sizes,
                starts=[start],
                default_start=False,
                maxiter=maxiter,
                weights=weights,
            )
        best = [s.params for s in self.best_sets(_POPULATION_START_SETS)]
        starts = [starts_from_sets(self.surrogate.space, best)]
        if start is not None:
            starts.append(start)
        return model, fit_population(
            model, means, sizes, starts=starts, maxiter=maxiter, weights=weights
        )


class CompositeGPOptimizer(BaseOptimizer):
    """Composite BO of the distance between per-set mean summaries and the targets' mean.

    Args:
        space: The search space.
        seed: Experiment seed.
        top_k: Number of sets in ``current_best``.
        acquisition: ``"ucb"``, ``"ei"``, ``"nei"`` or ``"pi"`` (MC forms under the objective).
        ucb_beta: ``beta`` of UCB.
        summaries: Summary kinds, ``"pca+head"`` (default), ``"pca"`` or ``"head"``.
        n_components: Principal components of the ``pca`` summaries.
        num_restarts: Restarts of the joint acquisition optimisation.
        raw_samples: Random batches the restarts are chosen from.
        mc_samples: QMC samples per acquisition evaluation.
        maxiter: L-BFGS-B iterations of a cold hyper-parameter fit.
        min_observations: Scored sets needed before the model is used (Sobol before).
        replicate_slots: Batch slots that re-evaluate the best-ranked sets.
        population_slots: Batch slots drawn from the current population fit ``p_ψ``
            (:mod:`bo_voids.surrogates.population`), so evaluations fill the region the
            targets' population occupies (0 disables it).

    Raises:
        ConfigError: An invalid option.
    """

    name: ClassVar[str] = "composite"
    # the acquisition optimisation is cheaper than the scalar GP's (joint q-batch, fixed
    # categories), so it has its own restarts and raw samples
    default_options: ClassVar[dict[str, Any]] = {
        **GP_OPTIONS,
        "summaries": "pca+head",
        "n_components": 8,
        "num_restarts": 4,
        "raw_samples": 64,
        "mc_samples": 128,
        "population_slots": BOSettings.population_slots,
    }

    def __init__(
        self, space: SearchSpace, *, seed: int = 0, top_k: int = 5, **options: object
    ) -> None:
        super().__init__(space, seed=seed, top_k=top_k, **options)
        #: A space-filling design the summaries are fitted on (see :meth:`use_reference_design`).
        self.reference_design: tuple[ReferenceDesign, int] | None = None
        o = self.options
        if o["acquisition"] not in ACQUISITIONS:
            raise ConfigError(
                f"acquisition must be one of {list(ACQUISITIONS)}, got {o['acquisition']!r}"
            )
        kinds = str(o["summaries"]).split("+")
        if not kinds or any(k not in ("pca", "head") for k in kinds):
            raise ConfigError(
                f"summaries must be 'pca', 'head' or 'pca+head', got {o['summaries']!r}"
            )
        self._check_int_options(
            {
                "n_components": 1,
                "num_restarts": 1,
                "raw_samples": 1,
                "mc_samples": 1,
                "maxiter": 1,
                "min_observations": 2,
                "population_slots": 0,
            }
        )

    # ---- proposal ------------------------------------------------------------------------------

    def _propose(self, request: ProposalRequest) -> Proposal:
        observations, batch_size, seed = request.observations, request.batch_size, request.seed
        warm_state = request.warm_state
        o = self.options
        sets = list(observations.sets)
        info: dict[str, Any] = {
            "model": None,
            "surrogate": "composite",
            "acquisition": o["acquisition"],
            "fallback": None,
        }
        if len(sets) < o["min_observations"]:
            return self.sobol_fallback(
                f"only {len(sets)} scored parameter sets (min_observations="
                f"{o['min_observations']}); using a Sobol batch",
                batch_size,
                seed,
                info,
                warn=bool(sets),
            )
        warm = dict(warm_state or {})
        try:
            t0 = time.perf_counter()
            emu = self.emulator(observations, seed=seed, warm_state=warm)
            info["fit_seconds"] = time.perf_counter() - t0
            info["summaries"] = emu.summary_map.fingerprint()
            n_pop = min(int(o["population_slots"]), batch_size - 1)
            population, pop_params = self._population_slots(emu, n_pop, seed, warm, info)
            t0 = time.perf_counter()
            cand, value = emu.surrogate.propose(batch_size - len(pop_params), seed=seed)
            info["propose_seconds"] = time.perf_counter() - t0
            neg_distance, _ = emu.surrogate.predict_objective(emu.X)
            predicted = -neg_distance  # the posterior mean distance: lower is better
        except RECOVERABLE as exc:
            logger.warning("composite GP step failed; falling back to Sobol", exc_info=True)
            return self.sobol_fallback(
                f"composite GP fit/acquisition failed ({type(exc).__name__}: {exc})",
                batch_size,
                seed,
                info,
            )
        if not np.all(np.isfinite(cand)) or not np.all(np.isfinite(predicted)):
            return self.sobol_fallback(
                "non-finite candidates or predictions", batch_size, seed, info
            )
        info["model"] = "CompositeSurrogate"
        info["acq_value"] = float(value)
        state: dict[str, Any] = {
            "summary_map": emu.summary_map.state_dict(),
            "surrogate": emu.surrogate.state_dict(),
        }
        if population is not None:
            state["population"] = population
        return Proposal(
            next_params=(*(self.space.from_raw(row) for row in cand), *pop_params),
            predicted_mmd2={s.uid: float(v) for s, v in zip(emu.sets, predicted, strict=True)},
            info=info,
            state=state,
        )

    def emulator(
        self,
        observations: ObservationSet,
        *,
        seed: int,
        warm_state: Mapping[str, JsonValue] | None = None,
    ) -> Emulator:
        """Fit the summaries (or reuse the stored map) and the composite GP to the observations.

        Args:
            observations: The scored sets and the targets.
            seed: Seed of the fit.
            warm_state: A previous :attr:`Proposal.state` (its summary map is reused, its
                hyper-parameters start the fit).

        Returns:
            The :class:`Emulator`.

        Raises:
            ValueError: Fewer than 2 sets, or no set with 2 images.
        """
        o = self.options
        warm = dict(warm_state or {})
        sets = tuple(observations.sets)
        smap = self._summary_map(sets, _part(warm, "summary_map"), seed)
        S, groups = self.image_summaries(sets, smap)
        X, Y, Yvar = self.training_data(sets, smap, summaries=(S, groups))
        ST = smap.transform(observations.targets)
        surrogate = CompositeSurrogate(
            self.space,
            acquisition=o["acquisition"],
            ucb_beta=float(o["ucb_beta"]),
            num_restarts=int(o["num_restarts"]),
            raw_samples=int(o["raw_samples"]),
            mc_samples=int(o["mc_samples"]),
            maxiter=int(o["maxiter"]),
        )
        surrogate.fit(X, Y, Yvar, ST.mean(axis=0), warm_state=_part(warm, "surrogate"), seed=seed)
        means, sizes = cluster_means(ST, observations.target_groups)
        return Emulator(
            summary_map=smap,
            surrogate=surrogate,
            sets=sets,
            X=X,
            within_cov=pooled_within_covariance(S, groups),
            target_summaries=ST,
            target_means=means,
            target_sizes=sizes,
        )

    def _population_slots(
        self,
        emu: Emulator,
        n: int,
        seed: int,
        warm: Mapping[str, Any],
        info: dict[str, Any],
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Fit ψ through the emulator and draw ``n`` sets from ``p_ψ`` (none when ``n = 0``)."""
        if n <= 0:
            return None, []
        previous = warm.get("population")
        start = None
        if isinstance(previous, Mapping):
            start = PopulationParameters.from_distribution(previous, self.space)
        t0 = time.perf_counter()
        try:
            _, fit = emu.fit_population(start=start, n_draws=64, seed=seed, maxiter=100)
        except (ValueError, np.linalg.LinAlgError) as exc:
            logger.warning("population fit failed (%s); no population slot this batch", exc)
            info["population"] = {"error": f"{type(exc).__name__}: {exc}"}
            return None, []
        dist = fit.psi.to_distribution()
        draws = self.space.sample(fit.psi.to_typed(), n, rng(seed, "population_slots"))
        info["population"] = {
            "slots": n,
            "psi": dist,
            "log_likelihood": fit.log_likelihood,
            "seconds": time.perf_counter() - t0,
        }
        return dist, [dict(p) for p in draws]

    # ---- building blocks -----------------------------------------------------------------------

    def training_data(
        self,
        sets: Sequence[Observation],
        smap: SummaryMap,
        summaries: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw inputs, per-set mean summaries and the variance of each mean.

        Args:
            sets: The observations.
            smap: The summary map.
            summaries: :meth:`image_summaries` of ``sets`` when the caller already has them.

        Returns:
            `(n, d)` raw inputs, `(n, k)` means and `(n, k)` variances of the means.
        """
        S, groups = self.image_summaries(sets, smap) if summaries is None else summaries
        stats = set_statistics(S, groups)
        X = np.stack([self.space.to_raw(s.params) for s in sets])
        return X, stats.means, stats.mean_var

    @staticmethod
    def image_summaries(
        sets: Sequence[Observation], smap: SummaryMap
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(N, k)` summaries of every image of ``sets`` and the `(N,)` index of its set."""
        E = np.concatenate([s.embeddings for s in sets])
        groups = np.repeat(np.arange(len(sets)), [s.n_images for s in sets])
        return smap.transform(E), groups

    def use_reference_design(self, design: ReferenceDesign, random_features: int = 0) -> None:
        """Fit the summaries on a space-filling reference design instead of iteration 0's sets.

        Args:
            design: The rendered design (:mod:`bo_voids.reference_design`).
            random_features: Random Fourier features offered to the parameter head (0: the
                linear ridge only); kept per parameter where they win on held-out sets.
        """
        self.reference_design = (design, int(random_features))

    def _summary_map(
        self, sets: Sequence[Observation], stored: Mapping[str, Any] | None, seed: int
    ) -> SummaryMap:
        """The run's summary map: the stored one, else one fitted afresh.

        It is fitted on the reference design when one was given (:meth:`use_reference_design`),
        else on the first iteration's sets.
        """
        if stored is not None:
            return SummaryMap.from_state_dict(stored)
        if self.reference_design is not None:
            design, random_features = self.reference_design
            return design.fit_summary_map(
                self.space,
                kinds=tuple(str(self.options["summaries"]).split("+")),
                n_components=int(self.options["n_components"]),
                random_features=random_features,
                seed=seed,
            )
        first = min(s.first_iteration for s in sets)
        ref = [s for s in sets if s.first_iteration == first]
        if len(ref) < 4:
            ref = list(sets)
        E = np.concatenate([s.embeddings for s in ref])
        groups = np.repeat(np.arange(len(ref)), [s.n_images for s in ref])
        theta, names = head_targets(self.space, [s.params for s in ref for _ in range(s.n_images)])
        kinds = tuple(str(self.options["summaries"]).split("+"))
        n_comp = int(min(self.options["n_components"], max(1, len(ref) - 1), E.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return SummaryMap.fit(
                E, groups, theta, kinds=kinds, n_components=n_comp, seed=seed, param_names=names
            )


def _part(warm: Mapping[str, JsonValue], key: str) -> Mapping[str, JsonValue] | None:
    """One model's state in a warm state (``None`` when it holds none)."""
    part = warm.get(key)
    if part is not None and not isinstance(part, Mapping):
        raise ValueError(f"warm_state[{key!r}] is not a state record: {part!r}")
    return part
