"""The ``processes`` executor: a local process pool, one evaluator per worker process."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Sequence

from bo_voids.evaluation import EvaluationResult, EvaluationTask, Evaluator, EvaluatorSpec
from bo_voids.executors.base import EvaluationExecutor

__all__ = ["ProcessPoolEvaluationExecutor"]

# The evaluator of this worker process, built once by the pool initializer.
_WORKER_EVALUATOR: Evaluator | None = None


def _init_worker(spec: EvaluatorSpec) -> None:
    global _WORKER_EVALUATOR
    import torch

    # One thread per worker: the pool already uses every core, more threads only contend.
    torch.set_num_threads(1)
    _WORKER_EVALUATOR = spec.build()


def _worker_evaluate(task: EvaluationTask) -> EvaluationResult:
    if _WORKER_EVALUATOR is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker evaluator not initialised")
    return _WORKER_EVALUATOR.evaluate_one(task)


class ProcessPoolEvaluationExecutor(EvaluationExecutor):
    """A local process pool: each worker builds its evaluator once, then evaluates whole tasks.

    Workers are started with ``spawn`` (a forked process would inherit the driver's torch
    threads and CUDA state).

    Args:
        spec: How each worker builds its evaluator.
        max_workers: Pool size (default: the number of cores).
    """

    name = "processes"

    def __init__(self, spec: EvaluatorSpec, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool = cf.ProcessPoolExecutor(
            self.max_workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(spec,),
        )

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Fan the tasks out over the pool; results come back in task order."""
        from tqdm.auto import tqdm

        futures = [self._pool.submit(_worker_evaluate, t) for t in tasks]
        with tqdm(
            total=len(futures), desc="render+embed", unit="set", leave=False, disable=not progress
        ) as bar:
            for _ in cf.as_completed(futures):
                bar.update(1)
        return [f.result() for f in futures]

    def close(self) -> None:
        """Shut the pool down."""
        self._pool.shutdown(wait=True, cancel_futures=True)
