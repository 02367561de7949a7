"""What the loop hands out: an :class:`IterationEvent` per iteration, a :class:`RunSummary` last."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bo_voids.config import ExperimentConfig
from bo_voids.optimizers import Proposal
from bo_voids.run_scores import RunScores
from bo_voids.scoring import RankedSet, ScoreBook
from bo_voids.state import IterationRecord

__all__ = ["Callback", "IterationEvent", "RunSummary"]


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports."""

    experiment_dir: Path
    iterations_completed: int
    stop_reason: str
    current_best: list[RankedSet]
    scores: list[RunScores]
    noise_floor: dict[str, float]
    embedder: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    #: ``calibration.json`` when the run calibrated (the verdict and ψ lead the summary).
    calibration: dict[str, Any] | None = None

    @property
    def best(self) -> RankedSet | dict[str, Any]:
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
