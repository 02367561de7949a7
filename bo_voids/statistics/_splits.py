"""MMD² of many splits of one pooled kernel matrix at once: the arithmetic every test shares.

A split marks which units (clusters or images) form the first sample; one ``(P, N) @ (N, N)``
product gives every split's statistic, so permutation tests and split null bands cost one matrix
product whatever their number of splits.
"""

from __future__ import annotations

import itertools

import numpy as np

from bo_voids.metrics import BandwidthSpec, _rbf_from_sq, _resolve_from_sq, _sq_dists

__all__ = ["all_splits", "pooled_gram", "random_splits", "split_mmd2"]


def pooled_gram(Z: np.ndarray, bandwidth: BandwidthSpec) -> np.ndarray:
    """The RBF kernel matrix of a pooled sample, a bandwidth rule resolved on its distances.

    Args:
        Z: `(N, D)` pooled sample.
        bandwidth: A rule (``"median"``, ``"multi"``) resolved on the pooled distances, or
            bandwidths already fixed (a scorer's).

    Returns:
        `(N, N)` kernel matrix (mean over the bandwidths).
    """
    d2 = _sq_dists(Z, Z, same=True)
    return _rbf_from_sq(d2, _resolve_from_sq(bandwidth, d2))


def split_mmd2(K: np.ndarray, A: np.ndarray, n: int | np.ndarray, unbiased: bool) -> np.ndarray:
    """MMD² for many splits of a pooled kernel matrix at once.

    Args:
        K: `(N, N)` symmetric pooled kernel matrix.
        A: `(P, N)` 0/1 matrix; each row marks the members of the first sample.
        n: Size of the first sample (the second has ``N - n``): one int for all rows, or a
            `(P,)` array when the sizes differ between splits (whole clusters of unequal size).
        unbiased: U-statistic (diagonal of ``K`` ignored) or V-statistic.

    Returns:
        `(P,)` array of MMD² values.
    """
    N = K.shape[0]
    m = N - n
    if unbiased:
        K = K.copy()
        np.fill_diagonal(K, 0.0)
    AK = A @ K  # (P, N)
    s_aa = np.einsum("pi,pi->p", AK, A)  # a' K a
    s_a1 = AK.sum(axis=1)  # a' K 1
    total = K.sum()
    s_ab = s_a1 - s_aa  # a' K b
    s_bb = total - 2.0 * s_a1 + s_aa  # b' K b
    if unbiased:
        return s_aa / (n * (n - 1)) + s_bb / (m * (m - 1)) - 2.0 * s_ab / (n * m)
    return s_aa / n**2 + s_bb / m**2 - 2.0 * s_ab / (n * m)


def random_splits(rng: np.random.Generator, N: int, n: int, count: int) -> np.ndarray:
    base = np.zeros((count, N))
    base[:, :n] = 1.0
    return rng.permuted(base, axis=1)


def all_splits(N: int, n: int) -> np.ndarray:
    """Every way of choosing ``n`` of ``N`` units, as a `(C(N, n), N)` 0/1 matrix.

    The first row is ``(1, …, 1, 0, …, 0)``: units ``0..n-1``, i.e. the observed split when the
    first sample's units come first.
    """
    combos = np.array(list(itertools.combinations(range(N), n)), dtype=np.intp).reshape(-1, n)
    out = np.zeros((combos.shape[0], N))
    np.put_along_axis(out, combos, 1.0, axis=1)
    return out
