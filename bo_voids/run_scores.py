"""The typed run-level scores of one iteration, and their JSON form (``scores.json``).

:class:`RunScores` is made by :meth:`bo_voids.scoring.ScoreBook.scores` and read by every stage
after it (pipeline, state, report, plots, progress, trackers, calibration, benchmarks); this
module is the only one that reads or writes its JSON form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bo_voids._types import JsonObject

if TYPE_CHECKING:
    from bo_voids.scoring import ObservationRecord, RankedSet
    from bo_voids.space import ParamSet

__all__ = ["FreshScore", "RunScores", "json_float"]


@dataclass(frozen=True)
class FreshScore:
    """The recommendation re-scored on fresh, independently seeded images.

    The in-sample score of the best-ranked set is biased low (it was selected for being low:
    the winner's curse); this one is not, and is never shown to the optimiser.

    Attributes:
        uid: The recommended set.
        params: Its parameters.
        mmd2_in_sample: Its per-set MMD² on the images the run ranked it by.
        predicted_mmd2: The ranking's value for it (model objective, or raw MMD²).
        fresh_mmd2: MMD² of ``fresh_images`` new images of it against the targets.
        fresh_images: How many fresh images.
        fresh_seed_stream: The seed stream the fresh images were drawn from.
        confirm_mmd2: MMD² of a second, independently seeded fresh sample, rendered only when
            the first made a candidate stop (``None`` otherwise; see
            :mod:`bo_voids.statistics.stop_rule`).
        confirm_seed_stream: Its seed stream.
    """

    uid: str
    params: ParamSet
    mmd2_in_sample: float
    predicted_mmd2: float
    fresh_mmd2: float
    fresh_images: int
    fresh_seed_stream: tuple[Any, ...] = ()
    confirm_mmd2: float | None = None
    confirm_seed_stream: tuple[Any, ...] = ()

    def to_dict(self) -> JsonObject:
        """JSON form (``recommendation`` of ``scores.json``)."""
        return {
            "uid": self.uid,
            "params": dict(self.params),
            "mmd2_in_sample": self.mmd2_in_sample,
            "predicted_mmd2": self.predicted_mmd2,
            "fresh_mmd2": self.fresh_mmd2,
            "fresh_images": self.fresh_images,
            "fresh_seed_stream": list(self.fresh_seed_stream),
            **(
                {
                    "confirm_mmd2": self.confirm_mmd2,
                    "confirm_seed_stream": list(self.confirm_seed_stream),
                }
                if self.confirm_mmd2 is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FreshScore:
        """Inverse of :meth:`to_dict` (missing numbers read as NaN)."""
        return cls(
            uid=str(d.get("uid", "")),
            params=dict(d.get("params") or {}),
            mmd2_in_sample=json_float(d.get("mmd2_in_sample")),
            predicted_mmd2=json_float(d.get("predicted_mmd2")),
            fresh_mmd2=json_float(d.get("fresh_mmd2")),
            fresh_images=int(d.get("fresh_images") or 0),
            fresh_seed_stream=tuple(d.get("fresh_seed_stream") or ()),
            confirm_mmd2=_optional_float(d.get("confirm_mmd2")),
            confirm_seed_stream=tuple(d.get("confirm_seed_stream") or ()),
        )


#: Keys of ``scores.json`` derived from ``best`` (written for readers of the file, not read back).
_DERIVED_KEYS: frozenset[str] = frozenset(
    {"best_mmd2", "best_predicted_mmd2", "best_param_set_id", "best_params", "top_k"}
)


@dataclass(frozen=True)
class RunScores:
    """Run-level scores after one iteration (``scores.json``), from the scorer to every reader.

    Made by :meth:`ScoreBook.scores`; the pipeline adds the null band's quantiles and the
    recommendation's :class:`FreshScore` with :func:`dataclasses.replace`. This module is the only
    one that reads or writes its JSON form (:meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        iteration: The iteration.
        n_sets: Valid observations so far.
        ranking: ``"model"`` or ``"raw"``: what ranked the best sets.
        best: The ``top_k`` best sets, best first.
        distribution_similarity: MMD² of the pooled images of ``best`` vs the targets.
        pool_size: Images in that pool.
        kid: Kernel inception distance of the pool vs the targets.
        iteration_best_mmd2: Lowest raw per-set MMD² among the sets rendered this iteration.
        mean_nearest_real: Mean nearest-target distance of this iteration's images.
        epsilon: ε of the ε-ball share.
        epsilon_ball_share: Share of this iteration's images within ε of a target.
        per_set: Records of the sets rendered this iteration (merged replications included).
        noise_floor_q05: Lower quantile of the null band the run compares with.
        noise_floor_q95: Upper quantile of that band.
        recommendation: The recommendation's fresh score (``None``: not rendered).
        noise_floor: The whole null band record (iteration 0 only).
        scorer: The fitted MMD scorer's settings (iteration 0 only).
        stop_threshold: The stop rule's threshold record
            (:class:`~bo_voids.statistics.stop_rule.StopThreshold`), as the rule used it.
        confirm_similarity: The pooled MMD² of fresh, independently seeded renders of the same
            ``best`` sets (``None``: not rendered; it is rendered only when the in-sample
            distribution similarity is below ``convergence_threshold``, to confirm that stop).
        extra: Keys this version does not know, kept so a file round-trips unchanged.
    """

    iteration: int
    n_sets: int
    ranking: str
    best: list[RankedSet]
    distribution_similarity: float
    pool_size: int
    kid: float
    iteration_best_mmd2: float
    mean_nearest_real: float
    epsilon: float
    epsilon_ball_share: float
    per_set: list[ObservationRecord]
    noise_floor_q05: float = math.nan
    noise_floor_q95: float = math.nan
    recommendation: FreshScore | None = None
    noise_floor: dict[str, Any] | None = None
    scorer: dict[str, Any] | None = None
    stop_threshold: dict[str, Any] | None = None
    confirm_similarity: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top(self) -> RankedSet | None:
        """The best-ranked set (``None`` before any valid set)."""
        return self.best[0] if self.best else None

    @property
    def best_mmd2(self) -> float:
        """In-sample per-set MMD² of the best-ranked set."""
        return self.best[0]["mmd2"] if self.best else math.nan

    @property
    def best_predicted_mmd2(self) -> float:
        """The ranking's value of the best-ranked set."""
        return self.best[0]["predicted_mmd2"] if self.best else math.nan

    @property
    def best_param_set_id(self) -> str | None:
        """``uid`` of the best-ranked set."""
        return self.best[0]["uid"] if self.best else None

    @property
    def best_params(self) -> ParamSet | None:
        """Parameters of the best-ranked set."""
        return self.best[0]["params"] if self.best else None

    @property
    def fresh_mmd2(self) -> float:
        """The recommendation's fresh MMD² (NaN when not rendered)."""
        return self.recommendation.fresh_mmd2 if self.recommendation else math.nan

    def scalars(self) -> dict[str, float]:
        """The scalar run-level scores by name (for logs, trackers and tables)."""
        return {
            "n_sets": float(self.n_sets),
            "best_mmd2": self.best_mmd2,
            "best_predicted_mmd2": self.best_predicted_mmd2,
            "distribution_similarity": self.distribution_similarity,
            "pool_size": float(self.pool_size),
            "kid": self.kid,
            "iteration_best_mmd2": self.iteration_best_mmd2,
            "mean_nearest_real": self.mean_nearest_real,
            "epsilon": self.epsilon,
            "epsilon_ball_share": self.epsilon_ball_share,
            "noise_floor_q05": self.noise_floor_q05,
            "noise_floor_q95": self.noise_floor_q95,
            **{k: float(v) for k, v in self.extra.items() if _is_number(v)},
        }

    def to_dict(self) -> JsonObject:
        """The ``scores.json`` form (keeps the first release's flat keys)."""
        top = self.top
        out: dict[str, Any] = {
            "iteration": self.iteration,
            "n_sets": self.n_sets,
            "ranking": self.ranking,
            "best_mmd2": top["mmd2"] if top else math.nan,
            "best_predicted_mmd2": top["predicted_mmd2"] if top else math.nan,
            "best_param_set_id": top["uid"] if top else None,
            "best_params": top["params"] if top else None,
            "distribution_similarity": self.distribution_similarity,
            "pool_size": self.pool_size,
            "kid": self.kid,
            "iteration_best_mmd2": self.iteration_best_mmd2,
            "mean_nearest_real": self.mean_nearest_real,
            "epsilon": self.epsilon,
            "epsilon_ball_share": self.epsilon_ball_share,
            "top_k": [b["uid"] for b in self.best],
            "best": list(self.best),
            "per_set": list(self.per_set),
            "noise_floor_q05": self.noise_floor_q05,
            "noise_floor_q95": self.noise_floor_q95,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
        }
        if self.noise_floor is not None:
            out["noise_floor"] = dict(self.noise_floor)
        if self.scorer is not None:
            out["scorer"] = dict(self.scorer)
        if self.stop_threshold is not None:
            out["stop_threshold"] = dict(self.stop_threshold)
        if self.confirm_similarity is not None:
            out["confirm_similarity"] = self.confirm_similarity
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunScores:
        """Read a ``scores.json`` record (missing numbers read as NaN, unknown keys kept)."""
        known = {f for f in cls.__dataclass_fields__ if f != "extra"} | _DERIVED_KEYS
        rec = d.get("recommendation")
        return cls(
            iteration=int(d.get("iteration", 0)),
            n_sets=int(d.get("n_sets", 0)),
            ranking=str(d.get("ranking", "raw")),
            best=list(d.get("best") or []),
            distribution_similarity=json_float(d.get("distribution_similarity")),
            pool_size=int(d.get("pool_size") or 0),
            kid=json_float(d.get("kid")),
            iteration_best_mmd2=json_float(d.get("iteration_best_mmd2")),
            mean_nearest_real=json_float(d.get("mean_nearest_real")),
            epsilon=json_float(d.get("epsilon")),
            epsilon_ball_share=json_float(d.get("epsilon_ball_share")),
            per_set=list(d.get("per_set") or []),
            noise_floor_q05=json_float(d.get("noise_floor_q05")),
            noise_floor_q95=json_float(d.get("noise_floor_q95")),
            recommendation=FreshScore.from_dict(rec) if isinstance(rec, Mapping) else None,
            noise_floor=_mapping(d.get("noise_floor")),
            scorer=_mapping(d.get("scorer")),
            stop_threshold=_mapping(d.get("stop_threshold")),
            confirm_similarity=_optional_float(d.get("confirm_similarity")),
            extra={k: v for k, v in d.items() if k not in known},
        )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _mapping(v: Any) -> dict[str, Any] | None:
    return dict(v) if isinstance(v, Mapping) else None


def _optional_float(v: Any) -> float | None:
    """``None`` stays ``None`` (never rendered); anything else as :func:`json_float`."""
    return None if v is None else json_float(v)


def json_float(v: Any) -> float:
    """A JSON number as a float; ``None`` (how JSON stores NaN), strings and others read as NaN."""
    return float(v) if _is_number(v) else math.nan
