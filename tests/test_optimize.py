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


def test_success_prints_summary_then_the_same_folder_needs_resume(
    config_file: Path, tmp_path: Path, capsys
) -> None:
    assert optimize.main(["--config", str(config_file), "--quiet", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "Best parameter sets (ranked by raw MMD²):" in out and "stopped because" in out
    assert "predicted" not in out  # the random optimiser has no model score to show
    assert str(tmp_path / "exp") in out
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


def test_interrupt_exit_130(config_file: Path, monkeypatch, tmp_path: Path, capsys) -> None:
    from bo_voids.pipeline import OptimizationPipeline

    original = OptimizationPipeline.step

    def interrupt(self, k, *a, **kw):
        if k >= 1:
            raise KeyboardInterrupt
        return original(self, k, *a, **kw)

    monkeypatch.setattr(OptimizationPipeline, "step", interrupt)
    assert optimize.main(["--config", str(config_file), "--quiet"]) == 130
    assert "iterations 0-0 are kept" in capsys.readouterr().err
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


def test_interrupt_during_iteration_0_claims_nothing_kept(
    config_file: Path, monkeypatch, capsys
) -> None:
    from bo_voids.pipeline import OptimizationPipeline

    def interrupt(self, k, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(OptimizationPipeline, "step", interrupt)
    assert optimize.main(["--config", str(config_file), "--no-report"]) == 130
    err = capsys.readouterr().err
    assert "no iteration was completed" in err and "kept" not in err
    monkeypatch.undo()
    # the resume says it starts iteration 0, never "after iteration -1"
    assert optimize.main(["--config", str(config_file), "--no-report", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "no iteration was completed; starting iteration 0" in err
    assert "after iteration -1" not in err


def test_resume_of_a_finished_run_does_no_work(
    config_file: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from bo_voids.pipeline import OptimizationPipeline

    assert optimize.main(["--config", str(config_file), "--no-report"]) == 0
    manifest = tmp_path / "exp" / "experiment.json"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    capsys.readouterr()

    def refuse(self, *a, **kw):
        raise AssertionError("a finished run did work on --resume")

    for name in ("step", "_calibrate", "_plot", "_evaluate", "_persist"):
        monkeypatch.setattr(OptimizationPipeline, name, refuse)
    assert optimize.main(["--config", str(config_file), "--no-report", "--resume"]) == 0
    captured = capsys.readouterr()
    assert "is already complete after iteration 1" in captured.err
    assert "nothing to do" in captured.err and "--max-iterations" in captured.err
    assert "Traceback" not in captured.err and "Best parameter sets" not in captured.out
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before
    assert load_experiment(tmp_path / "exp").manifest["status"] == "completed"


def test_targets_option_runs_on_a_folder(config_file: Path, tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    targets = tmp_path / "my real images"
    targets.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(60, 200, size=(64, 64), dtype=np.uint8)
        Image.fromarray(pixels).save(targets / f"scan_{i}.png")
    args = ["--config", str(config_file), "--targets", str(targets), "--max-iterations", "0"]
    assert optimize.main([*args, "--no-report"]) == 0
    err = capsys.readouterr().err
    # nothing real is rendered: the targets are the folder's images
    line = next(x for x in err.splitlines() if "rendering" in x)
    assert line.endswith("rendering 12 images (close, far)")
    run = load_experiment(tmp_path / "exp")
    assert str(run.config.target_image_dir) == str(targets)
    real = [m for m in run.iterations[0].metadata if m["dataset_type"] == "real"]
    assert len(real) == 4 and all(m["params"] is None for m in real)


def test_numerical_notes_go_to_the_log_file_not_the_terminal(tmp_path: Path, capsys) -> None:
    import warnings

    from linear_operator.utils.warnings import NumericalWarning

    from bo_voids.exceptions import BoVoidsWarning

    log = tmp_path / "run.log"
    with optimize._logging(quiet=False, live=False) as attach:
        attach(log)
        warnings.warn(
            "A not p.d., added jitter of 1.0e-08 to the diagonal", NumericalWarning, stacklevel=1
        )
        warnings.warn("the fallback ran", BoVoidsWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "the fallback ran" in err and "jitter" not in err
    text = log.read_text(encoding="utf-8")
    assert "added jitter" in text and "the fallback ran" in text
