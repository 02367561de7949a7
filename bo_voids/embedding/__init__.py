"""Image embedders: pretrained DINOv2 and an offline handcrafted void-statistics embedder.

Use :func:`make_embedder` to build one by name:

* ``"dinov2"``: :class:`DinoV2Embedder` (weights from ``dino_weights``, the Hugging Face cache,
  then one download attempt); raises :class:`~bo_voids.exceptions.EmbeddingError` when none works.
* ``"handcrafted"``: :class:`HandcraftedEmbedder`, no download.
* ``"auto"``: DINOv2 when its weights are available locally (never touches the network),
  otherwise the handcrafted embedder with one :class:`~bo_voids.exceptions.FallbackWarning`.
"""

from __future__ import annotations

from bo_voids.embedding.base import Embedder, as_image_list
from bo_voids.embedding.dinov2 import DINOV2_VARIANTS, DinoV2Embedder, dinov2_config
from bo_voids.embedding.handcrafted import HandcraftedEmbedder, HandcraftedSettings
from bo_voids.embedding.registry import available_embedders, make_embedder

__all__ = [
    "DINOV2_VARIANTS",
    "DinoV2Embedder",
    "Embedder",
    "HandcraftedEmbedder",
    "HandcraftedSettings",
    "as_image_list",
    "available_embedders",
    "dinov2_config",
    "make_embedder",
]
