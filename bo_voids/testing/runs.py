"""Tiny experiments on the bundled base chips: configs, evaluation tasks, finished runs.

Everything here renders real images with the handcrafted embedder at small sizes, so a test
runs the same code as a user's run in seconds. ``repo_root`` is the checkout holding
``configs/quickstart.yaml`` and ``data/base_chips`` (:data:`REPO_ROOT` when the package runs
from a checkout, as the tests and benchmarks do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bo_voids.config import ExperimentConfig, load_config
from bo_voids.evaluation import EvaluationResult, EvaluationTask, EvaluatorSpec, render_seeds
from bo_voids.generation.voids import ImageRecord
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.seeding import rng
from bo_voids.space import SearchSpace
from bo_voids.state import ExperimentStore

__all__ = [
    "PNG_SIGNATURE",
    "REPO_ROOT",
    "assert_same_results",
    "assert_valid_png",
    "build_iteration0_run",
    "build_running_copy",
    "build_target_run",
    "build_tiny_run",
    "run_config_file",
    "small_spec",
    "small_tasks",
    "tiny_config",
]

#: The checkout this package is imported from (``bo_voids/testing/runs.py`` three levels down).
REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Keys of an image record that legitimately differ between two evaluations of one task.
VOLATILE_RECORD_KEYS = frozenset({"timestamp"})


def tiny_config(repo_root: Path, tmp_path: Path, **changes: object) -> ExperimentConfig:
    """The quickstart config shrunk to seconds: 64 px, random search, handcrafted embedder.

    Args:
        repo_root: The checkout (configs and base chips are read from it).
        tmp_path: Folder the experiment is written under (``tmp_path / "exp"``).
        **changes: Top-level config keys to change on top of the tiny settings.

    Returns:
        A validated config: 3 sets x 2 images per iteration-0 dataset, batches of 4 sets,
        2 iterations, no early stop and no calibration.
    """
    cfg = load_config(Path(repo_root) / "configs" / "quickstart.yaml", check_paths=False)
    base: dict[str, Any] = dict(
        experiment_dir=str(Path(tmp_path) / "exp"),
        base_image_dir=str(Path(repo_root) / "data" / "base_chips"),
        image_size=64,
        max_iterations=2,
        optimizer="random",
        embedder="handcrafted",
        iteration_batch_size=4,
        real={"param_sets": 3, "replications": 2},
        close={"param_sets": 3, "replications": 2},
        far={"param_sets": 3, "replications": 2},
        replications_per_iteration=2,
        stop_at_noise_floor=False,
        convergence_threshold=-1.0,
        early_stop_patience=50,
        calibrate=False,
        # few fresh images and null draws: the statistics are exercised, not measured
        metric={
            **dataclasses.asdict(cfg.metric),
            "fresh_images": 3,
            "null_draws": 4,
            "noise_floor_splits": 10,
            "permutations": 50,
        },
    )
    if "metric" in changes:
        metric = changes.pop("metric")
        assert isinstance(metric, Mapping), f"metric changes must be a mapping, got {metric!r}"
        base["metric"] = {**base["metric"], **metric}
    base.update(changes)
    return cfg.replace(**base)


def run_config_file(config: ExperimentConfig, folder: Path) -> Path:
    """Run ``config`` through the command line (``bo-voids run``), without the live plots.

    The config is written to ``folder / "tiny.yaml"`` first, so the run reads it as a user's
    would; the plots are skipped because the callers look at other things.

    Returns:
        The config file's path.

    Raises:
        RuntimeError: The command did not exit 0.
    """
    import yaml

    from bo_voids import optimize

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    original = OptimizationPipeline._plot
    OptimizationPipeline._plot = lambda self: None  # type: ignore[method-assign]
    try:
        code = optimize.main(["--config", str(path), "--quiet", "--no-report"])
    finally:
        OptimizationPipeline._plot = original  # type: ignore[method-assign]
    if code != 0:
        raise RuntimeError(f"bo-voids run --config {path} exited {code}")
    return path


def small_spec(repo_root: Path, image_size: int = 64) -> EvaluatorSpec:
    """A cheap evaluator recipe: the handcrafted embedder on the bundled base chips."""
    return EvaluatorSpec(
        base_image_dir=str(Path(repo_root) / "data" / "base_chips"),
        image_size=image_size,
        edge_blur=2.0,
        embedder="handcrafted",
    )


def small_tasks(repo_root: Path, n: int = 6, replications: int = 2) -> list[EvaluationTask]:
    """``n`` tasks cycling through every dataset type, drawn from the quickstart search space.

    Every other task uses common random numbers, so both seeding schemes are exercised.
    """
    cfg = load_config(Path(repo_root) / "configs" / "quickstart.yaml", check_paths=False)
    space = SearchSpace.from_config(cfg)
    tasks = []
    kinds = ("real", "close", "far", "synthetic")
    for i in range(n):
        dtype = kinds[i % len(kinds)]
        iteration = 0 if dtype != "synthetic" else 1
        (params,) = space.sample(dtype if dtype != "synthetic" else "close", 1, rng(7, i))
        seeds = render_seeds(cfg.seed, iteration, dtype, i, replications, i % 2 == 0)
        tasks.append(EvaluationTask(iteration, dtype, i, f"{dtype}_ps_{i:03d}", params, seeds))
    return tasks


def _stable(records: Sequence[ImageRecord]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k not in VOLATILE_RECORD_KEYS} for r in records]


def assert_same_results(
    expected: Sequence[EvaluationResult],
    actual: Sequence[EvaluationResult],
    *,
    rtol: float = 1e-5,
) -> None:
    """Bit-identical images and masks, equal records, embeddings equal to float tolerance.

    Args:
        expected: Reference results (e.g. of the local executor).
        actual: Results to check, in the same task order.
        rtol: Relative tolerance of the embeddings (batching changes float summation order).

    Raises:
        AssertionError: On the first difference.
    """
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert a.task == b.task  # task order is kept
        assert a.images.dtype == b.images.dtype and a.images.shape == b.images.shape
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=rtol, atol=1e-6)
        assert _stable(a.records) == _stable(b.records)
        assert b.error is None


# ---------------------------------------------------------------------------------------------
# Finished runs (built once per test session under a shared base folder)
# ---------------------------------------------------------------------------------------------


class _PlotFailures(logging.Handler):
    """Collects the pipeline's 'plotting failed' warnings (the pipeline never raises for them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "plot" in message:
            self.messages.append(message)


@contextlib.contextmanager
def _real_plots() -> Iterator[None]:
    """Draw the real figures even where a test stubbed them out (its stub keeps ``real``).

    The shared runs are cached per test worker and read by the plot and report tests, so they
    must hold real figures whichever test builds them first.
    """
    import bo_voids.plots as plots

    current = plots.write_all_plots
    plots.write_all_plots = getattr(current, "real", current)
    try:
        yield
    finally:
        plots.write_all_plots = current


def _run_pipeline(folder: Path, **changes: Any) -> Path:
    """Run the real pipeline on a tiny config; fail if any per-iteration plotting failed."""
    marker = folder / ".viz_built"
    if marker.exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    cfg = tiny_config(
        REPO_ROOT, folder.parent, experiment_dir=str(folder), iteration_batch_size=3, **changes
    )
    handler = _PlotFailures()
    logger = logging.getLogger("bo_voids.pipeline")
    logger.addHandler(handler)
    try:
        with _real_plots():
            OptimizationPipeline(cfg).run_full_experiment()
    finally:
        logger.removeHandler(handler)
    assert not handler.messages, f"the pipeline's plotting failed: {handler.messages}"
    marker.write_text("ok")
    return folder


def build_tiny_run(base: Path) -> Path:
    """A finished run under ``base``: iteration 0 + 2 optimisation iterations, simulated targets."""
    return _run_pipeline(Path(base) / "viz_tiny")


def build_iteration0_run(base: Path) -> Path:
    """A run of iteration 0 alone (one iteration folder)."""
    return _run_pipeline(Path(base) / "viz_iter0", max_iterations=0)


def build_target_run(base: Path) -> Path:
    """A run whose real targets are images loaded from a folder (``params`` is ``None``)."""
    tiny = build_tiny_run(base)
    targets = Path(base) / "viz_target_images"
    if not targets.exists():
        targets.mkdir()
        for png in sorted((tiny / "iteration_0" / "images").glob("iter0_real_*.png")):
            if not png.name.endswith("_mask.png"):
                shutil.copy(png, targets / png.name)
    return _run_pipeline(Path(base) / "viz_target", max_iterations=1, target_image_dir=str(targets))


def build_running_copy(base: Path, name: str = "viz_running") -> Path:
    """A copy of the tiny run as it looks while still running (no final ``current_best``)."""
    src = build_tiny_run(base)
    dst = Path(base) / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    store = ExperimentStore(dst)
    manifest = store.read_manifest()
    manifest.pop("current_best", None)
    manifest.pop("next_params", None)
    manifest.pop("stop_reason", None)
    manifest.pop("timings", None)
    store.write_manifest({**manifest, "status": "running"})
    return dst


def assert_valid_png(data: bytes, min_bytes: int = 15_000, min_side: int = 500) -> None:
    """Assert that ``data`` is a real, non-blank PNG of a reasonable size."""
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_side and height >= 200, (width, height)
    assert min_bytes <= len(data) <= 3_000_000, len(data)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    assert (pixels < 250).mean() > 0.02, "figure is almost blank"
