"""Fixtures of the calibration tests: a tiny finished run and its calibration."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bo_voids.calibration import calibrate_experiment
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.testing.runs import tiny_config


@pytest.fixture(scope="session")
def make_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Run a tiny pipeline (one iteration; config changes as keywords); return its folder."""

    def run(name: str, **changes: Any) -> Path:
        folder = tmp_path_factory.mktemp(name)
        # the pipeline's own noise floor is not under test here: few null draws
        metric = {**tiny_config(repo_root, folder).to_dict()["metric"], "null_draws": 8}
        cfg = tiny_config(repo_root, folder, **{"max_iterations": 1, "metric": metric, **changes})
        OptimizationPipeline(cfg).run_full_experiment()
        return Path(cfg.experiment_dir)

    return run


@pytest.fixture(scope="session")
def tiny_run(make_run: Callable[..., Path]) -> Path:
    """A finished tiny run with simulated targets (3 sets × 2 renders)."""
    return make_run("calib")


@pytest.fixture(scope="session")
def calibrated(tiny_run: Path) -> dict[str, Any]:
    """``calibrate_experiment`` of :func:`tiny_run` with its defaults."""
    return calibrate_experiment(tiny_run)


@pytest.fixture(scope="session")
def target_folder(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], Path]:
    """A folder holding the first ``k`` base chips, used as real target images."""

    def make(k: int) -> Path:
        folder = tmp_path_factory.mktemp(f"targets_{k}")
        for src in sorted((repo_root / "data" / "base_chips").glob("*.png"))[:k]:
            shutil.copy(src, folder / src.name)
        return folder

    return make
