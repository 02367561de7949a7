"""Evaluating a batch so that one broken parameter set does not end the run, and when it must.

An evaluation *fails* when it raises (anything but a :class:`~bo_voids.exceptions.BoVoidsError`,
which stops the run: it names something the user must fix) or returns embeddings of the wrong
shape or with non-finite values. When a batch raises, its tasks are evaluated one by one to find
the failing ones. Failed sets are left out of the history, named in a
:class:`~bo_voids.exceptions.FallbackWarning` and in the iteration's ``failures.json``, and counted
against ``max_failure_fraction`` (:func:`check_failure_budget`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import MutableMapping, Sequence
from typing import Any, TypedDict

import numpy as np

from bo_voids.evaluation import EvaluationResult, EvaluationTask
from bo_voids.exceptions import BoVoidsError, FailureBudgetError, FallbackWarning
from bo_voids.executors import EvaluationExecutor

__all__ = [
    "FailureRecord",
    "check_failure_budget",
    "evaluate_isolating_failures",
    "failed_result",
]

logger = logging.getLogger(__name__)


class FailureRecord(TypedDict):
    """One failed evaluation (an entry of ``failures.json``)."""

    param_set_id: str
    dataset_type: str
    params: dict[str, Any]
    error: str


def failed_result(task: EvaluationTask, exc: BaseException) -> EvaluationResult:
    """An :class:`~bo_voids.evaluation.EvaluationResult` recording that ``task`` raised ``exc``."""
    empty = np.zeros((0, 0, 0), dtype=np.float32)
    return EvaluationResult(
        task,
        empty,
        empty.astype(bool),
        np.zeros((0, 0), dtype=np.float32),
        [],
        error=f"{type(exc).__name__}: {exc}",
    )


def evaluate_isolating_failures(
    executor: EvaluationExecutor,
    tasks: Sequence[EvaluationTask],
    *,
    progress: bool = False,
    timings: MutableMapping[str, float] | None = None,
) -> tuple[list[EvaluationResult], list[FailureRecord]]:
    """Evaluate ``tasks``; the usable results and a record of each failed task.

    Args:
        executor: Where the tasks run.
        tasks: The parameter sets to render and embed.
        progress: Show progress bars.
        timings: ``render`` and ``embed`` seconds are added here.

    Returns:
        ``(results, failures)``, results in task order without the failed ones.

    Raises:
        BoVoidsError: An evaluation stopped on something the user must fix.
    """
    try:
        results = list(executor.evaluate(tasks, progress=progress))
    except BoVoidsError:
        raise
    except Exception as exc:
        if len(tasks) == 1:
            results = [failed_result(tasks[0], exc)]
        else:
            logger.warning(
                "evaluating a batch of %d parameter sets failed (%s: %s); evaluating them one "
                "by one to find the failing ones",
                len(tasks),
                type(exc).__name__,
                exc,
            )
            results = []
            for task in tasks:
                try:
                    results.extend(executor.evaluate([task]))
                except BoVoidsError:
                    raise
                except Exception as one_exc:
                    results.append(failed_result(task, one_exc))
    ok: list[EvaluationResult] = []
    failures: list[FailureRecord] = []
    for r in results:
        if timings is not None:
            timings["render"] = timings.get("render", 0.0) + r.render_seconds
            timings["embed"] = timings.get("embed", 0.0) + r.embed_seconds
        reason = r.error if r.error is not None else _bad_embeddings(r)
        if reason is None:
            ok.append(r)
            continue
        failures.append(
            {
                "param_set_id": r.task.param_set_id,
                "dataset_type": r.task.dataset_type,
                "params": dict(r.task.params),
                "error": reason,
            }
        )
        warnings.warn(
            f"evaluation of parameter set {r.task.param_set_id} {dict(r.task.params)} failed "
            f"and is excluded from the history: {reason}",
            FallbackWarning,
            stacklevel=2,
        )
    return ok, failures


def _bad_embeddings(r: EvaluationResult) -> str | None:
    emb = np.asarray(r.embeddings)
    if emb.ndim != 2 or emb.shape[0] != len(r.task.seeds):
        return f"the embedder returned an array of shape {emb.shape} for {len(r.task.seeds)} images"
    if not np.all(np.isfinite(emb)):
        return "the embedder returned non-finite (NaN/inf) values"
    return None


def check_failure_budget(
    k: int,
    n_tasks: int,
    failures: Sequence[FailureRecord],
    *,
    evaluated_before: int,
    failed_before: int,
    budget: float,
) -> None:
    """Stop when failed evaluations exceed ``budget`` of all evaluations so far.

    Also stops when every parameter set of an iteration failed: the history would not change,
    so the optimiser would only propose the same batch again.

    Args:
        k: The iteration.
        n_tasks: Parameter sets evaluated in it.
        failures: Its failed evaluations.
        evaluated_before: Parameter sets evaluated in earlier iterations.
        failed_before: Failed evaluations in earlier iterations.
        budget: ``max_failure_fraction``.

    Raises:
        FailureBudgetError: The run must stop.
    """
    if not failures:
        return
    total = evaluated_before + n_tasks
    failed = failed_before + len(failures)
    listing = "; ".join(
        f"{f['param_set_id']} {f['params']}: {f['error']}" for f in list(failures)[:5]
    )
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    if failed / total > budget:
        raise FailureBudgetError(
            f"{failed} of {total} evaluations failed ({failed / total:.0%} > "
            f"max_failure_fraction {budget:g}); stopping instead of looping on a broken setup. "
            f"Iteration {k}: {listing}{more}"
        )
    if len(failures) == n_tasks:
        raise FailureBudgetError(
            f"every parameter set of iteration {k} failed ({listing}{more}); stopping: the "
            "optimiser would only propose the same batch again"
        )
