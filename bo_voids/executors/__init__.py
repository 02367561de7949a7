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

from bo_voids.executors.base import EvaluationExecutor
from bo_voids.executors.factory import make_executor
from bo_voids.executors.local import LocalExecutor
from bo_voids.executors.processes import ProcessPoolEvaluationExecutor

__all__ = [
    "EvaluationExecutor",
    "LocalExecutor",
    "ProcessPoolEvaluationExecutor",
    "make_executor",
]
