"""How every surrogate runs torch: a forked, seeded RNG, a fixed thread count, exact algebra."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import gpytorch
import torch

__all__ = ["seeded_exact"]

#: Above this many points GPyTorch would switch to iterative solves; never, here.
_MAX_CHOLESKY = 100_000


@contextmanager
def seeded_exact(seed: int, threads: int) -> Iterator[None]:
    """Fork torch's RNG, seed it, run with ``threads`` intra-op threads and exact linear algebra.

    GPyTorch switches to conjugate gradients and Lanczos above 800 points, which at ``n = 1000``
    is an order of magnitude slower here than a Cholesky factorisation, approximate, and
    dependent on random probe vectors; exact Cholesky solves are used at every size.
    """
    previous = torch.get_num_threads()
    with (
        torch.random.fork_rng(),
        gpytorch.settings.max_cholesky_size(_MAX_CHOLESKY),
        gpytorch.settings.fast_computations(
            covar_root_decomposition=False, log_prob=False, solves=False
        ),
    ):
        torch.manual_seed(int(seed) % (2**63))
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)
