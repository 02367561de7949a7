from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bo_voids import cli, optimize
from bo_voids.exceptions import BoVoidsError
from bo_voids.state import load_experiment
from bo_voids.testing.runs import tiny_config


@pytest.fixture
def config_file(repo_root: Path, tmp_path: Path) -> Path:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def test_success_prints_summary(config_file: Path, tmp_path: Path, capsys) -> None:
    code = optimize.main(["--config", str(config_file), "--quiet", "--no-report"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Best parameter sets:" in out and "stopped because" in out
    assert str(tmp_path / "exp") in out


def test_overrides_apply(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "other"
    code = optimize.main(
        [
            "--config",
            str(config_file),
            "--experiment-dir",
            str(target),
            "--max-iterations",
            "0",
            "--seed",
            "7",
            "--quiet",
            "--no-report",
        ]
    )
    assert code == 0
    run = load_experiment(target)
    assert run.manifest["seed"] == 7 and len(run.iterations) == 1


def test_config_error_exit_2(tmp_path: Path, config_file: Path, capsys) -> None:
    raw = yaml.safe_load(config_file.read_text())
    raw["param_distributions"]["real"]["void_count"]["std"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert optimize.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "param_distributions.real.void_count.std must be >= 0, got -1" in err
    assert "Traceback" not in err


def test_existing_experiment_exit_2(config_file: Path, capsys) -> None:
    assert optimize.main(["--config", str(config_file), "--quiet", "--no-report"]) == 0
    assert optimize.main(["--config", str(config_file), "--quiet", "--no-report"]) == 2
    assert "--resume" in capsys.readouterr().err
    args = [
        "--config",
        str(config_file),
        "--quiet",
        "--no-report",
        "--resume",
        "--max-iterations",
        "2",
    ]
    assert optimize.main(args) == 0


def test_runtime_failure_exit_1(config_file: Path, monkeypatch, capsys) -> None:
    from bo_voids.pipeline import OptimizationPipeline

    original = OptimizationPipeline.step

    def boom(self, k, *a, **kw):
        if k >= 1:
            raise BoVoidsError("renderer exploded")
        return original(self, k, *a, **kw)

    monkeypatch.setattr(OptimizationPipeline, "step", boom)
    assert optimize.main(["--config", str(config_file), "--quiet", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "renderer exploded" in err and "--resume" in err


def test_interrupt_exit_130(config_file: Path, monkeypatch, tmp_path: Path) -> None:
    from bo_voids.pipeline import OptimizationPipeline

    original = OptimizationPipeline.step

    def interrupt(self, k, *a, **kw):
        if k >= 1:
            raise KeyboardInterrupt
        return original(self, k, *a, **kw)

    monkeypatch.setattr(OptimizationPipeline, "step", interrupt)
    assert optimize.main(["--config", str(config_file), "--quiet"]) == 130
    assert load_experiment(tmp_path / "exp").manifest["status"] == "interrupted"
    # the report written after iteration 0 no longer says "running"
    html = (tmp_path / "exp" / "report.html").read_text(encoding="utf-8")
    assert 'id="status">Interrupted after iteration 0 of 1' in html


def test_bo_voids_run_is_this_command() -> None:
    assert cli.COMMANDS["run"].resolve() is optimize.main


def test_usage_error_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        optimize.main([])
    assert exc.value.code == 2


def test_module_entry_point(config_file: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bo_voids.optimize",
            "--config",
            str(config_file),
            "--quiet",
            "--no-report",
            "--max-iterations",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Best parameter sets" in proc.stdout
