"""The stop rule: a run stops on a confirmed result, never on one lucky fresh draw.

The recommendation's fresh MMD² (``metric.fresh_images`` new images of one parameter set) is a
noisy number, and the loop looks at it after every iteration: a rule that stops on the first
draw below a threshold stops on luck, and the draw that stopped it is then biased low. Here a
stop has two steps:

1. **Candidate.** The fresh MMD² is at or below the threshold.
2. **Confirmation.** A second, independently seeded fresh sample of the same recommendation
   (seed stream ``"confirm"``) is rendered, and it too must be at or below the threshold. The
   confirmation score is the unbiased figure reported for the stopped recommendation.

The threshold (:class:`StopThreshold`) comes from one of:

* **A null band with enough draws** (:func:`threshold_from_null`): the fresh MMD² of one
  parameter set drawn from the targets' own population, simulated ``n`` times. The threshold is
  a distribution-free 95 % lower confidence bound of that distribution's 5 % quantile (an order
  statistic), so a recommendation that stops is, with 95 % confidence, closer to the targets
  than 95 % of real parameter sets. Fewer than :data:`MIN_NULL_DRAWS` draws: no threshold.
* **An equivalence margin the user sets** (``stop_margin``, :func:`threshold_from_margin`):
  both fresh scores at or below the margin.
* **Neither** (:func:`cannot_judge`): for a folder of i.i.d. real images no null exists for one
  parameter set's renders (each real image is its own draw of the process), so the rule says
  so and the run stops only on ``convergence_threshold``, patience or ``max_iterations``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy.stats import binom

from bo_voids._types import JsonObject
from bo_voids.config import ExperimentConfig
from bo_voids.run_scores import RunScores

__all__ = [
    "MIN_NULL_DRAWS",
    "STOP_CONFIDENCE",
    "STOP_QUANTILE",
    "StopThreshold",
    "cannot_judge",
    "confirmed_stop",
    "convergence_candidate",
    "is_candidate",
    "quantile_lower_bound_rank",
    "stop_reason",
    "threshold_from_margin",
    "threshold_from_null",
]

#: Fewest null draws a stop threshold is taken from.
MIN_NULL_DRAWS = 200
#: The null quantile the recommendation must beat (closer than 95 % of real parameter sets).
STOP_QUANTILE = 0.05
#: Confidence that the threshold lies below that quantile.
STOP_CONFIDENCE = 0.95


def quantile_lower_bound_rank(n: int, quantile: float, confidence: float) -> int:
    """The largest ``k`` whose order statistic ``X(k)`` of ``n`` draws is a lower bound.

    ``P(X(k) ≤ q) = P(Binomial(n, quantile) ≥ k)`` for the ``quantile``-quantile ``q`` of any
    continuous distribution; the largest ``k`` with that probability ≥ ``confidence`` gives the
    tightest distribution-free lower confidence bound.

    Args:
        n: Number of i.i.d. draws.
        quantile: The quantile bounded (e.g. 0.05).
        confidence: Required coverage of the bound (e.g. 0.95).

    Returns:
        ``k`` (1-based), or 0 when even the minimum of ``n`` draws is not a bound at this
        confidence (``n`` < 59 for the 5 % quantile at 95 %).
    """
    k = 0
    for cand in range(1, int(n) + 1):
        if binom.sf(cand - 1, int(n), quantile) >= confidence:
            k = cand
        else:
            break
    return k


@dataclass(frozen=True)
class StopThreshold:
    """The number a fresh MMD² must reach for a (candidate) stop, and where it comes from.

    Attributes:
        value: The threshold (NaN when the rule cannot judge).
        source: ``"null band"``, ``"margin"`` or ``"none"``.
        description: One sentence a user reads in the report and the terminal.
        n_draws: Null draws behind it (``"null band"``).
        rank: The order statistic used (``"null band"``).
        quantile: The null quantile bounded.
        confidence: The bound's confidence.
        reason: Why there is no threshold (``"none"``).
    """

    value: float
    source: str
    description: str
    n_draws: int = 0
    rank: int | None = None
    quantile: float = STOP_QUANTILE
    confidence: float = STOP_CONFIDENCE
    reason: str | None = None

    @property
    def available(self) -> bool:
        """Whether the rule can judge (a finite threshold)."""
        return bool(math.isfinite(self.value))

    def to_dict(self) -> JsonObject:
        """JSON-serialisable copy."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: object) -> StopThreshold:
        """Rebuild from :meth:`to_dict`; a missing or malformed record cannot judge."""
        if not data:
            return cannot_judge("no stop threshold recorded")
        if not isinstance(data, Mapping):
            return cannot_judge("unreadable stop threshold record")
        names = {f.name for f in fields(cls)}
        try:
            kwargs = {k: v for k, v in data.items() if k in names}
            value = kwargs.get("value")
            # NaN is written as null in JSON: "no threshold" round-trips as such
            kwargs["value"] = math.nan if value is None else float(value)
            return cls(**kwargs)
        except (TypeError, ValueError):
            return cannot_judge("unreadable stop threshold record")


def cannot_judge(reason: str) -> StopThreshold:
    """A threshold that never fires, saying why."""
    return StopThreshold(math.nan, "none", f"the stop rule cannot judge: {reason}", reason=reason)


def threshold_from_margin(margin: float) -> StopThreshold:
    """The user's equivalence margin (``stop_margin``) as the threshold."""
    return StopThreshold(
        float(margin),
        "margin",
        f"stop_margin {float(margin):.4g}: the recommendation's fresh MMD² on two independent "
        "fresh samples must both be at or below it",
    )


def threshold_from_null(
    stats: Sequence[float],
    *,
    quantile: float = STOP_QUANTILE,
    confidence: float = STOP_CONFIDENCE,
    min_draws: int = MIN_NULL_DRAWS,
) -> StopThreshold:
    """A threshold from simulated null draws: a lower confidence bound of their ``quantile``.

    Args:
        stats: Fresh MMD² of parameter sets drawn from the targets' population (one value per
            draw, each scored exactly like the recommendation's fresh sample).
        quantile: The null quantile the recommendation must beat.
        confidence: Coverage of the bound.
        min_draws: Fewest finite draws accepted.

    Returns:
        The :class:`StopThreshold`; it cannot judge with fewer than ``min_draws`` draws.
    """
    vals = np.sort(np.asarray(stats, dtype=np.float64))
    vals = vals[np.isfinite(vals)]
    n = int(vals.size)
    if n < int(min_draws):
        return cannot_judge(
            f"{n} null draws; a stop threshold needs at least {int(min_draws)} "
            "(raise metric.null_draws, or set stop_margin)"
        )
    k = quantile_lower_bound_rank(n, quantile, confidence)
    if k < 1:
        return cannot_judge(f"{n} null draws cannot bound the {quantile:.0%} quantile")
    value = float(vals[k - 1])
    return StopThreshold(
        value,
        "null band",
        f"{value:.4f}: the {k}th lowest of {n} simulated real parameter sets' fresh MMD², a "
        f"{confidence:.0%} lower bound of their {quantile:.0%} quantile; a stop needs two "
        "independent fresh samples of the recommendation at or below it",
        n_draws=n,
        rank=k,
        quantile=float(quantile),
        confidence=float(confidence),
    )


def is_candidate(threshold: StopThreshold, fresh_mmd2: float | None) -> bool:
    """Whether a fresh MMD² makes a candidate stop (a confirmation sample is then needed)."""
    return (
        threshold.available
        and fresh_mmd2 is not None
        and math.isfinite(fresh_mmd2)
        and fresh_mmd2 <= threshold.value
    )


def confirmed_stop(
    threshold: StopThreshold, fresh_mmd2: float | None, confirm_mmd2: float | None
) -> bool:
    """Whether both independent fresh samples are at or below the threshold."""
    return is_candidate(threshold, fresh_mmd2) and is_candidate(threshold, confirm_mmd2)


def convergence_candidate(similarity: float | None, config: ExperimentConfig) -> bool:
    """Whether a pooled similarity is below ``convergence_threshold`` (a finite number only)."""
    return (
        similarity is not None
        and math.isfinite(similarity)
        and similarity < config.convergence_threshold
    )


def stop_reason(
    scores: Sequence[RunScores], config: ExperimentConfig, max_iterations: int
) -> str | None:
    """Why the run should stop after the iterations scored so far, or ``None`` to go on.

    Stops when the distribution similarity is below ``convergence_threshold`` *and* so is the
    pooled similarity of fresh renders of the same sets (``confirm_similarity``: the in-sample
    pool is selected for its low scores, so it alone would stop on luck); when a
    candidate stop is confirmed (``stop_at_noise_floor``; see the module docstring); when the
    distribution similarity has not improved for ``early_stop_patience`` iterations; or at
    ``max_iterations``. Iteration 0 alone is the initial design, never a convergence point.

    Args:
        scores: The run-level scores of every completed iteration (the last one's
            ``stop_threshold`` and ``recommendation`` carry the stop check).
        config: The experiment config.
        max_iterations: The iteration budget.

    Returns:
        The reason, or ``None``.
    """
    if not scores:
        return None
    done = len(scores) - 1
    if done >= 1:
        last = scores[-1].distribution_similarity
        confirm = scores[-1].confirm_similarity
        if convergence_candidate(last, config) and convergence_candidate(confirm, config):
            return (
                f"converged: distribution similarity {last:.4f} and, on fresh renders of the "
                f"same sets, {confirm:.4f} < threshold {config.convergence_threshold}"
            )
        threshold = StopThreshold.from_dict(scores[-1].stop_threshold)
        rec = scores[-1].recommendation
        fresh = rec.fresh_mmd2 if rec is not None else None
        confirm = rec.confirm_mmd2 if rec is not None else None
        if config.stop_at_noise_floor and confirmed_stop(threshold, fresh, confirm):
            return (
                f"confirmed stop: the recommendation's fresh MMD² {fresh:.4f} and, on a second "
                f"independent sample, {confirm:.4f} are both <= {threshold.value:.4f} "
                f"({threshold.source})"
            )
        values = [s.distribution_similarity for s in scores]
        best_at = int(np.nanargmin(values)) if np.isfinite(values).any() else 0
        if len(values) - 1 - best_at >= config.early_stop_patience:
            return (
                f"no improvement for {config.early_stop_patience} iterations (best "
                f"{values[best_at]:.4f} at iteration {best_at})"
            )
    if done >= max_iterations:
        return f"reached max_iterations ({max_iterations})"
    return None
