"""Distribution-level calibration: mixture fit, implied distribution, validation, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bo_voids.calibrate import main as calibrate_main
from bo_voids.calibration import (
    CALIBRATION_FILE,
    CalibrationContext,
    CalibrationError,
    calibrate_experiment,
    distribution_errors,
    distribution_from_yaml,
    fit_mixture,
    implied_distribution,
    mixture_terms,
    yaml_snippet,
)
from bo_voids.config import NormalDistribution, config_from_dict, load_config
from bo_voids.metrics import MMDScorer
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.space import SearchSpace
from bo_voids.testing import REAL_MEANS

from .test_pipeline import tiny_config


# --------------------------------------------------------------------------------------------
# Mixture fit on synthetic Gaussian "embeddings" (known answer)
# --------------------------------------------------------------------------------------------
def _gaussian_sets(
    seed: int = 0, n_sets: int = 12, reps: int = 6, d: int = 6
) -> tuple[dict[str, np.ndarray], np.ndarray, list[np.ndarray]]:
    g = np.random.default_rng(seed)
    means = [g.normal(0.0, 3.0, size=d) for _ in range(n_sets)]
    sets = {f"ps_{i:02d}": mu + 0.5 * g.normal(size=(reps, d)) for i, mu in enumerate(means)}
    return sets, g, means  # type: ignore[return-value]


@pytest.mark.parametrize("within", ["biased", "unbiased"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weights_concentrate_on_the_two_true_components(seed: int, within: str) -> None:
    sets, g, means = _gaussian_sets(seed)
    a, b = 2, 7
    targets = np.vstack(
        [means[a] + 0.5 * g.normal(size=(20, 6)), means[b] + 0.5 * g.normal(size=(20, 6))]
    )
    scorer = MMDScorer().fit(targets)
    fit = fit_mixture(sets, targets, scorer, within=within)
    w = dict(zip(fit.ids, fit.weights, strict=True))
    assert w["ps_02"] + w["ps_07"] > 0.9
    assert w["ps_02"] == pytest.approx(0.5, abs=0.15)
    assert w["ps_07"] == pytest.approx(0.5, abs=0.15)
    assert 2 <= fit.n_components <= 4
    assert fit.weights.sum() == pytest.approx(1.0) and (fit.weights >= 0).all()
    # the mixture beats every single set
    assert fit.mmd2 < fit.per_set_mmd2.min()


def test_per_set_terms_equal_the_scorer() -> None:
    sets, g, _ = _gaussian_sets(3)
    targets = g.normal(size=(15, 6))
    scorer = MMDScorer().fit(targets)
    assert scorer.bandwidths_ is not None
    A, b, c = mixture_terms(list(sets.values()), targets, scorer.bandwidths_)
    per_set = np.diag(A) - 2 * b + c
    expected = [scorer.score(x) for x in sets.values()]
    np.testing.assert_allclose(per_set, expected, rtol=1e-9, atol=1e-12)
    # biased within-set form, uniform weights: exactly the V-statistic of the pooled sets
    w = np.full(len(sets), 1 / len(sets))
    Ab, bb, cb = mixture_terms(list(sets.values()), targets, scorer.bandwidths_, within="biased")
    v_scorer = MMDScorer(bandwidth=scorer.bandwidths_, unbiased=False).fit(targets)
    pooled = v_scorer.score(np.vstack(list(sets.values())))
    assert float(w @ Ab @ w - 2 * bb @ w + cb) == pytest.approx(pooled, abs=1e-9)


def test_pruning_limits_components() -> None:
    sets, g, means = _gaussian_sets(4)
    targets = np.vstack([m + 0.5 * g.normal(size=(4, 6)) for m in means[:6]])
    fit = fit_mixture(sets, targets, MMDScorer().fit(targets), max_components=3, min_weight=0.05)
    assert 1 <= fit.n_components <= 3
    assert all(w >= 0.05 for _, w in fit.components)
    with pytest.raises(ValueError, match="max_components"):
        fit_mixture(sets, targets, MMDScorer().fit(targets), max_components=0)


# --------------------------------------------------------------------------------------------
# Implied distribution and the config format
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfg(repo_root: Path):
    return load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)


def _components() -> list[tuple[dict[str, Any], float]]:
    return [
        (
            dict(REAL_MEANS),
            0.6,
        ),
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


def test_implied_distribution_moments_and_round_trip(cfg) -> None:
    comps = _components()
    dist = implied_distribution(comps, cfg.param_bounds)
    w = np.array([c[1] for c in comps])
    x = np.array([c[0]["base_size"] for c in comps])
    assert dist["base_size"]["mean"] == pytest.approx(w @ x, abs=1e-6)
    assert dist["base_size"]["std"] == pytest.approx(np.sqrt(w @ (x - w @ x) ** 2), abs=1e-6)
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


# --------------------------------------------------------------------------------------------
# End to end on a tiny pipeline run
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_config(repo_root, tmp_path_factory.mktemp("calib"), max_iterations=1)
    OptimizationPipeline(cfg).run_full_experiment()
    return Path(cfg.experiment_dir)


@pytest.fixture(scope="module")
def calibrated(tiny_run: Path) -> dict[str, Any]:
    return calibrate_experiment(tiny_run)


def test_calibrate_experiment_writes_json_and_plot(tiny_run: Path, calibrated) -> None:
    on_disk = json.loads((tiny_run / CALIBRATION_FILE).read_text())
    assert on_disk["mixture"]["n_components"] == len(on_disk["components"]) >= 1
    assert sum(c["weight"] for c in on_disk["components"]) == pytest.approx(1.0)
    for key in ("implied", "mixture", "best_point", "top_k_pool"):
        v = on_disk["validation"][key]
        assert v["n_images"] == 3 * 2  # real set: 3 param sets x 2 replications
        assert 0 < v["p_value"] <= 1 and np.isfinite(v["mmd2"])
    assert on_disk["errors"]["implied"]["shape_tv"] >= 0  # simulated targets: truth known
    assert on_disk["truth"]["void_count"]["mean"] == 8
    assert (tiny_run / "plots" / "calibration_pca.png").is_file()
    assert on_disk["implied_distribution"] == calibrated["implied_distribution"]


def test_validation_uses_fresh_seeds_only(tiny_run: Path, calibrated) -> None:
    run_seeds: set[int] = set()
    for meta in tiny_run.glob("iteration_*/metadata.json"):
        run_seeds |= {m["render_seed"] for m in json.loads(meta.read_text()) if m["render_seed"]}
    assert run_seeds
    fresh: list[int] = []
    for key in ("implied", "mixture", "best_point", "top_k_pool"):
        fresh += calibrated["validation"][key]["render_seeds"]
    assert not run_seeds & set(fresh)
    assert len(set(fresh)) == len(fresh)


def test_same_seed_same_calibration(tiny_run: Path, calibrated, tmp_path: Path) -> None:
    again = calibrate_experiment(tiny_run, out=tmp_path / "c.json", plot=False)
    assert again["implied_distribution"] == calibrated["implied_distribution"]
    assert again["validation"]["implied"]["mmd2"] == calibrated["validation"]["implied"]["mmd2"]
    other = calibrate_experiment(tiny_run, seed=123, out=tmp_path / "d.json", plot=False)
    assert (
        other["validation"]["implied"]["render_seeds"]
        != calibrated["validation"]["implied"]["render_seeds"]
    )


def test_other_embedder_refused(tiny_run: Path) -> None:
    ctx = CalibrationContext.from_run(tiny_run)
    ctx.run.manifest["embedder"]["fingerprint"] = "handcrafted:other"
    with pytest.raises(CalibrationError, match="fingerprint"):
        ctx.get_evaluator()


def test_cli_exit_codes(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.json"
    assert calibrate_main([str(tiny_run), "--out", str(out), "--no-plot", "-q"]) == 0
    assert json.loads(out.read_text())["version"] == 1
    assert calibrate_main([str(tmp_path / "missing")]) == 2
    assert calibrate_main([str(tiny_run), "--n-samples", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        calibrate_main([str(tiny_run), "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not an experiment folder" in err
    assert all(line.startswith("error:") for line in err.strip().splitlines())
