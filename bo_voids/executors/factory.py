"""The executor a config names (``executor:``), built on demand."""

from __future__ import annotations

from bo_voids.config import ExperimentConfig
from bo_voids.evaluation import Evaluator, EvaluatorSpec
from bo_voids.executors.base import EvaluationExecutor
from bo_voids.executors.local import LocalExecutor
from bo_voids.executors.processes import ProcessPoolEvaluationExecutor

__all__ = ["make_executor"]


def make_executor(
    cfg: ExperimentConfig,
    spec: EvaluatorSpec,
    evaluator: Evaluator | None = None,
) -> EvaluationExecutor:
    """Build the executor named by ``cfg.executor``.

    Args:
        cfg: The experiment config (``executor``, ``dask``).
        spec: How workers build their evaluator.
        evaluator: The driver's own evaluator, reused by the ``local`` executor.

    Returns:
        The executor; the caller closes it (or uses it as a context manager).
    """
    if cfg.executor == "local":
        return LocalExecutor(evaluator or spec.build())
    if cfg.executor == "processes":
        return ProcessPoolEvaluationExecutor(spec)
    from bo_voids.executors import dask  # on demand: only a Dask run needs it

    return dask.DaskEvaluationExecutor(
        spec,
        scheduler_address=cfg.dask.scheduler_address,
        local_workers=cfg.dask.local_workers,
        resources=cfg.dask.resources,
        tasks_per_job=cfg.dask.tasks_per_job,
    )
