"""The population section of ``calibration.json``: ψ, intervals, fresh validation, outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bo_voids.calibration import (
    MARGINALS_PLOT,
    CalibrationContext,
    calibrate_experiment,
    distribution_from_yaml,
)
from bo_voids.calibration.population import build_emulator


def test_population_section(tiny_run: Path, calibrated: dict[str, Any]) -> None:
    pop = calibrated["population"]
    assert pop is not None and calibrated["population_error"] is None
    ctx = CalibrationContext.from_run(tiny_run)
    distribution_from_yaml(pop["psi"], ctx.config)  # pastes into the config as it is
    names = {p.name for p in ctx.space.parameters}
    assert set(pop["psi"]) == names == set(pop["intervals"])
    bounds = ctx.config.param_bounds
    for name, value in pop["psi"].items():
        for part in value:
            lo, hi = pop["intervals"][name][part]
            assert lo <= hi
            if part == "mean":
                assert bounds[name].low <= lo and hi <= bounds[name].high
    assert pop["interval_level"] == 0.9
    assert "real:" in pop["yaml_snippet"]
    held = pop["validation"]["held_out"]
    assert held["available"] and held["folds"]
    assert all("population" in f for f in held["folds"])
    assert set(pop["comparison"]) == {"population", "mixture", "best_point"}
    # simulated targets: errors against both references, coverage of the truth
    assert set(pop["errors"]) == {"nominal", "realised"}
    assert set(pop["coverage"]["nominal"]) >= {"void_count.mean", "void_shape.circle"}
    assert calibrated["errors"]["population"] == pop["errors"]["nominal"]
    assert Path(calibrated["marginals_plot"]) == tiny_run / MARGINALS_PLOT
    assert (tiny_run / MARGINALS_PLOT).stat().st_size > 1000


def test_population_renders_are_fresh(tiny_run: Path, calibrated: dict[str, Any]) -> None:
    run_seeds: set[int] = set()
    for meta in tiny_run.glob("iteration_*/metadata.json"):
        run_seeds |= {m["render_seed"] for m in json.loads(meta.read_text()) if m["render_seed"]}
    val = calibrated["population"]["validation"]
    fresh = list(val["in_sample"]["render_seeds"])
    fresh += [s for f in val["held_out"]["folds"] for s in f["render_seeds"]]
    assert fresh and not run_seeds & set(fresh)
    mixture = set(calibrated["validation"]["implied"]["render_seeds"])
    assert not mixture & set(fresh) and len(set(fresh)) == len(fresh)


def test_population_is_reproducible_and_optional(
    tiny_run: Path, calibrated: dict[str, Any], tmp_path: Path
) -> None:
    ctx = CalibrationContext.from_run(tiny_run)
    emu, source = build_emulator(ctx, seed=0)
    assert source in ("stored state", "refitted") and len(emu.sets) == len(ctx.observations)
    off = calibrate_experiment(tiny_run, out=tmp_path / "c.json", plot=False, population=False)
    assert off["population"] is None and "disabled" in off["population_error"]
    assert off["implied_distribution"] == calibrated["implied_distribution"]


@pytest.mark.slow
def test_population_same_seed_same_psi(tiny_run: Path, calibrated: dict[str, Any], tmp_path):
    again = calibrate_experiment(tiny_run, out=tmp_path / "again.json", plot=False)
    assert again["population"]["psi"] == calibrated["population"]["psi"]
    assert again["population"]["intervals"] == calibrated["population"]["intervals"]


def test_surrogate_cross_validation_and_psi_pairplot(
    tiny_run: Path, calibrated: dict[str, Any]
) -> None:
    import numpy as np

    from bo_voids.calibration.diagnostics import CV_PLOT, PAIRPLOT
    from bo_voids.report import write_report

    cv = calibrated["surrogate_cv"]
    assert cv is not None and cv["n_folds"] >= 2
    Y, M, S = (np.asarray(cv[k]) for k in ("observed", "predicted", "predictive_sd"))
    assert Y.shape == M.shape == S.shape == (cv["n_sets"], len(cv["summaries"]))
    assert np.isfinite(M).all() and (S > 0).all()  # every set was predicted while held out
    for name, stats in cv["per_summary"].items():
        resid = Y[:, cv["summaries"].index(name)] - M[:, cv["summaries"].index(name)]
        assert stats["rmse"] == pytest.approx(float(np.sqrt(np.mean(resid**2))))
        assert 0.0 <= stats["coverage_2sd"] <= 1.0
    assert (tiny_run / CV_PLOT).stat().st_size > 1000
    assert (tiny_run / PAIRPLOT).stat().st_size > 1000
    html = write_report(tiny_run, tiny_run / "cv_report.html").read_text(encoding="utf-8")
    assert 'id="fig-psi-pairplot"' in html and 'id="fig-surrogate-cv"' in html
    assert '<table id="surrogate-cv">' in html and "Surrogate diagnostics" in html


def test_emulator_sd_scale_is_the_rms_standardised_residual_floored_at_one() -> None:
    from bo_voids.calibration.diagnostics import emulator_sd_scale

    gen = np.random.default_rng(0)
    n = 4000
    sd = np.ones((n, 3))
    predicted = np.zeros((n, 3))
    # held-out errors twice the predictive sd, equal to it, and half of it
    observed = gen.normal(size=(n, 3)) * np.array([2.0, 1.0, 0.5])
    cv = {"observed": observed, "predicted": predicted, "predictive_sd": sd}
    scale = emulator_sd_scale(cv)  # type: ignore[arg-type]
    np.testing.assert_allclose(scale, [2.0, 1.0, 1.0], atol=0.05)
    assert scale[2] == 1.0  # an over-cautious emulator keeps its own width


def test_identifiability_flags_what_the_head_cannot_predict() -> None:
    from bo_voids.answer import answer_lines
    from bo_voids.calibration.population import identifiability

    settings = {
        "head": {
            "targets": ["void_shape=circle", "void_shape=ellipse", "void_count", "imaging_gamma"],
            "cv_r2": [0.02, 0.3, 0.05, None],
        }
    }
    ident = identifiability(settings)
    assert ident is not None
    # a categorical counts by its best level; a missing R² counts as not identified
    assert ident["held_out_r2"]["void_shape"] == 0.3
    assert ident["not_identified"] == ["void_count", "imaging_gamma"]
    assert identifiability({}) is None
    lines = answer_lines(
        {"population": {"psi": {"void_count": {"mean": 8.0, "std": 2.0}}, "identifiability": ident}}
    )
    assert any("Not identifiable" in x and "void_count, imaging_gamma" in x for x in lines)
