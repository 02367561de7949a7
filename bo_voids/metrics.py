"""Distribution and per-sample scores between synthetic and real image embeddings.

Everything here is plain ``numpy``, vectorised and computed in ``float64``; inputs are
``(n, d)`` arrays of embeddings (one row per image).

Scores (see ``ARCHITECTURE.md``, "Scores"):

* **MMD²** (:func:`mmd2`, :class:`MMDScorer`): the unbiased U-statistic of Gretton et al.
  (2012, Lemma 6) with a Gaussian RBF kernel. Its expectation is exactly 0 when both samples
  come from the same distribution, so single values may be slightly negative.
* **KID** (:func:`kid`): the unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)³`` (Bińkowski et al. 2018).
* **Per sample**: the Euclidean distance of each synthetic embedding to its nearest real one
  (:func:`nearest_real_distances`) and the share of synthetic samples within an ε-ball of some
  real sample (:func:`epsilon_ball_share`, ε from :func:`epsilon_from_real`).
* **Significance**: a permutation test of "same distribution" (:func:`permutation_test`) that
  permutes whole clusters (parameter sets × renders) when the samples are clustered and single
  images when they are iid, and says which scheme it used and how many splits exist.
* **Null bands** (the "noise floor", :class:`NullBand`): the distribution of the MMD² of a
  sample of the judged size and structure drawn from the targets' own process, simulated
  (:func:`null_band_from_statistics`) or, for a real target folder, from splits of the targets
  by whole clusters or images (:func:`split_null_band`).

Samples rendered as sets × renders are clustered: sibling renders share their set's
parameters and resemble each other more than images of different sets. Statistics that treat
their images as independent are wrong for them (an image-level permutation test rejects a true
null far too often, half-splits of the targets understate the null spread, and nearest
neighbours are siblings), hence the ``groups`` arguments.

Kernel conventions:

* ``rbf_kernel`` with several bandwidths is the **mean** (not the sum) of
  ``exp(-‖x - y‖² / (2σ²))`` over the bandwidths, so ``k(x, x) = 1`` and MMD² lies in
  ``[-2, 2]`` whatever the number of bandwidths.
* ``bandwidth="median"``: a single σ, the median of the pairwise Euclidean distances of the
  pooled samples (diagonal excluded).
* ``bandwidth="multi"``: a mixture of σ = median × ``MULTI_BANDWIDTH_MULTIPLIERS``
  ``(0.25, 0.5, 1, 2, 4)``. The wide kernels keep the score growing for sets far from the
  targets (a single median σ saturates near ``2`` once the sets stop overlapping), while the
  narrow ones resolve fine differences.

Comparability: :func:`mmd2` with a string bandwidth re-estimates σ from each pair of samples,
so its values for different synthetic sets are *not* on the same scale. The optimiser must use
:class:`MMDScorer`, which fixes the bandwidths once from the real targets (and can persist
them as JSON), so every parameter set is scored with the same kernel.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from bo_voids.exceptions import StateError
from bo_voids.seeding import derive_seed

__all__ = [
    "MULTI_BANDWIDTH_MULTIPLIERS",
    "NULL_BAND_SCHEMES",
    "BandwidthSpec",
    "MMDScorer",
    "NullBand",
    "PermutationResult",
    "epsilon_ball_share",
    "epsilon_from_real",
    "kid",
    "median_bandwidth",
    "mmd2",
    "nearest_real_distances",
    "null_band_from_statistics",
    "null_variance_factor",
    "pairwise_sq_dists",
    "per_set_mmd2",
    "permutation_test",
    "pooled_mmd2",
    "rbf_kernel",
    "rescale_noise_floor",
    "resolve_bandwidths",
    "split_null_band",
]

#: Multipliers of the median distance that make up the ``"multi"`` bandwidth mixture.
MULTI_BANDWIDTH_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

#: ``"median"``, ``"multi"``, a single positive σ, or a sequence of positive σ values.
BandwidthSpec = str | float | Sequence[float]

_SERIAL_VERSION = 1


# --------------------------------------------------------------------------------------------
# Input validation and randomness
# --------------------------------------------------------------------------------------------
def _as_2d(X: Any, name: str, *, min_samples: int = 1) -> np.ndarray:
    """Return ``X`` as a finite ``float64`` array of shape `(n, d)`, or raise ``ValueError``."""
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (n, d): {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n, d), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_samples:
        raise ValueError(
            f"{name} needs at least {min_samples} sample(s), got {arr.shape[0]} (shape {arr.shape})"
        )
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); refusing to score it")
    return arr


def _check_same_dim(X: np.ndarray, Y: np.ndarray, x_name: str, y_name: str) -> None:
    if X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"{x_name} and {y_name} have different numbers of features: "
            f"{X.shape[1]} vs {Y.shape[1]}"
        )


def _generator(random_state: int | np.random.Generator | None, stream: str) -> np.random.Generator:
    """Return a generator: used as is, derived from an int seed, or fresh (``None``)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(
        random_state, (int, np.integer)
    ):
        raise ValueError(
            "random_state must be an int, a numpy Generator or None, "
            f"got {type(random_state).__name__}"
        )
    return np.random.default_rng(derive_seed(int(random_state), stream))


# --------------------------------------------------------------------------------------------
# Distances and kernels
# --------------------------------------------------------------------------------------------
def _sq_dists(X: np.ndarray, Y: np.ndarray, same: bool = False) -> np.ndarray:
    """Squared Euclidean distances of validated arrays (no checks)."""
    xx = np.einsum("ij,ij->i", X, X)
    yy = xx if same else np.einsum("ij,ij->i", Y, Y)
    d2 = xx[:, None] + yy[None, :] - 2.0 * (X @ Y.T)
    np.maximum(d2, 0.0, out=d2)
    if same:
        np.fill_diagonal(d2, 0.0)
    return d2


def pairwise_sq_dists(X: Any, Y: Any | None = None) -> np.ndarray:
    """Squared Euclidean distances between the rows of two arrays.

    Uses ``‖x‖² + ‖y‖² - 2 x·y`` (one matrix product), clipped at 0; when ``Y`` is omitted the
    diagonal is exactly 0.

    Args:
        X: `(n, d)` array.
        Y: `(m, d)` array; ``None`` means ``X``.

    Returns:
        `(n, m)` ``float64`` array of squared distances.

    Raises:
        ValueError: Non-2-D, empty or non-finite input, or mismatched feature counts.
    """
    Xa = _as_2d(X, "X")
    if Y is None:
        return _sq_dists(Xa, Xa, same=True)
    Ya = _as_2d(Y, "Y")
    _check_same_dim(Xa, Ya, "X", "Y")
    return _sq_dists(Xa, Ya)


def _median_from_sq(d2: np.ndarray) -> float:
    """Median of the off-diagonal distances of a square squared-distance matrix, guarded."""
    n = d2.shape[0]
    vals = d2[~np.tri(n, dtype=bool)]  # strict upper triangle, i < j
    k = vals.size
    # sqrt is monotone: partition the squared distances, take sqrt of the middle one(s) only
    if k % 2:
        med = float(np.sqrt(np.partition(vals, k // 2)[k // 2]))
    else:
        part = np.partition(vals, (k // 2 - 1, k // 2))
        med = float(0.5 * (np.sqrt(part[k // 2 - 1]) + np.sqrt(part[k // 2])))
    if med > 0.0 and np.isfinite(med):
        return med
    positive = vals[vals > 0.0]
    if positive.size:  # more than half of the pairs are duplicates
        return float(np.mean(np.sqrt(positive)))
    return 1.0  # every sample is identical: any σ gives the same kernel matrix


def median_bandwidth(X: Any, Y: Any | None = None) -> float:
    """Median heuristic: the median pairwise Euclidean distance of the pooled samples.

    The diagonal (zero self-distances) is excluded. If that median is 0 (more than half of the
    pairs are duplicates) the mean of the non-zero distances is returned instead, and ``1.0``
    if all samples are identical, so the result is always a usable positive σ.

    Args:
        X: `(n, d)` array.
        Y: Optional `(m, d)` array pooled with ``X``.

    Returns:
        σ > 0 (a distance, not a squared distance).

    Raises:
        ValueError: Bad input, or fewer than 2 pooled samples.
    """
    Xa = _as_2d(X, "X")
    if Y is not None:
        Ya = _as_2d(Y, "Y")
        _check_same_dim(Xa, Ya, "X", "Y")
        Xa = np.vstack([Xa, Ya])
    if Xa.shape[0] < 2:
        raise ValueError("median_bandwidth needs at least 2 pooled samples, got 1")
    return _median_from_sq(_sq_dists(Xa, Xa, same=True))


def _check_bandwidths(
    bandwidths: float | Sequence[float], name: str = "bandwidth"
) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them")
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError(f"{name} values must be finite and > 0, got {arr.tolist()}")
    return tuple(float(b) for b in arr)


def _from_median(bandwidth: str, med: float) -> tuple[float, ...]:
    if bandwidth == "median":
        return (med,)
    if bandwidth == "multi":
        return tuple(med * m for m in MULTI_BANDWIDTH_MULTIPLIERS)
    raise ValueError(
        f"bandwidth must be 'median', 'multi', a float or a sequence, got {bandwidth!r}"
    )


def _resolve_from_sq(bandwidth: BandwidthSpec, pooled_sq: np.ndarray) -> tuple[float, ...]:
    """Resolve a specification, using a pooled squared-distance matrix for the heuristics."""
    if isinstance(bandwidth, str):
        return _from_median(bandwidth, _median_from_sq(pooled_sq))
    return _check_bandwidths(bandwidth)


def resolve_bandwidths(bandwidth: BandwidthSpec, X: Any, Y: Any | None = None) -> tuple[float, ...]:
    """Turn a bandwidth specification into concrete σ values.

    Args:
        bandwidth: ``"median"`` (one σ = :func:`median_bandwidth` of the pooled samples),
            ``"multi"`` (σ = median × ``MULTI_BANDWIDTH_MULTIPLIERS``), a positive float or a
            sequence of positive floats (returned unchanged).
        X: `(n, d)` array used by the heuristics.
        Y: Optional `(m, d)` array pooled with ``X``.

    Returns:
        Tuple of σ values.

    Raises:
        ValueError: Unknown specification or non-positive σ.
    """
    if isinstance(bandwidth, str):
        _from_median(bandwidth, 1.0)  # validates the name before any work
        return _from_median(bandwidth, median_bandwidth(X, Y))
    return _check_bandwidths(bandwidth)


def _rbf_from_sq(d2: np.ndarray, bandwidths: Sequence[float]) -> np.ndarray:
    """Mean over ``bandwidths`` of ``exp(-d2 / (2σ²))``.

    Bandwidths are visited from the widest down; when ``(σ_prev / σ)²`` is a power of two (as
    for ``MULTI_BANDWIDTH_MULTIPLIERS``) the narrower kernel is obtained from the previous one
    by repeated squaring (``exp(-a)^(2^j) = exp(-2^j a)``) instead of another ``exp``; the
    relative difference is at most a few hundred ulps.
    """
    order = sorted(bandwidths, reverse=True)
    cur = np.exp(d2 * (-0.5 / order[0] ** 2))
    if len(order) == 1:
        return cur
    out = cur.copy()
    for prev, s in itertools.pairwise(order):
        ratio = (prev / s) ** 2
        j = round(np.log2(ratio)) if ratio >= 1.0 else -1
        if 0 <= j <= 10 and abs(ratio - 2.0**j) <= 1e-12 * ratio:
            for _ in range(j):
                np.multiply(cur, cur, out=cur)
        else:
            cur = np.exp(d2 * (-0.5 / s**2))
        out += cur
    out /= len(order)
    return out


def rbf_kernel(X: Any, Y: Any | None, bandwidths: float | Sequence[float]) -> np.ndarray:
    """Gaussian RBF kernel matrix, averaged over several bandwidths.

    ``K[i, j] = mean_σ exp(-‖x_i - y_j‖² / (2σ²))``; the mean (not the sum) keeps
    ``k(x, x) = 1``.

    Args:
        X: `(n, d)` array.
        Y: `(m, d)` array; ``None`` means ``X``.
        bandwidths: One σ or a sequence of σ values (all > 0).

    Returns:
        `(n, m)` kernel matrix.
    """
    bw = _check_bandwidths(bandwidths, "bandwidths")
    return _rbf_from_sq(pairwise_sq_dists(X, Y), bw)


# --------------------------------------------------------------------------------------------
# MMD², KID
# --------------------------------------------------------------------------------------------
def _off_diag_mean(K: np.ndarray) -> float:
    n = K.shape[0]
    return float((K.sum() - np.trace(K)) / (n * (n - 1)))


def _mmd2_from_blocks(Kxx: np.ndarray, Kyy: np.ndarray, Kxy: np.ndarray, unbiased: bool) -> float:
    if unbiased:
        return _off_diag_mean(Kxx) + _off_diag_mean(Kyy) - 2.0 * float(Kxy.mean())
    return float(Kxx.mean() + Kyy.mean() - 2.0 * Kxy.mean())


def mmd2(
    X: Any,
    Y: Any,
    *,
    bandwidth: BandwidthSpec = "median",
    unbiased: bool = True,
) -> float:
    """Squared maximum mean discrepancy between two samples with an RBF kernel.

    The unbiased estimator is the U-statistic of Gretton et al. (2012, Lemma 6)::

        1/(n(n-1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i, y_j) - 2/(nm) Σ k(x_i, y_j)

    It is 0 in expectation for equal distributions and may be slightly negative. The biased
    (V-statistic) version includes the diagonals and is always ≥ 0.

    A string ``bandwidth`` is estimated from the pooled ``X`` and ``Y``, so values for different
    pairs are not comparable; pass fixed bandwidths (or use :class:`MMDScorer`) for that.

    Args:
        X: `(n, d)` sample.
        Y: `(m, d)` sample.
        bandwidth: ``"median"``, ``"multi"``, one σ or a sequence of σ (see module docs).
        unbiased: Use the U-statistic (needs n, m ≥ 2) instead of the V-statistic.

    Returns:
        MMD² as a float.

    Raises:
        ValueError: Non-finite values, mismatched dimensions, too few samples or a bad
            bandwidth.
    """
    min_n = 2 if unbiased else 1
    Xa = _as_2d(X, "X", min_samples=min_n)
    Ya = _as_2d(Y, "Y", min_samples=min_n)
    _check_same_dim(Xa, Ya, "X", "Y")
    n = Xa.shape[0]
    if isinstance(bandwidth, str):
        Z = np.vstack([Xa, Ya])
        d2 = _sq_dists(Z, Z, same=True)
        bw = _resolve_from_sq(bandwidth, d2)
        K = _rbf_from_sq(d2, bw)
        return _mmd2_from_blocks(K[:n, :n], K[n:, n:], K[:n, n:], unbiased)
    bw = _check_bandwidths(bandwidth)
    Kxx = _rbf_from_sq(_sq_dists(Xa, Xa, same=True), bw)
    Kyy = _rbf_from_sq(_sq_dists(Ya, Ya, same=True), bw)
    Kxy = _rbf_from_sq(_sq_dists(Xa, Ya), bw)
    return _mmd2_from_blocks(Kxx, Kyy, Kxy, unbiased)


def kid(X: Any, Y: Any) -> float:
    """Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel.

    ``k(x, y) = (x·y / d + 1)³`` with ``d`` the number of features (Bińkowski et al. 2018).
    Computed on the whole samples (no subset averaging).

    Args:
        X: `(n, d)` sample, n ≥ 2.
        Y: `(m, d)` sample, m ≥ 2.

    Returns:
        KID (0 in expectation for equal distributions; may be slightly negative).

    Raises:
        ValueError: Non-finite values, mismatched dimensions or fewer than 2 samples.
    """
    Xa = _as_2d(X, "X", min_samples=2)
    Ya = _as_2d(Y, "Y", min_samples=2)
    _check_same_dim(Xa, Ya, "X", "Y")
    d = Xa.shape[1]
    Kxx = (Xa @ Xa.T / d + 1.0) ** 3
    Kyy = (Ya @ Ya.T / d + 1.0) ** 3
    Kxy = (Xa @ Ya.T / d + 1.0) ** 3
    return _mmd2_from_blocks(Kxx, Kyy, Kxy, unbiased=True)


# --------------------------------------------------------------------------------------------
# Permutation statistics
# --------------------------------------------------------------------------------------------
def _split_mmd2(K: np.ndarray, A: np.ndarray, n: int | np.ndarray, unbiased: bool) -> np.ndarray:
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


def _random_splits(rng: np.random.Generator, N: int, n: int, count: int) -> np.ndarray:
    base = np.zeros((count, N))
    base[:, :n] = 1.0
    return rng.permuted(base, axis=1)


def _all_splits(N: int, n: int) -> np.ndarray:
    """Every way of choosing ``n`` of ``N`` units, as a `(C(N, n), N)` 0/1 matrix.

    The first row is ``(1, …, 1, 0, …, 0)``: units ``0..n-1``, i.e. the observed split when the
    first sample's units come first.
    """
    combos = np.array(list(itertools.combinations(range(N), n)), dtype=np.intp).reshape(-1, n)
    out = np.zeros((combos.shape[0], N))
    np.put_along_axis(out, combos, 1.0, axis=1)
    return out


def _units(groups: Any | None, n: int, name: str) -> tuple[np.ndarray, int]:
    """Map per-row cluster labels to unit indices ``0..g-1`` (order of first appearance).

    ``None`` makes every row its own unit (iid images).

    Returns:
        ``(unit index per row, number of units)``.

    Raises:
        ValueError: ``groups`` does not have one label per row.
    """
    if groups is None:
        return np.arange(n, dtype=np.intp), n
    labels = groups.tolist() if isinstance(groups, np.ndarray) else list(groups)
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} labels but the sample has {n} rows")
    index: dict[Hashable, int] = {}
    try:
        unit = np.array([index.setdefault(k, len(index)) for k in labels], dtype=np.intp)
    except TypeError as exc:
        raise ValueError(f"{name} labels must be hashable: {exc}") from exc
    return unit.reshape(n), len(index)


@dataclass(frozen=True)
class PermutationResult:
    """Outcome of :func:`permutation_test`.

    Unpacks like the ``(statistic, p_value)`` tuple older callers expect::

        stat, p = permutation_test(X, Y)

    Attributes:
        statistic: Observed MMD² of ``X`` vs ``Y``.
        p_value: Permutation p-value (see :func:`permutation_test` for the formula).
        scheme: ``"cluster"`` when whole clusters were permuted (some unit held more than one
            image), ``"image"`` when single images were.
        n_permutations: Permuted statistics the p-value rests on: every split when ``exact``,
            otherwise the random relabellings drawn (less any skipped, see
            :func:`permutation_test`).
        n_distinct_splits: Number of distinct ways to assign the units to the two samples
            (``C(g_x + g_y, g_x)``): exactly the valid ones when ``exact``, otherwise the count of
            all assignments.
        min_attainable_p: The smallest p-value this test can return. With ``exact`` and
            ``g_x == g_y`` it is ``2 / n_distinct_splits``, since the MMD² is symmetric and the
            observed split always ties with its mirror image.
        exact: Whether all splits were enumerated (an exact permutation test).
        n_x_units: Exchangeable units (clusters or images) in ``X``.
        n_y_units: Exchangeable units in ``Y``.
    """

    statistic: float
    p_value: float
    scheme: str
    n_permutations: int
    n_distinct_splits: int
    min_attainable_p: float
    exact: bool
    n_x_units: int
    n_y_units: int

    def __iter__(self) -> Iterator[float]:
        # tuple unpacking of the historical ``(statistic, p_value)`` return value
        return iter((self.statistic, self.p_value))

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether "same distribution" is rejected at level ``alpha`` (``p_value <= alpha``)."""
        return self.p_value <= alpha

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def permutation_test(
    X: Any,
    Y: Any,
    n_permutations: int = 1000,
    random_state: int | np.random.Generator | None = 0,
    *,
    bandwidth: BandwidthSpec = "median",
    unbiased: bool = True,
    x_groups: Any | None = None,
    y_groups: Any | None = None,
) -> PermutationResult:
    """Permutation test of "X and Y come from the same distribution" with MMD².

    Images of a sample rendered as parameter sets × renders are exchangeable only as whole
    sets: siblings share their set's parameters. Relabelling single images then breaks up the
    clusters, makes the permuted statistics too small and rejects a true null far too often
    (measured: 73 % at α = 0.05 for 5 × 3 vs 5 × 3 images). Passing ``x_groups`` /
    ``y_groups`` (one cluster label per row; labels of ``X`` and ``Y`` are separate, so a
    cluster never spans both samples) permutes whole clusters between the samples instead;
    ``None`` treats each image of that sample as its own unit (an iid sample, such as a real
    target folder that the user has not grouped).

    When the number of distinct splits ``C(g_x + g_y, g_x)`` (``g`` = units per sample) is at
    most ``n_permutations`` every split is enumerated and the test is exact:
    ``p = #{splits with MMD² ≥ observed} / #splits`` (the observed split included). With 5
    clusters against 5 that is 252 splits, and the smallest attainable p is 2/252 ≈ 0.008
    (the observed split ties with its mirror). Otherwise ``P = n_permutations`` random
    relabellings are drawn and ``p = (1 + #{permuted ≥ observed}) / (1 + P)``.

    Clusters of unequal size give splits of unequal sizes; the statistic of each split uses its
    own sizes. A split that leaves a side with fewer images than the estimator needs (2 for the
    U-statistic, possible only with mixed cluster sizes) is skipped. Exchangeability of the
    units is the test's assumption: units of very different sizes (3-render clusters against
    single iid images) are only approximately exchangeable.

    The pooled kernel matrix is built once (a string bandwidth is estimated on the pooled
    sample, which does not change under permutation); all split statistics then come from one
    `(P, N) @ (N, N)` matrix product.

    Args:
        X: `(n, d)` sample.
        Y: `(m, d)` sample.
        n_permutations: Number of random relabellings ``P`` (≥ 1); also the largest number of
            splits enumerated exactly.
        random_state: Seed (derived through :func:`bo_voids.seeding.derive_seed`), a
            generator used as is, or ``None`` for fresh entropy. Unused when exact.
        bandwidth: As in :func:`mmd2`.
        unbiased: As in :func:`mmd2`.
        x_groups: Length-``n`` cluster labels of ``X`` (e.g. parameter-set ids), or ``None``.
        y_groups: Length-``m`` cluster labels of ``Y``, or ``None``.

    Returns:
        A :class:`PermutationResult` (unpacks as ``(statistic, p_value)``).

    Raises:
        ValueError: Bad inputs (as :func:`mmd2`), group labels of the wrong length, or
            ``n_permutations < 1``.
    """
    P = int(n_permutations)
    if P < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    min_n = 2 if unbiased else 1
    Xa = _as_2d(X, "X", min_samples=min_n)
    Ya = _as_2d(Y, "Y", min_samples=min_n)
    _check_same_dim(Xa, Ya, "X", "Y")
    n, N = Xa.shape[0], Xa.shape[0] + Ya.shape[0]
    ux, gx = _units(x_groups, n, "x_groups")
    uy, gy = _units(y_groups, N - n, "y_groups")
    unit = np.concatenate([ux, uy + gx])
    G = gx + gy
    clustered = G < N
    Z = np.vstack([Xa, Ya])
    d2 = _sq_dists(Z, Z, same=True)
    K = _rbf_from_sq(d2, _resolve_from_sq(bandwidth, d2))
    n_all = math.comb(G, gx)
    exact = n_all <= P
    if exact:
        Au = _all_splits(G, gx)  # row 0 is the observed split
    else:
        gen = _generator(random_state, "permutation_test")
        Au = np.empty((P + 1, G))
        Au[0] = 0.0
        Au[0, :gx] = 1.0  # the observed split, computed the same way as the permuted ones
        Au[1:] = _random_splits(gen, G, gx, P)
    if clustered:
        # X's units are 0..gx-1, so row 0 still marks exactly the rows of X
        A = Au[:, unit]
        sizes = A.sum(axis=1)
        keep = (sizes >= min_n) & (N - sizes >= min_n)
        stats = _split_mmd2(K, A[keep], sizes[keep], unbiased)
    else:
        # iid images: every split has sizes (n, N - n); an int keeps the historical numbers
        stats = _split_mmd2(K, Au, n, unbiased)
    observed = float(stats[0])
    tol = 1e-12 * max(1.0, abs(observed))
    if exact:
        n_splits = int(stats.size)
        count = int(np.count_nonzero(stats >= observed - tol))
        p_value = count / n_splits
        min_p = min(1.0, (2.0 if gx == gy else 1.0) / n_splits)
        n_used, n_distinct = n_splits, n_splits
    else:
        n_used = int(stats.size) - 1
        count = int(np.count_nonzero(stats[1:] >= observed - tol))
        p_value = (1.0 + count) / (1.0 + n_used)
        min_p = 1.0 / (1.0 + n_used)
        n_distinct = n_all
    return PermutationResult(
        statistic=observed,
        p_value=float(p_value),
        scheme="cluster" if clustered else "image",
        n_permutations=n_used,
        n_distinct_splits=int(n_distinct),
        min_attainable_p=float(min_p),
        exact=bool(exact),
        n_x_units=int(gx),
        n_y_units=int(gy),
    )


# --------------------------------------------------------------------------------------------
# Fixed-bandwidth scorer
# --------------------------------------------------------------------------------------------
class MMDScorer:
    """MMD² against a fixed set of real target embeddings, with bandwidths fixed by the targets.

    ``fit`` learns ``bandwidths_`` from the targets alone (median of the target pairwise
    distances, times ``MULTI_BANDWIDTH_MULTIPLIERS`` for ``"multi"``) and caches the
    target-target kernel term, so scores of different synthetic sets use the same kernel and
    are comparable (what the optimiser needs), and each :meth:`score` only computes the
    `(n, n)` and `(n, m)` kernel blocks.

    Args:
        bandwidth: ``"multi"`` (default), ``"median"``, or fixed σ value(s) that ``fit`` keeps.
        unbiased: Use the unbiased U-statistic (default) or the biased V-statistic.

    Attributes:
        bandwidths_: Tuple of σ values used by the kernel.
        median_distance_: Median target pairwise distance (``None`` for fixed bandwidths).
        n_features_in_: Number of embedding features.
        n_targets_: Number of target embeddings.

    Example:
        >>> import numpy as np
        >>> g = np.random.default_rng(0)
        >>> scorer = MMDScorer().fit(g.normal(size=(16, 8)))
        >>> isinstance(scorer.score(g.normal(size=(24, 8))), float)
        True
    """

    def __init__(self, bandwidth: BandwidthSpec = "multi", unbiased: bool = True) -> None:
        if isinstance(bandwidth, str):
            _from_median(bandwidth, 1.0)  # validates the name
        else:
            bandwidth = _check_bandwidths(bandwidth)
        self.bandwidth = bandwidth
        self.unbiased = bool(unbiased)
        self.bandwidths_: tuple[float, ...] | None = None
        self.median_distance_: float | None = None
        self.n_features_in_: int | None = None
        self.n_targets_: int | None = None
        self._targets: np.ndarray | None = None
        self._target_sq_norms: np.ndarray | None = None
        self._target_term: float | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return self._targets is not None

    def fit(self, target_embeddings: Any) -> MMDScorer:
        """Learn the bandwidths from the real targets and cache the target kernel term.

        Args:
            target_embeddings: `(m, d)` real target embeddings (m ≥ 2).

        Returns:
            ``self``.

        Raises:
            ValueError: Non-finite targets, fewer than 2 of them, or a feature count different
                from the one the bandwidths were stored with (see :meth:`from_dict`).
        """
        T = _as_2d(target_embeddings, "target_embeddings", min_samples=2)
        if self.n_features_in_ is not None and T.shape[1] != self.n_features_in_:
            raise ValueError(
                f"target_embeddings has {T.shape[1]} features but this scorer's bandwidths were "
                f"fitted on {self.n_features_in_}"
            )
        d2 = _sq_dists(T, T, same=True)
        if isinstance(self.bandwidth, str):
            self.median_distance_ = _median_from_sq(d2)
            self.bandwidths_ = _resolve_from_sq(self.bandwidth, d2)
        else:
            self.bandwidths_ = tuple(self.bandwidth)
        Ktt = _rbf_from_sq(d2, self.bandwidths_)
        self._target_term = _off_diag_mean(Ktt) if self.unbiased else float(Ktt.mean())
        self._targets = T
        self._target_sq_norms = np.einsum("ij,ij->i", T, T)
        self.n_features_in_ = T.shape[1]
        self.n_targets_ = T.shape[0]
        return self

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise StateError("MMDScorer is not fitted: call fit(target_embeddings) first")

    def score(self, X: Any) -> float:
        """MMD² between a synthetic set and the fitted targets.

        Args:
            X: `(n, d)` synthetic embeddings (n ≥ 2 for the unbiased estimator).

        Returns:
            MMD² (lower is closer to the targets).

        Raises:
            StateError: Not fitted.
            ValueError: Non-finite values, too few samples or wrong feature count.
        """
        self._require_fitted()
        Xa = _as_2d(X, "X", min_samples=2 if self.unbiased else 1)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features but the targets have {self.n_features_in_}"
            )
        bw = self.bandwidths_
        assert bw is not None and self._targets is not None and self._target_term is not None
        Kxx = _rbf_from_sq(_sq_dists(Xa, Xa, same=True), bw)
        xx = np.einsum("ij,ij->i", Xa, Xa)
        d2xy = xx[:, None] + self._target_sq_norms[None, :] - 2.0 * (Xa @ self._targets.T)
        np.maximum(d2xy, 0.0, out=d2xy)
        kxy = float(_rbf_from_sq(d2xy, bw).mean())
        kxx = _off_diag_mean(Kxx) if self.unbiased else float(Kxx.mean())
        return kxx + self._target_term - 2.0 * kxy

    def score_many(self, sets: Iterable[Any]) -> np.ndarray:
        """Score several synthetic sets.

        Args:
            sets: Iterable of `(n_k, d)` arrays.

        Returns:
            `(K,)` array of MMD² values, in input order.
        """
        return np.array([self.score(X) for X in sets], dtype=np.float64)

    def noise_floor(
        self, n_splits: int = 50, random_state: int | np.random.Generator | None = 0
    ) -> dict[str, float | int]:
        """MMD² between random halves of the targets (superseded by :func:`split_null_band`).

        Superseded: random half-splits break every parameter-set cluster of the targets across
        both halves, so for clustered targets this floor is far below the real null (measured
        at 5 × 3 targets: half-split q95 0.045 against 0.086 for a fresh 5 × 3 draw). Use
        :func:`split_null_band` (whole-cluster splits, judged sizes) or
        :func:`null_band_from_statistics` (simulated null) instead; kept for existing callers.

        Each split draws two disjoint halves (sizes ``m // 2`` and ``m - m // 2``) of the ``m``
        targets and scores them with the fitted kernel. Values below ``q95`` cannot be told
        apart from real-vs-real with this many real images. For the unbiased estimator the
        ``mean`` is ~0 by construction (its expectation over splits is exactly 0), so ``std``
        and ``q95`` carry the information; halves are smaller than the full target set, so this
        floor is conservative (larger) for a score of ``n`` synthetic vs all ``m`` targets.

        Args:
            n_splits: Number of random splits (≥ 2).
            random_state: Seed (derived through :func:`bo_voids.seeding.derive_seed`), a
                generator, or ``None``.

        Returns:
            ``{"mean", "std", "q05", "q95", "n_splits", "half_size"}``.

        Raises:
            StateError: Not fitted.
            ValueError: Fewer than 4 targets (2 per half) for the unbiased estimator, or
                ``n_splits < 2``.
        """
        self._require_fitted()
        assert self._targets is not None and self.bandwidths_ is not None
        m = self._targets.shape[0]
        if int(n_splits) < 2:
            raise ValueError(f"n_splits must be >= 2, got {n_splits}")
        if m < (4 if self.unbiased else 2):
            raise ValueError(f"noise_floor needs at least 4 targets, got {m}")
        K = _rbf_from_sq(_sq_dists(self._targets, self._targets, same=True), self.bandwidths_)
        gen = _generator(random_state, "noise_floor")
        half = m // 2
        vals = _split_mmd2(K, _random_splits(gen, m, half, int(n_splits)), half, self.unbiased)
        q05, q95 = np.quantile(vals, [0.05, 0.95])
        return {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)),
            "q05": float(q05),
            "q95": float(q95),
            "n_splits": int(n_splits),
            "half_size": int(half),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description of the fitted kernel (the targets are not included).

        Returns:
            Dict with ``version``, ``bandwidth`` (the original specification), ``bandwidths``,
            ``unbiased``, ``median_distance``, ``n_features`` and ``n_targets``.

        Raises:
            StateError: Not fitted.
        """
        self._require_fitted()
        assert self.bandwidths_ is not None
        spec = self.bandwidth if isinstance(self.bandwidth, str) else list(self.bandwidth)
        return {
            "version": _SERIAL_VERSION,
            "bandwidth": spec,
            "bandwidths": [float(b) for b in self.bandwidths_],
            "unbiased": self.unbiased,
            "median_distance": self.median_distance_,
            "n_features": self.n_features_in_,
            "n_targets": self.n_targets_,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], targets: Any | None = None) -> MMDScorer:
        """Rebuild a scorer whose bandwidths are fixed to the stored ones.

        Args:
            data: Output of :meth:`to_dict`.
            targets: Optional `(m, d)` target embeddings; if given the scorer is fitted on them
                (keeping the stored bandwidths), otherwise call :meth:`fit` before scoring.

        Returns:
            A scorer with ``bandwidth`` = the stored σ values.

        Raises:
            ValueError: Missing keys, an unknown version or invalid bandwidths.
        """
        try:
            version = int(data["version"])
            bandwidths = data["bandwidths"]
            unbiased = bool(data["unbiased"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a serialised MMDScorer: {exc!r}") from exc
        if version != _SERIAL_VERSION:
            raise ValueError(f"unsupported MMDScorer version {version} (expected 1)")
        scorer = cls(bandwidth=bandwidths, unbiased=unbiased)
        scorer.median_distance_ = data.get("median_distance")
        n_features = data.get("n_features")
        scorer.n_features_in_ = int(n_features) if n_features is not None else None
        if targets is not None:
            scorer.fit(targets)
        return scorer

    def __repr__(self) -> str:
        bw = None if self.bandwidths_ is None else [round(b, 6) for b in self.bandwidths_]
        return (
            f"MMDScorer(bandwidth={self.bandwidth!r}, unbiased={self.unbiased}, "
            f"bandwidths_={bw}, fitted={self.fitted})"
        )


# --------------------------------------------------------------------------------------------
# Per-set / pooled helpers
# --------------------------------------------------------------------------------------------
def _group_rows(set_ids: Any, n: int) -> dict[Hashable, np.ndarray]:
    ids = list(np.asarray(set_ids).tolist()) if not isinstance(set_ids, list) else set_ids
    if len(ids) != n:
        raise ValueError(f"set_ids has {len(ids)} entries but embeddings has {n} rows")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(ids):
        key = key.item() if isinstance(key, np.generic) else key
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(v, dtype=np.intp) for k, v in groups.items()}


def per_set_mmd2(embeddings: Any, set_ids: Any, scorer: MMDScorer) -> dict[Hashable, float]:
    """MMD² of each parameter set's embeddings (all its replications) against the targets.

    Args:
        embeddings: `(n, d)` synthetic embeddings.
        set_ids: Length-``n`` sequence of hashable set identifiers, one per row.
        scorer: A fitted :class:`MMDScorer`.

    Returns:
        ``{set_id: MMD²}`` in order of first appearance.

    Raises:
        ValueError: Length mismatch, bad embeddings, or a set with too few rows.
        StateError: ``scorer`` not fitted.
    """
    E = _as_2d(embeddings, "embeddings")
    groups = _group_rows(set_ids, E.shape[0])
    return {k: scorer.score(E[idx]) for k, idx in groups.items()}


def pooled_mmd2(
    embeddings: Any,
    set_ids: Any,
    scorer: MMDScorer,
    include: Iterable[Hashable] | None = None,
) -> float:
    """MMD² of the pooled embeddings of several parameter sets against the targets.

    This is the "distribution similarity" score: e.g. ``include`` = the current top-5 sets.

    Args:
        embeddings: `(n, d)` synthetic embeddings.
        set_ids: Length-``n`` sequence of set identifiers.
        scorer: A fitted :class:`MMDScorer`.
        include: Set identifiers to pool; ``None`` pools every row.

    Returns:
        MMD² of the pooled rows.

    Raises:
        ValueError: Length mismatch, unknown ids in ``include``, or too few pooled rows.
    """
    E = _as_2d(embeddings, "embeddings")
    groups = _group_rows(set_ids, E.shape[0])
    if include is None:
        return scorer.score(E)
    wanted = list(include)
    missing = [k for k in wanted if k not in groups]
    if missing:
        raise ValueError(f"include names set ids with no embeddings: {missing!r}")
    if not wanted:
        raise ValueError("include is empty: nothing to pool")
    idx = np.sort(np.concatenate([groups[k] for k in dict.fromkeys(wanted)]))
    return scorer.score(E[idx])


# --------------------------------------------------------------------------------------------
# Per-sample scores
# --------------------------------------------------------------------------------------------
def nearest_real_distances(synthetic: Any, real: Any, *, chunk_size: int = 4096) -> np.ndarray:
    """Euclidean distance from each synthetic embedding to its nearest real embedding.

    Args:
        synthetic: `(n, d)` synthetic embeddings.
        real: `(m, d)` real embeddings.
        chunk_size: Synthetic rows per block (bounds memory at `chunk_size × m`).

    Returns:
        `(n,)` array of distances.

    Raises:
        ValueError: Bad inputs or mismatched dimensions.
    """
    S = _as_2d(synthetic, "synthetic")
    R = _as_2d(real, "real")
    _check_same_dim(S, R, "synthetic", "real")
    out = np.empty(S.shape[0])
    step = max(1, int(chunk_size))
    for start in range(0, S.shape[0], step):
        block = S[start : start + step]
        out[start : start + step] = np.sqrt(_sq_dists(block, R).min(axis=1))
    return out


def epsilon_from_real(
    real: Any, quantile: float | str = 0.5, *, groups: Any | None = None
) -> float:
    """ε from the real set's own leave-one-out nearest-neighbour distances.

    For each real sample the distance to its nearest neighbour is computed; ε is the given
    quantile of these (median by default). With ``groups`` (one cluster label per row, e.g.
    the parameter set of each target render) the neighbour must lie in *another* cluster: a
    sibling render of the same set is nearly always the closest image, so the iid version
    would measure render noise rather than how close two real sets are. With the median, a
    fresh sample from the real distribution (a fresh set, when clustered) falls within ε of the
    real set roughly half of the time, so an ε-ball share near 0.5 is "as close as real images
    (sets) are to each other".

    Args:
        real: `(m, d)` real embeddings (m ≥ 2 when ``groups`` is ``None``).
        quantile: Quantile in ``[0, 1]``, or ``"median"`` (= 0.5).
        groups: Length-``m`` cluster labels, or ``None`` for iid images.

    Returns:
        ε ≥ 0; NaN when ``groups`` names a single cluster (no other cluster to measure to).

    Raises:
        ValueError: Bad input, fewer than 2 samples (iid), labels of the wrong length or an
            invalid quantile.
    """
    if isinstance(quantile, str):
        if quantile != "median":
            raise ValueError(f"quantile must be a number in [0, 1] or 'median', got {quantile!r}")
        q = 0.5
    else:
        q = float(quantile)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile!r}")
    R = _as_2d(real, "real", min_samples=2 if groups is None else 1)
    d2 = _sq_dists(R, R, same=True)
    if groups is None:
        np.fill_diagonal(d2, np.inf)
    else:
        unit, n_units = _units(groups, R.shape[0], "groups")
        if n_units < 2:
            return float("nan")
        d2[unit[:, None] == unit[None, :]] = np.inf
    return float(np.quantile(np.sqrt(d2.min(axis=1)), q))


def epsilon_ball_share(
    synthetic: Any,
    real: Any,
    epsilon: float | None = None,
    *,
    real_groups: Any | None = None,
) -> float:
    """Share of synthetic samples within ε (inclusive) of some real sample.

    Args:
        synthetic: `(n, d)` synthetic embeddings.
        real: `(m, d)` real embeddings.
        epsilon: Radius; ``None`` uses :func:`epsilon_from_real` (median) of ``real``.
        real_groups: Cluster labels of ``real`` passed to :func:`epsilon_from_real` when
            ``epsilon`` is ``None`` (ε across clusters).

    Returns:
        A share in ``[0, 1]``; NaN when ε is NaN (a single real cluster).

    Raises:
        ValueError: Bad inputs or a negative / non-finite ``epsilon``.
    """
    if epsilon is None:
        eps = epsilon_from_real(real, groups=real_groups)
        if not np.isfinite(eps):
            return float("nan")
    else:
        eps = float(epsilon)
        if not (np.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    dist = nearest_real_distances(synthetic, real)
    return float(np.mean(dist <= eps))


def null_variance_factor(n: int, m: int) -> float:
    """Leading-order variance factor of the unbiased MMD² between samples of sizes ``n``, ``m``.

    Under the null hypothesis the unbiased MMD² is a degenerate U-statistic whose variance is, to
    leading order, proportional to ``1/(n(n-1)) + 2/(nm) + 1/(m(m-1))`` with a kernel-dependent
    constant (Gretton et al., 2012). Ratios of this factor rescale a noise floor measured at one
    pair of sample sizes to another.

    Raises:
        ValueError: If ``n`` or ``m`` is below 2.
    """
    if n < 2 or m < 2:
        raise ValueError(f"sample sizes must be >= 2, got n={n}, m={m}")
    return 1.0 / (n * (n - 1)) + 2.0 / (n * m) + 1.0 / (m * (m - 1))


def rescale_noise_floor(noise_floor: Mapping[str, Any], n: int, m: int) -> dict[str, float]:
    """Rescale a half-split noise floor to a comparison of ``n`` synthetic vs ``m`` real samples.

    :meth:`MMDScorer.noise_floor` measures real-vs-real MMD² between halves of the target set
    (``half_size`` vs ``m - half_size``); a pool of ``n`` synthetic images scored against all ``m``
    targets has a smaller null spread. Its ``std``, ``q05`` and ``q95`` are scaled by the square
    root of the ratio of :func:`null_variance_factor` (the null mean is 0 for both).

    Args:
        noise_floor: The output of :meth:`MMDScorer.noise_floor` (needs ``half_size``).
        n: Synthetic sample size of the comparison.
        m: Number of real targets.

    Returns:
        ``{"std", "q05", "q95", "scale"}`` at the new sample sizes.
    """
    half = int(noise_floor["half_size"])
    total = int(noise_floor.get("n_targets", m))
    scale = float(np.sqrt(null_variance_factor(n, m) / null_variance_factor(half, total - half)))
    mean = float(noise_floor.get("mean", 0.0))
    return {
        "std": float(noise_floor["std"]) * scale,
        "q05": mean + (float(noise_floor["q05"]) - mean) * scale,
        "q95": mean + (float(noise_floor["q95"]) - mean) * scale,
        "scale": scale,
    }


# --------------------------------------------------------------------------------------------
# Null bands ("noise floor")
# --------------------------------------------------------------------------------------------
#: Schemes a :class:`NullBand` can come from.
NULL_BAND_SCHEMES: tuple[str, ...] = ("simulated", "cluster-split", "image-split")


@dataclass(frozen=True)
class NullBand:
    """The distribution of MMD² under "the judged sample comes from the targets' process".

    A score at or below ``q95`` cannot be told apart from a fresh sample of the target process
    of the same size and structure (``n_sets`` sets × ``n_reps`` renders, scored against the
    ``n_reference`` targets). Built by :func:`null_band_from_statistics` (simulated targets) or
    :func:`split_null_band` (a real target folder). A band that could not be computed has NaN
    statistics and says why in ``reason``.

    Attributes:
        scheme: ``"simulated"``, ``"cluster-split"`` or ``"image-split"``.
        n_draws: Null statistics the band summarises.
        mean: Their mean. Under a clustered null it is > 0 even for the unbiased MMD²: the
            judged sample's sibling renders are closer to each other than to any target.
        std: Their standard deviation (``ddof=1``).
        q05: 5 % quantile.
        q50: Median.
        q95: 95 % quantile: the noise floor.
        n_sets: Parameter sets (clusters) in the judged sample.
        n_reps: Renders per set in the judged sample (1: every image from its own set).
        n_reference: Target images the judged sample is scored against.
        n_distinct: Split schemes: the number of distinct pseudo-samples the targets allow
            (``C(units, pseudo-sample units)``); ``None`` for ``"simulated"``.
        split: Split schemes: ``(pseudo-sample units, remaining units)`` (clusters or images).
        scale: Split schemes: spread factor applied to the split values (median over splits;
            below 1 since the judged sample is scored against all targets, not a part).
        sibling_excess: Split schemes: mean kernel value between sibling renders minus that
            between images of different clusters (0 for an iid folder); it sets the null mean.
        note: A caveat on how the band applies (e.g. iid targets and a clustered judged sample).
        reason: Why the statistics are NaN, or ``None``.
    """

    scheme: str
    n_draws: int
    mean: float
    std: float
    q05: float
    q50: float
    q95: float
    n_sets: int
    n_reps: int
    n_reference: int
    n_distinct: int | None = None
    split: tuple[int, int] | None = None
    scale: float = 1.0
    sibling_excess: float = 0.0
    note: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in NULL_BAND_SCHEMES:
            raise ValueError(f"scheme must be one of {NULL_BAND_SCHEMES}, got {self.scheme!r}")

    @property
    def n_judged(self) -> int:
        """Images in the judged sample (``n_sets × n_reps``)."""
        return self.n_sets * self.n_reps

    @property
    def available(self) -> bool:
        """Whether the band has a finite ``q95``."""
        return bool(np.isfinite(self.q95))

    def contains(self, value: float) -> bool | None:
        """Whether ``value`` is inside the noise floor (``value <= q95``); ``None`` if unknown."""
        if not self.available or not np.isfinite(value):
            return None
        return bool(value <= self.q95)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy (NaN stays ``float('nan')``; ``n_judged`` added)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["split"] = None if self.split is None else list(self.split)
        out["n_judged"] = self.n_judged
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NullBand:
        """Rebuild a band from :meth:`to_dict` (unknown keys such as ``n_judged`` ignored).

        Raises:
            ValueError: A required field is missing or the scheme is unknown.
        """
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("split") is not None:
            kwargs["split"] = tuple(int(v) for v in kwargs["split"])
        for key in ("mean", "std", "q05", "q50", "q95", "scale", "sibling_excess"):
            if kwargs.get(key) is not None:
                kwargs[key] = float(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"not a serialised NullBand: {exc}") from exc


def _empty_band(
    scheme: str, n_sets: int, n_reps: int, n_reference: int, reason: str, **extra: Any
) -> NullBand:
    nan = float("nan")
    return NullBand(
        scheme, 0, nan, nan, nan, nan, nan, n_sets, n_reps, n_reference, reason=reason, **extra
    )


def _band_from_values(
    values: np.ndarray, scheme: str, n_sets: int, n_reps: int, n_reference: int, **extra: Any
) -> NullBand:
    q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
    return NullBand(
        scheme=scheme,
        n_draws=int(values.size),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)),
        q05=float(q05),
        q50=float(q50),
        q95=float(q95),
        n_sets=n_sets,
        n_reps=n_reps,
        n_reference=n_reference,
        **extra,
    )


def _judged_size(n_sets: int, n_reps: int | None) -> tuple[int, int]:
    s = int(n_sets)
    r = 1 if n_reps is None else int(n_reps)
    if s < 1 or r < 1:
        raise ValueError(f"n_sets and n_reps must be >= 1, got n_sets={n_sets}, n_reps={n_reps}")
    return s, r


def null_band_from_statistics(
    stats: Any,
    *,
    n_sets: int,
    n_reps: int | None = None,
    n_reference: int,
    scheme: str = "simulated",
    note: str | None = None,
) -> NullBand:
    """A null band from MMD² values of fresh draws of the target-generating process.

    The simulated null: the caller renders ``n_draws`` fresh samples from the process that made
    the targets, each with the judged sample's structure (``n_sets`` sets drawn from the
    targets' parameter distribution × ``n_reps`` renders each, independent seeds), scores each
    against the targets with the run's kernel and passes the scores here. This is the exact
    null of the judged score, whatever the cluster structure; its only error is the Monte Carlo
    error of the quantiles (≥ 200 draws keep the q95's coverage within about ±0.015).

    Non-finite values are dropped; fewer than 2 finite values give a NaN band with a
    ``reason`` (never an exception).

    Args:
        stats: 1-D sequence of null MMD² values.
        n_sets: Sets in the judged sample.
        n_reps: Renders per set (``None`` = 1).
        n_reference: Target images the draws were scored against.
        scheme: Label stored in the band (``"simulated"`` unless the caller knows better).
        note: Optional caveat stored in the band.

    Returns:
        The :class:`NullBand`.

    Raises:
        ValueError: ``stats`` is not 1-D, or ``n_sets`` / ``n_reps`` < 1.
    """
    s, r = _judged_size(n_sets, n_reps)
    vals = np.asarray(stats, dtype=np.float64)
    if vals.ndim != 1:
        raise ValueError(f"stats must be a 1-D sequence of MMD² values, got shape {vals.shape}")
    vals = vals[np.isfinite(vals)]
    if vals.size < 2:
        reason = f"only {vals.size} finite null statistic(s); a band needs at least 2"
        return _empty_band(scheme, s, r, int(n_reference), reason, note=note)
    return _band_from_values(vals, scheme, s, r, int(n_reference), note=note)


def _null_mean(
    sizes_a: np.ndarray,
    sizes_b: np.ndarray,
    k_sib: float,
    k_cross: float,
    unbiased: bool,
) -> float:
    """Expected MMD² of two samples of exchangeable clusters drawn from one process.

    Each sample's within term averages its image pairs; sibling pairs (same cluster) have mean
    kernel ``k_sib``, pairs from different clusters ``k_cross`` (as do all cross-sample pairs),
    and the V-statistic's diagonal contributes 1. So
    ``E = Σ_sides [diag share (1 - k_cross) + sibling share (k_sib - k_cross)]``.
    """
    out = 0.0
    for sizes in (sizes_a, sizes_b):
        n = float(sizes.sum())
        sib_pairs = float(np.sum(sizes * (sizes - 1.0)))
        if unbiased:
            out += sib_pairs / (n * (n - 1.0)) * (k_sib - k_cross) if sib_pairs else 0.0
        else:
            out += (1.0 - k_cross) / n
            out += sib_pairs / n**2 * (k_sib - k_cross) if sib_pairs else 0.0
    return out


def split_null_band(
    targets: Any,
    groups: Any | None,
    n_sets: int,
    n_reps: int | None = None,
    *,
    scorer: MMDScorer | None = None,
    bandwidth: BandwidthSpec = "multi",
    unbiased: bool = True,
    n_splits: int = 200,
    random_state: int | np.random.Generator | None = 0,
) -> NullBand:
    """A null band for a real target folder, by splitting the targets themselves.

    Each split draws a pseudo-sample from the targets, as whole clusters when ``groups`` labels
    them (``"cluster-split"``) or as single images when the folder is iid (``groups=None``,
    ``"image-split"``), and scores it against the remaining targets with the run's kernel.
    The pseudo-sample has the judged number of units (``n_sets`` clusters, or
    ``n_sets × n_reps`` images) when at least 2 units are left over; otherwise it is shrunk so
    that 2 remain. Each split value ``v`` (pseudo-sample of ``a`` images against ``b``) is then
    mapped to the judged sizes (``n_sets × n_reps`` against all ``m`` targets) as::

        μ(judged) + sqrt(f(n_sets · n_reps, m) / f(a, b)) · (v - μ(split))

    with ``f`` = :func:`null_variance_factor` and ``μ`` the null mean of exchangeable clusters
    (its formula is exact; it uses the targets' mean kernel between sibling renders and between
    different clusters, see ``sibling_excess`` in :class:`NullBand`; ``μ`` = 0 for an iid folder
    and the unbiased estimator). The spread factor is the leading-order iid variance ratio
    (Gretton et al. 2012) on image counts: an approximation for clustered samples, accurate when
    judged and target clusters have similar sizes (conservative for sets × 1 render judged
    against 3-render target clusters). With few target clusters the band has few distinct values
    (5 clusters: 10) and its q95 varies a lot between target folders. Measured on a Gaussian
    cluster model (judged 5 × 3), the share of fresh null draws above q95 was ≈ 0.13 at 5 target
    clusters, ≈ 0.07 at 10 and ≈ 0.06 at 15 (the simulated band: 0.05), and ≈ 0.14 for one
    judged set against 12 clusters (12 distinct splits); ``note`` warns below 20 distinct
    splits. Prefer :func:`null_band_from_statistics` whenever the target process can be
    simulated.

    Minimums (below them a NaN band with a ``reason`` is returned, never an exception): a
    judged sample of ≥ 2 images; clustered targets: ≥ 3 clusters for a single judged set,
    ≥ 4 otherwise (a pseudo-sample of ≥ 2 clusters and ≥ 2 left over); iid targets: ≥ 4
    images. Splits that leave a side with fewer than 2 images (only with mixed cluster sizes)
    are skipped.

    An iid folder cannot show how sibling renders of one set resemble each other, so for a
    judged sample with ``n_reps > 1`` the band treats its images as independent (``note``
    says so); such a band is too low for clustered judged samples. Render those as many sets
    × 1 render, or group the targets.

    Args:
        targets: `(m, d)` target embeddings.
        groups: Length-``m`` cluster labels of the targets (the parameter set of each image),
            or ``None`` for an iid folder.
        n_sets: Sets (clusters) in the judged sample.
        n_reps: Renders per set in the judged sample (``None`` = 1).
        scorer: A fitted :class:`MMDScorer` whose bandwidths and estimator are used (overrides
            ``bandwidth`` and ``unbiased``); it should be the one the judged score comes from.
        bandwidth: Kernel specification when ``scorer`` is ``None``, resolved on the targets
            exactly as :meth:`MMDScorer.fit` does.
        unbiased: U-statistic (default) or V-statistic, when ``scorer`` is ``None``.
        n_splits: Random splits (≥ 2); when the targets allow at most this many distinct
            pseudo-samples, all of them are used instead.
        random_state: Seed (derived through :func:`bo_voids.seeding.derive_seed`), a
            generator, or ``None``.

    Returns:
        The :class:`NullBand` (scheme ``"cluster-split"`` or ``"image-split"``).

    Raises:
        ValueError: Malformed targets (non-finite, not 2-D), labels of the wrong length,
            ``n_sets`` / ``n_reps`` < 1 or ``n_splits`` < 2.
        StateError: ``scorer`` is not fitted.
    """
    s, r = _judged_size(n_sets, n_reps)
    if int(n_splits) < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    T = _as_2d(targets, "targets")
    m = T.shape[0]
    unit, G = _units(groups, m, "groups")
    sizes = np.bincount(unit, minlength=G).astype(np.float64)
    clustered = G < m
    scheme = "cluster-split" if clustered else "image-split"
    what = "clusters" if clustered else "images"
    n_judged = s * r
    note = None
    if not clustered and r > 1:
        note = (
            f"targets are iid: the judged sample's {r} renders per set are treated as "
            "independent images, so the band is too low for it"
        )

    def empty(reason: str) -> NullBand:
        return _empty_band(scheme, s, r, m, reason, note=note)

    if n_judged < 2:
        return empty(f"the judged sample has {n_judged} image; MMD² needs at least 2")
    want = s if clustered else n_judged  # units of the judged sample
    k = min(want, G - 2)
    need = 2 + min(want, 2)
    if k < min(want, 2):
        return empty(
            f"a split band for a judged sample of {s} × {r} needs at least {need} target "
            f"{what}, got {G}"
        )
    d2 = _sq_dists(T, T, same=True)
    if scorer is not None:
        scorer._require_fitted()
        assert scorer.bandwidths_ is not None
        bw, unbiased = scorer.bandwidths_, scorer.unbiased
    else:
        bw = _resolve_from_sq(bandwidth, d2)
    K = _rbf_from_sq(d2, bw)
    same = unit[:, None] == unit[None, :]
    k_cross = float(K[~same].mean())
    np.fill_diagonal(same, False)
    k_sib = float(K[same].mean()) if same.any() else k_cross
    n_distinct = math.comb(G, k)
    if n_distinct <= int(n_splits):
        Au = _all_splits(G, k)
    else:
        gen = _generator(random_state, "split_null_band")
        Au = _random_splits(gen, G, k, int(n_splits))
    A = Au[:, unit]
    a = A.sum(axis=1)
    b = m - a
    keep = (a >= 2) & (b >= 2)
    if int(keep.sum()) < 2:
        return empty(f"fewer than 2 splits of the {G} target {what} leave 2 images on each side")
    Au, A, a, b = Au[keep], A[keep], a[keep], b[keep]
    if n_distinct < 20:
        few = (
            f"only {n_distinct} distinct splits of {G} target {what}: q95 is uncertain and "
            "more often exceeded by a true null than 5 % of the time"
        )
        note = few if note is None else f"{note}; {few}"
    vals = _split_mmd2(K, A, a, unbiased)
    judged_sizes = np.full(s, float(r))
    mu_judged = _null_mean(judged_sizes, sizes, k_sib, k_cross, unbiased)
    mu_split = np.array(
        [_null_mean(sizes[row > 0], sizes[row == 0], k_sib, k_cross, unbiased) for row in Au]
    )
    # the same leading-order factor as null_variance_factor, for every split's sizes at once
    f_split = 1.0 / (a * (a - 1.0)) + 2.0 / (a * b) + 1.0 / (b * (b - 1.0))
    scale = np.sqrt(null_variance_factor(n_judged, m) / f_split)
    band_vals = mu_judged + scale * (vals - mu_split)
    return _band_from_values(
        band_vals,
        scheme,
        s,
        r,
        m,
        n_distinct=int(n_distinct),
        split=(int(k), int(G - k)),
        scale=float(np.median(scale)),
        sibling_excess=float(k_sib - k_cross),
        note=note,
    )
