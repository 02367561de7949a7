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
Permutation tests and null bands built on these estimators live in :mod:`bo_voids.statistics`.

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
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from bo_voids._types import JsonObject, Labels
from bo_voids.exceptions import StateError
from bo_voids.seeding import derive_seed

__all__ = [
    "MULTI_BANDWIDTH_MULTIPLIERS",
    "BandwidthSpec",
    "MMDScorer",
    "epsilon_ball_share",
    "epsilon_from_real",
    "kid",
    "median_bandwidth",
    "mmd2",
    "nearest_real_distances",
    "pairwise_sq_dists",
    "per_set_mmd2",
    "pooled_mmd2",
    "rbf_kernel",
    "resolve_bandwidths",
]

#: Multipliers of the median distance that make up the ``"multi"`` bandwidth mixture.
MULTI_BANDWIDTH_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

#: ``"median"``, ``"multi"``, a single positive σ, or a sequence of positive σ values.
BandwidthSpec = str | float | Sequence[float]

_SERIAL_VERSION = 1


# --------------------------------------------------------------------------------------------
# Input validation and randomness
# --------------------------------------------------------------------------------------------
def _as_2d(X: ArrayLike, name: str, *, min_samples: int = 1) -> np.ndarray:
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


def pairwise_sq_dists(X: ArrayLike, Y: ArrayLike | None = None) -> np.ndarray:
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


def median_bandwidth(X: ArrayLike, Y: ArrayLike | None = None) -> float:
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


def resolve_bandwidths(
    bandwidth: BandwidthSpec, X: ArrayLike, Y: ArrayLike | None = None
) -> tuple[float, ...]:
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


def rbf_kernel(
    X: ArrayLike, Y: ArrayLike | None, bandwidths: float | Sequence[float]
) -> np.ndarray:
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
    X: ArrayLike,
    Y: ArrayLike,
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


def kid(X: ArrayLike, Y: ArrayLike) -> float:
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
# Cluster labels
# --------------------------------------------------------------------------------------------
def _units(groups: Labels | None, n: int, name: str) -> tuple[np.ndarray, int]:
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

    def fit(self, target_embeddings: ArrayLike) -> MMDScorer:
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

    def score(self, X: ArrayLike) -> float:
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
        assert self._target_sq_norms is not None
        Kxx = _rbf_from_sq(_sq_dists(Xa, Xa, same=True), bw)
        xx = np.einsum("ij,ij->i", Xa, Xa)
        d2xy = xx[:, None] + self._target_sq_norms[None, :] - 2.0 * (Xa @ self._targets.T)
        np.maximum(d2xy, 0.0, out=d2xy)
        kxy = float(_rbf_from_sq(d2xy, bw).mean())
        kxx = _off_diag_mean(Kxx) if self.unbiased else float(Kxx.mean())
        return kxx + self._target_term - 2.0 * kxy

    def score_many(self, sets: Iterable[ArrayLike]) -> np.ndarray:
        """Score several synthetic sets.

        Args:
            sets: Iterable of `(n_k, d)` arrays.

        Returns:
            `(K,)` array of MMD² values, in input order.
        """
        return np.array([self.score(X) for X in sets], dtype=np.float64)

    def to_dict(self) -> JsonObject:
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
    def from_dict(cls, data: Mapping[str, Any], targets: ArrayLike | None = None) -> MMDScorer:
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
def _group_rows(set_ids: Labels, n: int) -> dict[Hashable, np.ndarray]:
    ids = list(np.asarray(set_ids).tolist()) if not isinstance(set_ids, list) else set_ids
    if len(ids) != n:
        raise ValueError(f"set_ids has {len(ids)} entries but embeddings has {n} rows")
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(ids):
        key = key.item() if isinstance(key, np.generic) else key
        groups.setdefault(key, []).append(i)
    return {k: np.asarray(v, dtype=np.intp) for k, v in groups.items()}


def per_set_mmd2(
    embeddings: ArrayLike, set_ids: Labels, scorer: MMDScorer
) -> dict[Hashable, float]:
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
    embeddings: ArrayLike,
    set_ids: Labels,
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
def nearest_real_distances(
    synthetic: ArrayLike, real: ArrayLike, *, chunk_size: int = 4096
) -> np.ndarray:
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
    real: ArrayLike, quantile: float | str = 0.5, *, groups: Labels | None = None
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
    synthetic: ArrayLike,
    real: ArrayLike,
    epsilon: float | None = None,
    *,
    real_groups: Labels | None = None,
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
