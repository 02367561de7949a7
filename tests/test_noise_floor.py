"""The run's noise floor: simulated null draws, the folder case and the stop threshold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bo_voids.config import ExperimentConfig, load_config
from bo_voids.evaluation import EvaluationResult, EvaluationTask
from bo_voids.metrics import MMDScorer
from bo_voids.noise_floor import measure_noise_floor, simulated_null_draws, stop_threshold
from bo_voids.space import SearchSpace

DIM = 4


def _fake_evaluate(tasks: Sequence[EvaluationTask]) -> list[EvaluationResult]:
    """Embeddings drawn from each task's own seeds: deterministic, no rendering."""
    out = []
    for t in tasks:
        emb = np.stack([np.random.default_rng(s).normal(size=DIM) for s in t.seeds])
        n = len(t.seeds)
        out.append(EvaluationResult(t, np.zeros((n, 2, 2)), np.zeros((n, 2, 2), bool), emb, []))
    return out


@pytest.fixture
def config(config_path: Path) -> ExperimentConfig:
    cfg = load_config(config_path, check_paths=False)
    return replace(cfg, metric=replace(cfg.metric, null_draws=40, fresh_images=6))


@pytest.fixture
def scorer() -> MMDScorer:
    return MMDScorer(bandwidth="median").fit(np.random.default_rng(0).normal(size=(12, DIM)))


def test_null_draws_are_one_score_per_draw_and_reproducible(config, scorer):
    space = SearchSpace.from_config(config)
    a = simulated_null_draws(config, space, scorer, _fake_evaluate, n_sets=1, n_reps=6)
    b = simulated_null_draws(config, space, scorer, _fake_evaluate, n_sets=1, n_reps=6)
    assert len(a) == 40 and a == b
    assert np.all(np.isfinite(a))


def test_a_failed_draw_is_left_out(config, scorer):
    space = SearchSpace.from_config(config)

    def failing(tasks):
        return [r for r in _fake_evaluate(tasks) if not r.task.param_set_id.startswith("null_3_")]

    stats = simulated_null_draws(config, space, scorer, failing, n_sets=1, n_reps=6)
    assert len(stats) == 39


def test_simulated_targets_give_a_band_and_a_threshold(config, scorer):
    enough = replace(config, metric=replace(config.metric, null_draws=200))
    band = measure_noise_floor(enough, SearchSpace.from_config(enough), scorer, 12, _fake_evaluate)
    threshold = stop_threshold(enough, band)
    assert threshold.available and threshold.source == "null band"
    assert threshold.n_draws == 200


def test_too_few_null_draws_cannot_judge(config, scorer):
    band = measure_noise_floor(config, SearchSpace.from_config(config), scorer, 12, _fake_evaluate)
    assert not stop_threshold(config, band).available


def test_a_folder_has_no_band_and_the_rule_says_it_cannot_judge(config, scorer, tmp_path):
    folder = replace(config, target_image_dir=tmp_path)
    space = SearchSpace.from_config(folder)

    def never(tasks):
        raise AssertionError("a folder's noise floor renders nothing")

    band = measure_noise_floor(folder, space, scorer, 12, never)
    threshold = stop_threshold(folder, band)
    assert not threshold.available and "cannot judge" in threshold.description
    assert "folder of real images" in band["reason"]


def test_a_margin_overrides_the_band(config):
    threshold = stop_threshold(replace(config, stop_margin=0.01), {})
    assert threshold.available and threshold.value == pytest.approx(0.01)
    assert threshold.source == "margin"
