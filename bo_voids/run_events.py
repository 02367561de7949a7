"""What the loop hands out: an :class:`IterationEvent` per iteration, a :class:`RunSummary` last."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bo_voids._types import JsonObject
from bo_voids.config import ExperimentConfig
from bo_voids.optimizers import Proposal
from bo_voids.run_scores import RunScores
from bo_voids.scoring import RankedSet, ScoreBook
from bo_voids.state import IterationRecord
from bo_voids.statistics.stop_rule import StopThreshold

logger = logging.getLogger(__name__)

__all__ = ["Callback", "IterationEvent", "RunSummary", "finish_callbacks", "status_line"]


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports."""

    experiment_dir: Path
    iterations_completed: int
    stop_reason: str
    current_best: list[RankedSet]
    scores: list[RunScores]
    noise_floor: JsonObject
    embedder: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: ``calibration.json`` when the run calibrated (the verdict and ψ lead the summary).
    calibration: dict[str, Any] | None = None

    @property
    def best(self) -> RankedSet | dict[str, object]:
        """The recommended parameter set (the best by the package's one ranking)."""
        return self.current_best[0] if self.current_best else {}


@dataclass(frozen=True)
class IterationEvent:
    """What a callback receives after every persisted iteration.

    Attributes:
        iteration: The iteration just persisted.
        max_iterations: The run's iteration budget.
        scores: Its run-level scores.
        proposal: The proposal made after it (the next batch and the model's ranking).
        timings: Cumulative seconds per stage so far.
        experiment_dir: The experiment folder.
        config: The run's config.
        embedder: Identity of the embedder (name, dim, fingerprint, settings).
        records: Every iteration persisted so far, this one last (scores, proposals).
        book: Every observation of the run, scored (read it; the pipeline owns it).
    """

    iteration: int
    max_iterations: int
    scores: RunScores
    proposal: Proposal
    timings: Mapping[str, float]
    experiment_dir: Path
    config: ExperimentConfig
    embedder: Mapping[str, Any]
    records: Sequence[IterationRecord]
    book: ScoreBook


#: A per-iteration callback (plots, trackers, progress).
Callback = Callable[[IterationEvent], None]


def status_line(s: RunScores) -> str:
    """One line on an iteration: the recommendation, its fresh score and the stop rule."""
    rec = s.recommendation
    threshold = StopThreshold.from_dict(s.stop_threshold)
    if threshold.available:
        stop = f"stop threshold {threshold.value:.4f} ({threshold.source})"
        if rec is not None and rec.confirm_mmd2 is not None:
            stop += f", confirmation sample {rec.confirm_mmd2:.4f}"
    else:
        stop = "the stop rule cannot judge"
    return (
        f"best {s.best_param_set_id} (MMD² {s.best_mmd2:.4f} in sample, {s.fresh_mmd2:.4f} on "
        f"fresh images, {s.ranking} ranking), "
        f"pooled similarity {s.distribution_similarity:.4f}; {stop}; "
        f"ε-share {s.epsilon_ball_share:.2f}"
    )


def finish_callbacks(callbacks: Sequence[Callback], status: str) -> None:
    """Tell callbacks that keep something open (a tracker run, a report) that the run ended.

    Args:
        callbacks: The run's callbacks; those with a ``finish(status)`` method are called.
        status: ``FINISHED``, ``FAILED`` or ``KILLED``.
    """
    for callback in callbacks:
        finish = getattr(callback, "finish", None)
        if callable(finish):
            try:
                finish(status)
            except Exception as exc:  # a tracker must never change how a run ends
                logger.warning("callback %r failed to finish: %s", callback, exc)
