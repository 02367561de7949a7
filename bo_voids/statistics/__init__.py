"""The package's statistics: null bands, permutation tests, the stop rule, the verdict, intervals.

Every test, band and interval lives here once; the pipeline, the calibration and the benchmarks
import it. The MMD² estimators these statistics are built on live in :mod:`bo_voids.metrics`.
"""

from .null_bands import (
    NULL_BAND_SCHEMES,
    POOL_NULL_DRAWS,
    NullBand,
    RenderedPool,
    half_split_noise_floor,
    null_band_from_statistics,
    null_variance_factor,
    pool_null_band,
    rescale_noise_floor,
    split_null_band,
)
from .permutation import (
    EXACT_PRODUCT_LIMIT,
    PermutationResult,
    permutation_test,
    stratified_permutation_test,
)

__all__ = [
    "EXACT_PRODUCT_LIMIT",
    "NULL_BAND_SCHEMES",
    "POOL_NULL_DRAWS",
    "NullBand",
    "PermutationResult",
    "RenderedPool",
    "half_split_noise_floor",
    "null_band_from_statistics",
    "null_variance_factor",
    "permutation_test",
    "pool_null_band",
    "rescale_noise_floor",
    "split_null_band",
    "stratified_permutation_test",
]
