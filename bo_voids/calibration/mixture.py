"""The simplex mixture fit: weights over evaluated parameter sets whose pool matches the targets.

Each evaluated (non-target) parameter set ``i`` is a component with empirical distribution
``P̂_i`` (its replications' embeddings). For simplex weights ``w`` the mixture ``Σ w_i P̂_i`` has,
with the run's fixed RBF kernel ``k``::

    MMD²(w) = w'Aw - 2 b'w + c
    A_ij = mean k(X_i, X_j)          (i ≠ j: cross pairs rendered with different seeds)
    A_ii = mean_{r≠s} k(x_ir, x_is)  (within a set: unbiased off-diagonal mean, or the
                                      biased V-statistic mean including r = s)
    b_i  = mean k(X_i, T),  c = mean_{r≠s} k(t_r, t_s)

**Cross pairs with a shared render seed are dropped.** The sets proposed in one iteration share
that iteration's seed block (common random numbers: replication ``r`` of every set uses the same
chip, rotation and random draws), so a cross pair with one seed is more alike than two
independent renders of those parameters (measured: 0.560 vs 0.453 for two sets 3 px apart in
base size). Keeping such pairs would make the components look less diverse than they are and
tilt the programme towards sets from one iteration. Pass ``set_seeds`` to drop them.

With the unbiased within-set term (``within="unbiased"``), ``MMD²(e_i)`` is exactly set ``i``'s
per-set score (the one the optimiser saw) and ``MMD²(w)`` an unbiased estimate of the population
MMD² of the mixture of the generator's distributions at those sets. It gives the sparsest
answers, but with 15 real images and dozens of candidates it overfits: the in-sample MMD² goes
negative and fresh renders score worse. The biased (V-statistic) form, the **default**
(``within="biased"``), keeps ``k(x, x) = 1`` inside each set, which adds ``(1 - A_ii) / n_i`` to
each diagonal entry: a ridge penalty that spreads weight over a few more sets. On the benchmark
(``benchmarks/calibration_recovery.py``) it gave a lower fresh-render MMD² and smaller
distribution errors than the unbiased form. Neither ``A`` need be positive semi-definite (the
unbiased diagonal, and dropped same-seed pairs, break the Gram structure), so the programme is
solved with SciPy's SLSQP from several starts (best single set, uniform, uniform over the best
five, a softmax of the per-set scores) and the best local optimum is kept. Sparsity: weights
below ``min_weight`` are dropped, at most ``max_components`` are kept, and the weights are
refitted on the support until stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bo_voids.metrics import MMDScorer, rbf_kernel

__all__ = ["MixtureFit", "fit_mixture", "mixture_terms"]

_ZERO = 1e-9
#: SLSQP stopping tolerance and iteration cap of the mixture fit.
_SLSQP_OPTIONS = {"ftol": 1e-12, "maxiter": 1000}

SeedSpec = Sequence[Sequence[int | None]] | Mapping[str, Sequence[int | None]] | None


@dataclass
class MixtureFit:
    """Simplex weights over evaluated parameter sets minimising MMD² to the targets.

    Attributes:
        ids: Identifier of every candidate set, in input order.
        weights: ``(K,)`` weights over ``ids`` (non-negative, summing to 1; 0 off the support).
        mmd2: In-sample unbiased ``MMD²(w)`` of the fitted mixture (same estimator as
            ``per_set_mmd2``, so the two compare).
        per_set_mmd2: ``(K,)`` unbiased MMD² of each set alone (the scorer's per-set score).
        objective: The minimised value (``mmd2`` itself for ``within="unbiased"``, the
            V-statistic for ``"biased"``).
        within: ``"unbiased"`` or ``"biased"`` within-set kernel mean.
        solver: Diagnostics (starts, refits, SLSQP messages, dropped same-seed pairs).
    """

    ids: list[str]
    weights: np.ndarray
    mmd2: float
    per_set_mmd2: np.ndarray
    objective: float = math.nan
    within: str = "biased"
    solver: dict[str, Any] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        """Number of sets with positive weight."""
        return int(np.count_nonzero(self.weights > 0))

    @property
    def components(self) -> list[tuple[str, float]]:
        """``(id, weight)`` of the support, heaviest first."""
        order = np.argsort(-self.weights, kind="stable")
        return [(self.ids[i], float(self.weights[i])) for i in order if self.weights[i] > 0]

    @property
    def best_single(self) -> tuple[str, float]:
        """``(id, MMD²)`` of the best single set."""
        i = int(np.argmin(self.per_set_mmd2))
        return self.ids[i], float(self.per_set_mmd2[i])


def _seed_vector(set_seeds: Sequence[Sequence[int | None]], sizes: np.ndarray) -> np.ndarray:
    """One comparable code per image; unknown seeds (``None``) get codes that never match."""
    if len(set_seeds) != len(sizes):
        raise ValueError(f"set_seeds has {len(set_seeds)} entries for {len(sizes)} sets")
    codes: list[int] = []
    for seeds, n in zip(set_seeds, sizes, strict=True):
        if len(seeds) != n:
            raise ValueError(f"a set has {n} embeddings but {len(seeds)} seeds")
        # derived seeds lie in [0, 2**63): negative codes are free for the unknown ones
        codes.extend(int(s) if s is not None else -1 - len(codes) for s in seeds)
    return np.asarray(codes, dtype=np.int64)


def mixture_terms(
    set_embeddings: Sequence[np.ndarray],
    targets: np.ndarray,
    bandwidths: Sequence[float],
    *,
    within: str = "unbiased",
    set_seeds: Sequence[Sequence[int | None]] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The quadratic form ``MMD²(w) = w'Aw - 2 b'w + c`` of a weighted mixture of sets.

    Args:
        set_embeddings: One ``(n_i, d)`` array per component (``n_i ≥ 2`` for ``"unbiased"``).
        targets: ``(m, d)`` target embeddings.
        bandwidths: RBF bandwidths (the run's fixed ones).
        within: ``"unbiased"`` (off-diagonal mean within a set and within the targets, so that
            ``MMD²(e_i)`` equals the unbiased per-set score) or ``"biased"`` (V-statistics).
        set_seeds: Render seed of every image of every set (``None`` for an unknown seed); cross
            pairs of two sets rendered with one seed are left out of ``A_ij``. ``None``: keep
            every pair.

    Returns:
        ``(A, b, c)`` with ``A`` symmetric ``(K, K)``, ``b`` ``(K,)``, ``c`` a float.

    Raises:
        ValueError: Unknown ``within``, empty input, a set too small for the estimator or seeds
            that do not match the embeddings.
    """
    A, b, c, _ = _terms(set_embeddings, targets, bandwidths, within, set_seeds)
    return A, b, c


def _terms(
    set_embeddings: Sequence[np.ndarray],
    targets: np.ndarray,
    bandwidths: Sequence[float],
    within: str,
    set_seeds: Sequence[Sequence[int | None]] | None,
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """:func:`mixture_terms` plus the number of cross pairs dropped for a shared seed."""
    if within not in ("unbiased", "biased"):
        raise ValueError(f"within must be 'unbiased' or 'biased', got {within!r}")
    if not set_embeddings:
        raise ValueError("need at least one candidate parameter set")
    sizes = np.array([len(x) for x in set_embeddings], dtype=np.int64)
    min_n = 2 if within == "unbiased" else 1
    if (sizes < min_n).any() or len(targets) < min_n:
        raise ValueError(f"every set and the targets need at least {min_n} embeddings")
    Z = np.vstack([np.asarray(x, dtype=np.float64) for x in set_embeddings])
    T = np.asarray(targets, dtype=np.float64)
    K = rbf_kernel(np.vstack([Z, T]), None, tuple(bandwidths))
    n_syn, m = Z.shape[0], T.shape[0]
    Kzz, Kzt, Ktt = K[:n_syn, :n_syn], K[:n_syn, n_syn:], K[n_syn:, n_syn:]
    owner = np.repeat(np.arange(len(sizes)), sizes)
    G = np.zeros((n_syn, len(sizes)))
    G[np.arange(n_syn), owner] = 1.0
    S = G.T @ Kzz @ G
    A = S / np.outer(sizes, sizes)
    dropped = 0
    if set_seeds is not None:
        codes = _seed_vector(set_seeds, sizes)
        shared = (codes[:, None] == codes[None, :]) & (owner[:, None] != owner[None, :])
        if shared.any():
            dropped = int(shared.sum()) // 2
            keep = (~shared).astype(np.float64)
            pairs = G.T @ keep @ G
            sums = G.T @ (Kzz * keep) @ G
            off = ~np.eye(len(sizes), dtype=bool)
            # a block whose pairs all share seeds has no independent pair: keep its plain mean
            usable = off & (pairs > 0)
            A[usable] = sums[usable] / pairs[usable]
    b = (G.T @ Kzt).sum(axis=1) / (sizes * m)
    if within == "unbiased":
        traces = G.T @ np.diag(Kzz)
        np.fill_diagonal(A, (np.diag(S) - traces) / (sizes * (sizes - 1)))
        c = float((Ktt.sum() - np.trace(Ktt)) / (m * (m - 1)))
    else:
        c = float(Ktt.mean())
    return 0.5 * (A + A.T), b, c, dropped


def _objective(A: np.ndarray, b: np.ndarray, c: float, w: np.ndarray) -> float:
    return float(w @ A @ w - 2.0 * b @ w + c)


def _project(w: np.ndarray) -> np.ndarray:
    w = np.where(w > _ZERO, w, 0.0)
    total = w.sum()
    return w / total if total > 0 else np.full_like(w, 1.0 / len(w))


def _solve_simplex(
    A: np.ndarray, b: np.ndarray, c: float, starts: Sequence[np.ndarray]
) -> tuple[np.ndarray, float, list[str]]:
    """Minimise ``w'Aw - 2b'w + c`` over the simplex with SLSQP from several starts."""
    k = len(b)
    if k == 1:
        w = np.ones(1)
        return w, _objective(A, b, c, w), ["single candidate"]

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        Aw = A @ w
        return float(w @ Aw - 2.0 * b @ w), 2.0 * Aw - 2.0 * b

    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(k)}
    best_w, best_f, messages = None, math.inf, []
    # A programme over a few dozen sets gains nothing from BLAS threads, and on busy cores
    # OpenBLAS's waiting threads made every SLSQP step ~60x slower (2.6 s vs 0.04 s a fit).
    with threadpool_limits(limits=1, user_api="blas"):
        for w0 in starts:
            res = minimize(
                fun,
                w0,
                jac=True,
                method="SLSQP",
                bounds=[(0.0, 1.0)] * k,
                constraints=[constraint],
                options=_SLSQP_OPTIONS,
            )
            messages.append(str(res.message))
            w = _project(np.asarray(res.x, dtype=np.float64))
            f = _objective(A, b, c, w)
            if f < best_f - 1e-15:
                best_w, best_f = w, f
    assert best_w is not None
    return best_w, best_f, messages


def _starts(per_set: np.ndarray, extra: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
    k = len(per_set)
    order = np.argsort(per_set, kind="stable")
    vertex = np.zeros(k)
    vertex[order[0]] = 1.0
    top = np.zeros(k)
    top[order[: min(5, k)]] = 1.0
    spread = max(float(np.std(per_set)), 1e-12)
    soft = np.exp(-(per_set - per_set.min()) / spread)
    return [
        *[_project(e) for e in extra],
        vertex,
        np.full(k, 1.0 / k),
        top / top.sum(),
        soft / soft.sum(),
    ]


def _bandwidths(bandwidths: Sequence[float] | MMDScorer) -> tuple[float, ...]:
    if isinstance(bandwidths, MMDScorer):
        if bandwidths.bandwidths_ is None:
            raise ValueError("the MMDScorer has no bandwidths: fit it or load it with from_dict")
        return tuple(bandwidths.bandwidths_)
    return tuple(float(x) for x in np.atleast_1d(bandwidths))


def fit_mixture(
    set_embeddings: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    targets: np.ndarray,
    bandwidths: Sequence[float] | MMDScorer,
    *,
    max_components: int | None = 8,
    min_weight: float = 0.02,
    max_candidates: int | None = None,
    within: str = "biased",
    set_seeds: SeedSpec = None,
) -> MixtureFit:
    """Fit simplex weights over parameter sets so their weighted pool matches the targets.

    Args:
        set_embeddings: ``{set_id: (n_i, d) embeddings}`` (or a sequence; ids become ``"0"``,
            ``"1"``, ...), one entry per evaluated parameter set with all its replications
            (``n_i ≥ 2``).
        targets: ``(m, d)`` target embeddings (all of them, or a training part).
        bandwidths: The RBF bandwidths, or a fitted :class:`MMDScorer` whose ``bandwidths_``
            are used (use the run's stored scorer, so the scale is the optimiser's).
        max_components: Keep at most this many sets (``None``: no limit).
        min_weight: Drop sets whose weight falls below this, then refit.
        max_candidates: Only the best ``max_candidates`` sets by per-set MMD² enter the
            programme (``None``: all of them).
        within: Within-set kernel mean, ``"biased"`` (default, V-statistic: regularised) or
            ``"unbiased"`` (sparser, overfits small target sets); see the module docstring.
        set_seeds: Render seeds of every set's images, aligned with ``set_embeddings`` (a
            mapping by id, or a sequence); cross pairs sharing a seed are dropped. ``None``:
            every pair is kept (right only when every set had independent seeds).

    Returns:
        The :class:`MixtureFit` (weights over *all* input sets, zeros outside the support).

    Raises:
        ValueError: Bad inputs.
    """
    if isinstance(set_embeddings, Mapping):
        ids = [str(k) for k in set_embeddings]
        arrays = [np.asarray(v, dtype=np.float64) for v in set_embeddings.values()]
    else:
        ids = [str(i) for i in range(len(set_embeddings))]
        arrays = [np.asarray(v, dtype=np.float64) for v in set_embeddings]
    seeds: list[Sequence[int | None]] | None = None
    if isinstance(set_seeds, Mapping):
        seeds = [set_seeds[i] for i in ids]
    elif set_seeds is not None:
        seeds = list(set_seeds)
    bw = _bandwidths(bandwidths)
    if max_components is not None and max_components < 1:
        raise ValueError(f"max_components must be >= 1 or None, got {max_components}")
    if not 0.0 <= min_weight < 1.0:
        raise ValueError(f"min_weight must lie in [0, 1), got {min_weight}")
    A_u, b, c_u, dropped = _terms(arrays, targets, bw, "unbiased", seeds)
    per_set = np.diag(A_u) - 2.0 * b + c_u  # the optimiser's per-set scores, whatever ``within``
    if within == "unbiased":
        A, c = A_u, c_u
    else:
        A, _, c, _ = _terms(arrays, targets, bw, within, seeds)
    k = len(ids)
    cand = np.argsort(per_set, kind="stable")
    if max_candidates is not None:
        cand = cand[: max(1, int(max_candidates))]
    cand = np.sort(cand)
    A_c, b_c = A[np.ix_(cand, cand)], b[cand]
    w_c, _, messages = _solve_simplex(A_c, b_c, c, _starts(per_set[cand]))
    limit = max_components or len(cand)
    refits = 0
    for _ in range(50):
        pos = np.flatnonzero(w_c > 0)
        if len(pos) <= limit and (w_c[pos] >= min_weight).all():
            break
        order = pos[np.argsort(-w_c[pos], kind="stable")]
        chosen = [i for i in order if w_c[i] >= min_weight][:limit] or [int(order[0])]
        keep = np.sort(np.asarray(chosen))
        w_sub, _, msg = _solve_simplex(
            A_c[np.ix_(keep, keep)], b_c[keep], c, _starts(per_set[cand][keep], [w_c[keep]])
        )
        messages.extend(msg)
        w_c = np.zeros_like(w_c)
        w_c[keep] = w_sub
        refits += 1
    weights = np.zeros(k)
    weights[cand] = w_c
    return MixtureFit(
        ids=ids,
        weights=weights,
        mmd2=_objective(A_u, b, c_u, weights),
        per_set_mmd2=per_set,
        objective=_objective(A, b, c, weights),
        within=within,
        solver={
            "method": "scipy.optimize.minimize(SLSQP), multi-start, prune-and-refit",
            "n_candidates": len(cand),
            "refits": refits,
            "max_components": max_components,
            "min_weight": min_weight,
            "same_seed_pairs_dropped": dropped,
            "seeds_known": seeds is not None,
            "messages": sorted(set(messages)),
        },
    )
