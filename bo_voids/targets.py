"""A folder of real target images: loaded and checked up front, embedded once in iteration 0."""

from __future__ import annotations

import numpy as np

from bo_voids.config import ExperimentConfig
from bo_voids.embedding import Embedder
from bo_voids.evaluation import IterationImages, target_records
from bo_voids.exceptions import BoVoidsError, ImageLoadError
from bo_voids.generation.base_chips import load_base_images

__all__ = ["TargetImages", "embed_targets", "load_targets"]

#: The images of ``target_image_dir`` and their file names.
TargetImages = tuple[list[np.ndarray], list[str]]


def load_targets(config: ExperimentConfig) -> TargetImages:
    """Load and check every real target image of ``config.target_image_dir``.

    Raises:
        ImageLoadError: An unreadable image, or fewer than two.
    """
    folder = config.target_image_dir
    assert folder is not None
    images, ids = load_base_images(folder, config.image_size, label="real target image")
    if len(images) < 2:
        raise ImageLoadError(
            f"target_image_dir {folder} holds {len(images)} image(s) ({ids}); the MMD score "
            "needs at least 2 real target images"
        )
    return images, ids


def embed_targets(
    config: ExperimentConfig, targets: TargetImages, embedder: Embedder, *, progress: bool = False
) -> IterationImages:
    """Embed the target images (iteration 0's ``real`` rows).

    Raises:
        BoVoidsError: The embedder returned non-finite values for a target image.
    """
    assert config.target_image_dir is not None
    images, ids = targets
    emb = embedder.embed(images, progress=progress)
    if not np.all(np.isfinite(emb)):
        bad = sorted({ids[i] for i in np.flatnonzero(~np.isfinite(emb).all(axis=1))})
        raise BoVoidsError(
            f"the embedder returned non-finite (NaN/inf) values for real target image(s) "
            f"{bad} in {config.target_image_dir}"
        )
    records = target_records(config.target_image_dir, ids)
    return IterationImages(list(images), [None] * len(images), emb, records)
