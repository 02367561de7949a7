"""Implied distribution, its std correction, the YAML snippet, errors (calibration.distribution)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bo_voids.calibration import (
    distribution_errors,
    distribution_from_yaml,
    effective_sample_size,
    implied_distribution,
    std_correction_factor,
    yaml_snippet,
)
from bo_voids.config import NormalDistribution, config_from_dict, load_config
from bo_voids.space import SearchSpace
from bo_voids.testing import REAL_MEANS


@pytest.fixture(scope="module")
def cfg(repo_root: Path):
    return load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)


def _components() -> list[tuple[dict[str, Any], float]]:
    return [
        (dict(REAL_MEANS), 0.6),
        (
            {
                "void_shape": "circle",
                "void_count": 12,
                "base_size": 30.0,
                "brightness_factor": 0.7,
                "size_std": 3.0,
                "position_spread": 0.3,
            },
            0.3,
        ),
        (
            {
                "void_shape": "irregular",
                "void_count": 4,
                "base_size": 10.0,
                "brightness_factor": 0.4,
                "size_std": 0.0,
                "position_spread": 0.7,
            },
            0.1,
        ),
    ]


def test_effective_sample_size_and_factor() -> None:
    assert effective_sample_size([0.5, 0.5]) == pytest.approx(2.0)
    assert effective_sample_size([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)  # renormalised
    assert effective_sample_size([0.6, 0.3, 0.1]) == pytest.approx(1 / 0.46)
    assert effective_sample_size([1.0, 0.0]) == pytest.approx(1.0)
    assert std_correction_factor(2.0) == pytest.approx(math.sqrt(2.0))
    assert std_correction_factor(1.0) == 1.0
    with pytest.raises(ValueError):
        effective_sample_size([0.0, 0.0])


def test_n_eff_correction_gives_the_sample_std_for_equal_weights(cfg) -> None:
    """Equal weights over k points: the corrected std is the ddof=1 sample std of the points."""
    comps = [(c[0], 1.0) for c in _components()]
    x = np.array([c[0]["base_size"] for c in comps])
    corrected = implied_distribution(comps, cfg.param_bounds)
    plain = implied_distribution(comps, cfg.param_bounds, std_correction="none")
    assert corrected["base_size"]["std"] == pytest.approx(np.std(x, ddof=1), abs=1e-6)
    assert plain["base_size"]["std"] == pytest.approx(np.std(x, ddof=0), abs=1e-6)
    assert corrected["base_size"]["mean"] == plain["base_size"]["mean"]
    # a single component has no spread to correct
    one = implied_distribution([comps[0]], cfg.param_bounds)
    assert one["base_size"]["std"] == 0.0
    with pytest.raises(ValueError, match="std_correction"):
        implied_distribution(comps, cfg.param_bounds, std_correction="bessel")


def test_implied_distribution_moments_and_round_trip(cfg) -> None:
    comps = _components()
    dist = implied_distribution(comps, cfg.param_bounds)
    w = np.array([c[1] for c in comps])
    x = np.array([c[0]["base_size"] for c in comps])
    factor = std_correction_factor(effective_sample_size(w))
    assert dist["base_size"]["mean"] == pytest.approx(w @ x, abs=1e-6)
    assert dist["base_size"]["std"] == pytest.approx(
        factor * np.sqrt(w @ (x - w @ x) ** 2), abs=1e-6
    )
    shapes = dist["void_shape"]
    assert set(shapes) == {"circle", "ellipse", "irregular"}
    assert abs(sum(shapes.values()) - 1.0) <= 1e-6
    assert shapes["ellipse"] == pytest.approx(0.6)
    # accepted by the config loader as the real distribution, and sampled from
    typed = distribution_from_yaml(dist, cfg)
    assert isinstance(typed["void_count"], NormalDistribution)
    space = SearchSpace.from_config(cfg)
    draws = space.sample(typed, 20, random_state=0)
    assert len(draws) == 20 and all(space.validate(p) == p for p in draws)
    # the YAML snippet pastes back in
    pasted = yaml.safe_load("param_distributions:\n" + yaml_snippet(dist))
    raw = cfg.to_dict()
    raw["param_distributions"]["real"] = pasted["param_distributions"]["real"]
    cfg2 = config_from_dict(raw, check_paths=False)
    assert cfg2.param_distributions["real"]["base_size"].mean == pytest.approx(
        dist["base_size"]["mean"], rel=1e-5
    )


def test_implied_distribution_floor_clip_and_rounding(cfg) -> None:
    comps = [(_components()[0][0], 1.0)]
    dist = implied_distribution(comps, cfg.param_bounds, std_floor=0.05)
    assert dist["base_size"]["std"] == pytest.approx(0.05 * 35.0)
    assert dist["void_shape"] == {"circle": 0.0, "ellipse": 1.0, "irregular": 0.0}
    thirds = [(c[0], 1.0) for c in _components()]
    dist3 = implied_distribution(thirds, cfg.param_bounds, decimals=3)
    assert abs(sum(dist3["void_shape"].values()) - 1.0) <= 1e-6
    distribution_from_yaml(dist3, cfg)
    with pytest.raises(ValueError):
        implied_distribution([(comps[0][0], 0.0)], cfg.param_bounds)


def test_distribution_errors(cfg) -> None:
    truth = {k: v.to_yaml() for k, v in cfg.param_distributions["real"].items()}
    zero = distribution_errors(truth, truth, cfg.param_bounds)
    assert zero["mean_error"] == 0 and zero["std_error"] == 0 and zero["shape_tv"] == 0
    other = json.loads(json.dumps(truth))
    other["base_size"]["mean"] += 3.5  # 10 % of the 35-wide range
    other["void_shape"] = {"circle": 1.0, "ellipse": 0.0, "irregular": 0.0}
    err = distribution_errors(other, truth, cfg.param_bounds)
    assert err["per_parameter"]["base_size"]["mean_error"] == pytest.approx(0.1)
    assert err["shape_tv"] == pytest.approx(1.0 - truth["void_shape"]["circle"])


def test_a_psi_with_imaging_nuisance_is_drawn_with_it(cfg) -> None:
    """ψ of a run with an imaging block holds nuisance components: drawn, clipped, validated."""
    from bo_voids.calibration.distribution import typed_distribution
    from bo_voids.exceptions import ConfigError

    with_imaging = config_from_dict(
        {**cfg.to_dict(), "imaging": {"psf_sigma": [0.0, 3.0], "gamma": 1.2}}, check_paths=False
    )
    psi = {
        "void_shape": {"circle": 0.2, "ellipse": 0.5, "irregular": 0.3},
        **{k: {"mean": float(v), "std": 0.0} for k, v in REAL_MEANS.items() if k != "void_shape"},
        "imaging_psf_sigma": {"mean": 5.0, "std": 0.5},
    }
    typed = typed_distribution(psi, with_imaging)
    assert typed["imaging_psf_sigma"] == NormalDistribution(5.0, 0.5)
    draws = SearchSpace.from_config(with_imaging).sample(typed, 20, 0)
    assert all(d["imaging_psf_sigma"] == 3.0 for d in draws)  # clipped to its bounds
    with pytest.raises(ConfigError, match="imaging_gamma"):
        typed_distribution({**psi, "imaging_gamma": {"mean": 1.0, "std": 0.1}}, with_imaging)
