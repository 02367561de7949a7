"""The contract every embedder keeps, as a pytest test class to inherit (``optuna.testing`` style).

A test module subclasses :class:`EmbedderContract` and provides the ``embedder`` fixture (and,
where random images do not suit the embedder, ``images``)::

    class TestMyEmbedder(EmbedderContract):
        batch_atol = 1e-5  # float batching: not bit-identical across batch sizes

        @pytest.fixture(scope="class")
        @classmethod
        def embedder(cls):
            return MyEmbedder()

The contract is the one of :class:`~bo_voids.embedding.base.Embedder`: ``float32`` rows of
length ``dim``, deterministic, independent of the batch size, every accepted input form (a list
or a stacked array, ``uint8``, RGB, an empty batch), a fingerprint that its description repeats,
and an :class:`~bo_voids.exceptions.EmbeddingError` for every unusable image.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest

from bo_voids.embedding.base import Embedder
from bo_voids.exceptions import EmbeddingError

__all__ = ["EmbedderContract"]


class EmbedderContract:
    """Behaviour every embedder guarantees."""

    #: Largest absolute difference allowed between two batch sizes (0: bit-identical).
    batch_atol: ClassVar[float] = 0.0

    @pytest.fixture
    def embedder(self) -> Embedder:
        """The embedder under test. Override it."""
        raise NotImplementedError("a contract test class provides the `embedder` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def images(cls) -> list[np.ndarray]:
        """Five grayscale images of different sizes and one RGB image, float in ``[0, 1]``."""
        g = np.random.default_rng(0)
        imgs = [g.random((90 + 4 * i, 110 - 6 * i)).astype(np.float32) for i in range(5)]
        imgs.append(g.random((70, 70, 3)).astype(np.float32))
        return imgs

    def test_shape_dtype_and_finite(self, embedder: Embedder, images: list[np.ndarray]) -> None:
        """One finite ``float32`` row of length ``dim`` per image; different images differ."""
        out = embedder.embed(images)
        assert out.shape == (len(images), embedder.dim) and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert not np.allclose(out[0], out[1]), "different images, same embedding"

    def test_deterministic(self, embedder: Embedder, images: list[np.ndarray]) -> None:
        """The same images give bit-identical embeddings."""
        np.testing.assert_array_equal(embedder.embed(images), embedder.embed(images))

    def test_batch_size_invariance(self, embedder: Embedder, images: list[np.ndarray]) -> None:
        """The batch size changes the embeddings by at most :attr:`batch_atol`."""
        np.testing.assert_allclose(
            embedder.embed(images, batch_size=1),
            embedder.embed(images, batch_size=4),
            atol=self.batch_atol,
            rtol=0,
        )

    def test_input_forms(self, embedder: Embedder, images: list[np.ndarray]) -> None:
        """A stacked array, ``uint8``, RGB, a blank image and an empty batch are accepted."""
        gray = [img for img in images if img.ndim == 2][:3]
        same = [np.ascontiguousarray(img[:64, :64]) for img in gray]
        np.testing.assert_allclose(
            embedder.embed(np.stack(same)), embedder.embed(same), atol=self.batch_atol, rtol=0
        )
        u8 = (gray[0] * 255).round().astype(np.uint8)
        rgb = np.repeat(gray[0][..., None], 3, axis=-1)
        assert np.isfinite(embedder.embed([u8, rgb])).all()
        assert np.isfinite(embedder.embed([np.full((64, 80), 0.7, np.float32)])).all()
        assert embedder.embed([]).shape == (0, embedder.dim)

    def test_fingerprint_and_description(self, embedder: Embedder) -> None:
        """The fingerprint is stable and repeated, with ``dim``, in a JSON description."""
        assert embedder.fingerprint() == embedder.fingerprint()
        desc = embedder.describe()
        assert desc["fingerprint"] == embedder.fingerprint() and desc["dim"] == embedder.dim
        json.dumps(desc)  # stored in experiment.json

    def test_unusable_images_raise(self, embedder: Embedder) -> None:
        """NaN, wrongly shaped or tiny images and a bad batch size raise ``EmbeddingError``."""
        for bad in (
            [np.full((32, 32), np.nan, np.float32)],
            [np.zeros((4, 4, 4, 4), np.float32)],
            [np.zeros((4, 40), np.float32)],
        ):
            with pytest.raises(EmbeddingError):
                embedder.embed(bad)
        with pytest.raises(EmbeddingError, match="batch_size"):
            embedder.embed([np.zeros((32, 32), np.float32)], batch_size=-1)
