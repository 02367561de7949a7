"""Deterministic seed derivation: every random draw in bo_voids comes from here.

A seed is derived from a tuple of non-negative integers (experiment seed, stream, iteration,
parameter-set index, replication, ...) with :class:`numpy.random.SeedSequence`, so results do not
depend on the order in which work is executed, nor on the process that executes it.
"""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """Derive a 63-bit integer seed from a tuple of keys.

    Args:
        *keys: Non-negative integers, or strings (hashed with CRC32, stable across processes).

    Returns:
        An integer in ``[0, 2**63)`` usable as a ``numpy`` or ``torch`` seed.

    Example:
        >>> derive_seed(0, "real", 3) == derive_seed(0, "real", 3)
        True
    """
    entropy = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    if any(e < 0 for e in entropy):
        raise ValueError(f"seed keys must be non-negative, got {keys!r}")
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def rng(*keys: int | str) -> np.random.Generator:
    """Return a ``numpy`` generator seeded by :func:`derive_seed` of ``keys``."""
    return np.random.default_rng(derive_seed(*keys))
