"""The interface every executor implements: evaluate tasks, return results in task order."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from bo_voids.evaluation import EvaluationResult, EvaluationTask

__all__ = ["EvaluationExecutor"]


class EvaluationExecutor(abc.ABC):
    """Runs evaluation tasks; subclasses decide where. Use as a context manager to release workers.

    Attributes:
        name: The ``executor:`` config value that selects this executor.
    """

    name: str = "base"

    @abc.abstractmethod
    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Evaluate ``tasks``.

        Args:
            tasks: The parameter sets to render and embed.
            progress: Show a tqdm progress bar.

        Returns:
            One result per task, in task order.
        """

    def close(self) -> None:  # noqa: B027 - an optional hook: not every executor holds workers
        """Release workers (nothing to release by default)."""

    def __enter__(self) -> EvaluationExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
