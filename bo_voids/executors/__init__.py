"""Where the expensive unit of work (render + embed one parameter set) runs.

The BO loop stays in one driver process; evaluation fans out through an executor chosen by the
config's ``executor:`` key:

* ``local`` (:class:`LocalExecutor`): in-process; renders every image, then embeds them in large
  batches. Best for one GPU or a quick CPU run.
* ``processes`` (:class:`ProcessPoolEvaluationExecutor`): a local process pool sized to the
  cores; each worker builds its generator and embedder once, then evaluates whole parameter sets.
* ``dask`` (:class:`~bo_voids.executors.dask.DaskEvaluationExecutor`): an existing Dask cluster
  (``dask.scheduler_address``) or a ``LocalCluster`` started on the spot
  (``dask.local_workers``).

Every task carries its own render seeds, so results are identical whichever executor ran them.
Workers only return arrays and metadata; the driver alone writes the experiment folder. The
tasks, results and the :class:`~bo_voids.evaluation.Evaluator` itself live in
:mod:`bo_voids.evaluation`, which imports nothing from here.
"""

from __future__ import annotations

from bo_voids.config import ExperimentConfig
from bo_voids.evaluation import Evaluator, EvaluatorSpec
from bo_voids.executors.base import EvaluationExecutor
from bo_voids.executors.local import LocalExecutor
from bo_voids.executors.processes import ProcessPoolEvaluationExecutor

__all__ = [
    "EvaluationExecutor",
    "LocalExecutor",
    "ProcessPoolEvaluationExecutor",
    "make_executor",
]


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
