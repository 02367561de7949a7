"""The evaluated parameter sets of a run, as the run scored and ranked them.

Read from what the run persisted (each ``scores.json``'s ``per_set`` records and ``best``
ranking, ``experiment.json``'s ``current_best``), never re-scored: the figures
(:mod:`bo_voids.plots`, :mod:`bo_voids.image_grid`) and the report show the numbers the run
ranked by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bo_voids.scoring import TARGET_TYPES, RankedSet
from bo_voids.state import ExperimentRun

__all__ = ["SetSummary", "best_sets", "ranking_score_label", "set_summaries"]


@dataclass
class SetSummary:
    """One evaluated parameter set of a run.

    Attributes:
        param_set_id: Its id (``close_ps_003``, ``iter2_ps_001`` ...).
        iteration: The iteration that evaluated it.
        dataset_type: ``close``, ``far``, ``synthetic`` (or ``real`` for a simulated target set).
        params: Its six parameters (``None`` for real images loaded from a folder).
        mmd2: Its MMD² against the real targets (``nan`` for target sets or when unknown).
        images: ``(iteration, row)`` of each of its images in the run.
    """

    param_set_id: str
    iteration: int
    dataset_type: str
    params: dict[str, Any] | None
    mmd2: float = math.nan
    images: list[tuple[int, int]] = field(default_factory=list)


def _num(value: Any) -> float:
    """A float, or ``nan`` for ``None``/empty/unparseable values (JSON stores NaN as null)."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def set_summaries(run: ExperimentRun) -> list[SetSummary]:
    """Every parameter set of a run with its MMD², in evaluation order, as the run scored it.

    The observed sets and their MMD² are read from the ``per_set`` records each iteration's
    ``scores.json`` persisted (a set replicated in a later iteration is listed there again with
    its merged score, which replaces the earlier one), so nothing is re-scored and every figure
    and table shows the numbers the run ranked by. The simulated target sets follow with ``nan``
    MMD².

    Args:
        run: The loaded run.

    Returns:
        One :class:`SetSummary` per parameter set.
    """
    if not run.iterations:
        return []
    rows_of: dict[str, list[tuple[int, int]]] = {}
    for it in run.iterations:
        for row, meta in enumerate(it.metadata):
            rows_of.setdefault(str(meta.get("param_set_id")), []).append((it.iteration, row))
    records: dict[str, dict[str, Any]] = {}
    for scores in run.scores:
        for rec in scores.per_set:
            records[str(rec.get("uid"))] = dict(rec)  # insertion order: first evaluation
    out = []
    for uid, record in records.items():
        ids = record.get("param_set_ids") or [uid]
        out.append(
            SetSummary(
                param_set_id=uid,
                iteration=int(record.get("iteration", 0)),
                dataset_type=str(record.get("dataset_type", "synthetic")),
                params=dict(record.get("params") or {}),
                mmd2=_num(record.get("mmd2")),
                images=[img for ps_id in ids for img in rows_of.get(str(ps_id), [])],
            )
        )
    targets: dict[str, SetSummary] = {}
    for row, meta in enumerate(run.iterations[0].metadata):
        if meta.get("dataset_type") not in TARGET_TYPES:
            continue
        ps_id = str(meta.get("param_set_id"))
        summary = targets.setdefault(
            ps_id,
            SetSummary(ps_id, 0, str(meta["dataset_type"]), meta.get("params")),
        )
        summary.images.append((0, row))
    return out + list(targets.values())


def best_sets(run: ExperimentRun, k: int = 5) -> list[RankedSet]:
    """The best parameter sets of a run, best first, exactly as the run ranked them.

    A completed run's ranking is ``current_best`` in ``experiment.json``; while a run goes on (or
    after it stopped early) it is the last iteration's ``best`` in ``scores.json``. Both come
    from the package's one ranking (:func:`~bo_voids.scoring.rank_observations`), so nothing is
    re-ranked here.

    Args:
        run: The loaded run.
        k: At most this many sets.

    Returns:
        Records with ``param_set_id``, ``iteration``, ``params``, ``mmd2``, ``predicted_mmd2``
        and ``n_images``.
    """
    if run.manifest.get("status") == "completed" and run.current_best:
        return [rec.copy() for rec in run.current_best[:k]]
    return [rec.copy() for rec in (run.scores[-1].best if run.iterations else [])[:k]]


def ranking_score_label(run: ExperimentRun) -> str | None:
    """What a best set's ``predicted_mmd2`` holds, in words (``None``: the raw MMD² ranked).

    The composite surrogate ranks by its predicted squared distance between a set's mean
    embedding summary and the targets' (summary units, not MMD²); the scalar GPs by their
    posterior mean of the per-set MMD² itself.

    Args:
        run: The loaded run.

    Returns:
        A column heading, or ``None`` when the ranking was the raw MMD².
    """
    if not run.scores or run.scores[-1].ranking != "model":
        return None
    if (
        getattr(run.config, "optimizer", None) == "botorch"
        and run.config.bo.surrogate == "composite"
    ):
        return "model's predicted summary distance (ranks the sets; not MMD²)"
    return "model's predicted MMD²"
