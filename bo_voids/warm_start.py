"""Seeding iteration 0 with every evaluated set of an earlier experiment (``warm_start``).

The earlier images and embeddings are reused as they are (nothing is rendered); its targets are
not: the new run's own targets are used. Refused (exit 2) when the earlier experiment was
embedded or rendered differently, before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids.config import ExperimentConfig
from bo_voids.evaluation import IterationImages
from bo_voids.exceptions import ResumeMismatchError
from bo_voids.generation.voids import ImageRecord
from bo_voids.scoring import TARGET_TYPES
from bo_voids.state import ExperimentRun, load_experiment

__all__ = ["WARM_START_KEYS", "check_warm_start", "warm_start_images"]

#: Config keys that must agree for a warm start (they decide what an image looks like).
WARM_START_KEYS: tuple[str, ...] = ("image_size", "edge_blur", "base_image_dir", "param_bounds")


def check_warm_start(config: ExperimentConfig, embedder: Mapping[str, object]) -> ExperimentRun:
    """Load the ``warm_start`` experiment; refuse one embedded or rendered differently.

    Args:
        config: This run's config.
        embedder: This run's embedder identity (its ``fingerprint`` must match).

    Raises:
        ResumeMismatchError: Another embedder or other render settings.
    """
    assert config.warm_start is not None
    old = load_experiment(config.warm_start)
    theirs = old.manifest.get("embedder", {})
    if theirs.get("fingerprint") != embedder.get("fingerprint"):
        raise ResumeMismatchError(
            f"warm_start: {config.warm_start} was embedded with {theirs.get('name')!r} "
            f"({theirs.get('fingerprint')}), this run uses {embedder.get('name')!r} "
            f"({embedder.get('fingerprint')}); scores from different embedders must not be mixed"
        )
    a, b = old.config.to_dict(), config.to_dict()
    differ = [key for key in WARM_START_KEYS if a.get(key) != b.get(key)]
    if differ:
        detail = "; ".join(f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in differ)
        raise ResumeMismatchError(
            f"warm_start: {config.warm_start} rendered its images differently ({detail})"
        )
    if not any(_observed(m) for it in old.iterations for m in it.metadata):
        raise ResumeMismatchError(f"warm_start: {config.warm_start} has no evaluated sets")
    return old


def warm_start_images(old: ExperimentRun, log: Callable[[str], None]) -> IterationImages:
    """Every evaluated set of the earlier experiment, as iteration 0 rows of this run.

    Args:
        old: The checked warm-start experiment (:func:`check_warm_start`).
        log: Called with one line saying what was taken.
    """
    from PIL import Image

    def load_png(path: Path) -> np.ndarray:
        with Image.open(path) as im:  # 8-bit grey, written by save_png: round-trips exactly
            return np.asarray(im.convert("L"))

    images: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    rows: list[np.ndarray] = []
    meta: list[ImageRecord] = []
    for it in old.iterations:
        for i, m in enumerate(it.metadata):
            if not _observed(m):
                continue
            images.append(load_png(it.image_path(i)))
            mask = m.get("mask_file")
            assert it.folder is not None
            masks.append(load_png(it.folder / "images" / mask) > 127 if mask else None)
            rows.append(it.embeddings[i])
            meta.append(
                {
                    **m,
                    "iteration": 0,
                    "param_set_id": f"warm_{m['param_set_id']}",
                    "warm_start_from": {"experiment": str(old.root), "iteration": it.iteration},
                }
            )
    log(f"warm start: {len({m['param_set_id'] for m in meta})} sets from {old.root}")
    return IterationImages(images, masks, np.stack(rows), meta)


def _observed(m: Mapping[str, Any]) -> bool:
    return m["dataset_type"] not in TARGET_TYPES and m.get("params") is not None
