"""The ``dask`` executor: evaluation on a Dask distributed cluster.

The BO loop stays in one driver process. :class:`DaskEvaluationExecutor` fans the expensive unit
of work — "render + embed one parameter set" (:class:`~bo_voids.evaluation.EvaluationTask`) —
out to the workers of a Dask cluster, either an existing one (``dask.scheduler_address``, e.g. one
scheduler and N GPU workers) or a :class:`distributed.LocalCluster` started on the spot
(``dask.local_workers``).

Design:

* **One evaluator per worker process.** Each task carries the small, picklable
  :class:`~bo_voids.evaluation.EvaluatorSpec`; a worker builds the generator and embedder from it
  the first time and keeps them in a module-level cache keyed by the spec, so model weights are
  loaded once per worker process, not once per task. A worker restarted after a crash starts
  with an empty cache and builds again.
* **Workers return data, the driver writes.** A task returns an
  :class:`~bo_voids.evaluation.EvaluationResult` (arrays plus metadata). Nothing on a worker
  touches the experiment folder, and :meth:`DaskEvaluationExecutor.evaluate` returns only when
  every task of the batch has a result, so a batch is never half-written.
* **Lost workers are survived.** When a worker dies mid-task the scheduler re-runs its tasks
  elsewhere (up to ``distributed.scheduler.allowed-failures`` times); if it gives up
  (:class:`distributed.KilledWorker`) or the task is lost or cancelled, the executor itself
  re-submits the missing parameter sets, up to ``max_resubmits`` times each. Exceptions raised by
  the evaluation itself are retried ``retries`` times by Dask and then re-raised in the driver.
* **Same results as any other executor.** Every task carries its own render seeds
  (``EvaluationTask.seeds``), so images are bit-identical and embeddings equal to float
  tolerance whichever executor or worker ran them, in whatever order.

Dask and ``distributed`` are an optional extra (``pip install -e '.[dask]'``) imported only here,
and only when this executor is built.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.evaluation import EvaluationResult, EvaluationTask, Evaluator, EvaluatorSpec
from bo_voids.exceptions import BoVoidsError, ConfigError, WorkerLostError
from bo_voids.executors.base import EvaluationExecutor

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

__all__ = ["DaskEvaluationExecutor", "worker_cache_info"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[dask]'"


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------

_EVALUATORS: dict[EvaluatorSpec, Evaluator] = {}
_BUILDS: dict[EvaluatorSpec, int] = {}
_BUILD_LOCK = threading.Lock()


def _worker_evaluator(spec: EvaluatorSpec) -> Evaluator:
    """The evaluator of ``spec`` in this worker process, built on first use."""
    evaluator = _EVALUATORS.get(spec)
    if evaluator is None:
        with _BUILD_LOCK:  # workers with several threads build once, too
            evaluator = _EVALUATORS.get(spec)
            if evaluator is None:
                evaluator = spec.build()
                _EVALUATORS[spec] = evaluator
                _BUILDS[spec] = _BUILDS.get(spec, 0) + 1
    return evaluator


def _evaluate_chunk(spec: EvaluatorSpec, tasks: Sequence[EvaluationTask]) -> list[EvaluationResult]:
    """Run on a worker: render and embed ``tasks`` with the worker's cached evaluator."""
    evaluator = _worker_evaluator(spec)
    if len(tasks) == 1:
        return [evaluator.evaluate_one(tasks[0])]
    return evaluator.evaluate_many(tasks)


def _warm_up(spec: EvaluatorSpec) -> dict[str, Any]:
    """Run on a worker: build the evaluator of ``spec``, embed one blank image, report the cache.

    The blank embedding pays the embedder's one-off costs (lazy imports, CUDA context, kernel
    selection) here rather than in the first batch.
    """
    evaluator = _worker_evaluator(spec)
    blank = np.full((spec.image_size, spec.image_size), 0.5, dtype=np.float32)
    evaluator.embedder.embed([blank])
    return worker_cache_info()


def worker_cache_info() -> JsonObject:
    """Diagnostics of this process's evaluator cache (run on workers with ``client.run``).

    Returns:
        ``{"pid": ..., "specs": number of cached evaluators, "builds": total builds}``.
    """
    return {"pid": os.getpid(), "specs": len(_EVALUATORS), "builds": sum(_BUILDS.values())}


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def _import_distributed() -> Any:
    """Import :mod:`distributed`, or fail with the install hint."""
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "executor: dask needs the optional Dask extra (dask and distributed), which is not "
            f"installed: {exc}. Install it with `{INSTALL_HINT}`, or use executor: local / "
            "processes"
        ) from exc
    return distributed


def _worker_lost_types(distributed: Any) -> tuple[type[BaseException], ...]:
    """Exception types meaning "the worker or the connection went away", not "the task failed"."""
    from distributed.comm.core import CommClosedError

    types: list[type[BaseException]] = [CommClosedError]
    killed = getattr(distributed, "KilledWorker", None)
    if killed is None:  # pragma: no cover - older distributed
        from distributed.scheduler import KilledWorker as killed
    if killed is not None:
        types.append(killed)
    return tuple(types)


class DaskEvaluationExecutor(EvaluationExecutor):
    """Evaluates parameter sets on a Dask distributed cluster.

    Args:
        spec: How workers build their evaluator (generator + embedder); sent with every task and
            built once per worker process.
        scheduler_address: Address of an existing scheduler (``tcp://host:8786``). Takes
            precedence over ``local_workers``.
        local_workers: Start a :class:`distributed.LocalCluster` of this many single-threaded
            worker processes (closed by :meth:`close`).
        retries: How many times Dask re-runs a task whose evaluation raised an exception.
        max_resubmits: How many times the executor re-submits one parameter set whose worker
            was lost (after the scheduler's own re-scheduling gave up) before it fails.
        tasks_per_job: Parameter sets per Dask task. ``1`` balances load best; a few more give a
            GPU embedder larger batches (embeddings then agree to float tolerance only).
        resources: Abstract resources each task needs, e.g. ``{"GPU": 1}`` for workers started
            with ``--resources GPU=1``.
        connect_timeout: Seconds to wait for the scheduler and for at least one worker.
        warm_up: Build the evaluator on every connected worker now, so that a worker which
            cannot load the generator or the embedder (missing package, weights or base chips)
            fails here, before iteration 0, and the first batch is not slowed by model loading.
            Workers that join later build on their first task.

    Raises:
        ConfigError: If Dask is not installed, or neither ``scheduler_address`` nor
            ``local_workers`` is given.
        BoVoidsError: If the scheduler cannot be reached or has no workers.

    Example:
        >>> with DaskEvaluationExecutor(spec, local_workers=2) as ex:  # doctest: +SKIP
        ...     results = ex.evaluate(tasks, progress=True)
    """

    name = "dask"

    def __init__(
        self,
        spec: EvaluatorSpec,
        *,
        scheduler_address: str | None = None,
        local_workers: int | None = None,
        retries: int = 3,
        max_resubmits: int = 3,
        tasks_per_job: int = 1,
        resources: Mapping[str, float] | None = None,
        connect_timeout: float = 60.0,
        warm_up: bool = True,
    ) -> None:
        if scheduler_address is None and local_workers is None:
            raise ConfigError(
                "executor: dask needs dask.scheduler_address (an existing cluster) or "
                "dask.local_workers (start a LocalCluster), got neither"
            )
        if local_workers is not None and local_workers < 1:
            raise ConfigError(f"dask.local_workers must be >= 1, got {local_workers}")
        if retries < 0 or max_resubmits < 0 or tasks_per_job < 1:
            raise ConfigError(
                "retries and max_resubmits must be >= 0 and tasks_per_job >= 1, got "
                f"{retries}, {max_resubmits}, {tasks_per_job}"
            )
        distributed = _import_distributed()
        self.spec = spec
        self.retries = retries
        self.max_resubmits = max_resubmits
        self.tasks_per_job = tasks_per_job
        self.resources = dict(resources) if resources else None
        self._lost_types = _worker_lost_types(distributed)
        self._cluster: LocalCluster | None = None
        self._client: Client | None = None
        try:
            if scheduler_address is not None:
                if local_workers is not None:
                    logger.warning(
                        "dask.scheduler_address is set; ignoring dask.local_workers=%d",
                        local_workers,
                    )
                self._client = self._connect(distributed, scheduler_address, connect_timeout)
            else:
                assert local_workers is not None
                self._cluster = distributed.LocalCluster(
                    n_workers=local_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # a free port: never clashes with other clusters
                    silence_logs=logging.WARNING,
                )
                self._client = distributed.Client(self._cluster, timeout=connect_timeout)
            self._wait_for_workers(connect_timeout)
            if warm_up:
                self.warm_up()
        except BaseException:
            self.close()
            raise
        logger.info("dask executor: %s", self.describe())

    # ---- setup --------------------------------------------------------------------------------

    @staticmethod
    def _connect(distributed: Any, address: str, timeout: float) -> Client:
        try:
            return distributed.Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise BoVoidsError(
                f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s: {exc}. "
                "Check dask.scheduler_address and that `dask scheduler` is running"
            ) from exc

    def _wait_for_workers(self, timeout: float) -> None:
        assert self._client is not None
        try:
            self._client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise BoVoidsError(
                f"no Dask worker joined the scheduler at {self.scheduler_address} within "
                f"{timeout:g} s; start workers with `dask worker {self.scheduler_address} "
                "--nthreads 1`"
            ) from exc

    def warm_up(self) -> dict[str, JsonObject]:
        """Build the evaluator once on every connected worker (in its task thread).

        Returns:
            ``{worker address: worker_cache_info()}``.

        Raises:
            BoVoidsError: If a worker cannot build the evaluator (the worker's error is chained).
        """
        workers = list(self.client.nthreads())
        futures = {
            w: self.client.submit(
                _warm_up,
                self.spec,
                key=f"bo-voids-warm-up-{uuid.uuid4().hex[:8]}",
                workers=[w],
                allow_other_workers=False,
                pure=False,
            )
            for w in workers
        }
        out: dict[str, dict[str, Any]] = {}
        for w, fut in futures.items():
            try:
                out[w] = fut.result()
            except Exception as exc:
                if isinstance(exc, self._lost_types):
                    logger.warning("dask: worker %s left during warm-up (%r)", w, exc)
                    continue
                raise BoVoidsError(
                    f"Dask worker {w} cannot build the evaluator ({self.spec.embedder} embedder, "
                    f"base chips {self.spec.base_image_dir!r}): {exc!r}. Every worker needs "
                    "bo_voids installed, the base chips at that path and the model weights"
                ) from exc
        return out

    @property
    def client(self) -> Client:
        """The :class:`distributed.Client` (raises if the executor is closed)."""
        if self._client is None:
            raise BoVoidsError("the Dask executor is closed")
        return self._client

    @property
    def scheduler_address(self) -> str:
        """Address of the scheduler in use."""
        if self._client is None:
            return "<closed>"
        return str(self._client.scheduler.address)

    def describe(self) -> JsonObject:
        """Scheduler address, worker count and whether the cluster was started here."""
        return {
            "scheduler_address": self.scheduler_address,
            "workers": len(self.client.nthreads()),
            "local_cluster": self._cluster is not None,
            "tasks_per_job": self.tasks_per_job,
        }

    # ---- evaluation ---------------------------------------------------------------------------

    def _submit(self, chunk: Sequence[EvaluationTask], attempt: int) -> Future:
        first = chunk[0]
        key = (
            f"bo-voids-evaluate-{first.iteration}-{first.param_set_id}-"
            f"{attempt}-{uuid.uuid4().hex[:8]}"
        )
        return self.client.submit(
            _evaluate_chunk,
            self.spec,
            list(chunk),
            key=key,
            pure=False,
            retries=self.retries,
            resources=self.resources,
        )

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Evaluate ``tasks`` on the cluster; results come back in task order.

        Args:
            tasks: The parameter sets to render and embed.
            progress: Show a tqdm progress bar over completed parameter sets.

        Returns:
            One :class:`~bo_voids.evaluation.EvaluationResult` per task, in task order.

        Raises:
            WorkerLostError: If a parameter set's workers were lost more than
                ``max_resubmits`` times.
            Exception: The evaluation's own exception, once Dask's ``retries`` are spent.
        """
        if not tasks:
            return []
        from distributed import as_completed
        from tqdm.auto import tqdm

        n = self.tasks_per_job
        chunks = [list(tasks[i : i + n]) for i in range(0, len(tasks), n)]
        futures: dict[Future, int] = {self._submit(c, 0): i for i, c in enumerate(chunks)}
        attempts = [0] * len(chunks)
        done: list[list[EvaluationResult] | None] = [None] * len(chunks)
        bar = tqdm(
            total=len(tasks),
            desc="render+embed (dask)",
            unit="set",
            leave=False,
            disable=not progress,
        )
        pending = as_completed(list(futures))
        try:
            for fut in pending:
                i = futures.pop(fut)
                if fut.status == "finished":
                    done[i] = fut.result()
                    bar.update(len(chunks[i]))
                    continue
                exc = self._failure(fut)
                if exc is not None and not isinstance(exc, self._lost_types):
                    raise exc  # the evaluation itself failed, after Dask's retries
                attempts[i] += 1
                ids = ", ".join(t.param_set_id for t in chunks[i])
                if attempts[i] > self.max_resubmits:
                    raise WorkerLostError(
                        f"parameter set(s) {ids} lost their worker {attempts[i]} times "
                        f"(max_resubmits={self.max_resubmits}); last error: {exc!r}"
                    ) from exc
                logger.warning(
                    "dask: worker lost while evaluating %s (%r); re-submitting (%d/%d)",
                    ids,
                    exc,
                    attempts[i],
                    self.max_resubmits,
                )
                new = self._submit(chunks[i], attempts[i])
                futures[new] = i
                pending.add(new)
        finally:
            bar.close()
            if futures:  # an error left work in flight: drop it, nothing is returned
                self.client.cancel(list(futures), force=True)
        out = [r for part in done if part is not None for r in part]
        if len(out) != len(tasks):  # pragma: no cover - defensive
            raise BoVoidsError(f"dask returned {len(out)} results for {len(tasks)} tasks")
        return out

    @staticmethod
    def _failure(fut: Future) -> BaseException | None:
        """The exception of a future that did not finish (``None`` if it was cancelled/lost)."""
        if fut.status == "error":
            try:
                return fut.exception()
            except Exception as exc:  # the exception itself could not be fetched
                return exc
        return None  # "cancelled" / "lost": the scheduler forgot it, e.g. after a reconnect

    # ---- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the client, and the ``LocalCluster`` if this executor started it. Idempotent."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # pragma: no cover - best effort
                logger.debug("dask client close failed: %r", exc)
        if cluster is not None:
            try:
                cluster.close()
            except Exception as exc:  # pragma: no cover - best effort
                logger.debug("dask LocalCluster close failed: %r", exc)
