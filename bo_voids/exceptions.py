"""Typed exceptions and warnings raised by bo_voids."""

from __future__ import annotations


class BoVoidsError(Exception):
    """Base class of every error bo_voids raises on purpose."""


class ConfigError(BoVoidsError, ValueError):
    """A configuration file or value is invalid (a user error; the CLI exits with code 2)."""


class ImageLoadError(BoVoidsError):
    """An input image (base chip or real target) cannot be read or is unusable."""


class EmbeddingError(BoVoidsError):
    """An embedder cannot be built or loaded (e.g. DINOv2 weights not found)."""


class OptimizerError(BoVoidsError):
    """An optimiser cannot produce proposals."""


class StateError(BoVoidsError):
    """An experiment folder is missing, incompatible, locked or would be overwritten."""


class BoVoidsWarning(UserWarning):
    """Base class of warnings emitted when bo_voids falls back or degrades."""


class FallbackWarning(BoVoidsWarning):
    """A component fell back to a simpler behaviour (e.g. random proposals instead of the GP)."""
