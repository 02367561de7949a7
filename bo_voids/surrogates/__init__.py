"""Surrogate models of the calibration objective (numerical cores, arrays in and out)."""

from __future__ import annotations

from bo_voids.surrogates.composite import (
    ACQUISITIONS,
    HYPERPARAMETER_SHARING,
    CompositeSurrogate,
)
from bo_voids.surrogates.features import FeatureEncoder

__all__ = ["ACQUISITIONS", "HYPERPARAMETER_SHARING", "CompositeSurrogate", "FeatureEncoder"]
