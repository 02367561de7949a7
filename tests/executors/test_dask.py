"""The Dask executor on a 2-worker ``LocalCluster``: local results, lost workers survived."""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bo_voids.evaluation import EvaluationResult, EvaluationTask, Evaluator, EvaluatorSpec
from bo_voids.exceptions import BoVoidsError, ConfigError
from bo_voids.executors import LocalExecutor
from bo_voids.executors.dask import DaskEvaluationExecutor, worker_cache_info
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import load_experiment
from bo_voids.testing.runs import assert_same_results, small_spec, small_tasks, tiny_config

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """A 2-worker cluster shared by the module (the scheduler re-runs tasks of lost workers)."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as c:
        yield c


@pytest.fixture(scope="module")
def expected(repo_root: Path) -> list[EvaluationResult]:
    return LocalExecutor(small_spec(repo_root).build()).evaluate(small_tasks(repo_root))


# ---------------------------------------------------------------------------------------------
# A spec whose evaluator kills its own worker process the first time it meets one task
# ---------------------------------------------------------------------------------------------


@dataclass
class _KillOnceEvaluator(Evaluator):
    kill_marker: str = ""
    kill_param_set: str = ""

    def _maybe_die(self, tasks: Sequence[EvaluationTask]) -> None:
        marker = Path(self.kill_marker)
        if any(t.param_set_id == self.kill_param_set for t in tasks) and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no clean-up, no goodbye

    def evaluate_one(self, task: EvaluationTask) -> EvaluationResult:
        self._maybe_die([task])
        return super().evaluate_one(task)

    def evaluate_many(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        self._maybe_die(tasks)
        return super().evaluate_many(tasks, progress=progress)


@dataclass(frozen=True)
class KillOnceSpec(EvaluatorSpec):
    """An evaluator that SIGKILLs its worker on ``kill_param_set`` unless the marker exists."""

    kill_marker: str = ""
    kill_param_set: str = ""

    def build(self) -> Evaluator:
        ev = super().build()
        return _KillOnceEvaluator(
            ev.generator,
            ev.embedder,
            ev.embed_batch_size,
            kill_marker=self.kill_marker,
            kill_param_set=self.kill_param_set,
        )


def _kill_once_spec(repo_root: Path, marker: Path, param_set_id: str) -> KillOnceSpec:
    base = small_spec(repo_root)
    return KillOnceSpec(
        base_image_dir=base.base_image_dir,
        image_size=base.image_size,
        edge_blur=base.edge_blur,
        embedder=base.embedder,
        kill_marker=str(marker),
        kill_param_set=param_set_id,
    )


def test_same_results_as_local_and_one_build_per_worker(
    cluster: distributed.LocalCluster, repo_root: Path, expected: list[EvaluationResult]
) -> None:
    tasks = small_tasks(repo_root)
    with DaskEvaluationExecutor(
        small_spec(repo_root), scheduler_address=cluster.scheduler_address
    ) as ex:
        assert ex.describe()["workers"] == 2 and not ex.describe()["local_cluster"]
        assert_same_results(expected, ex.evaluate(tasks, progress=True))
        assert_same_results(expected[::-1], ex.evaluate(tasks[::-1]))  # order follows tasks
        assert ex.evaluate([]) == []
        info = ex.client.run(worker_cache_info)
    assert len(info) == 2
    assert all(v["builds"] == 1 and v["specs"] == 1 for v in info.values()), info
    assert cluster.status.name == "running"  # closing the executor leaves a foreign cluster up


def test_several_tasks_per_job(
    cluster: distributed.LocalCluster, repo_root: Path, expected: list[EvaluationResult]
) -> None:
    with DaskEvaluationExecutor(
        small_spec(repo_root), scheduler_address=cluster.scheduler_address, tasks_per_job=4
    ) as ex:
        assert_same_results(expected, ex.evaluate(small_tasks(repo_root)))


def test_worker_killed_mid_batch_is_rescheduled(
    cluster: distributed.LocalCluster,
    repo_root: Path,
    tmp_path: Path,
    expected: list[EvaluationResult],
) -> None:
    tasks = small_tasks(repo_root)
    marker = tmp_path / "killed"
    spec = _kill_once_spec(repo_root, marker, tasks[2].param_set_id)
    with DaskEvaluationExecutor(
        spec, scheduler_address=cluster.scheduler_address, warm_up=False
    ) as ex:
        results = ex.evaluate(tasks)
    assert marker.exists()  # a worker really died mid-batch
    assert_same_results(expected, results)


def _set_allowed_failures(client: distributed.Client, n: int) -> int:
    def swap(dask_scheduler: distributed.Scheduler) -> int:
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    return int(client.run_on_scheduler(swap))


def test_killed_worker_error_is_resubmitted_by_the_executor(
    cluster: distributed.LocalCluster,
    repo_root: Path,
    tmp_path: Path,
    expected: list[EvaluationResult],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # allowed-failures 0: the scheduler gives up at once (KilledWorker), the executor re-submits.
    tasks = small_tasks(repo_root)
    marker = tmp_path / "killed"
    spec = _kill_once_spec(repo_root, marker, tasks[3].param_set_id)
    with DaskEvaluationExecutor(
        spec, scheduler_address=cluster.scheduler_address, warm_up=False
    ) as ex:
        old = _set_allowed_failures(ex.client, 0)
        try:
            with caplog.at_level(logging.WARNING, logger="bo_voids.executors.dask"):
                results = ex.evaluate(tasks, progress=True)
        finally:
            _set_allowed_failures(ex.client, old)
    assert marker.exists()
    assert_same_results(expected, results)
    assert any("re-submitting" in r.getMessage() for r in caplog.records), caplog.text


def test_evaluation_errors_are_raised_in_the_driver(
    cluster: distributed.LocalCluster, repo_root: Path
) -> None:
    tasks = small_tasks(repo_root, n=3)
    bad = EvaluationTask(1, "synthetic", 9, "bad", {**tasks[0].params, "void_count": -5}, (1,))
    with DaskEvaluationExecutor(
        small_spec(repo_root), scheduler_address=cluster.scheduler_address, retries=0
    ) as ex:
        with pytest.raises(ConfigError):
            ex.evaluate([*tasks, bad])
        assert len(ex.evaluate(tasks)) == 3  # still usable


def test_unreachable_scheduler_is_a_clear_error(repo_root: Path) -> None:
    with pytest.raises(BoVoidsError, match="cannot reach the Dask scheduler"):
        DaskEvaluationExecutor(
            small_spec(repo_root), scheduler_address="tcp://127.0.0.1:1", connect_timeout=2
        )


def _history_equal(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    assert len(a) == len(b) and a
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key in ra:
            try:
                fa, fb = float(ra[key]), float(rb[key])
            except ValueError:
                assert ra[key] == rb[key], key
            else:
                assert math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-9), (key, fa, fb)


def test_pipeline_with_a_local_dask_cluster_matches_local(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OptimizationPipeline, "_plot", lambda self: None)  # not under test here
    local = tiny_config(repo_root, tmp_path / "local", max_iterations=1)
    on_dask = tiny_config(
        repo_root,
        tmp_path / "dask",
        max_iterations=1,
        executor="dask",
        dask={"scheduler_address": None, "local_workers": 2},
    )
    OptimizationPipeline(local).run_full_experiment()
    summary = OptimizationPipeline(on_dask).run_full_experiment()
    assert summary.iterations_completed == 1
    ra, rb = load_experiment(local.experiment_dir), load_experiment(on_dask.experiment_dir)
    _history_equal(ra.history, rb.history)
    for ia, ib in zip(ra.iterations, rb.iterations, strict=True):
        np.testing.assert_allclose(ia.embeddings, ib.embeddings, rtol=1e-5, atol=1e-6)
        assert [m["params"] for m in ia.metadata] == [m["params"] for m in ib.metadata]
        assert [m["render_seed"] for m in ia.metadata] == [m["render_seed"] for m in ib.metadata]
