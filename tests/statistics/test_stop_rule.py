"""The stop rule: its threshold is a valid bound, and a stop needs its confirmation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from bo_voids.pipeline import OptimizationPipeline
from bo_voids.run_scores import RunScores
from bo_voids.statistics.stop_rule import (
    MIN_NULL_DRAWS,
    StopThreshold,
    cannot_judge,
    quantile_lower_bound_rank,
    stop_reason,
    threshold_from_margin,
    threshold_from_null,
)
from bo_voids.testing.runs import tiny_config


def _scores(fresh: float, confirm: float | None, threshold: StopThreshold) -> list[RunScores]:
    rec = {"uid": "x", "fresh_mmd2": fresh, "fresh_images": 3}
    if confirm is not None:
        rec["confirm_mmd2"] = confirm
    first = RunScores.from_dict({"distribution_similarity": 0.5})
    last = RunScores.from_dict(
        {
            "iteration": 1,
            "distribution_similarity": 0.4,
            "recommendation": rec,
            "stop_threshold": threshold.to_dict(),
        }
    )
    return [first, last]


def test_order_statistic_rank() -> None:
    # the minimum of n draws bounds the 5 % quantile at 95 % from n = 59 on
    assert quantile_lower_bound_rank(58, 0.05, 0.95) == 0
    assert quantile_lower_bound_rank(59, 0.05, 0.95) == 1
    assert quantile_lower_bound_rank(200, 0.05, 0.95) == 5


def test_threshold_is_below_the_null_quantile_at_its_confidence() -> None:
    g = np.random.default_rng(0)
    q05 = -1.6448536269514722  # standard normal
    trials = 2000
    below = sum(
        threshold_from_null(g.normal(size=MIN_NULL_DRAWS)).value <= q05 for _ in range(trials)
    )
    # nominal >= 0.95; binomial sd at 0.95 over 2000 trials is 0.005
    assert below / trials >= 0.94


def test_too_few_draws_cannot_judge() -> None:
    t = threshold_from_null(np.arange(40.0))
    assert not t.available and t.source == "none"
    assert "40 null draws" in t.description and "stop_margin" in t.description


def test_a_candidate_alone_never_stops(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, stop_at_noise_floor=True, max_iterations=5)
    t = threshold_from_margin(0.05)
    assert stop_reason(_scores(0.01, None, t), cfg, 5) is None  # not yet confirmed
    assert stop_reason(_scores(0.01, 0.09, t), cfg, 5) is None  # confirmation failed
    reason = stop_reason(_scores(0.01, 0.04, t), cfg, 5)
    assert reason is not None and reason.startswith("confirmed stop")
    assert stop_reason(_scores(0.01, 0.04, cannot_judge("x")), cfg, 5) is None


def _pool_scores(similarity: float, confirm: float | None) -> list[RunScores]:
    last = {"iteration": 1, "distribution_similarity": similarity}
    if confirm is not None:
        last["confirm_similarity"] = confirm
    return [RunScores.from_dict({"distribution_similarity": 0.5}), RunScores.from_dict(last)]


def test_convergence_needs_fresh_renders_of_the_pool(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, convergence_threshold=0.0, max_iterations=5)
    # the in-sample pool is selected for its low scores: below the threshold alone is luck
    assert stop_reason(_pool_scores(-0.01, None), cfg, 5) is None
    assert stop_reason(_pool_scores(-0.01, 0.02), cfg, 5) is None  # the fresh pool disagrees
    assert stop_reason(_pool_scores(-0.01, math.nan), cfg, 5) is None  # nothing rendered
    reason = stop_reason(_pool_scores(-0.01, -0.005), cfg, 5)
    assert reason is not None and reason.startswith("converged") and "fresh renders" in reason
    assert stop_reason(_pool_scores(0.01, -0.005), cfg, 5) is None  # not a candidate


def test_confirm_similarity_round_trips() -> None:
    s = _pool_scores(-0.01, -0.003)[1]
    assert RunScores.from_dict(json.loads(json.dumps(s.to_dict()))).confirm_similarity == -0.003
    assert "confirm_similarity" not in _pool_scores(-0.01, None)[1].to_dict()


def test_pipeline_confirms_convergence_on_fresh_renders(repo_root: Path, tmp_path: Path) -> None:
    # a threshold every pool is below: each iteration is a candidate, and its fresh re-render
    # (also below) confirms it, so the run stops after iteration 1 with both figures recorded
    cfg = tiny_config(repo_root, tmp_path, convergence_threshold=1e3, max_iterations=3)
    summary = OptimizationPipeline(cfg).run_full_experiment()
    assert summary.iterations_completed == 1
    assert summary.stop_reason.startswith("converged") and "fresh renders" in summary.stop_reason
    last = summary.scores[-1]
    assert last.confirm_similarity is not None and math.isfinite(last.confirm_similarity)
    assert summary.scores[0].confirm_similarity is None  # iteration 0 never converges
    stored = json.loads((Path(cfg.experiment_dir) / "iteration_1" / "scores.json").read_text())
    assert stored["confirm_similarity"] == last.confirm_similarity


def test_false_stop_rate_at_the_boundary() -> None:
    """A recommendation whose mean score sits at the null's 5 % quantile is not better than it.

    Model: a parameter set's fresh score is its own mean plus image noise; the null draws are
    real sets (means spread around the population) plus the same noise. At the boundary the
    old rule (one fresh draw below the q05 of 20 null draws) fires about half the time; the new
    one (a bound from 200 draws, confirmed on a second sample) about p² with p the chance of one
    draw below the bound (≈ 0.3 here).
    """
    g = np.random.default_rng(1)
    between, noise = 0.05, 0.03
    q05 = 0.1 - 1.6448536269514722 * math.hypot(between, noise)
    old = new = 0
    runs = 1000
    for _ in range(runs):
        null = 0.1 + math.hypot(between, noise) * g.normal(size=MIN_NULL_DRAWS)
        t = threshold_from_null(null)
        old_q05 = float(np.quantile(null[:20], 0.05))
        fresh = q05 + noise * g.normal()
        old += fresh <= old_q05
        new += fresh <= t.value and q05 + noise * g.normal() <= t.value
    # measured (seed 1, 1,000 runs): new 0.095, old 0.47; binomial sd at 0.1: 0.01
    assert new / runs <= 0.13
    assert old / runs > 3 * new / runs


def test_pipeline_confirms_before_stopping(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        repo_root, tmp_path, stop_at_noise_floor=True, stop_margin=2.0, max_iterations=3
    )
    summary = OptimizationPipeline(cfg).run_full_experiment()
    assert summary.stop_reason.startswith("confirmed stop")
    assert summary.iterations_completed == 1
    rec = summary.scores[-1].recommendation
    assert rec is not None and rec.confirm_mmd2 is not None and math.isfinite(rec.confirm_mmd2)
    assert rec.confirm_seed_stream == ("confirm", 1)
    assert (summary.scores[-1].stop_threshold or {})["source"] == "margin"


def test_pipeline_never_fires_below_an_unreachable_margin(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        repo_root, tmp_path, stop_at_noise_floor=True, stop_margin=-2.0, max_iterations=2
    )
    summary = OptimizationPipeline(cfg).run_full_experiment()
    assert summary.iterations_completed == 2
    assert all(
        s.recommendation is None or s.recommendation.confirm_mmd2 is None for s in summary.scores
    )


def test_folder_run_says_it_cannot_judge(repo_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "targets"
    folder.mkdir()
    for src in sorted((repo_root / "data" / "base_chips").glob("*.png"))[:5]:
        shutil.copy(src, folder / src.name)
    cfg = tiny_config(
        repo_root,
        tmp_path,
        stop_at_noise_floor=True,
        max_iterations=1,
        target_image_dir=str(folder),
    )
    summary = OptimizationPipeline(cfg).run_full_experiment()
    band = summary.noise_floor
    assert "folder of real images" in band["reason"]
    assert not math.isfinite(band["q05"])  # never a negative q05 that cannot fire
    threshold = band["stop_threshold"]
    assert threshold["source"] == "none" and "cannot judge" in threshold["description"]
    saved = json.loads((Path(cfg.experiment_dir) / "iteration_1" / "scores.json").read_text())
    assert saved["stop_threshold"]["source"] == "none"


@pytest.mark.parametrize("n", [0, 10])
def test_simulated_run_with_few_draws_cannot_judge(repo_root: Path, tmp_path: Path, n: int) -> None:
    cfg = tiny_config(
        repo_root,
        tmp_path,
        stop_at_noise_floor=True,
        max_iterations=1,
        metric={"null_draws": n},
    )
    summary = OptimizationPipeline(cfg).run_full_experiment()
    threshold = summary.noise_floor["stop_threshold"]
    assert threshold["source"] == "none" and f"{n} null draws" in threshold["description"]


@pytest.mark.parametrize("margin", ["x", 3.0, float("nan")])
def test_a_bad_stop_margin_is_refused_naming_the_key(
    repo_root: Path, tmp_path: Path, margin: object
) -> None:
    from bo_voids.config import config_from_dict
    from bo_voids.exceptions import ConfigError

    data = tiny_config(repo_root, tmp_path).to_dict()
    data["stop_margin"] = margin
    with pytest.raises(ConfigError, match="stop_margin"):
        config_from_dict(data)


def test_a_threshold_that_cannot_judge_round_trips_through_json() -> None:
    from bo_voids._io import to_jsonable
    from bo_voids.statistics.stop_rule import StopThreshold, cannot_judge

    record = cannot_judge("4 null draws")
    again = StopThreshold.from_dict(json.loads(json.dumps(to_jsonable(record.to_dict()))))
    assert again.description == record.description and not again.available


def test_convergence_benchmark_reproduces_the_runs_confirmation(
    repo_root: Path, tmp_path: Path
) -> None:
    from benchmarks import convergence_confirmation

    cfg = tiny_config(repo_root, tmp_path, convergence_threshold=1e3, max_iterations=3)
    summary = OptimizationPipeline(cfg).run_full_experiment()
    runs = Path(cfg.experiment_dir).parent
    assert convergence_confirmation.main(["--cache", str(runs), "--out", str(tmp_path / "o")]) == 0
    rows = json.loads((tmp_path / "o" / "convergence_confirmation.json").read_text())["rows"]
    (row,) = rows
    assert row["iteration"] == 1 and row["confirmed"]
    # same seed stream as the pipeline's confirmation: the same images, the same figure
    assert row["fresh"] == summary.scores[-1].confirm_similarity
