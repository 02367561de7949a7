"""The in-process and process-pool executors, and the factory that picks one from the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bo_voids.config import config_from_dict, load_config
from bo_voids.evaluation import EvaluatorSpec
from bo_voids.exceptions import ConfigError
from bo_voids.executors import LocalExecutor, ProcessPoolEvaluationExecutor, make_executor
from bo_voids.testing.runs import assert_same_results, small_spec, small_tasks


def test_local_executor(repo_root: Path) -> None:
    spec = small_spec(repo_root)
    tasks = small_tasks(repo_root, n=4)
    with LocalExecutor(spec.build()) as ex:
        assert_same_results(ex.evaluator.evaluate_many(tasks), ex.evaluate(tasks, progress=True))
        assert ex.evaluate([]) == []


def test_process_pool_gives_the_same_results_as_local(repo_root: Path) -> None:
    spec = small_spec(repo_root)
    tasks = small_tasks(repo_root, n=6)
    expected = LocalExecutor(spec.build()).evaluate(tasks)
    with ProcessPoolEvaluationExecutor(spec, max_workers=2) as pool:
        actual = pool.evaluate(tasks, progress=True)
    assert_same_results(expected, actual)


def test_make_executor_local_reuses_the_drivers_evaluator(repo_root: Path) -> None:
    cfg = load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)
    spec = small_spec(repo_root)
    evaluator = spec.build()
    with make_executor(cfg.replace(executor="local"), spec, evaluator) as ex:
        assert isinstance(ex, LocalExecutor) and ex.evaluator is evaluator


def test_make_executor_passes_dask_settings(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bo_voids.executors import dask

    seen: dict = {}

    class FakeDask:
        def __init__(self, spec, **kwargs) -> None:
            seen.update(spec=spec, **kwargs)

    monkeypatch.setattr(dask, "DaskEvaluationExecutor", FakeDask)
    raw = yaml.safe_load(config_path.read_text())
    raw["executor"] = "dask"
    raw["dask"] = {"local_workers": 2, "resources": {"GPU": 1}, "tasks_per_job": 3}
    cfg = config_from_dict(raw, check_paths=False)
    spec = EvaluatorSpec.from_config(cfg)
    assert isinstance(make_executor(cfg, spec), FakeDask)
    assert seen == {
        "spec": spec,
        "scheduler_address": None,
        "local_workers": 2,
        "resources": {"GPU": 1.0},
        "tasks_per_job": 3,
    }


def test_dask_executor_without_dask_gives_the_install_hint(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bo_voids.executors.dask import DaskEvaluationExecutor

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[dask\]'"):
        DaskEvaluationExecutor(small_spec(repo_root), local_workers=1)


def test_dask_executor_needs_an_address_or_local_workers(repo_root: Path) -> None:
    from bo_voids.executors.dask import DaskEvaluationExecutor

    with pytest.raises(ConfigError, match="scheduler_address"):
        DaskEvaluationExecutor(small_spec(repo_root))
    with pytest.raises(ConfigError, match="local_workers"):
        DaskEvaluationExecutor(small_spec(repo_root), local_workers=0)


def test_importing_bo_voids_does_not_import_dask() -> None:
    code = (
        "import sys, bo_voids, bo_voids.evaluation, bo_voids.pipeline, bo_voids.executors, "
        "bo_voids.executors.dask; "
        "print(any(m == 'distributed' or m.startswith(('distributed.', 'dask')) "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
