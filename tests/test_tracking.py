"""MLflow tracking (bo_voids.tracking): a real local MLflow store, written and read back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from bo_voids.exceptions import ConfigError
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.report import ReportCallback
from bo_voids.run_scores import RunScores
from bo_voids.state import load_experiment
from bo_voids.testing.runs import tiny_config
from bo_voids.tracking import MLflowCallback, flatten_params, iteration_metrics


def test_flatten_params_and_metrics() -> None:
    params = dict(flatten_params({"a": 1, "b": {"c": [1, 2], "d": None}, "e": "x" * 600}))
    assert params["a"] == "1" and params["b.c"] == "[1, 2]" and params["b.d"] == ""
    assert len(params["e"]) == 500 and params["e"].endswith("…")
    metrics = iteration_metrics(
        RunScores.from_dict(
            {
                "distribution_similarity": 0.1,
                "kid": float("nan"),
                "n_sets": 4,
                "ranking": "raw",
                "recommendation": {"fresh_mmd2": 0.2, "mmd2_in_sample": None},
            }
        ),
        {"render": 1.5},
    )
    assert metrics == {
        "distribution_similarity": 0.1,
        "n_sets": 4.0,
        "pool_size": 0.0,
        "recommendation_fresh_mmd2": 0.2,
        "timings/render": 1.5,
    }


def test_missing_mlflow_is_a_usage_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[mlflow\]'"):
        MLflowCallback(tracking_uri=tmp_path / "mlruns").start()


@pytest.mark.plots
def test_logs_a_run_to_a_file_store_and_reads_it_back(repo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cfg = tiny_config(repo_root, tmp_path, max_iterations=2)
    store = tmp_path / "mlruns"
    with ReportCallback() as report, MLflowCallback(store, "tiny", run_name="t") as tracker:
        OptimizationPipeline(cfg, callbacks=[report, tracker]).run_full_experiment()
        report.finish()  # the final report first, so the tracker logs the completed page
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "t"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    scores = load_experiment(cfg.experiment_dir).scores
    history = client.get_metric_history(tracker.run_id, "distribution_similarity")
    assert sorted(m.step for m in history) == [0, 1, 2]
    for m in history:
        assert m.value == pytest.approx(scores[m.step].distribution_similarity)
    fresh = client.get_metric_history(tracker.run_id, "recommendation_fresh_mmd2")
    assert [m.value for m in sorted(fresh, key=lambda m: m.step)] == pytest.approx(
        [s.recommendation.fresh_mmd2 for s in scores if s.recommendation is not None]
    )
    assert run.data.params["seed"] == str(cfg.seed)
    assert run.data.params["bo.top_k"] == str(cfg.bo.top_k)
    assert run.data.params["embedder_info.name"] == "handcrafted"
    assert run.data.tags["bo_voids.experiment_dir"] == str(Path(cfg.experiment_dir).resolve())
    top = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert {"report.html", "experiment.json", "history.csv", "plots"} <= top
    plots = {a.path for a in client.list_artifacts(tracker.run_id, "plots")}
    assert "plots/convergence.png" in plots and len(plots) == 4


def test_run_command_with_mlflow(repo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from bo_voids import cli

    config = tmp_path / "tiny.yaml"
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    store = tmp_path / "store"
    args = ["run", "--config", str(config), "--quiet", "--mlflow", str(store)]
    assert cli.main(args) == cli.ExitCode.OK
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == cfg.experiment_name]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert "distribution_similarity" in run.data.metrics
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "events.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id)}
