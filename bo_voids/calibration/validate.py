"""Validation of a calibration on freshly rendered images: in-sample, held out, against a null.

Every figure here compares *fresh* renders (render seeds derived from ``(seed, "calibration",
label, salt, i, r)`` and checked disjoint from every seed the run used) with the targets, using
the run's fixed kernel and embedder (fingerprint checked).

* **Shape of a validation sample.** A permutation test is exact when the units it relabels are
  exchangeable under "same process". Simulated targets are parameter sets × renders, so a
  validation sample is rendered in the same shape (sets × the targets' renders per set) and
  whole sets are permuted (scheme ``"cluster"``). A target folder is iid (each image its own
  cluster), so a validation sample is many sets × 1 render and single images are permuted
  (scheme ``"image"``). :class:`TargetDesign` decides which.
* **In-sample** (:func:`validate_param_sets`, :func:`validate_distribution`): the distribution
  fitted on all targets, scored against those same targets — optimistic, since the fit saw them.
* **Held out** (:func:`target_folds`, :func:`plan_held_out`, :func:`score_held_out`): the target
  clusters (images for an iid folder) are split into K folds (leave-one-cluster-out when there
  are at most ``folds`` clusters); for each fold the mixture is refitted on the other folds, a
  fresh sample of its implied distribution is scored against the held-out fold, and the figure
  is the mean over folds. Its test is
  :func:`~bo_voids.statistics.stratified_permutation_test` (units relabelled only within a
  fold, so a fold's fresh sample is compared only with the targets its fit never saw).
  The kernel bandwidths stay the run's (set from all targets): a scale, not a fit to them.
* **Null band** (the "noise floor" a figure is compared with, always for the size and shape of
  the sample judged): with simulated targets, fresh draws of the config's real distribution
  (:func:`render_null_pool`, :func:`~bo_voids.statistics.pool_null_band`) scored exactly as
  the judged sample is;
  with a target folder, :func:`~bo_voids.statistics.split_null_band` for the in-sample figure and
  the held-out test's own permutation distribution for the held-out one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.config import ParameterDistribution
from bo_voids.exceptions import CalibrationError
from bo_voids.generation.voids import ImageRecord
from bo_voids.metrics import MMDScorer
from bo_voids.scoring import Observation
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import ParamMapping, ParamSet
from bo_voids.state import ExperimentRun
from bo_voids.statistics import (
    POOL_NULL_DRAWS,
    NullBand,
    PermutationResult,
    null_band_from_statistics,
    permutation_test,
    pool_null_band,
    split_null_band,
    stratified_permutation_test,
)

from .context import CalibrationContext, TargetDesign
from .distribution import (
    effective_sample_size,
    implied_distribution,
    std_correction_factor,
    typed_distribution,
)
from .mixture import MixtureFit, fit_mixture

__all__ = [
    "NULL_DRAWS",
    "VALIDATION_DATASET_TYPE",
    "CalibrationContext",
    "FitOptions",
    "Fold",
    "FoldPlan",
    "HeldOutResult",
    "ImpliedFit",
    "RenderRequest",
    "Rendered",
    "TargetDesign",
    "ValidationResult",
    "default_pool_sets",
    "default_sets_per_fold",
    "default_validation_sets",
    "fit_implied",
    "in_sample_band",
    "plan_held_out",
    "render_null_pool",
    "render_requests",
    "score_held_out",
    "score_sample",
    "target_folds",
    "validate_distribution",
    "validate_param_sets",
]

#: ``dataset_type`` / ``iteration`` stamped on validation renders (outside the run's iterations).
VALIDATION_DATASET_TYPE = "calibration"
VALIDATION_ITERATION = -1
#: Seed stream of every fresh render and draw of the calibration.
SEED_STREAM = "calibration"
#: Null statistics drawn from a rendered null pool.
NULL_DRAWS = POOL_NULL_DRAWS
#: Split-band splits for a target folder (cheap: kernel algebra on the targets only).
SPLIT_BAND_SPLITS = 200


# ---------------------------------------------------------------------------------------------
# Fitting (all targets, or a training part of them)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOptions:
    """Options of the mixture fit and of the implied distribution.

    Attributes:
        max_components: At most this many mixture components.
        min_weight: Components lighter than this are pruned (weights refitted).
        within: Within-set estimator of the mixture fit (see :func:`fit_mixture`).
        std_floor: Minimum std of the implied distribution, as a fraction of each range.
        std_correction: ``"n_eff"`` (small-sample corrected std) or ``"none"``.
    """

    max_components: int | None = 8
    min_weight: float = 0.02
    within: str = "biased"
    std_floor: float = 0.0
    std_correction: str = "n_eff"


@dataclass
class ImpliedFit:
    """A mixture fit and the distribution it implies.

    Attributes:
        mixture: The :class:`MixtureFit`.
        components: ``(observation, weight)`` of the support, heaviest first.
        distribution: The implied distribution (std corrected as ``options`` say).
        uncorrected: The same with the plain weighted std.
        n_eff: Effective number of components ``1 / Σ w²``.
        std_factor: Factor the std was multiplied by (``sqrt(n_eff / (n_eff - 1))`` or 1).
        n_targets: Target images the fit saw.
    """

    mixture: MixtureFit
    components: list[tuple[Observation, float]]
    distribution: dict[str, dict[str, float]]
    uncorrected: dict[str, dict[str, float]]
    n_eff: float
    std_factor: float
    n_targets: int

    def fold_summary(self) -> JsonObject:
        """What a held-out fold reports of the fit on its training part."""
        return {
            "n_train_images": self.n_targets,
            "n_components": self.mixture.n_components,
            "train_mixture_mmd2": self.mixture.mmd2,
            "n_eff": self.n_eff,
            "implied_distribution": self.distribution,
        }


class FoldFit(Protocol):
    """A fit on a fold's training part (:class:`ImpliedFit` or a population fit)."""

    def fold_summary(self) -> JsonObject:
        """JSON figures of the fit, for the fold's record."""
        ...


def fit_implied(
    context: CalibrationContext,
    options: FitOptions | None = None,
    *,
    target_mask: np.ndarray | None = None,
) -> ImpliedFit:
    """Fit the mixture to (part of) the targets and derive its implied distribution.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        options: Fit options (default :class:`FitOptions`).
        target_mask: Boolean mask of the targets to fit on (``None``: all of them).

    Returns:
        The :class:`ImpliedFit`.
    """
    options = options or FitOptions()
    T = context.targets if target_mask is None else context.targets[target_mask]
    obs = context.observations
    fit = fit_mixture(
        {o.uid: o.embeddings for o in obs},
        T,
        context.scorer,
        max_components=options.max_components,
        min_weight=options.min_weight,
        within=options.within,
        set_seeds={o.uid: context.set_seeds[o.uid] for o in obs},
    )
    by_uid = {o.uid: o for o in obs}
    components = [(by_uid[uid], w) for uid, w in fit.components]
    pairs = [(o.params, w) for o, w in components]
    bounds = context.config.param_bounds
    dist = implied_distribution(
        pairs, bounds, std_floor=options.std_floor, std_correction=options.std_correction
    )
    plain = implied_distribution(pairs, bounds, std_floor=options.std_floor, std_correction="none")
    n_eff = effective_sample_size([w for _, w in components])
    factor = std_correction_factor(n_eff) if options.std_correction == "n_eff" else 1.0
    return ImpliedFit(fit, components, dist, plain, n_eff, factor, int(T.shape[0]))


# ---------------------------------------------------------------------------------------------
# Rendering fresh samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderRequest:
    """Parameter sets to render fresh, each ``replications`` times, under one label."""

    label: str
    param_sets: tuple[ParamSet, ...]
    replications: int


@dataclass
class Rendered:
    """The fresh renders of one :class:`RenderRequest`.

    Attributes:
        label: The request's label.
        param_sets: The rendered sets.
        replications: Renders per set.
        embeddings: ``(n_sets × replications, d)`` embeddings, set after set.
        groups: ``(n,)`` index of the set of each image (its cluster).
        render_seeds: Render seed of each image.
    """

    label: str
    param_sets: list[ParamSet]
    replications: int
    embeddings: np.ndarray
    groups: np.ndarray
    render_seeds: list[int]

    def per_set(self) -> list[np.ndarray]:
        """The embeddings of each set."""
        return [self.embeddings[self.groups == i] for i in range(len(self.param_sets))]


def _fresh_seeds(
    seed: int, label: str, n_sets: int, replications: int, used: set[int]
) -> list[tuple[int, ...]]:
    for salt in range(1000):
        seeds = [
            tuple(derive_seed(seed, SEED_STREAM, label, salt, i, r) for r in range(replications))
            for i in range(n_sets)
        ]
        flat = [s for t in seeds for s in t]
        if len(set(flat)) == len(flat) and not used.intersection(flat):
            return seeds
    raise CalibrationError("could not derive fresh render seeds")  # pragma: no cover


def render_requests(
    context: CalibrationContext, requests: Sequence[RenderRequest], seed: int
) -> dict[str, Rendered]:
    """Render and embed every request in one batch (the embedder runs once, on all images).

    Render seeds come from ``(seed, "calibration", label, salt, i, r)`` and are distinct from
    each other and from every seed the run used.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        requests: What to render; labels must be unique.
        seed: Seed of the render seeds.

    Returns:
        ``{label: Rendered}``.

    Raises:
        ValueError: Duplicate labels or a request without sets.
    """
    from bo_voids.evaluation import EvaluationTask

    labels = [r.label for r in requests]
    if len(set(labels)) != len(labels):
        raise ValueError(f"render labels must be unique, got {labels}")
    used = set(context.used_seeds)
    tasks, owners = [], []
    validated: dict[str, list[ParamSet]] = {}
    for req in requests:
        if not req.param_sets or req.replications < 1:
            raise ValueError(f"request {req.label!r} renders nothing")
        sets = [context.space.validate(p) for p in req.param_sets]
        validated[req.label] = sets
        seeds = _fresh_seeds(seed, req.label, len(sets), req.replications, used)
        used.update(s for t in seeds for s in t)
        for i, (p, s) in enumerate(zip(sets, seeds, strict=True)):
            tasks.append(
                EvaluationTask(
                    VALIDATION_ITERATION,
                    VALIDATION_DATASET_TYPE,
                    i,
                    f"calibration_{req.label}_{i:03d}",
                    p,
                    s,
                )
            )
            owners.append(req.label)
    results = context.get_evaluator().evaluate_many(tasks) if tasks else []
    out: dict[str, Rendered] = {}
    for req in requests:
        mine = [r for r, o in zip(results, owners, strict=True) if o == req.label]
        emb = np.concatenate([r.embeddings for r in mine], axis=0).astype(np.float64)
        groups = np.concatenate([np.full(len(r.embeddings), i) for i, r in enumerate(mine)])
        out[req.label] = Rendered(
            label=req.label,
            param_sets=validated[req.label],
            replications=req.replications,
            embeddings=emb,
            groups=groups,
            render_seeds=[_render_seed(rec) for r in mine for rec in r.records],
        )
    return out


def _render_seed(record: ImageRecord) -> int:
    seed = record["render_seed"]
    assert seed is not None, "a rendered image records its render seed"
    return int(seed)


# ---------------------------------------------------------------------------------------------
# Null bands
# ---------------------------------------------------------------------------------------------


def render_null_pool(context: CalibrationContext, n_sets: int, seed: int) -> RenderRequest:
    """The request for a null pool: ``n_sets`` fresh draws of the config's real distribution.

    Each set gets the targets' renders per set (:attr:`TargetDesign.cluster_size`), so a subset
    of the pool's sets has exactly the shape of a validation sample.
    """
    draws = context.space.sample("real", n_sets, rng(seed, SEED_STREAM, "null_pool", "sample"))
    return RenderRequest("null_pool", tuple(draws), context.design.cluster_size)


def in_sample_band(
    context: CalibrationContext, n_sets: int, reps: int, pool: Rendered | None, seed: int
) -> NullBand:
    """The null band of an in-sample figure: simulated from ``pool``, else split off the targets."""
    if pool is not None:
        return pool_null_band(
            pool,
            [context.targets],
            n_sets,
            context.scorer,
            random_state=derive_seed(seed, SEED_STREAM, "null", "in_sample"),
        )
    return split_null_band(
        context.targets,
        context.design.test_groups,
        n_sets,
        reps,
        scorer=context.scorer,
        n_splits=SPLIT_BAND_SPLITS,
        random_state=derive_seed(seed, SEED_STREAM, "split"),
    )


# ---------------------------------------------------------------------------------------------
# In-sample validation
# ---------------------------------------------------------------------------------------------


@dataclass
class ValidationResult:
    """Fresh renders of some parameter sets scored against the targets.

    Attributes:
        label: ``implied`` / ``mixture`` / ``best_point`` / ``top_k_pool`` (or any name).
        mmd2: MMD² of the fresh images vs the targets (the run's fixed kernel).
        test: The cluster-aware permutation test of "same distribution as the targets".
        band: The null band for a sample of this size and shape.
        param_sets: The rendered parameter sets.
        replications: Renders per set.
        render_seeds: Render seed of every image (fresh: none was used by the run).
        embeddings: ``(n, d)`` embeddings of the fresh images (not serialised).
    """

    label: str
    mmd2: float
    test: PermutationResult
    band: NullBand
    param_sets: list[ParamSet]
    replications: int
    render_seeds: list[int]
    embeddings: np.ndarray = field(repr=False)

    @property
    def p_value(self) -> float:
        """The permutation test's p-value."""
        return self.test.p_value

    @property
    def inside_noise_floor(self) -> bool | None:
        """Whether MMD² ≤ the null band's q95 (``None`` if the band is unavailable)."""
        return self.band.contains(self.mmd2)

    @property
    def noise_floor_z(self) -> float | None:
        """``(MMD² - null mean) / null std`` (``None`` if unavailable)."""
        if not self.band.available or not self.band.std > 0:
            return None
        return float((self.mmd2 - self.band.mean) / self.band.std)

    def to_dict(self) -> JsonObject:
        """JSON form (without the embeddings)."""
        return {
            "label": self.label,
            "mmd2": self.mmd2,
            "p_value": self.p_value,
            "test": _test_dict(self.test),
            "null_q95": self.band.q95 if self.band.available else None,
            "inside_noise_floor": self.inside_noise_floor,
            "noise_floor_z": self.noise_floor_z,
            "n_images": len(self.render_seeds),
            "n_param_sets": len(self.param_sets),
            "replications": self.replications,
            "param_sets": self.param_sets,
            "render_seeds": self.render_seeds,
        }


def _test_dict(test: PermutationResult) -> dict[str, Any]:
    return {k: v for k, v in test.to_dict().items() if k != "statistic"}


def score_sample(
    context: CalibrationContext,
    sample: Rendered,
    band: NullBand,
    *,
    seed: int,
    n_permutations: int | None = None,
) -> ValidationResult:
    """Score a fresh sample against all targets, with the cluster-aware permutation test.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        sample: The fresh renders.
        band: The null band for a sample of this shape.
        seed: Seed of the permutation test.
        n_permutations: Resamples (default: the run's ``metric.permutations``).

    Returns:
        The :class:`ValidationResult`.
    """
    assert context.scorer.bandwidths_ is not None
    test = permutation_test(
        sample.embeddings,
        context.targets,
        int(n_permutations or context.n_permutations),
        random_state=derive_seed(seed, SEED_STREAM, sample.label, "permutation"),
        bandwidth=list(context.scorer.bandwidths_),
        unbiased=context.scorer.unbiased,
        x_groups=sample.groups,
        y_groups=context.design.test_groups,
    )
    return ValidationResult(
        label=sample.label,
        mmd2=float(context.scorer.score(sample.embeddings)),
        test=test,
        band=band,
        param_sets=sample.param_sets,
        replications=sample.replications,
        render_seeds=sample.render_seeds,
        embeddings=sample.embeddings,
    )


def validate_param_sets(
    context: CalibrationContext,
    param_sets: Sequence[ParamMapping],
    *,
    replications: int | None = None,
    seed: int,
    label: str,
    n_permutations: int | None = None,
    band: NullBand | None = None,
) -> ValidationResult:
    """Render given parameter sets with fresh seeds, embed and score them against the targets.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        param_sets: The sets to render (repeat a set to render it more often).
        replications: Renders per set (default: the targets' renders per set).
        seed: Seed of the render seeds and of the permutation test.
        label: Name of this validation (part of the seed derivation).
        n_permutations: Permutation-test resamples (default: the run's ``metric.permutations``).
        band: The null band to compare with (default: the in-sample band for this shape,
            rendering a null pool when the targets are simulated).

    Returns:
        The :class:`ValidationResult`; its ``render_seeds`` never coincide with the run's.
    """
    reps = context.design.cluster_size if replications is None else int(replications)
    requests = [RenderRequest(label, tuple(dict(p) for p in param_sets), reps)]
    if band is None and context.design.source == "simulated":
        requests.append(render_null_pool(context, default_pool_sets(len(param_sets)), seed))
    rendered = render_requests(context, requests, seed)
    if band is None:
        band = in_sample_band(context, len(param_sets), reps, rendered.get("null_pool"), seed)
    return score_sample(context, rendered[label], band, seed=seed, n_permutations=n_permutations)


def validate_distribution(
    context: CalibrationContext | ExperimentRun | str | Path,
    distribution: Mapping[str, ParameterDistribution | Mapping[str, float]],
    *,
    n_sets: int | None = None,
    replications: int | None = None,
    seed: int | None = None,
    label: str = "implied",
    n_permutations: int | None = None,
    band: NullBand | None = None,
) -> ValidationResult:
    """Sample fresh parameter sets from a distribution, render, embed and score them.

    Args:
        context: A :class:`CalibrationContext`, a loaded run or an experiment folder.
        distribution: Config-form (``{"void_count": {"mean": .., "std": ..}, ...}``) or typed
            distributions.
        n_sets: Parameter sets to draw (default: :func:`default_validation_sets`).
        replications: Renders per set (default: the targets' renders per set).
        seed: Seed of the draws, render seeds and permutations (default: the run's seed).
        label: Name of this validation.
        n_permutations: Permutation-test resamples (default: the run's ``metric.permutations``).
        band: The null band to compare with (default: computed for this shape).

    Returns:
        The :class:`ValidationResult`.
    """
    if not isinstance(context, CalibrationContext):
        context = CalibrationContext.from_run(context)
    cfg = context.config
    seed = cfg.seed if seed is None else int(seed)
    n = default_validation_sets(context) if n_sets is None else int(n_sets)
    draws = context.space.sample(
        typed_distribution(distribution, cfg), n, rng(seed, SEED_STREAM, label, "sample")
    )
    return validate_param_sets(
        context,
        draws,
        replications=replications,
        seed=seed,
        label=label,
        n_permutations=n_permutations,
        band=band,
    )


def default_validation_sets(context: CalibrationContext) -> int:
    """Sets of a validation sample: as many as the target clusters, or images for a folder.

    Simulated targets: their number of sets (each rendered like them). A target folder: the
    real set's image count of the config (``param_sets × replications``), as sets × 1 render,
    but at least the number of target images.
    """
    design = context.design
    if design.clustered:
        return design.n_units
    return max(design.n_images, context.config.real.n_images)


def default_pool_sets(n_sets: int) -> int:
    """Sets of a null pool for judged samples of ``n_sets`` sets (≥ 16, ≥ 3 × ``n_sets``)."""
    return max(16, 3 * int(n_sets))


# ---------------------------------------------------------------------------------------------
# Held-out validation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One held-out part of the targets.

    Attributes:
        index: Fold number.
        units: Cluster labels held out (image labels for an iid folder).
        held_out: Boolean mask of the held-out target images.
    """

    index: int
    units: tuple[str, ...]
    held_out: np.ndarray


def target_folds(
    design: TargetDesign, max_folds: int = 5, random_state: int | None = 0
) -> tuple[list[Fold], str]:
    """Split the target clusters (images for an iid folder) into K folds for held-out validation.

    Clusters are shuffled (seeded) and dealt round-robin into ``K = min(max_folds, clusters)``
    folds, so with at most ``max_folds`` clusters every fold holds one (leave-one-cluster-out).
    K is lowered until every fold and every training part hold at least 2 images (the unbiased
    MMD² needs 2).

    Args:
        design: The targets' structure.
        max_folds: Largest K.
        random_state: Seed of the shuffle.

    Returns:
        ``(folds, scheme)``: the folds and the scheme's name (``"leave-one-cluster-out"``,
        ``"K-fold over clusters"``, ``"K-fold over images"``), or ``([], reason)`` when no
        split with K ≥ 2 exists.
    """
    labels = list(dict.fromkeys(design.groups.tolist()))
    order = rng(0 if random_state is None else int(random_state), SEED_STREAM, "folds")
    labels = [labels[i] for i in order.permutation(len(labels))]
    sizes = {u: int(np.sum(design.groups == u)) for u in labels}
    what = "clusters" if design.clustered else "images"
    for k in range(min(int(max_folds), len(labels)), 1, -1):
        parts = [labels[i::k] for i in range(k)]
        held = [sum(sizes[u] for u in p) for p in parts]
        if min(held) >= 2 and design.n_images - max(held) >= 2:
            folds = [
                Fold(i, tuple(p), np.isin(design.groups, np.asarray(p)))
                for i, p in enumerate(parts)
            ]
            if design.clustered and k == len(labels):
                return folds, "leave-one-cluster-out"
            return folds, f"{k}-fold over {what}"
    return [], (
        f"held-out validation needs at least 2 folds of ≥ 2 target images with ≥ 2 left to fit "
        f"on; {design.n_images} target image(s) in {design.n_units} {what} allow none"
    )


def default_sets_per_fold(n_sets: int) -> int:
    """Sets of each fold's fresh sample: half the in-sample sets, at least 3 (at most all)."""
    return min(int(n_sets), max(3, math.ceil(int(n_sets) / 2)))


@dataclass
class FoldPlan:
    """One fold's fit and the fresh sample to render from it."""

    fold: Fold
    fit: FoldFit
    request: RenderRequest


def plan_held_out(
    context: CalibrationContext,
    options: FitOptions,
    *,
    sets_per_fold: int,
    seed: int,
    max_folds: int = 5,
) -> tuple[list[FoldPlan], str]:
    """Refit on each fold's training part and draw the fold's fresh sample (not yet rendered).

    Returns:
        ``(plans, scheme)``, or ``([], reason)`` when the targets allow no held-out split.
    """
    folds, scheme = target_folds(context.design, max_folds, seed)
    plans = []
    for fold in folds:
        fit = fit_implied(context, options, target_mask=~fold.held_out)
        draws = context.space.sample(
            typed_distribution(fit.distribution, context.config),
            sets_per_fold,
            rng(seed, SEED_STREAM, "held_out", fold.index, "sample"),
        )
        request = RenderRequest(f"held_out_{fold.index}", tuple(draws), context.design.cluster_size)
        plans.append(FoldPlan(fold, fit, request))
    return plans, scheme


@dataclass
class FoldResult:
    """One fold of the held-out validation.

    Attributes:
        fold: The fold.
        fit: The fit on the other folds.
        mmd2: MMD² of the fold's fresh sample vs its held-out targets.
        sample: The fresh renders.
    """

    fold: Fold
    fit: FoldFit
    mmd2: float
    sample: Rendered

    def to_dict(self) -> JsonObject:
        """JSON form (without embeddings)."""
        return {
            "fold": self.fold.index,
            "held_out_units": list(self.fold.units),
            "n_held_out_images": int(self.fold.held_out.sum()),
            **self.fit.fold_summary(),
            "mmd2": self.mmd2,
            "render_seeds": self.sample.render_seeds,
        }


@dataclass
class HeldOutResult:
    """Held-out validation: fit on part of the targets, score fresh renders on the rest.

    Attributes:
        scheme: How the targets were split (``"leave-one-cluster-out"``, ``"K-fold over
            clusters"``, ``"K-fold over images"``), or ``None`` when unavailable.
        folds: Per-fold results.
        mmd2: Mean over folds of the fold's fresh MMD² vs its held-out targets.
        test: The stratified permutation test (``None`` when unavailable).
        band: The null band of ``mmd2`` (``None`` when unavailable).
        sets_per_fold: Sets of each fold's fresh sample.
        replications: Renders per set.
        reason: Why the validation is unavailable (``None`` when it ran).
    """

    scheme: str | None
    folds: list[FoldResult]
    mmd2: float
    test: PermutationResult | None
    band: NullBand | None
    sets_per_fold: int
    replications: int
    reason: str | None = None

    @property
    def available(self) -> bool:
        """Whether the held-out validation ran."""
        return self.test is not None

    @property
    def p_value(self) -> float:
        """The stratified test's p-value (NaN when unavailable)."""
        return self.test.p_value if self.test is not None else math.nan

    @property
    def inside_noise_floor(self) -> bool | None:
        """Whether ``mmd2`` ≤ the band's q95 (``None`` if unknown)."""
        return self.band.contains(self.mmd2) if self.band is not None else None

    @property
    def embeddings(self) -> np.ndarray:
        """Every fold's fresh embeddings, stacked."""
        if not self.folds:
            return np.zeros((0, 0))
        return np.vstack([f.sample.embeddings for f in self.folds])

    @classmethod
    def unavailable(cls, reason: str, sets_per_fold: int, replications: int) -> HeldOutResult:
        """A result that says why no held-out validation was possible."""
        return cls(None, [], math.nan, None, None, sets_per_fold, replications, reason)

    def to_dict(self) -> JsonObject:
        """JSON form (NaN figures and a ``reason`` when unavailable)."""
        band = self.band
        return {
            "available": self.available,
            "reason": self.reason,
            "scheme": self.scheme,
            "n_folds": len(self.folds),
            "sets_per_fold": self.sets_per_fold,
            "replications": self.replications,
            "mmd2": self.mmd2,
            "p_value": self.p_value,
            "test": {**_test_dict(self.test), "stratified_by": "fold"} if self.test else None,
            "null_band": band.to_dict() if band is not None else None,
            "null_q95": band.q95 if band is not None and band.available else None,
            "inside_noise_floor": self.inside_noise_floor,
            "folds": [f.to_dict() for f in self.folds],
        }


def score_held_out(
    context: CalibrationContext,
    plans: Sequence[FoldPlan],
    rendered: Mapping[str, Rendered],
    *,
    scheme: str,
    sets_per_fold: int,
    pool: Rendered | None,
    seed: int,
    n_permutations: int | None = None,
) -> HeldOutResult:
    """Score every fold's fresh sample against its held-out targets; test and band the mean.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        plans: From :func:`plan_held_out`.
        rendered: The renders of the plans' requests (by label).
        scheme: The split scheme's name (from :func:`plan_held_out`).
        sets_per_fold: Sets of each fold's sample.
        pool: A rendered null pool (simulated targets) or ``None`` (a target folder: the band is
            the stratified test's own permutation distribution).
        seed: Seed of the test and the band.
        n_permutations: Resamples (default: the run's ``metric.permutations``).

    Returns:
        The :class:`HeldOutResult`.
    """
    reps = context.design.cluster_size
    assert context.scorer.bandwidths_ is not None
    folds, strata, references = [], [], []
    for plan in plans:
        sample = rendered[plan.request.label]
        T = context.targets[plan.fold.held_out]
        G = context.design.groups[plan.fold.held_out] if context.design.clustered else None
        strata.append((sample.embeddings, T, sample.groups, G))
        references.append(T)
        scorer = MMDScorer(bandwidth=context.scorer.bandwidths_, unbiased=context.scorer.unbiased)
        mmd = float(scorer.fit(T).score(sample.embeddings))
        folds.append(FoldResult(plan.fold, plan.fit, mmd, sample))
    test, perm = stratified_permutation_test(
        strata,
        int(n_permutations or context.n_permutations),
        derive_seed(seed, SEED_STREAM, "held_out", "permutation"),
        bandwidths=context.scorer.bandwidths_,
        unbiased=context.scorer.unbiased,
    )
    if pool is not None:
        band = pool_null_band(
            pool,
            references,
            sets_per_fold,
            context.scorer,
            random_state=derive_seed(seed, SEED_STREAM, "null", "held_out"),
        )
    else:
        band = null_band_from_statistics(
            perm,
            n_sets=sets_per_fold,
            n_reps=reps,
            n_reference=context.design.n_images,
            scheme="cluster-split" if test.scheme == "cluster" else "image-split",
            note=(
                "the held-out test's permutation distribution (fresh and held-out units "
                "relabelled within folds): the conditional null of the mean fold MMD²"
            ),
        )
    return HeldOutResult(
        scheme=scheme,
        folds=folds,
        mmd2=float(np.mean([f.mmd2 for f in folds])),
        test=test,
        band=band,
        sets_per_fold=sets_per_fold,
        replications=reps,
    )
