"""The embedders by name: :func:`make_embedder` builds one (see :mod:`bo_voids.embedding`)."""

from __future__ import annotations

import os
import warnings
from typing import Unpack

from bo_voids.config import EMBEDDERS as _NAMES
from bo_voids.embedding.base import Embedder
from bo_voids.embedding.dinov2 import DINOV2_VARIANTS, DinoOptions, DinoV2Embedder
from bo_voids.embedding.handcrafted import HandcraftedEmbedder, HandcraftedOverrides
from bo_voids.exceptions import EmbeddingError, FallbackWarning

__all__ = ["available_embedders", "make_embedder"]


def available_embedders() -> tuple[str, ...]:
    """Names accepted by :func:`make_embedder`."""
    return _NAMES


def make_embedder(
    name: str = "auto",
    *,
    dino_model: str = "dinov2_vitb14",
    dino_weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    allow_network: bool | None = None,
    handcrafted: HandcraftedOverrides | None = None,
    **dino_kwargs: Unpack[DinoOptions],
) -> Embedder:
    """Build an embedder by name.

    Args:
        name: ``"auto"``, ``"dinov2"`` or ``"handcrafted"``.
        dino_model: DINOv2 variant (``dinov2_vits14`` / ``vitb14`` / ``vitl14`` / ``vitg14``).
        dino_weights: Local DINOv2 weights: a Hugging Face-format folder or a state-dict file.
        device: ``"auto"`` (``cuda`` → ``mps`` → ``cpu``) or a torch device string.
        dtype: DINOv2 precision (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``).
        allow_network: Allow one download attempt from the Hugging Face hub. Default: ``True``
            for ``"dinov2"``, and always ``False`` for ``"auto"`` (an offline machine would
            otherwise wait ~26 s on retries).
        handcrafted: Keyword overrides of :class:`HandcraftedSettings` (e.g. ``work_size``).
        **dino_kwargs: Further :class:`DinoV2Embedder` arguments (``crop_size``, ``batch_size``,
            ``cache_dir``, ``source``).

    Returns:
        The embedder.

    Raises:
        EmbeddingError: Unknown name, or ``"dinov2"`` whose weights cannot be loaded.

    Example:
        >>> emb = make_embedder("handcrafted")
        >>> emb.name
        'handcrafted'
    """
    if name not in _NAMES:
        raise EmbeddingError(f"unknown embedder {name!r}; expected one of {list(_NAMES)}")
    if name == "handcrafted":
        return HandcraftedEmbedder(**(handcrafted or {}))
    if name == "dinov2":
        return DinoV2Embedder(
            dino_model,
            weights=dino_weights,
            device=device,
            dtype=dtype,
            allow_network=True if allow_network is None else allow_network,
            **dino_kwargs,
        )
    try:
        return DinoV2Embedder(
            dino_model,
            weights=dino_weights,
            device=device,
            dtype=dtype,
            allow_network=False,
            **dino_kwargs,
        )
    except EmbeddingError as exc:
        reason = str(exc).split(". Looked in")[0]
        warnings.warn(
            f"embedder 'auto': using the offline handcrafted embedder ({reason}). For DINOv2 run "
            f"`huggingface-cli download {DINOV2_VARIANTS[dino_model].hf_id}` or set "
            "`dino_weights: PATH`, or choose `embedder: dinov2` to allow a download.",
            FallbackWarning,
            stacklevel=2,
        )
        return HandcraftedEmbedder(**(handcrafted or {}))
