"""The ``local`` executor: evaluation in the driver process."""

from __future__ import annotations

from collections.abc import Sequence

from bo_voids.evaluation import EvaluationResult, EvaluationTask, Evaluator
from bo_voids.executors.base import EvaluationExecutor

__all__ = ["LocalExecutor"]


class LocalExecutor(EvaluationExecutor):
    """In-process evaluation (the default): render every task, then embed all images at once.

    Args:
        evaluator: The generator and embedder to use (the driver's own).
    """

    name = "local"

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Render all, then embed all, in this process (large embedding batches)."""
        return self.evaluator.evaluate_many(tasks, progress=progress)
