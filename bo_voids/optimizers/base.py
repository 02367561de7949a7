"""The optimiser interface: propose the next batch from scored observations.

Every optimiser (random search, the BoTorch GPs, any later peer) derives from
:class:`BaseOptimizer` and implements one method, :meth:`BaseOptimizer._propose`. Optimisers do not
score anything: they receive an :class:`~bo_voids.scoring.ObservationSet` (one record per distinct
parameter set, scored by :mod:`bo_voids.scoring`) and return a :class:`Proposal`. The base class
does what they share, so they all behave the same at the edges:

1. **Contract on proposals.** Whatever a subclass returns is validated through the search space;
   exact duplicates (``space.key``) of an evaluated set or of an earlier point of the same batch are
   replaced by a perturbed copy of the point or, failing that, by a uniform random point.
2. **Replication.** With ``replicate_slots = r > 0`` the last ``r`` slots of a batch re-evaluate
   the ``r`` best-ranked observed sets (new seeds; their records merge the images) instead of new
   points, so the incumbent's score sharpens rather than staying a lucky draw.
3. **Determinism.** Nothing is kept between calls: all randomness derives from the ``seed`` of the
   call, and a model's warm-start state comes in and goes out explicitly (``warm_state`` /
   :attr:`Proposal.state`), so a resumed run gets identical proposals.

:meth:`BaseOptimizer.recommend_next_batch` is the design's interface (raw embeddings and metadata
in, the design's dict out): a thin adapter that scores through :class:`~bo_voids.scoring.ScoreBook`,
calls :meth:`BaseOptimizer.propose` and returns a :class:`BatchRecommendation`.

Example:
    >>> opt = make_optimizer("random", space, seed=0)  # doctest: +SKIP
    >>> proposal = opt.propose(book.observations(), batch_size=8, seed=1)  # doctest: +SKIP
    >>> len(proposal.next_params)  # doctest: +SKIP
    8
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import numpy as np
import torch

from bo_voids._types import JsonObject, JsonValue
from bo_voids.exceptions import ConfigError, FallbackWarning
from bo_voids.generation.voids import ImageRecord
from bo_voids.scoring import (
    TARGET_TYPES,
    ObservationRecord,
    ObservationSet,
    RankedSet,
    ScoreBook,
    rank_observations,
    ranked_records,
)
from bo_voids.seeding import derive_seed
from bo_voids.space import ParamMapping, ParamSet, ParamValue, SearchSpace

logger = logging.getLogger(__name__)

#: Tries at perturbing a duplicate proposal before drawing a uniform random point instead.
_PERTURB_TRIES: int = 20


@dataclass(frozen=True)
class ProposalRequest:
    """What :meth:`BaseOptimizer._propose` is asked for.

    Attributes:
        observations: Valid, scored sets (``mmd2`` finite, ``mmd2_var > 0``) and the targets.
        batch_size: Number of new sets wanted (the replicate slots already taken off).
        seed: The seed of this call; all randomness must derive from it.
        warm_state: A previous :attr:`Proposal.state`, or ``None``.
    """

    observations: ObservationSet
    batch_size: int
    seed: int
    warm_state: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Proposal:
    """An optimiser's answer: the next batch and its model's view of the observed sets.

    Attributes:
        next_params: Parameter sets to render next (``batch_size`` of them after
            :meth:`BaseOptimizer.propose`; a subclass may return more, used as spares for
            duplicates, or fewer, filled at random).
        predicted_mmd2: The model's predicted MMD² (posterior mean) at each observed set, by
            ``uid``; ``None`` for a model-free optimiser (the raw scores then rank).
        replicates: ``uid`` of each observed set that ``next_params`` deliberately re-evaluates.
        info: What is worth recording (model, acquisition, timings, fallback reason).
        state: JSON-serialisable warm-start state of the model (hyper-parameters), to be passed
            back as ``warm_state`` in the next call; ``None`` when there is none.
    """

    next_params: tuple[ParamSet, ...]
    predicted_mmd2: Mapping[str, float] | None = None
    replicates: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] | None = None

    def ranking(self, observations: ObservationSet, k: int) -> list[RankedSet]:
        """The ``k`` best observed sets under this proposal's model (see ``rank_observations``)."""
        return ranked_records(observations.sets, self.predicted_mmd2, k)

    def to_dict(self) -> JsonObject:
        """JSON form (``proposals.json`` of the iteration it was made after)."""
        return {
            "next_params": [dict(p) for p in self.next_params],
            "replicates": list(self.replicates),
            "predicted_mmd2": dict(self.predicted_mmd2) if self.predicted_mmd2 else None,
            "info": self.info,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Proposal:
        """Inverse of :meth:`to_dict` (a resumed run continues from it)."""
        return cls(
            next_params=tuple(d.get("next_params", [])),
            predicted_mmd2=d.get("predicted_mmd2"),
            replicates=tuple(d.get("replicates", [])),
            info=dict(d.get("info", {})),
            state=d.get("state"),
        )


class DistributionScores(TypedDict):
    """``scores`` of :class:`BatchRecommendation`."""

    distribution_similarity: float
    per_sample_distances: np.ndarray
    per_sample_rows: np.ndarray
    per_set: list[ObservationRecord]


class BatchRecommendation(TypedDict):
    """The design's return value of ``recommend_next_batch``."""

    next_params: list[ParamSet]
    current_best: list[RankedSet]
    scores: DistributionScores
    info: dict[str, Any]


class BaseOptimizer(ABC):
    """Base class of every optimiser: stateless, seeded, fed with scored observations.

    Args:
        space: The search space; proposals are decoded and validated through it.
        seed: Experiment seed (used when a call gives none).
        top_k: Number of parameter sets reported in ``current_best``.
        **options: Optimiser-specific options (see each subclass's ``default_options``, plus
            ``replicate_slots``); unknown ones raise.

    Raises:
        ConfigError: An invalid argument or an option the optimiser does not know.
    """

    name: ClassVar[str] = "base"
    #: Options a subclass accepts, with their defaults.
    default_options: ClassVar[dict[str, Any]] = {}
    #: Options every optimiser accepts.
    common_options: ClassVar[dict[str, Any]] = {"replicate_slots": 0}

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        top_k: int = 5,
        **options: object,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"space must be a SearchSpace, got {type(space).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        known = {**self.common_options, **self.default_options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for optimizer {self.name!r}; "
                f"valid options: {sorted(known)}"
            )
        self.space = space
        self.seed = int(seed)
        self.top_k = int(top_k)
        self.options: dict[str, Any] = {**known, **options}
        r = self.options["replicate_slots"]
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or r < 0:
            raise ConfigError(f"replicate_slots must be an integer >= 0, got {r!r}")

    # ---- the interface -------------------------------------------------------------------------

    def propose(
        self,
        observations: ObservationSet,
        batch_size: int = 8,
        seed: int | None = None,
        warm_state: Mapping[str, JsonValue] | None = None,
    ) -> Proposal:
        """Propose the next batch from the scored observations.

        Args:
            observations: Valid scored observations and the targets (from
                :meth:`~bo_voids.scoring.ScoreBook.observations`).
            batch_size: Number of parameter sets to propose.
            seed: Seed of this call (default: derived from the experiment seed and the number of
                observations).
            warm_state: A previous :attr:`Proposal.state` to warm-start the model from.

        Returns:
            A :class:`Proposal` with exactly ``batch_size`` valid parameter sets, none an exact
            duplicate of an evaluated set or of another point of the batch, except the
            deliberate replicates listed in ``replicates``.

        Raises:
            ValueError: A non-positive or non-integer ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = int(batch_size)
        call_seed = (
            derive_seed(self.seed, "optimizer", len(observations)) if seed is None else int(seed)
        )
        n_rep = min(int(self.options["replicate_slots"]), batch_size - 1, len(observations))
        raw = self._propose(
            ProposalRequest(observations, batch_size - n_rep, call_seed, warm_state)
        )
        rng = np.random.default_rng(derive_seed(call_seed, "fill"))
        fresh, n_replaced = self._finalize(
            raw.next_params, set(observations.evaluated_keys), batch_size - n_rep, rng
        )
        replicates = [s for s, _ in rank_observations(observations.sets, raw.predicted_mmd2)]
        replicates = replicates[:n_rep]
        info = {
            "optimizer": self.name,
            "seed": call_seed,
            "n_observations": len(observations),
            "n_duplicates_replaced": n_replaced,
            "ranking": "model" if raw.predicted_mmd2 is not None else "raw",
            **raw.info,
        }
        return Proposal(
            next_params=(*fresh, *(dict(s.params) for s in replicates)),
            predicted_mmd2=raw.predicted_mmd2,
            replicates=tuple(s.uid for s in replicates),
            info=info,
            state=raw.state,
        )

    def recommend_next_batch(
        self,
        all_embeddings: np.ndarray,
        all_metadata: Sequence[ImageRecord],
        target_embeddings: np.ndarray,
        batch_size: int = 8,
        *,
        bandwidth: str = "multi",
    ) -> BatchRecommendation:
        """The design's interface: score the raw history, propose the next batch.

        Args:
            all_embeddings: `(N, D)` embeddings of every image so far (all iterations).
            all_metadata: `N` metadata records, one per row of ``all_embeddings``, with keys
                ``iteration``, ``dataset_type``, ``param_set_id`` and ``params``.
            target_embeddings: `(M, D)` embeddings of the real target images.
            batch_size: Number of parameter sets to propose.
            bandwidth: Kernel bandwidth of the MMD² score.

        Returns:
            A :class:`BatchRecommendation`: ``next_params``, ``current_best`` (the ``top_k``
            best observed sets, by the model when there is one), ``scores``
            (``distribution_similarity`` of their pooled images vs the targets,
            ``per_sample_distances`` / ``per_sample_rows`` of every non-target image,
            ``per_set`` records) and ``info``.

        Raises:
            ValueError: Inconsistent shapes, a non-positive ``batch_size``, unusable targets or
                malformed metadata.
        """
        emb = np.asarray(all_embeddings, dtype=np.float64)
        if emb.ndim != 2:
            raise ValueError(f"all_embeddings must be a 2-D (N, D) array, got shape {emb.shape}")
        if len(all_metadata) != emb.shape[0]:
            raise ValueError(
                f"all_metadata has {len(all_metadata)} records but all_embeddings has "
                f"{emb.shape[0]} rows; they must match one to one"
            )
        book = ScoreBook(self.space, target_embeddings, bandwidth=bandwidth, top_k=self.top_k)
        book.add(emb, all_metadata)
        obs = book.observations()
        proposal = self.propose(obs, batch_size)
        best = proposal.ranking(obs, self.top_k)
        rows = np.array(
            [i for i, m in enumerate(all_metadata) if m.get("dataset_type") not in TARGET_TYPES],
            dtype=np.intp,
        )
        dists = np.full(rows.size, math.nan)
        for s in book.all_sets():
            dists[np.searchsorted(rows, s.rows)] = s.nearest_real
        return {
            "next_params": list(proposal.next_params),
            "current_best": best,
            "scores": {
                "distribution_similarity": book.pooled_similarity([b["uid"] for b in best]),
                "per_sample_distances": dists,
                "per_sample_rows": rows,
                "per_set": [s.to_record() for s in book.all_sets()],
            },
            "info": {
                **proposal.info,
                "n_excluded": sum(not s.valid for s in book.all_sets()),
                "bandwidths": list(book.scorer.bandwidths_ or ()),
            },
        }

    @abstractmethod
    def _propose(self, request: ProposalRequest) -> Proposal:
        """Propose parameter sets from the scored observations.

        Args:
            request: The observations, the number of new sets wanted (replicate slots already
                taken off), this call's seed (all randomness must derive from it) and the warm
                state.

        Returns:
            A :class:`Proposal` (the base class validates, de-duplicates and fills it).
        """

    # ---- shared helpers ------------------------------------------------------------------------

    def sobol_batch(self, n: int, seed: int, skip: int = 0) -> list[ParamSet]:
        """A scrambled Sobol batch over the unit cube, decoded through the space.

        Args:
            n: Number of points.
            seed: Scrambling seed.
            skip: Points of the sequence to skip first.

        Returns:
            ``n`` valid parameter sets.
        """
        engine = torch.quasirandom.SobolEngine(self.space.dim, scramble=True, seed=seed % 2**31)
        if skip:
            engine.fast_forward(skip)
        u = engine.draw(n, dtype=torch.float64).numpy()
        return self.space.decode_many(u)

    def sobol_fallback(
        self, reason: str, batch_size: int, seed: int, info: dict[str, object], warn: bool = True
    ) -> Proposal:
        """A Sobol batch instead of a model's proposal, with the reason recorded and warned.

        Args:
            reason: Why the model is not used (goes into ``info['fallback']``).
            batch_size: Number of points.
            seed: The call seed (scrambles the sequence).
            info: The proposal's info, completed here.
            warn: Emit a :class:`~bo_voids.exceptions.FallbackWarning` (not for the expected
                start-up case of an empty history).

        Returns:
            The :class:`Proposal`.
        """
        info["fallback"] = reason
        info["model"] = "sobol"
        if warn:
            warnings.warn(
                f"{type(self).__name__} falls back to Sobol: {reason}", FallbackWarning, 4
            )
        logger.warning("%s falls back to Sobol proposals: %s", type(self).__name__, reason)
        return Proposal(next_params=tuple(self.sobol_batch(batch_size, seed)), info=info)

    def _check_int_options(self, lows: Mapping[str, int]) -> None:
        """Raise a :class:`~bo_voids.exceptions.ConfigError` for an option below its minimum."""
        for key, low in lows.items():
            v = self.options[key]
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ConfigError(f"{key} must be an integer >= {low}, got {v!r}")

    def _finalize(
        self,
        proposed: Sequence[Mapping[str, Any]],
        evaluated: set[tuple[Any, ...]],
        batch_size: int,
        rng: np.random.Generator,
    ) -> tuple[list[dict[str, Any]], int]:
        """Validate, de-duplicate and fill the batch to ``batch_size`` points."""
        seen = set(evaluated)
        out: list[dict[str, Any]] = []
        replaced = 0
        pending = list(proposed)
        while len(out) < batch_size:
            if pending:
                cand = pending.pop(0)
                try:
                    params = self.space.validate(cand)
                except (ConfigError, TypeError, ValueError):
                    params = self.space.from_raw(np.nan_to_num(self.space.loose_raw(cand)))
                if self.space.key(params) in seen:
                    if len(proposed) > batch_size and len(pending) >= batch_size - len(out):
                        continue  # a spare candidate will take its place
                    params = self._perturb(params, seen, rng)
                    replaced += 1
            else:
                params = self.space.sample_uniform(1, rng)[0]
                if self.space.key(params) in seen:
                    params = self._perturb(params, seen, rng)
            seen.add(self.space.key(params))
            out.append(params)
        if replaced:
            logger.info("replaced %d duplicate proposal(s) by perturbed or random points", replaced)
        return out, replaced

    def _perturb(
        self, params: ParamMapping, seen: set[tuple[ParamValue, ...]], rng: np.random.Generator
    ) -> dict[str, Any]:
        """A nearby point not in ``seen``: jitter the numeric columns, widening each try."""
        raw = self.space.to_raw(params)
        lo, hi = self.space.raw_bounds
        numeric = np.array([p.kind != "categorical" for p in self.space.parameters])
        for t in range(_PERTURB_TRIES):
            scale = 0.01 * (2.0**t) * (hi - lo)
            step = rng.normal(0.0, 1.0, size=raw.shape) * scale * numeric
            cand = self.space.from_raw(np.clip(raw + step, lo, hi))
            if self.space.key(cand) not in seen:
                return cand
        while True:  # the space is continuous: this ends after one or two draws
            cand = self.space.sample_uniform(1, rng)[0]
            if self.space.key(cand) not in seen:
                return cand


# ---------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------
