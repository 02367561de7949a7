"""The optimiser interface: score the history, ask a subclass for a batch, enforce the contract.

Every optimiser (random search, the BoTorch GP, any later peer) derives from
:class:`BaseOptimizer` and implements one method, :meth:`BaseOptimizer._propose`. The base class
does everything the optimisers share, so they all behave the same at the edges:

1. **Observations.** The image rows of ``all_metadata`` are grouped into evaluated parameter sets
   by ``(iteration, param_set_id)``. Rows whose ``dataset_type`` is ``'real'`` or ``'target'`` are
   the targets themselves and are skipped; ``close`` / ``far`` rows of iteration 0 and every
   ``synthetic`` row are observations.
2. **Per-set score.** An :class:`~bo_voids.metrics.MMDScorer` is fitted on the target embeddings
   (so its bandwidths are fixed by the targets and every set is scored with the same kernel) and
   applied to the embeddings of each set's replications: the unbiased MMD² of that set.
3. **Per-set variance** (``mmd2_var``, always ``> 0``): the delete-one jackknife over the set's
   replications (Efron & Stein 1981), ``(n - 1) / n * sum_i (θ_(-i) - θ_(·))²``, which for a
   U-statistic is a conservative (upward-biased) estimate of the variance of the score. With
   ``n = 3`` replications that estimate has only 2 degrees of freedom, so it is moderated towards
   the median over all sets (Smyth 2004, "moderated variances": a pooled prior worth
   ``PRIOR_DOF`` degrees of freedom) and floored. Sets with 2 replications (no unbiased
   leave-one-out score) get the pooled value.
4. **Exclusions.** A set with a non-finite embedding, invalid parameters, fewer than 2 replications
   or a non-finite score is excluded with a :class:`~bo_voids.exceptions.FallbackWarning` that
   names it; it still counts as evaluated for duplicate detection.
5. **Contract on proposals.** Whatever a subclass returns is validated through the search space;
   exact duplicates (``space.key``) of an evaluated set or of an earlier point of the same batch are
   replaced by a perturbed copy of the point or, failing that, by a uniform random point.
6. **Determinism.** Nothing is kept between calls: every call is seeded from
   ``derive_seed(seed, "optimizer", n_observations)``, so a resumed run gets identical proposals.

Example:
    >>> opt = make_optimizer("random", space, seed=0)  # doctest: +SKIP
    >>> out = opt.recommend_next_batch(emb, meta, targets, batch_size=8)  # doctest: +SKIP
    >>> len(out["next_params"])  # doctest: +SKIP
    8
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from bo_voids.exceptions import ConfigError, FallbackWarning
from bo_voids.metrics import MMDScorer, nearest_real_distances
from bo_voids.seeding import derive_seed
from bo_voids.space import SearchSpace

logger = logging.getLogger(__name__)

#: ``dataset_type`` values that are the targets themselves, never observations.
TARGET_TYPES: frozenset[str] = frozenset({"real", "target"})
#: ``dataset_type`` values accepted in metadata.
DATASET_TYPES: frozenset[str] = frozenset({"real", "close", "far", "synthetic", "target"})
#: Prior degrees of freedom of the pooled variance in the moderated per-set variance.
PRIOR_DOF: float = 4.0
#: Relative floor of a per-set variance (times the pooled variance) and its absolute floor.
VAR_REL_FLOOR: float = 1e-2
VAR_ABS_FLOOR: float = 1e-12
#: Tries at perturbing a duplicate proposal before drawing a uniform random point instead.
_PERTURB_TRIES: int = 20


@dataclass
class SetRecord:
    """One evaluated parameter set and its score.

    Attributes:
        uid: ``"iter{iteration}/{param_set_id}"``, unique over the history.
        iteration: Iteration the set was evaluated in.
        param_set_id: Its id within the iteration.
        dataset_type: ``close``, ``far`` or ``synthetic``.
        params: The validated parameter set.
        rows: Row indices of its images in ``all_embeddings``.
        mmd2: Unbiased MMD² of its replications against the targets (``nan`` if excluded).
        mmd2_var: Moderated variance of ``mmd2`` (``> 0``; ``nan`` if excluded).
        jackknife_var: The raw jackknife variance before moderation (``nan`` if unavailable).
        valid: Whether the set is a usable observation.
        reason: Why it was excluded (empty when valid).
    """

    uid: str
    iteration: int
    param_set_id: str
    dataset_type: str
    params: dict[str, Any]
    rows: np.ndarray
    mmd2: float = math.nan
    mmd2_var: float = math.nan
    jackknife_var: float = math.nan
    valid: bool = True
    reason: str = ""

    @property
    def n(self) -> int:
        """Number of replications (images) of the set."""
        return int(self.rows.size)

    def to_dict(self) -> dict[str, Any]:
        """The per-set record reported in ``scores['per_set']``."""
        return {
            "uid": self.uid,
            "iteration": self.iteration,
            "param_set_id": self.param_set_id,
            "dataset_type": self.dataset_type,
            "params": dict(self.params),
            "mmd2": float(self.mmd2),
            "mmd2_var": float(self.mmd2_var),
            "n": self.n,
            "valid": self.valid,
            "reason": self.reason,
        }


@dataclass
class Proposal:
    """What a subclass returns from :meth:`BaseOptimizer._propose`.

    Attributes:
        params: Proposed parameter sets, best first (may hold fewer or more than ``batch_size``;
            extras are used to replace duplicates, missing ones are drawn at random).
        predicted_mmd2: Model prediction of MMD² at each observed set (aligned with the
            ``observations`` passed in), used to rank ``current_best``; ``None`` ranks by the raw
            score.
        info: Anything worth recording (model, acquisition, timings, fallback reason).
    """

    params: list[dict[str, Any]]
    predicted_mmd2: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


class BaseOptimizer(ABC):
    """Base class of every optimiser: stateless, seeded, scored with a target-fitted MMD².

    Args:
        space: The search space; proposals are decoded and validated through it.
        seed: Experiment seed; each call derives its own seed from it and the history size.
        top_k: Number of parameter sets reported in ``current_best`` (and pooled for
            ``distribution_similarity``).
        bandwidth: Kernel bandwidth of the MMD² score (``"multi"`` or ``"median"``).
        **options: Optimiser-specific options (see each subclass); unknown ones raise.

    Raises:
        ConfigError: An invalid argument or an option the optimiser does not know.
    """

    name: ClassVar[str] = "base"
    #: Options a subclass accepts, with their defaults.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int = 0,
        top_k: int = 5,
        bandwidth: str = "multi",
        **options: Any,
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise ConfigError(f"space must be a SearchSpace, got {type(space).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
        if bandwidth not in ("multi", "median"):
            raise ConfigError(f"bandwidth must be 'multi' or 'median', got {bandwidth!r}")
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for optimizer {self.name!r}; "
                f"valid options: {sorted(self.default_options)}"
            )
        self.space = space
        self.seed = int(seed)
        self.top_k = int(top_k)
        self.bandwidth = bandwidth
        self.options: dict[str, Any] = {**self.default_options, **options}

    # ---- the interface -------------------------------------------------------------------------

    def recommend_next_batch(
        self,
        all_embeddings: np.ndarray,
        all_metadata: Sequence[Mapping[str, Any]],
        target_embeddings: np.ndarray,
        batch_size: int = 8,
    ) -> dict[str, Any]:
        """Score every evaluated parameter set and propose the next batch.

        Args:
            all_embeddings: `(N, D)` embeddings of every image so far (all iterations).
            all_metadata: `N` metadata records, one per row of ``all_embeddings``, with keys
                ``iteration``, ``dataset_type``, ``param_set_id``, ``replication_seed`` and
                ``params``.
            target_embeddings: `(M, D)` embeddings of the real target images.
            batch_size: Number of parameter sets to propose.

        Returns:
            ``{'next_params': list of batch_size parameter sets,
            'current_best': top_k records {'params', 'param_set_id', 'iteration', 'uid', 'mmd2',
            'mmd2_var', 'predicted_mmd2', 'n_images'} (best first),
            'scores': {'distribution_similarity': MMD² of the pooled images of the current
            top_k sets vs the targets, 'per_sample_distances': `(S,)` nearest-real distance of
            every non-target image (``nan`` for a non-finite row), 'per_sample_rows': `(S,)` their
            rows in ``all_embeddings``, 'per_set': list of per-set records},
            'info': {'optimizer', 'seed', 'n_observations', 'n_excluded', ...}}``.

        Raises:
            ValueError: Inconsistent shapes, a non-positive ``batch_size``, unusable targets or
                malformed metadata.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = int(batch_size)
        emb, targets = _check_arrays(all_embeddings, all_metadata, target_embeddings)
        scorer = MMDScorer(bandwidth=self.bandwidth, unbiased=True).fit(targets)
        sets = self._collect_sets(emb, all_metadata)
        _score_sets(sets, emb, scorer)
        obs = [s for s in sets if s.valid]
        call_seed = derive_seed(self.seed, "optimizer", len(obs))
        evaluated = {self.space.key(s.params) for s in sets}

        proposal = self._propose(obs, batch_size, call_seed)
        rng = np.random.default_rng(derive_seed(call_seed, "fill"))
        next_params, n_replaced = self._finalize(proposal.params, evaluated, batch_size, rng)

        predicted = proposal.predicted_mmd2
        if predicted is not None and (
            len(predicted) != len(obs) or not np.all(np.isfinite(predicted))
        ):
            predicted = None
        rank_by = predicted if predicted is not None else np.array([s.mmd2 for s in obs])
        order = np.argsort(rank_by, kind="stable")[: self.top_k] if obs else np.array([], int)
        current_best = [
            {
                "params": dict(obs[i].params),
                "param_set_id": obs[i].param_set_id,
                "iteration": obs[i].iteration,
                "uid": obs[i].uid,
                "mmd2": float(obs[i].mmd2),
                "mmd2_var": float(obs[i].mmd2_var),
                "predicted_mmd2": float(rank_by[i]),
                "n_images": obs[i].n,
            }
            for i in order
        ]
        scores = self._scores(emb, all_metadata, targets, scorer, [obs[i] for i in order], sets)
        info = {
            "optimizer": self.name,
            "seed": call_seed,
            "n_observations": len(obs),
            "n_excluded": len(sets) - len(obs),
            "n_duplicates_replaced": n_replaced,
            "ranking": "model" if predicted is not None else "raw",
            "bandwidths": list(scorer.bandwidths_ or ()),
            **proposal.info,
        }
        return {
            "next_params": next_params,
            "current_best": current_best,
            "scores": scores,
            "info": info,
        }

    def score_history(
        self,
        all_embeddings: np.ndarray,
        all_metadata: Sequence[Mapping[str, Any]],
        target_embeddings: np.ndarray,
    ) -> list[SetRecord]:
        """Group the history into parameter sets and score each (as ``recommend_next_batch`` does).

        Args:
            all_embeddings: `(N, D)` embeddings of every image so far.
            all_metadata: `N` metadata records.
            target_embeddings: `(M, D)` target embeddings.

        Returns:
            Every evaluated set, valid or excluded (see ``SetRecord.valid``), in first-seen order.
        """
        emb, targets = _check_arrays(all_embeddings, all_metadata, target_embeddings)
        sets = self._collect_sets(emb, all_metadata)
        _score_sets(sets, emb, MMDScorer(bandwidth=self.bandwidth, unbiased=True).fit(targets))
        return sets

    @abstractmethod
    def _propose(self, observations: list[SetRecord], batch_size: int, seed: int) -> Proposal:
        """Propose parameter sets from the scored observations.

        Args:
            observations: Valid, scored sets (``mmd2`` finite, ``mmd2_var > 0``).
            batch_size: Number of sets wanted.
            seed: The seed of this call; all randomness must derive from it.

        Returns:
            A :class:`Proposal`.
        """

    # ---- shared helpers ------------------------------------------------------------------------

    def sobol_batch(self, n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
        """A scrambled Sobol batch over the unit cube, decoded through the space.

        Args:
            n: Number of points.
            seed: Scrambling seed.
            skip: Points of the sequence to skip first.

        Returns:
            ``n`` valid parameter sets.
        """
        import torch  # local: random search must not pay for importing torch

        engine = torch.quasirandom.SobolEngine(self.space.dim, scramble=True, seed=seed % 2**31)
        if skip:
            engine.fast_forward(skip)
        u = engine.draw(n, dtype=torch.float64).numpy()
        return self.space.decode_many(u)

    def _collect_sets(
        self, emb: np.ndarray, metadata: Sequence[Mapping[str, Any]]
    ) -> list[SetRecord]:
        groups: dict[tuple[int, str], list[int]] = {}
        for i, m in enumerate(metadata):
            dtype = m.get("dataset_type")
            if dtype not in DATASET_TYPES:
                raise ValueError(
                    f"metadata row {i}: dataset_type must be one of {sorted(DATASET_TYPES)}, "
                    f"got {dtype!r}"
                )
            if dtype in TARGET_TYPES:
                continue
            try:
                key = (int(m["iteration"]), str(m["param_set_id"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"metadata row {i} lacks iteration/param_set_id: {exc!r}") from exc
            groups.setdefault(key, []).append(i)
        sets: list[SetRecord] = []
        for (iteration, psid), rows in groups.items():
            first = metadata[rows[0]]
            uid = f"iter{iteration}/{psid}"
            rec = SetRecord(
                uid=uid,
                iteration=iteration,
                param_set_id=psid,
                dataset_type=str(first.get("dataset_type")),
                params=dict(first.get("params") or {}),
                rows=np.asarray(rows, dtype=np.intp),
            )
            try:
                rec.params = self.space.validate(rec.params)
            except (ConfigError, TypeError, ValueError) as exc:
                _exclude(rec, f"invalid parameters ({exc})")
                sets.append(rec)
                continue
            if any(not self.space.same(metadata[r]["params"], rec.params) for r in rows[1:]):
                _exclude(rec, "its images disagree on the parameters")
            elif not np.all(np.isfinite(emb[rec.rows])):
                _exclude(rec, "non-finite (NaN/inf) embeddings")
            elif rec.n < 2:
                _exclude(rec, "fewer than 2 replications (the unbiased MMD² needs 2)")
            sets.append(rec)
        return sets

    def _finalize(
        self,
        proposed: Sequence[Mapping[str, Any]],
        evaluated: set[tuple[Any, ...]],
        batch_size: int,
        rng: np.random.Generator,
    ) -> tuple[list[dict[str, Any]], int]:
        """Validate, de-duplicate and fill the batch to ``batch_size`` points."""
        seen = set(evaluated)
        out: list[dict[str, Any]] = []
        replaced = 0
        pending = list(proposed)
        while len(out) < batch_size:
            if pending:
                cand = pending.pop(0)
                try:
                    params = self.space.validate(cand)
                except (ConfigError, TypeError, ValueError):
                    params = self.space.from_raw(np.nan_to_num(_loose_raw(self.space, cand)))
                if self.space.key(params) in seen:
                    if len(proposed) > batch_size and len(pending) >= batch_size - len(out):
                        continue  # a spare candidate will take its place
                    params = self._perturb(params, seen, rng)
                    replaced += 1
            else:
                params = self.space.sample_uniform(1, rng)[0]
                if self.space.key(params) in seen:
                    params = self._perturb(params, seen, rng)
            seen.add(self.space.key(params))
            out.append(params)
        if replaced:
            logger.info("replaced %d duplicate proposal(s) by perturbed or random points", replaced)
        return out, replaced

    def _perturb(
        self, params: Mapping[str, Any], seen: set[tuple[Any, ...]], rng: np.random.Generator
    ) -> dict[str, Any]:
        """A nearby point not in ``seen``: jitter the numeric columns, widening each try."""
        raw = self.space.to_raw(params)
        lo, hi = self.space.raw_bounds
        numeric = np.array([p.kind != "categorical" for p in self.space.parameters])
        for t in range(_PERTURB_TRIES):
            scale = 0.01 * (2.0**t) * (hi - lo)
            step = rng.normal(0.0, 1.0, size=raw.shape) * scale * numeric
            cand = self.space.from_raw(np.clip(raw + step, lo, hi))
            if self.space.key(cand) not in seen:
                return cand
        while True:  # the space is continuous: this ends after one or two draws
            cand = self.space.sample_uniform(1, rng)[0]
            if self.space.key(cand) not in seen:
                return cand

    def _scores(
        self,
        emb: np.ndarray,
        metadata: Sequence[Mapping[str, Any]],
        targets: np.ndarray,
        scorer: MMDScorer,
        best: list[SetRecord],
        sets: list[SetRecord],
    ) -> dict[str, Any]:
        rows = np.array(
            [i for i, m in enumerate(metadata) if m.get("dataset_type") not in TARGET_TYPES],
            dtype=np.intp,
        )
        dists = np.full(rows.size, np.nan)
        if rows.size:
            finite = np.all(np.isfinite(emb[rows]), axis=1)
            if finite.any():
                dists[finite] = nearest_real_distances(emb[rows[finite]], targets)
        if best:
            pooled = np.concatenate([s.rows for s in best])
            similarity = float(scorer.score(emb[pooled])) if pooled.size >= 2 else math.nan
        else:
            similarity = math.nan
        return {
            "distribution_similarity": similarity,
            "per_sample_distances": dists,
            "per_sample_rows": rows,
            "per_set": [s.to_dict() for s in sets],
        }


# ---------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------


def _check_arrays(
    all_embeddings: Any, all_metadata: Sequence[Mapping[str, Any]], target_embeddings: Any
) -> tuple[np.ndarray, np.ndarray]:
    emb = np.asarray(all_embeddings, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"all_embeddings must be a 2-D (N, D) array, got shape {emb.shape}")
    if len(all_metadata) != emb.shape[0]:
        raise ValueError(
            f"all_metadata has {len(all_metadata)} records but all_embeddings has "
            f"{emb.shape[0]} rows; they must match one to one"
        )
    targets = np.asarray(target_embeddings, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[0] < 2:
        raise ValueError(f"target_embeddings must be (M >= 2, D), got shape {targets.shape}")
    if emb.shape[0] and targets.shape[1] != emb.shape[1]:
        raise ValueError(
            f"target_embeddings has {targets.shape[1]} features, all_embeddings {emb.shape[1]}"
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError("target_embeddings contains NaN or inf")
    return emb, targets


def _exclude(rec: SetRecord, reason: str) -> None:
    rec.valid = False
    rec.reason = reason
    warnings.warn(
        f"parameter set {rec.uid} is excluded from the observations: {reason}",
        FallbackWarning,
        stacklevel=4,
    )
    logger.warning("excluding parameter set %s: %s", rec.uid, reason)


def _score_sets(sets: list[SetRecord], emb: np.ndarray, scorer: MMDScorer) -> None:
    """Fill ``mmd2``, ``jackknife_var`` and the moderated ``mmd2_var`` of each valid set."""
    for rec in sets:
        if not rec.valid:
            continue
        X = emb[rec.rows]
        try:
            rec.mmd2 = float(scorer.score(X))
            if rec.n >= 3:
                loo = np.array([scorer.score(np.delete(X, i, axis=0)) for i in range(rec.n)])
                rec.jackknife_var = float((rec.n - 1) / rec.n * np.sum((loo - loo.mean()) ** 2))
        except (ValueError, FloatingPointError) as exc:
            _exclude(rec, f"its MMD² cannot be computed ({exc})")
            continue
        if not math.isfinite(rec.mmd2):
            _exclude(rec, "non-finite MMD² score")
    valid = [s for s in sets if s.valid]
    jk = np.array([s.jackknife_var for s in valid if math.isfinite(s.jackknife_var)])
    pooled = float(np.median(jk)) if jk.size and np.median(jk) > 0 else math.nan
    if not math.isfinite(pooled):
        # No usable replication spread: fall back to a small share of the spread between sets.
        y = np.array([s.mmd2 for s in valid])
        spread = float(np.var(y)) if y.size > 1 else 0.0
        pooled = max(1e-2 * spread, VAR_ABS_FLOOR)
    floor = max(VAR_REL_FLOOR * pooled, VAR_ABS_FLOOR)
    for s in valid:
        if math.isfinite(s.jackknife_var):
            dof = s.n - 1.0
            moderated = (dof * s.jackknife_var + PRIOR_DOF * pooled) / (dof + PRIOR_DOF)
        else:
            moderated = pooled
        s.mmd2_var = float(max(moderated, floor))


def _loose_raw(space: SearchSpace, params: Mapping[str, Any]) -> np.ndarray:
    """Raw encoding of a possibly out-of-bounds parameter set (clipped later by ``from_raw``)."""
    out = []
    for p in space.parameters:
        v = params.get(p.name)
        if p.kind == "categorical":
            out.append(float(p.choices.index(v)) if v in p.choices else 0.0)
        else:
            try:
                out.append(float(v))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                out.append(float(p.low))
    return np.array(out)
