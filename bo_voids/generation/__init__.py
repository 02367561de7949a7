"""Generation stage: base chip images and the synthetic void renderer.

* :mod:`bo_voids.generation.base_chips` — procedural void-free base chips and a robust loader.
* :mod:`bo_voids.generation.voids` — :class:`VoidGenerator`, which draws voids on base chips.
* :mod:`bo_voids.generation.gallery` — a PNG grid of real / close / far examples.

Names are imported lazily, so ``python -m bo_voids.generation.base_chips`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bo_voids.generation.base_chips import (
        IMAGE_EXTENSIONS,
        base_chip_filename,
        generate_base_chip,
        load_base_images,
        load_image,
        write_default_base_chips,
    )
    from bo_voids.generation.voids import (
        PARAM_KEYS,
        VOID_SHAPES,
        RenderedImage,
        VoidGenerator,
        save_png,
        validate_params,
    )

_EXPORTS: dict[str, str] = {
    "IMAGE_EXTENSIONS": "base_chips",
    "base_chip_filename": "base_chips",
    "generate_base_chip": "base_chips",
    "load_base_images": "base_chips",
    "load_image": "base_chips",
    "write_default_base_chips": "base_chips",
    "PARAM_KEYS": "voids",
    "VOID_SHAPES": "voids",
    "RenderedImage": "voids",
    "VoidGenerator": "voids",
    "save_png": "voids",
    "validate_params": "voids",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "PARAM_KEYS",
    "VOID_SHAPES",
    "RenderedImage",
    "VoidGenerator",
    "base_chip_filename",
    "generate_base_chip",
    "load_base_images",
    "load_image",
    "save_png",
    "validate_params",
    "write_default_base_chips",
]


def __getattr__(name: str) -> Any:
    """Import exported names on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
