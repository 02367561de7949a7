"""Per-set observations and run-level scores: the one place that turns embeddings into scores.

Every stage that needs "the evaluated parameter sets and their scores" reads them from here —
the pipeline, the optimisers, the plots, the report and the calibration — so there is one
grouping, one per-set score, one ranking ("best") and one distribution similarity in the package.

* **Observation** (:class:`Observation`, immutable): one *distinct* parameter set (identity:
  :meth:`~bo_voids.space.SearchSpace.key`) with every image rendered of it so far. A set evaluated
  again in a later iteration (new seeds) merges into the same observation: its ``n_images``
  grows and its score sharpens.
* **Per-set score** ``mmd2``: the unbiased MMD² of all its images against the real targets, with
  the kernel bandwidths fixed by the targets (:class:`~bo_voids.metrics.MMDScorer`).
* **Per-set noise** ``mmd2_var``: the delete-one-image jackknife variance of that score (its
  images are independent renders, so this is the sampling noise of the score), moderated towards
  the median over all sets with ``PRIOR_DOF`` pseudo degrees of freedom (Smyth 2004) because
  three images give only two degrees of freedom, and floored.
* **Ranking** (:func:`rank_observations`, "best"): by the optimiser's model prediction of MMD² at
  the observed sets when it has a model (posterior mean: the raw minimum of noisy scores is a
  lucky draw), by the raw per-set MMD² otherwise.
* **Distribution similarity**: MMD² of the pooled images of the ``top_k`` best sets against the
  targets (the targets are a mixture of several sets: a pool can match it, one point cannot).

Example:
    >>> book = ScoreBook(space, targets, target_groups=groups)  # doctest: +SKIP
    >>> book.add(embeddings, metadata, iteration=1)  # doctest: +SKIP
    >>> book.observations().sets[0].mmd2  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from bo_voids._types import Labels
from bo_voids.evaluation import EvaluationResult, EvaluationTask
from bo_voids.exceptions import BoVoidsError, ConfigError, FailureBudgetError, FallbackWarning
from bo_voids.generation.voids import ImageRecord
from bo_voids.metrics import (
    MMDScorer,
    epsilon_ball_share,
    epsilon_from_real,
    kid,
    nearest_real_distances,
)
from bo_voids.run_scores import FreshScore, RunScores
from bo_voids.seeding import derive_seed
from bo_voids.space import ParamMapping, ParamSet, ParamValue, SearchSpace

if TYPE_CHECKING:
    from bo_voids.state import IterationRecord

logger = logging.getLogger(__name__)

#: ``dataset_type`` values of target images: never observations.
TARGET_TYPES: frozenset[str] = frozenset({"real"})
#: ``dataset_type`` values of observed (optimised-over) parameter sets.
OBSERVED_TYPES: frozenset[str] = frozenset({"close", "far", "synthetic"})
#: Prior degrees of freedom of the pooled variance in the moderated per-set variance.
PRIOR_DOF: float = 4.0
#: Relative floor of a per-set variance (times the pooled variance) and its absolute floor.
VAR_REL_FLOOR: float = 1e-2
VAR_ABS_FLOOR: float = 1e-12


@dataclass(frozen=True, eq=False)
class Observation:
    """One distinct evaluated parameter set, all its replications merged.

    Attributes:
        uid: Stable id: the ``param_set_id`` of its first evaluation (``iter{k}/{id}`` if that id
            is already taken by another set, as in histories whose ids repeat per iteration).
        key: :meth:`SearchSpace.key` of its parameters (its identity).
        dataset_type: ``close``, ``far`` or ``synthetic`` (of its first evaluation).
        params: The validated parameter set.
        iterations: Iterations that rendered it, in order (repeats when re-evaluated).
        param_set_ids: The ``param_set_id`` of each evaluation, aligned with ``iterations``.
        rows: `(n_images,)` global image rows (order of :meth:`ScoreBook.add` calls).
        local_rows: `(n_images,)` row of each image in the arrays of the ``add`` call that
            brought it (its row within its iteration when each call adds one iteration).
        embeddings: `(n_images, D)` embeddings of its images.
        image_iterations: `(n_images,)` iteration of each image.
        nearest_real: `(n_images,)` distance of each image to its nearest target.
        void_area_pct: Mean void area (% of the image) over its images.
        mmd2: Unbiased MMD² of its images against the targets (``nan`` if excluded).
        jackknife_var: Raw delete-one-image jackknife variance of ``mmd2`` (``nan`` if n < 3).
        mmd2_var: Moderated variance of ``mmd2`` (``> 0``; set by :meth:`ScoreBook.observations`).
        valid: Whether it is a usable observation.
        reason: Why it was excluded (empty when valid).
    """

    uid: str
    key: tuple[ParamValue, ...]
    dataset_type: str
    params: ParamSet
    iterations: tuple[int, ...]
    param_set_ids: tuple[str, ...]
    rows: np.ndarray
    local_rows: np.ndarray
    embeddings: np.ndarray
    image_iterations: np.ndarray
    nearest_real: np.ndarray
    void_area_pct: float
    mmd2: float = math.nan
    jackknife_var: float = math.nan
    mmd2_var: float = math.nan
    valid: bool = True
    reason: str = ""

    @property
    def n_images(self) -> int:
        """Number of images (replications) of the set."""
        return int(self.rows.size)

    @property
    def first_iteration(self) -> int:
        """The iteration that first evaluated it."""
        return self.iterations[0]

    @property
    def mean_nearest_real(self) -> float:
        """Mean nearest-target distance of its images."""
        return float(self.nearest_real.mean()) if self.nearest_real.size else math.nan

    def to_record(self) -> ObservationRecord:
        """The JSON-ready record of this observation (no embeddings)."""
        return {
            "uid": self.uid,
            "iteration": self.first_iteration,
            "iterations": list(self.iterations),
            "param_set_ids": list(self.param_set_ids),
            "dataset_type": self.dataset_type,
            "params": dict(self.params),
            "mmd2": float(self.mmd2),
            "mmd2_var": float(self.mmd2_var),
            "n_images": self.n_images,
            "mean_nearest_real": self.mean_nearest_real,
            "void_area_pct": float(self.void_area_pct),
            "valid": self.valid,
            "reason": self.reason,
        }


class ObservationRecord(TypedDict):
    """JSON form of an :class:`Observation` (``history.csv`` rows and ``scores.json``)."""

    uid: str
    iteration: int
    iterations: list[int]
    param_set_ids: list[str]
    dataset_type: str
    params: ParamSet
    mmd2: float
    mmd2_var: float
    n_images: int
    mean_nearest_real: float
    void_area_pct: float
    valid: bool
    reason: str


@dataclass(frozen=True)
class ObservationSet:
    """What an optimiser is given: the valid observations and the targets they were scored on.

    Attributes:
        sets: Valid scored observations (finite ``mmd2``, ``mmd2_var > 0``), evaluation order.
        targets: `(M, D)` target embeddings.
        target_groups: `(M,)` cluster label of each target (its parameter set, or a unique label
            per image for an iid folder).
        evaluated_keys: Keys of every evaluated set, excluded ones included (duplicate detection).
    """

    sets: tuple[Observation, ...]
    targets: np.ndarray
    target_groups: np.ndarray
    evaluated_keys: frozenset[tuple[Any, ...]] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.sets)

    def __iter__(self) -> Iterator[Observation]:
        return iter(self.sets)

    def __getitem__(self, i: int) -> Observation:
        return self.sets[i]

    @property
    def mmd2(self) -> np.ndarray:
        """`(n,)` per-set MMD²."""
        return np.array([s.mmd2 for s in self.sets], dtype=np.float64)

    @property
    def mmd2_var(self) -> np.ndarray:
        """`(n,)` per-set moderated variance of the MMD²."""
        return np.array([s.mmd2_var for s in self.sets], dtype=np.float64)


class RankedSet(TypedDict):
    """One entry of a ranking (``current_best`` of the design's interface)."""

    uid: str
    param_set_id: str
    iteration: int
    params: ParamSet
    mmd2: float
    mmd2_var: float
    predicted_mmd2: float
    n_images: int


def rank_observations(
    sets: Sequence[Observation], predicted: Mapping[str, float] | None = None
) -> list[tuple[Observation, float]]:
    """The one ranking of the package ("best" first) with the score it ranks by.

    Args:
        sets: Valid observations.
        predicted: The optimiser's predicted MMD² by ``uid``; used when it covers every set with
            finite values, else the raw ``mmd2`` ranks.

    Returns:
        ``(observation, ranking score)`` pairs, best (lowest) first; ties keep evaluation order.
    """
    use_model = _covers(sets, predicted)
    scores = [float(predicted[s.uid]) if use_model else s.mmd2 for s in sets]  # type: ignore[index]
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    return [(sets[i], scores[i]) for i in order]


def ranked_records(
    sets: Sequence[Observation], predicted: Mapping[str, float] | None, k: int
) -> list[RankedSet]:
    """The ``k`` best observations as :class:`RankedSet` records."""
    return [
        {
            "uid": s.uid,
            "param_set_id": s.uid,
            "iteration": s.first_iteration,
            "params": dict(s.params),
            "mmd2": float(s.mmd2),
            "mmd2_var": float(s.mmd2_var),
            "predicted_mmd2": float(score),
            "n_images": s.n_images,
        }
        for s, score in rank_observations(sets, predicted)[:k]
    ]


def fresh_mmd2(
    evaluate: Callable[[Sequence[EvaluationTask]], Sequence[EvaluationResult]],
    scorer: MMDScorer,
    params: ParamMapping,
    *,
    seed: int,
    iteration: int,
    n_images: int,
    stream: str = "fresh",
) -> float:
    """MMD² of ``n_images`` fresh, independently seeded images of ``params`` against the targets.

    The one way the package re-scores a recommendation (the pipeline after every iteration, the
    benchmarks at their checkpoints): the seeds come from ``derive_seed(seed, stream, iteration,
    r)``, a stream no optimiser draws from, so the score is not biased by the selection.

    Args:
        evaluate: Renders and embeds tasks (an executor's or an evaluator's); a failed
            evaluation is left out of what it returns.
        scorer: The run's scorer (kernel fixed by the targets).
        params: The parameter set.
        seed: The run's seed.
        iteration: The iteration whose recommendation this is (part of the seed stream).
        n_images: Fresh images to render (≥ 2: the unbiased MMD² needs two).
        stream: Name of the seed stream (``"fresh"`` for the run's own re-scoring).

    Returns:
        The fresh MMD² (NaN when the evaluation failed).
    """
    seeds = tuple(derive_seed(seed, stream, iteration, r) for r in range(n_images))
    task = EvaluationTask(iteration, "synthetic", 0, f"fresh_{iteration}", dict(params), seeds)
    results = evaluate([task])
    return float(scorer.score(results[0].embeddings)) if results else math.nan


def fresh_pool_similarity(
    evaluate: Callable[[Sequence[EvaluationTask]], Sequence[EvaluationResult]],
    scorer: MMDScorer,
    pool: Sequence[RankedSet],
    *,
    seed: int,
    iteration: int,
    stream: str = "confirm_pool",
) -> float:
    """Pooled MMD² of fresh, independently seeded renders of the sets of ``pool``.

    The distribution similarity ranks and pools the sets that scored best *in sample*, so it is
    biased low by that selection; re-rendering the same sets (as many images each as they had)
    with seeds from a stream no optimiser draws from gives an unbiased second look, which the
    stop rule needs before it stops on ``convergence_threshold``.

    Args:
        evaluate: Renders and embeds tasks; a failed evaluation is left out of what it returns.
        scorer: The run's scorer.
        pool: The ranked sets that were pooled (``RunScores.best``).
        seed: The run's seed.
        iteration: The iteration (part of the seed stream).
        stream: Name of the seed stream.

    Returns:
        The pooled fresh MMD² (NaN when nothing could be rendered).
    """
    tasks = [
        EvaluationTask(
            iteration,
            "synthetic",
            i,
            f"{stream}_{iteration}_{i}",
            dict(entry["params"]),
            tuple(
                derive_seed(seed, stream, iteration, i, r)
                for r in range(max(1, int(entry["n_images"])))
            ),
        )
        for i, entry in enumerate(pool)
    ]
    results = [r for r in evaluate(tasks) if len(r.embeddings)]
    if not results:
        return math.nan
    pooled = np.concatenate([r.embeddings for r in results])
    return float(scorer.score(pooled)) if len(pooled) >= 2 else math.nan


def recommendation_fresh_score(
    evaluate: Callable[[Sequence[EvaluationTask]], Sequence[EvaluationResult]],
    scorer: MMDScorer,
    recommendation: RankedSet,
    *,
    seed: int,
    iteration: int,
    n_images: int,
    confirm_if: Callable[[float], bool] = lambda fresh: False,
) -> FreshScore:
    """The recommendation re-scored on fresh images, confirmed on a second sample when asked.

    Args:
        evaluate: Renders and embeds tasks.
        scorer: The run's scorer.
        recommendation: The best-ranked set of the iteration.
        seed: The run's seed.
        iteration: The iteration.
        n_images: Fresh images per sample (≥ 2).
        confirm_if: Given the first fresh MMD², whether to render a second, independently seeded
            sample (stream ``"confirm"``): the stop rule confirms a candidate stop on it, since
            the first sample was looked at and is biased low if the rule stops on it.

    Returns:
        The :class:`~bo_voids.run_scores.FreshScore`.
    """

    def score(stream: str) -> float:
        return fresh_mmd2(
            evaluate,
            scorer,
            recommendation["params"],
            seed=seed,
            iteration=iteration,
            n_images=n_images,
            stream=stream,
        )

    fresh = score("fresh")
    confirm = score("confirm") if confirm_if(fresh) else None
    return FreshScore(
        uid=recommendation["uid"],
        params=dict(recommendation["params"]),
        mmd2_in_sample=recommendation["mmd2"],
        predicted_mmd2=recommendation["predicted_mmd2"],
        fresh_mmd2=fresh,
        fresh_images=n_images,
        fresh_seed_stream=("fresh", iteration),
        confirm_mmd2=confirm,
        confirm_seed_stream=("confirm", iteration) if confirm is not None else (),
    )


class ScoreBook:
    """The evaluated parameter sets of a run, scored incrementally against fixed targets.

    Args:
        space: The search space (identity and validation of parameter sets).
        targets: `(M, D)` real target embeddings (M ≥ 2, finite).
        target_groups: `(M,)` cluster label per target (``None``: each image its own cluster).
        bandwidth: Kernel bandwidth of the MMD² (``"multi"`` or ``"median"``), or a fitted
            :class:`~bo_voids.metrics.MMDScorer` to use as it is.
        top_k: Sets pooled for the distribution similarity.
        epsilon: ε of the ε-ball share (``None``: :func:`~bo_voids.metrics.epsilon_from_real`
            across target clusters; ``nan`` with a single cluster).

    Raises:
        ValueError: Unusable targets.
    """

    def __init__(
        self,
        space: SearchSpace,
        targets: np.ndarray,
        *,
        target_groups: Labels | None = None,
        bandwidth: str | MMDScorer = "multi",
        top_k: int = 5,
        epsilon: float | None = None,
    ) -> None:
        T = np.asarray(targets, dtype=np.float64)
        if T.ndim != 2 or T.shape[0] < 2:
            raise ValueError(f"targets must be (M >= 2, D), got shape {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError("targets contain NaN or inf")
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        self.space = space
        self.targets = T
        groups = np.arange(len(T)) if target_groups is None else np.asarray(target_groups)
        if groups.shape != (len(T),):
            raise ValueError(f"target_groups must have {len(T)} entries, got {groups.shape}")
        self.target_groups = groups
        if isinstance(bandwidth, MMDScorer):
            self.scorer = bandwidth if bandwidth.fitted else bandwidth.fit(T)
        else:
            self.scorer = MMDScorer(bandwidth=bandwidth, unbiased=True).fit(T)
        self.top_k = int(top_k)
        # ε is the nearest-neighbour distance of a target to a target of *another* cluster: a
        # sibling render of the same parameter set is not "another real image"
        self.epsilon = float(epsilon_from_real(T, groups=groups) if epsilon is None else epsilon)
        self._sets: dict[tuple[Any, ...], Observation] = {}
        self._excluded: list[Observation] = []
        self._n_rows = 0
        self._iteration_embeddings: dict[int, np.ndarray] = {}
        self._uids: set[str] = set()

    @classmethod
    def from_iteration0(
        cls,
        space: SearchSpace,
        embeddings: np.ndarray,
        metadata: Sequence[ImageRecord],
        *,
        n_failed: int,
        bandwidth: str | MMDScorer,
        top_k: int,
        embedder_name: str,
    ) -> ScoreBook:
        """The book of a run, its targets and kernel fixed by iteration 0's target images.

        Args:
            space: The search space.
            embeddings: Iteration 0's embeddings (targets and observed sets).
            metadata: One record per image (``dataset_type``, ``param_set_id``).
            n_failed: Failed evaluations of iteration 0 (for the message when too few remain).
            bandwidth: The kernel bandwidth rule.
            top_k: Length of the ranking.
            embedder_name: The embedder's name (for the message on a constant embedder).

        Raises:
            FailureBudgetError: Fewer than 2 target images or no observed set remain.
            BoVoidsError: Every image has the same embedding (every score would be 0).
        """
        is_target = np.array([m["dataset_type"] in TARGET_TYPES for m in metadata], dtype=bool)
        sets = {m["param_set_id"] for m in metadata}
        target_sets = {m["param_set_id"] for m in metadata if m["dataset_type"] in TARGET_TYPES}
        n_real, n_obs = int(is_target.sum()), len(sets) - len(target_sets)
        if n_real < 2 or n_obs < 1:
            raise FailureBudgetError(
                f"iteration 0 is unusable after {n_failed} failed evaluation(s): "
                f"{n_real} real image(s) (MMD needs 2) and {n_obs} observed parameter set(s) "
                "(needs 1) remain"
            )
        if len(embeddings) and float(np.ptp(embeddings, axis=0).max()) == 0.0:
            raise BoVoidsError(
                f"the {embedder_name} embedder returned the same embedding for all "
                f"{len(embeddings)} images of iteration 0: every score would be 0 and the run "
                "would 'converge' at once. Check the embedder (weights, device) and the images"
            )
        return cls(
            space,
            embeddings[is_target],
            target_groups=target_clusters(metadata),
            bandwidth=bandwidth,
            top_k=top_k,
        )

    # ---- building ------------------------------------------------------------------------------

    def add(
        self,
        embeddings: np.ndarray,
        metadata: Sequence[ImageRecord],
        iteration: int | None = None,
    ) -> list[Observation]:
        """Add images; new sets are scored, sets evaluated again are merged and re-scored.

        Rows whose ``dataset_type`` is a target type are skipped (they are the targets). Images
        are grouped by ``(iteration, dataset_type, param_set_id)`` into evaluations, and
        evaluations by :meth:`SearchSpace.key` into observations.

        Args:
            embeddings: `(N, D)` embeddings, aligned with ``metadata``.
            metadata: `N` per-image records with ``dataset_type``, ``param_set_id`` and
                ``params`` (optionally ``iteration`` and ``void_area_pct``).
            iteration: Iteration of rows without an ``iteration`` key.

        Returns:
            The observations this call created or changed (valid or excluded), in order.

        Raises:
            ValueError: Mismatched shapes, a feature count different from the targets', an
                unknown ``dataset_type`` or a row without an iteration.
        """
        E = np.asarray(embeddings, dtype=np.float64)
        if E.ndim != 2 or E.shape[0] != len(metadata):
            raise ValueError(
                f"embeddings of shape {E.shape} do not match {len(metadata)} metadata records"
            )
        if E.shape[0] and E.shape[1] != self.targets.shape[1]:
            raise ValueError(
                f"embeddings have {E.shape[1]} features, the targets {self.targets.shape[1]}"
            )
        groups: dict[tuple[int, str, str], list[int]] = {}
        for i, m in enumerate(metadata):
            dtype = m.get("dataset_type")
            if dtype in TARGET_TYPES:
                continue
            if dtype not in OBSERVED_TYPES:
                raise ValueError(
                    f"metadata row {i}: dataset_type must be one of "
                    f"{sorted(OBSERVED_TYPES | TARGET_TYPES)}, got {dtype!r}"
                )
            it = m.get("iteration", iteration)
            if it is None:
                raise ValueError(f"metadata row {i} has no iteration")
            groups.setdefault((int(it), str(dtype), str(m.get("param_set_id"))), []).append(i)
        base = self._n_rows
        self._n_rows += E.shape[0]
        own: dict[int, list[int]] = {}
        changed: list[Observation] = []
        for (it, dtype, psid), idx in groups.items():
            own.setdefault(it, []).extend(idx)
            rows = np.asarray(idx, dtype=np.intp)
            first = metadata[idx[0]]
            try:
                params = self.space.validate(first.get("params") or {})
            except (ConfigError, TypeError, ValueError) as exc:
                changed.append(self._exclude_new(psid, dtype, first, it, rows, base, exc))
                continue
            if any(
                (other := metadata[r]["params"]) is None or not self.space.same(other, params)
                for r in idx[1:]
            ):
                changed.append(
                    self._exclude_new(
                        psid, dtype, first, it, rows, base, "its images disagree on the params"
                    )
                )
                continue
            X = E[rows]
            area = np.array([float(metadata[r].get("void_area_pct", math.nan)) for r in idx])
            key = self.space.key(params)
            old = self._sets.get(key)
            if old is None:
                uid = psid if psid not in self._uids else f"iter{it}/{psid}"
                self._uids.add(uid)
                obs = Observation(
                    uid=uid,
                    key=key,
                    dataset_type=dtype,
                    params=params,
                    iterations=(it,),
                    param_set_ids=(psid,),
                    rows=rows + base,
                    local_rows=rows,
                    embeddings=X,
                    image_iterations=np.full(len(idx), it, dtype=np.int64),
                    nearest_real=_nearest(X, self.targets),
                    void_area_pct=_mean_or_nan(area),
                )
            else:
                obs = replace(
                    old,
                    iterations=(*old.iterations, it),
                    param_set_ids=(*old.param_set_ids, psid),
                    rows=np.concatenate([old.rows, rows + base]),
                    local_rows=np.concatenate([old.local_rows, rows]),
                    embeddings=np.concatenate([old.embeddings, X]),
                    image_iterations=np.concatenate(
                        [old.image_iterations, np.full(len(idx), it, dtype=np.int64)]
                    ),
                    nearest_real=np.concatenate([old.nearest_real, _nearest(X, self.targets)]),
                    void_area_pct=_mean_or_nan(
                        np.concatenate([np.full(old.n_images, old.void_area_pct), area])
                    ),
                )
            obs = self._score(obs)
            self._sets[key] = obs
            changed.append(obs)
        for it, idx in own.items():
            X = E[np.asarray(idx, dtype=np.intp)]
            prev = self._iteration_embeddings.get(it)
            self._iteration_embeddings[it] = X if prev is None else np.concatenate([prev, X])
        return changed

    # ---- reading -------------------------------------------------------------------------------

    def all_sets(self) -> list[Observation]:
        """Every observation, valid or excluded, in first-seen order (variances moderated)."""
        invalid = [o for o in self._sets.values() if not o.valid]
        return [*self._moderated(), *invalid, *self._excluded]

    def observations(self) -> ObservationSet:
        """The valid observations with moderated variances, as an optimiser receives them."""
        keys = frozenset(self._sets) | frozenset(o.key for o in self._excluded if o.key)
        return ObservationSet(
            sets=tuple(self._moderated()),
            targets=self.targets,
            target_groups=self.target_groups,
            evaluated_keys=keys,
        )

    def scores(self, iteration: int, predicted: Mapping[str, float] | None = None) -> RunScores:
        """Run-level scores after ``iteration`` (see the module docstring for the definitions).

        Args:
            iteration: The iteration just added.
            predicted: The optimiser's predicted MMD² by ``uid`` (model ranking) or ``None``.

        Returns:
            The :class:`RunScores`.
        """
        valid = self._moderated()
        ranked = rank_observations(valid, predicted)
        model = _covers(valid, predicted)
        best = ranked_records(valid, predicted, self.top_k)
        pool = [s for s, _ in ranked[: self.top_k]]
        pooled = np.concatenate([s.embeddings for s in pool]) if pool else np.zeros((0, 1))
        similarity = self._similarity(pooled)
        own = self._iteration_embeddings.get(iteration, np.zeros((0, 1)))
        this_iter = [s for s in valid if iteration in s.iterations]
        return RunScores(
            iteration=iteration,
            n_sets=len(valid),
            ranking="model" if model else "raw",
            best=best,
            distribution_similarity=similarity,
            pool_size=len(pooled),
            kid=float(kid(pooled, self.targets)) if len(pooled) >= 2 else math.nan,
            iteration_best_mmd2=float(min((s.mmd2 for s in this_iter), default=math.nan)),
            mean_nearest_real=float(_nearest(own, self.targets).mean()) if len(own) else math.nan,
            epsilon=self.epsilon,
            epsilon_ball_share=float(epsilon_ball_share(own, self.targets, self.epsilon))
            if len(own) and math.isfinite(self.epsilon)
            else math.nan,
            per_set=[s.to_record() for s in this_iter],
        )

    def pooled_embeddings(self, uids: Sequence[str]) -> np.ndarray:
        """`(n, D)` images of the given observations, concatenated."""
        by_uid = {o.uid: o for o in self._sets.values()}
        return np.concatenate([by_uid[u].embeddings for u in uids])

    def pooled_similarity(self, uids: Sequence[str]) -> float:
        """The distribution similarity of the given observations: their pooled images' MMD².

        Returns:
            NaN when fewer than 2 images are pooled.
        """
        return self._similarity(self.pooled_embeddings(uids) if uids else np.zeros((0, 1)))

    def _similarity(self, pooled: np.ndarray) -> float:
        return float(self.scorer.score(pooled)) if len(pooled) >= 2 else math.nan

    # ---- private -------------------------------------------------------------------------------

    def _score(self, obs: Observation) -> Observation:
        if not np.all(np.isfinite(obs.embeddings)):
            return self._invalid(obs, "non-finite (NaN/inf) embeddings")
        if obs.n_images < 2:
            return self._invalid(obs, "fewer than 2 replications (the unbiased MMD² needs 2)")
        X = obs.embeddings
        try:
            score = float(self.scorer.score(X))
            jk = math.nan
            if obs.n_images >= 3:
                loo = np.array([self.scorer.score(np.delete(X, i, axis=0)) for i in range(len(X))])
                n = len(X)
                jk = float((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
        except (ValueError, FloatingPointError) as exc:
            return self._invalid(obs, f"its MMD² cannot be computed ({exc})")
        if not math.isfinite(score):
            return self._invalid(obs, "non-finite MMD² score")
        return replace(obs, mmd2=score, jackknife_var=jk, valid=True, reason="")

    def _invalid(self, obs: Observation, reason: str) -> Observation:
        _warn_excluded(obs.uid, reason)
        return replace(obs, mmd2=math.nan, valid=False, reason=reason)

    def _exclude_new(
        self,
        psid: str,
        dtype: str,
        first: Mapping[str, Any],
        iteration: int,
        rows: np.ndarray,
        base: int,
        why: object,
    ) -> Observation:
        reason = why if isinstance(why, str) else f"invalid parameters ({why})"
        uid = psid if psid not in self._uids else f"iter{iteration}/{psid}"
        self._uids.add(uid)
        _warn_excluded(uid, reason)
        obs = Observation(
            uid=uid,
            key=(),
            dataset_type=dtype,
            params=dict(first.get("params") or {}),
            iterations=(iteration,),
            param_set_ids=(psid,),
            rows=rows + base,
            local_rows=rows,
            embeddings=np.zeros((len(rows), self.targets.shape[1])),
            image_iterations=np.full(len(rows), iteration, dtype=np.int64),
            nearest_real=np.full(len(rows), math.nan),
            void_area_pct=math.nan,
            valid=False,
            reason=reason,
        )
        self._excluded.append(obs)
        return obs

    def _moderated(self) -> list[Observation]:
        """Valid observations with ``mmd2_var`` moderated towards the pooled jackknife variance."""
        valid = [o for o in self._sets.values() if o.valid]
        jk = np.array([s.jackknife_var for s in valid if math.isfinite(s.jackknife_var)])
        pooled = float(np.median(jk)) if jk.size and np.median(jk) > 0 else math.nan
        if not math.isfinite(pooled):
            # No usable replication spread: a small share of the spread between sets.
            y = np.array([s.mmd2 for s in valid])
            spread = float(np.var(y)) if y.size > 1 else 0.0
            pooled = max(1e-2 * spread, VAR_ABS_FLOOR)
        floor = max(VAR_REL_FLOOR * pooled, VAR_ABS_FLOOR)
        out = []
        for s in valid:
            if math.isfinite(s.jackknife_var):
                dof = s.n_images - 1.0
                var = (dof * s.jackknife_var + PRIOR_DOF * pooled) / (dof + PRIOR_DOF)
            else:
                var = pooled
            out.append(replace(s, mmd2_var=float(max(var, floor))))
        return out


def target_clusters(metadata: Sequence[ImageRecord]) -> np.ndarray:
    """Cluster label of each target image (rows of a target ``dataset_type``, in order).

    Simulated targets are clustered by their parameter set (renders of one set are exchangeable
    only with each other); images loaded from a folder (``params`` is ``None``) are iid, each its
    own cluster.
    """
    labels = []
    for i, m in enumerate(m for m in metadata if m.get("dataset_type") in TARGET_TYPES):
        labels.append(str(m["param_set_id"]) if m.get("params") is not None else f"image_{i}")
    return np.asarray(labels)


def score_book_from_iterations(
    space: SearchSpace,
    iterations: Sequence[IterationRecord],
    *,
    bandwidth: str | MMDScorer = "multi",
    top_k: int = 5,
) -> ScoreBook:
    """A :class:`ScoreBook` rebuilt from persisted iterations (targets from iteration 0).

    Args:
        space: The search space.
        iterations: The persisted iterations, iteration 0 first.
        bandwidth: Kernel bandwidth of the MMD².
        top_k: Sets pooled for the distribution similarity.

    Returns:
        The book, with one ``add`` per iteration (so ``local_rows`` are rows within it).
    """
    first = iterations[0]
    is_target = np.array([m["dataset_type"] in TARGET_TYPES for m in first.metadata], dtype=bool)
    book = ScoreBook(
        space,
        np.asarray(first.embeddings)[is_target],
        target_groups=target_clusters(first.metadata),
        bandwidth=bandwidth,
        top_k=top_k,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)  # already reported during the run
        for it in iterations:
            book.add(it.embeddings, it.metadata, iteration=it.iteration)
    return book


def _covers(sets: Sequence[Observation], predicted: Mapping[str, float] | None) -> bool:
    """Whether ``predicted`` holds a finite prediction for every one of ``sets``."""
    return (
        predicted is not None
        and len(sets) > 0
        and all(s.uid in predicted and math.isfinite(predicted[s.uid]) for s in sets)
    )


def _mean_or_nan(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _nearest(X: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if not len(X):
        return np.zeros(0)
    out = np.full(len(X), math.nan)
    finite = np.all(np.isfinite(X), axis=1)
    if finite.any():
        out[finite] = nearest_real_distances(X[finite], targets)
    return out


def _warn_excluded(uid: str, reason: str) -> None:
    warnings.warn(
        f"parameter set {uid} is excluded from the observations: {reason}",
        FallbackWarning,
        stacklevel=4,
    )
    logger.warning("excluding parameter set %s: %s", uid, reason)
