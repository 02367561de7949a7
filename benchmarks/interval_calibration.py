"""Simulation-based calibration of the population intervals ψ, emulator layer (cheap).

The run's composite surrogate stands in for the generator: for each dataset a true population
ψ* is drawn from a broad prior, target parameter sets θ_c ~ p_ψ*, and their cluster-mean
summaries f(θ_c) + N(0, V(θ_c)) + N(0, Σ_within / r) are simulated through the surrogate's
posterior mean f and variance V (the population model reads V as spread of new cluster means, so
the simulation carries it; ``--no-emulator-noise`` drops it). No rendering, no embedding. ψ is
then fitted exactly as the calibration fits it
(:func:`bo_voids.surrogates.population.fit_population`) and its intervals computed by each
method of :func:`~bo_voids.surrogates.population.population_intervals` (``laplace``,
``bootstrap``). This layer checks the inference alone (the emulator is the simulator, so there
is no misspecification); the end-to-end layer (rendering, embedding,
optimiser, fit) is ``benchmarks/calibration_recovery.py``.

Scenarios: ``clustered`` (the design's 5 target sets × 3 renders) and ``folder`` (15 i.i.d.
images, one render each). Reported per component and method: expected coverage at 50/80/90/95 %
with Clopper–Pearson 95 % intervals, and the rank of the truth among the ψ draws (a histogram of
10 bins; flat when calibrated; Talts et al. 2018).

Resumable: each dataset's outcome is appended to ``--cache`` (JSON lines) and skipped on rerun.

Usage::

    python -m benchmarks.interval_calibration --experiment experiments/quickstart
        [--datasets 100] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._results import cli_args, print_table, write_results
from bo_voids.calibration.population import build_emulator
from bo_voids.calibration.validate import CalibrationContext
from bo_voids.seeding import derive_seed
from bo_voids.state import load_experiment
from bo_voids.statistics.intervals import COVERAGE_LEVELS, coverage, rank_statistic
from bo_voids.surrogates.population import (
    INTERVAL_METHODS,
    PopulationParameters,
    fit_population,
    population_intervals,
)

SCENARIOS = {"clustered": (5, 3), "folder": (15, 1)}


def _prior_psi(space: Any, gen: np.random.Generator) -> PopulationParameters:
    """A broad prior of populations: means in the middle 70 %, stds 4-20 % of each range."""
    probs, means, stds = {}, {}, {}
    for p in space.parameters:
        if p.kind == "categorical":
            w = gen.dirichlet(np.full(len(p.choices), 2.0))
            probs[p.name] = {c: float(x) for c, x in zip(p.choices, w, strict=True)}
        else:
            span = float(p.high) - float(p.low)
            means[p.name] = float(p.low + span * gen.uniform(0.15, 0.85))
            stds[p.name] = float(span * gen.uniform(0.04, 0.2))
    return PopulationParameters(probs, means, stds)


def _one(
    emu: Any, scenario: str, index: int, seed: int, n_draws: int, emulator_noise: bool
) -> dict[str, Any]:
    n_clusters, reps = SCENARIOS[scenario]
    gen = np.random.default_rng(derive_seed(seed, "interval_calibration", scenario, index))
    space = emu.surrogate.space
    truth = _prior_psi(space, gen)
    thetas = space.sample(truth.to_typed(), n_clusters, gen)
    raw = np.stack([space.to_raw(t) for t in thetas])
    X = torch.as_tensor(emu.surrogate.encoder.to_features(raw), dtype=torch.float64)
    with torch.no_grad():
        f = emu.surrogate.mean_function()(X).numpy()
        # the model reads the emulator's posterior variance as spread of new cluster means, so
        # the simulated clusters carry it too (else the fitted spread is biased low by design)
        v = emu.surrogate.variance_function()(X).numpy() if emulator_noise else 0.0 * f
    f = f + np.sqrt(np.clip(v, 0.0, None)) * gen.standard_normal(f.shape)
    chol = np.linalg.cholesky(emu.within_cov / reps + 1e-9 * np.eye(emu.within_cov.shape[0]))
    means = f + gen.standard_normal(f.shape) @ chol.T
    sizes = np.full(n_clusters, float(reps))
    model = emu.population_model(n_draws=n_draws, seed=seed)
    t0 = time.perf_counter()
    fit = fit_population(model, means, sizes, maxiter=200)
    t_fit = time.perf_counter() - t0
    truth_flat = truth.flat()
    out: dict[str, Any] = {"scenario": scenario, "index": index, "fit_s": t_fit, "methods": {}}
    for method in INTERVAL_METHODS:
        t0 = time.perf_counter()
        population_intervals(
            model, fit, means, sizes, n_draws=400, seed=index, method=method, level=0.9
        )
        assert fit.draws is not None
        flat = np.array([list(model.parameters(d).flat().values()) for d in fit.draws])
        keys = list(fit.psi.flat())
        per = {}
        for j, key in enumerate(keys):
            col = flat[:, j]
            per[key] = {
                "rank": rank_statistic(truth_flat[key], col),
                "covered": {
                    f"{lv:g}": bool(
                        np.quantile(col, (1 - lv) / 2)
                        <= truth_flat[key]
                        <= np.quantile(col, (1 + lv) / 2)
                    )
                    for lv in COVERAGE_LEVELS
                },
            }
        out["methods"][method] = {"seconds": time.perf_counter() - t0, "components": per}
    return out


def _summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario in SCENARIOS:
        recs = [r for r in records if r["scenario"] == scenario]
        if not recs:
            continue
        for method in INTERVAL_METHODS:
            recs = [r for r in records if r["scenario"] == scenario and method in r["methods"]]
            if not recs:
                continue
            keys = list(recs[0]["methods"][method]["components"])
            for key in keys:
                comps = [r["methods"][method]["components"][key] for r in recs]
                cov = coverage(
                    {lv: [c["covered"][f"{lv:g}"] for c in comps] for lv in COVERAGE_LEVELS}
                )
                ranks = np.array([c["rank"] for c in comps])
                hist, _ = np.histogram(ranks[np.isfinite(ranks)], bins=10, range=(0, 1))
                row: dict[str, Any] = {"scenario": scenario, "method": method, "component": key}
                for lv in COVERAGE_LEVELS:
                    c = cov[f"{lv:g}"]
                    row[f"cov{int(lv * 100)}"] = c["rate"]
                    row[f"cov{int(lv * 100)}_ci"] = f"[{c['lo']:.2f}, {c['hi']:.2f}]"
                row["rank_hist"] = " ".join(str(int(h)) for h in hist)
                row["n"] = len(comps)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiment", default="experiments/quickstart", help="a finished run")
    ap.add_argument("--datasets", type=int, default=100, help="datasets per scenario")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-draws", type=int, default=64, help="QMC draws of the population model")
    ap.add_argument("--cache", default="experiments/.interval_calibration.jsonl")
    ap.add_argument(
        "--no-emulator-noise",
        dest="emulator_noise",
        action="store_false",
        help="simulate cluster means from the surrogate mean only (the model then over-explains)",
    )
    ap.add_argument("--smoke", action="store_true", help="3 datasets per scenario, no files")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ctx = CalibrationContext.from_run(load_experiment(args.experiment))
    emu, source = build_emulator(ctx, args.seed)
    n = 3 if args.smoke else args.datasets
    cache = Path(args.cache)
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if cache.exists() and not args.smoke:
        for line in cache.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["scenario"], rec["index"])] = rec
    records = []
    t0 = time.perf_counter()
    for scenario in SCENARIOS:
        for i in range(n):
            if (scenario, i) not in done:
                rec = _one(emu, scenario, i, args.seed, args.n_draws, args.emulator_noise)
                if not args.smoke:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    with cache.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                done[(scenario, i)] = rec
            records.append(done[(scenario, i)])
    rows = _summarise(records)
    print_table(rows, ["scenario", "method", "component", "cov50", "cov80", "cov90", "cov95"])
    if not args.smoke:
        fit_s = float(np.mean([r["fit_s"] for r in records]))
        write_results(
            "interval_calibration",
            rows,
            meta={
                "args": cli_args(args),
                "emulator": source,
                "fit_seconds_mean": fit_s,
                "interval_seconds_mean": {
                    m: float(np.mean([r["methods"][m]["seconds"] for r in records]))
                    for m in INTERVAL_METHODS
                },
                "wall_seconds_this_call": time.perf_counter() - t0,
            },
            columns=[
                "scenario",
                "method",
                "component",
                "cov50",
                "cov80",
                "cov90",
                "cov90_ci",
                "cov95",
                "rank_hist",
                "n",
            ],
            markdown_title="Population intervals: simulation-based calibration, emulator layer",
            notes=(
                "Truth ψ* from a broad prior; cluster-mean summaries simulated through the run's "
                "surrogate (mean, plus its posterior variance as noise unless "
                "--no-emulator-noise); ψ fitted and its intervals computed as the calibration "
                "does. "
                f"Mean fit {fit_s:.1f} s per dataset. Coverage CIs are Clopper-Pearson 95 %. "
                f"Reproduce: python -m benchmarks.interval_calibration --experiment "
                f"{args.experiment} --datasets {args.datasets} --seed {args.seed}"
            ),
        )
    return rows


if __name__ == "__main__":
    main()
