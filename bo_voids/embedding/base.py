"""The :class:`Embedder` contract shared by every image embedder, and input helpers.

An embedder maps a batch of grayscale images (float in ``[0, 1]``) to a ``float32`` matrix of
shape `N x dim`. Its :meth:`Embedder.fingerprint` identifies the embedding space exactly (model,
variant, weights, feature settings), so that scores computed in different spaces are never mixed
within one experiment.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Iterator, Sequence

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.exceptions import EmbeddingError

__all__ = ["Embedder", "ImageBatch", "as_image_list", "short_hash"]

ImageBatch = Sequence[np.ndarray] | np.ndarray
"""Accepted image input: a sequence of ``H x W`` / ``H x W x 3`` arrays or one stacked array."""


class Embedder(abc.ABC):
    """Abstract base of image embedders.

    Subclasses set :attr:`name` and :attr:`dim` and implement :meth:`_embed_batch`,
    :meth:`fingerprint` and :meth:`describe`. :meth:`embed` does input validation and batching.

    Attributes:
        name: Short embedder family name (``"dinov2"``, ``"handcrafted"``).
        dim: Length of one embedding vector.
    """

    name: str
    dim: int
    default_batch_size: int = 32

    def embed(
        self,
        images: ImageBatch,
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed a batch of grayscale images.

        Args:
            images: ``N`` images, each ``H x W`` (grayscale) or ``H x W x 3`` (RGB, converted to
                luminance where the embedder is grayscale), float in ``[0, 1]``; ``uint8`` images
                are divided by 255. Images may differ in size. A stacked array of shape
                `N x H x W` or `N x H x W x 3` is accepted too.
            batch_size: Images processed per forward pass (default: the embedder's own).
            progress: Show a ``tqdm`` progress bar over batches.

        Returns:
            A ``float32`` array of shape `N x dim`.

        Raises:
            EmbeddingError: If an image has an unsupported shape or non-finite values.
        """
        imgs = as_image_list(images)
        bs = int(batch_size or self.default_batch_size)
        if bs < 1:
            raise EmbeddingError(f"batch_size must be >= 1, got {batch_size!r}")
        if not imgs:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = list(_chunks(imgs, bs))
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"embed[{self.name}]", unit="batch")
        out = [np.asarray(self._embed_batch(c), dtype=np.float32) for c in chunks]
        emb = np.concatenate(out, axis=0)
        if emb.shape != (len(imgs), self.dim):
            raise EmbeddingError(
                f"{self.name} embedder returned shape {emb.shape}, "
                f"expected ({len(imgs)}, {self.dim})"
            )
        return emb

    @abc.abstractmethod
    def _embed_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Embed one batch of validated float images (`B x dim` float32)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Return a string that identifies this embedding space exactly.

        Two embedders with equal fingerprints produce the same embeddings (up to floating-point
        non-determinism of the device); any change of model, variant, weights, precision or
        feature settings changes the fingerprint.
        """

    @abc.abstractmethod
    def describe(self) -> JsonObject:
        """Return a JSON-serialisable description for the experiment record."""

    def identity(self) -> JsonObject:
        """The record an experiment keeps of its embedder: name, dim, fingerprint, settings.

        A resume, a warm start or a re-targeting refuses an experiment whose identity differs.
        """
        settings = {k: v for k, v in self.describe().items() if k not in {"name", "dim"}}
        return {"name": self.name, "dim": self.dim, "fingerprint": self.fingerprint(), **settings}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def as_image_list(images: ImageBatch) -> list[np.ndarray]:
    """Validate images and return them as a list of ``float32`` arrays in ``[0, 1]``.

    Grayscale images stay `H x W`; RGB(A) images become `H x W x 3`.

    Args:
        images: See :meth:`Embedder.embed`.

    Returns:
        A list of ``float32`` arrays.

    Raises:
        EmbeddingError: On unsupported shapes or non-finite values.
    """
    if isinstance(images, np.ndarray):
        # An image is at least 8 px wide, so a trailing axis of length 1, 3 or 4 is channels.
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
            images = [images]
        elif images.ndim in (3, 4):
            images = list(images)
        else:
            raise EmbeddingError(f"expected images of shape (N, H, W[, 3]), got {images.shape}")
    out: list[np.ndarray] = []
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            a = a.astype(np.float32) / 65535.0
        else:
            a = a.astype(np.float32, copy=False)
        if a.ndim == 3 and a.shape[-1] == 4:
            a = a[..., :3]
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
            raise EmbeddingError(f"image {i}: expected H x W or H x W x 3, got shape {a.shape}")
        if min(a.shape[:2]) < 8:
            raise EmbeddingError(f"image {i}: too small ({a.shape[0]} x {a.shape[1]})")
        if not np.isfinite(a).all():
            raise EmbeddingError(f"image {i}: contains NaN or infinite values")
        out.append(a)
    return out


def to_gray(img: np.ndarray) -> np.ndarray:
    """Return the ITU-R 601 luminance of an RGB image, or the image itself if grayscale."""
    if img.ndim == 2:
        return img
    return (img @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def short_hash(obj: object, n: int = 12) -> str:
    """Return the first ``n`` hex digits of the SHA-256 of ``obj``'s canonical JSON."""
    payload = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:n]


def _chunks(items: list[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
