"""bo_voids: Bayesian optimisation (BoTorch) of a synthetic X-ray void image generator.

The public API (imported lazily, so ``import bo_voids`` stays cheap)::

    from bo_voids import OptimizationPipeline, load_config, VoidGenerator
    cfg = load_config("configs/quickstart.yaml")
    summary = OptimizationPipeline(cfg).run_full_experiment()

Stages, one module each: :mod:`~bo_voids.config` → :mod:`~bo_voids.space` →
:mod:`~bo_voids.generation` → :mod:`~bo_voids.embedding` → :mod:`~bo_voids.metrics` →
:mod:`~bo_voids.optimizers` → :mod:`~bo_voids.pipeline` / :mod:`~bo_voids.state` →
:mod:`~bo_voids.plots` / :mod:`~bo_voids.report`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_config": "bo_voids.config",
    "config_from_dict": "bo_voids.config",
    "ExperimentConfig": "bo_voids.config",
    "SearchSpace": "bo_voids.space",
    "VoidGenerator": "bo_voids.generation.voids",
    "RenderedImage": "bo_voids.generation.voids",
    "load_base_images": "bo_voids.generation.base_chips",
    "generate_base_chip": "bo_voids.generation.base_chips",
    "Embedder": "bo_voids.embedding",
    "make_embedder": "bo_voids.embedding",
    "MMDScorer": "bo_voids.metrics",
    "mmd2": "bo_voids.metrics",
    "PCAProjector": "bo_voids.projection",
    "BaseOptimizer": "bo_voids.optimizers",
    "make_optimizer": "bo_voids.optimizers",
    "OptimizationPipeline": "bo_voids.pipeline",
    "RunSummary": "bo_voids.pipeline",
    "ExperimentStore": "bo_voids.state",
    "load_experiment": "bo_voids.state",
    "write_report": "bo_voids.report",
    "write_all_plots": "bo_voids.plots",
    "export_dataset": "bo_voids.export",
    "image_void_metrics": "bo_voids.void_metrics",
    "BoVoidsError": "bo_voids.exceptions",
    "ConfigError": "bo_voids.exceptions",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bo_voids' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
