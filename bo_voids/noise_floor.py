"""A run's noise floor: the null band of the recommendation's fresh score, and the stop threshold.

The recommendation's fresh MMD² (one parameter set, ``metric.fresh_images`` new images) is
judged against what *one parameter set drawn from the targets' own population* scores:
``metric.null_draws`` fresh sets from the targets' parameter distribution (independent seeds,
stream ``"null"``), each rendered, embedded and scored against the targets. The stop threshold
comes from these draws (:func:`~bo_voids.statistics.stop_rule.threshold_from_null`) and is
stored in the band as ``stop_threshold``, unless the user set an equivalence margin
(``stop_margin``).

With a folder of real images there is no such null (each real image is its own draw of the
process, and the population is unknown), so the band is empty and says the rule cannot judge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.config import ExperimentConfig
from bo_voids.evaluation import EvaluationResult, EvaluationTask
from bo_voids.scoring import MMDScorer
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace
from bo_voids.statistics import NullBand, null_band_from_statistics
from bo_voids.statistics.stop_rule import (
    StopThreshold,
    cannot_judge,
    threshold_from_margin,
    threshold_from_null,
)

__all__ = ["FOLDER_REASON", "measure_noise_floor", "simulated_null_draws", "stop_threshold"]

logger = logging.getLogger(__name__)

#: Why a folder of real images has no null band for one parameter set's renders.
FOLDER_REASON = (
    "the targets are a folder of real images: one parameter set's renders have no valid null "
    "against an i.i.d. folder (use stop_margin for an equivalence stop)"
)

Evaluate = Callable[[Sequence[EvaluationTask]], Sequence[EvaluationResult]]


def simulated_null_draws(
    config: ExperimentConfig,
    space: SearchSpace,
    scorer: MMDScorer,
    evaluate: Evaluate,
    *,
    n_sets: int,
    n_reps: int,
) -> list[float]:
    """MMD² of ``config.metric.null_draws`` fresh draws of the targets' population.

    Args:
        config: The run's config (seed, number of draws).
        space: The search space, whose ``real`` distribution is the targets' population.
        scorer: The run's scorer (kernel fixed by the targets).
        evaluate: Renders and embeds tasks; a failed evaluation is left out of what it returns.
        n_sets: Parameter sets per draw.
        n_reps: Images per parameter set.

    Returns:
        One MMD² per draw whose every set rendered, in draw order.
    """
    tasks, owner = [], {}
    for d in range(config.metric.null_draws):
        draw = space.sample("real", n_sets, rng(config.seed, "null", d))
        for i, params in enumerate(draw):
            seeds = tuple(derive_seed(config.seed, "null", d, i, r) for r in range(n_reps))
            tasks.append(EvaluationTask(0, "real", i, f"null_{d}_{i:03d}", params, seeds))
            owner[tasks[-1].param_set_id] = d
    results = evaluate(tasks) if tasks else []
    by_draw: dict[int, list[np.ndarray]] = {}
    for res in results:
        by_draw.setdefault(owner[res.task.param_set_id], []).append(res.embeddings)
    return [
        float(scorer.score(np.concatenate(parts)))
        for d, parts in sorted(by_draw.items())
        if len(parts) == n_sets
    ]


def measure_noise_floor(
    config: ExperimentConfig,
    space: SearchSpace,
    scorer: MMDScorer,
    n_targets: int,
    evaluate: Evaluate,
) -> JsonObject:
    """The null band of the recommendation's fresh score, with the stop threshold it implies.

    Args:
        config: The run's config.
        space: The search space.
        scorer: The run's scorer.
        n_targets: Number of target images.
        evaluate: Renders and embeds tasks.

    Returns:
        The band's record (:meth:`~bo_voids.statistics.NullBand.to_dict`) with a
        ``stop_threshold`` entry; an empty band with its ``reason`` for a folder of real images.
    """
    n_sets, n_reps = 1, max(config.metric.fresh_images, 2)
    if config.target_image_dir is None:
        stats = simulated_null_draws(config, space, scorer, evaluate, n_sets=n_sets, n_reps=n_reps)
        band = null_band_from_statistics(stats, n_sets=n_sets, n_reps=n_reps, n_reference=n_targets)
        threshold = threshold_from_null(stats)
    else:
        band = null_band_from_statistics([], n_sets=n_sets, n_reps=n_reps, n_reference=n_targets)
        band = NullBand.from_dict({**band.to_dict(), "reason": FOLDER_REASON})
        threshold = cannot_judge(FOLDER_REASON)
    if not band.available:
        logger.info("no noise floor: %s", band.reason)
    if config.stop_at_noise_floor and config.stop_margin is None and not threshold.available:
        logger.warning("%s", threshold.description)
    return {**band.to_dict(), "stop_threshold": threshold.to_dict()}


def stop_threshold(config: ExperimentConfig, noise_floor: Mapping[str, object]) -> StopThreshold:
    """The stop rule's threshold: the user's margin, else the one stored with the null band."""
    if config.stop_margin is not None:
        return threshold_from_margin(config.stop_margin)
    return StopThreshold.from_dict(noise_floor.get("stop_threshold"))
