"""Does population calibration recover the distribution the targets come from?

For each target distribution (the design's ``real`` and the two extra targets of
:mod:`benchmarks.compare_acquisitions`) and seed, on the runs of that benchmark (same targets and
iteration 0 for every method; standard budget: 21 + 10 × 8 parameter sets × 3 renders, the
offline ``handcrafted`` embedder, 128 px):

* **psi** — the population fit through the composite surrogate
  (:mod:`bo_voids.calibration.population`) of the ``composite_pop`` run (composite EI with one
  population slot per batch), with its 90 % intervals;
* **mixture** — the simplex mixture's implied distribution on the same run (independently seeded
  components: cross pairs sharing a render seed dropped);
* **best_point** — the run's recommended single set (a distribution with zero spread);
* **sbi_npe** — sbi's neural posterior estimation trained on the random-search run of the same
  seed (the same number of simulations: every image is one ``(θ, x)`` pair), its posteriors
  pooled over the target images (``p̂(θ) = mean_i p(θ | x_i)``), summarised in the config's form
  (shape frequencies, mean and std of each numeric parameter);
* **realised** (reference) — the empirical distribution of the target sets actually drawn: what
  a perfect method fitted to these targets could give, so its error against the nominal
  distribution is the floor any method meets.

Figures per (method, target, seed): mean error and std error against the nominal distribution and
against the realised target sets (|error| / range averaged over the numeric parameters), shape
total variation, the fresh in-sample and held-out (leave-one-cluster-out, refitted per fold)
MMD² with their cluster permutation p-values and whether the held-out MMD² is inside the
simulated null band (fresh draws of the true distribution, same shape), and for ψ the coverage
of the true components by its intervals. Medians and interquartile ranges over seeds, paired
two-sided Wilcoxon tests of ψ against each other method (Holm-corrected per target and figure).

Usage::

    python -m benchmarks.calibration_recovery [--seeds 10] [--targets real,small_dense,...]
        [--work-dir experiments/bench/compare] [--out benchmarks/results/calibration_recovery]

Each (target, seed) is cached in ``<work-dir>/<target>/calibration/seed_<s>.json`` (rerunning
resumes); missing benchmark runs are run first through :mod:`benchmarks.compare_acquisitions`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from benchmarks._results import cli_args, print_table, write_results
from benchmarks.compare_acquisitions.run import run_one
from benchmarks.compare_acquisitions.specs import ROOT, TARGETS, RunSpec
from benchmarks.compare_acquisitions.summary import holm
from bo_voids._io import atomic_write_json
from bo_voids.calibration import (
    CalibrationContext,
    calibrate_experiment,
    distribution_errors,
    implied_distribution,
    point_distribution,
)
from bo_voids.calibration.validate import (
    FoldPlan,
    RenderRequest,
    default_pool_sets,
    in_sample_band,
    render_null_pool,
    render_requests,
    score_held_out,
    score_sample,
    target_folds,
)
from bo_voids.scoring import TARGET_TYPES
from bo_voids.seeding import derive_seed, rng
from bo_voids.state import load_experiment

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration_recovery"
DEFAULT_CONFIG = ROOT / "configs" / "experiment_config.yaml"
METHODS = ("psi", "psi_on_composite_ei", "mixture", "best_point", "sbi_npe", "realised")
FIGURES = (
    "mean_err_nominal",
    "std_err_nominal",
    "tv_nominal",
    "mean_err_realised",
    "std_err_realised",
    "tv_realised",
    "in_sample_mmd2",
    "in_sample_p",
    "held_out_mmd2",
    "held_out_p",
    "held_out_inside",
)
#: Figures tested (lower is better) ψ vs every other method.
TESTED = ("mean_err_nominal", "mean_err_realised", "std_err_nominal", "held_out_mmd2")


def _spec(target: str, method: str, seed: int, args: argparse.Namespace) -> RunSpec:
    return RunSpec(
        target,
        method,
        seed,
        args.iterations,
        args.image_size,
        args.config,
        args.work_dir,
        args.smoke,
    )


def _errors(est: Mapping[str, Any], ref: Mapping[str, Any], bounds: Any, tag: str) -> dict:
    e = distribution_errors(est, ref, bounds)
    return {
        f"mean_err_{tag}": e["mean_error"],
        f"std_err_{tag}": e["std_error"],
        f"tv_{tag}": e["shape_tv"],
    }


@dataclass
class _FoldFit:
    distribution: dict[str, Any]
    n_train_images: int

    def fold_summary(self) -> dict[str, Any]:
        return {"n_train_images": self.n_train_images, "distribution": self.distribution}


def _npe_population(
    ctx: CalibrationContext, random_dir: Path, seed: int, max_epochs: int
) -> tuple[Any, np.ndarray]:
    """Train NPE on the random run (one image = one simulation); return a sampler per image."""
    import torch

    from benchmarks.compare_acquisitions.sbi_peer import train_npe

    run = load_experiment(random_dir)
    thetas, xs = [], []
    for it in run.iterations:
        for row, m in enumerate(it.metadata):
            if m["dataset_type"] in TARGET_TYPES or m.get("params") is None:
                continue
            thetas.append(ctx.space.encode(m["params"]))
            xs.append(it.embeddings[row])
    per_image = []
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "bench-npe-pop") % 2**63)
        posterior = train_npe(np.asarray(thetas), np.asarray(xs), max_epochs)
        for x in ctx.targets:
            s = posterior.sample(
                (200,), x=torch.as_tensor(x, dtype=torch.float32), show_progress_bars=False
            ).numpy()
            per_image.append(np.clip(s, 0.0, 1.0))
    return posterior, np.stack(per_image)  # (M, 200, d)


def _pooled_distribution(ctx: CalibrationContext, samples: np.ndarray) -> dict[str, Any]:
    """Config-form summary (frequencies, mean, std) of pooled posterior samples."""
    decoded = ctx.space.decode_many(samples.reshape(-1, samples.shape[-1]))
    return implied_distribution(
        [(p, 1.0) for p in decoded], ctx.config.param_bounds, std_correction="none"
    )


def _sbi_row(
    ctx: CalibrationContext,
    random_dir: Path,
    seed: int,
    n_sets: int,
    spf: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    _, samples = _npe_population(ctx, random_dir, seed, args.npe_epochs)
    dist = _pooled_distribution(ctx, samples)
    reps = ctx.design.cluster_size
    space = ctx.space
    from bo_voids.calibration import typed_distribution

    draws = space.sample(typed_distribution(dist, ctx.config), n_sets, rng(seed, "bench-sbi"))
    requests = [RenderRequest("sbi", tuple(dict(p) for p in draws), reps)]
    folds, scheme = target_folds(ctx.design, 5, seed)
    plans = []
    for fold in folds:
        fdist = _pooled_distribution(ctx, samples[~fold.held_out])
        fd = space.sample(
            typed_distribution(fdist, ctx.config), spf, rng(seed, "bench-sbi", fold.index)
        )
        req = RenderRequest(f"sbi_held_out_{fold.index}", tuple(dict(p) for p in fd), reps)
        plans.append(FoldPlan(fold, _FoldFit(fdist, int((~fold.held_out).sum())), req))
        requests.append(req)
    requests.append(render_null_pool(ctx, default_pool_sets(max(n_sets, spf)), seed))
    rendered = render_requests(ctx, requests, derive_seed(seed, "bench-sbi"))
    pool = rendered["null_pool"]
    band = in_sample_band(ctx, n_sets, reps, pool, seed)
    ins = score_sample(ctx, rendered["sbi"], band, seed=seed)
    held = score_held_out(
        ctx, plans, rendered, scheme=scheme, sets_per_fold=spf, pool=pool, seed=seed
    )
    return {
        "distribution": dist,
        "in_sample_mmd2": ins.mmd2,
        "in_sample_p": ins.p_value,
        "held_out_mmd2": held.mmd2,
        "held_out_p": held.p_value,
        "held_out_inside": held.inside_noise_floor,
    }


def run_seed(target: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every method's figures on one (target, seed); cached as JSON."""
    cache = Path(args.work_dir) / target / "calibration" / f"seed_{seed}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("args") == _cache_key(args):
            return cached
    t0 = time.perf_counter()
    pop_spec = _spec(target, "composite_pop", seed, args)
    run_one(pop_spec)
    rand_spec = _spec(target, "random", seed, args)
    if args.sbi:
        run_one(rand_spec)
    res = calibrate_experiment(
        pop_spec.run_dir, out=cache.with_name(f"calibration_seed_{seed}.json"), plot=False
    )
    t_cal = time.perf_counter() - t0
    ctx = CalibrationContext.from_run(pop_spec.run_dir)
    bounds = ctx.config.param_bounds
    truth = res["truth"]
    realised = ctx.realised_distribution()
    val = res["validation"]
    pop = res["population"]
    pv = pop["validation"]

    def row(dist: Mapping[str, Any], in_sample: Any, held: Any, **extra: Any) -> dict[str, Any]:
        """A method's errors against both references and its fresh validation figures."""
        return {
            **_errors(dist, truth, bounds, "nominal"),
            **_errors(dist, realised, bounds, "realised"),
            "in_sample_mmd2": in_sample["mmd2"] if in_sample else math.nan,
            "in_sample_p": in_sample["p_value"] if in_sample else math.nan,
            "held_out_mmd2": held["mmd2"] if held else math.nan,
            "held_out_p": held["p_value"] if held else math.nan,
            "held_out_inside": held["inside_noise_floor"] if held else None,
            "distribution": dist,
            **extra,
        }

    best = point_distribution(ctx.observation(val["best_point"]["param_set_id"]).params, bounds)
    rows: dict[str, dict[str, Any]] = {
        "psi": row(
            pop["psi"],
            pv["in_sample"],
            pv["held_out"],
            coverage_nominal=pop["coverage"]["nominal"],
            coverage_realised=pop["coverage"]["realised"],
            intervals=pop["intervals"],
        ),
        "mixture": row(res["implied_distribution"], val["implied"], val["held_out"]),
        "best_point": row(best, val["best_point"], None),
        "realised": {
            **_errors(realised, truth, bounds, "nominal"),
            **_errors(realised, realised, bounds, "realised"),
            "distribution": realised,
        },
    }
    for method in [m for m in args.ablation_runs.split(",") if m]:
        rows[f"psi_on_{method}"] = _psi_errors_on(target, method, seed, args, truth, realised)
    t_sbi = time.perf_counter()
    if args.sbi:
        n_sets = val["n_param_sets"]
        spf = val["held_out"]["sets_per_fold"]
        sbi = _sbi_row(ctx, rand_spec.run_dir, seed, n_sets, spf, args)
        rows["sbi_npe"] = {
            **_errors(sbi["distribution"], truth, bounds, "nominal"),
            **_errors(sbi["distribution"], realised, bounds, "realised"),
            **sbi,
        }
    out = {
        "target": target,
        "seed": seed,
        "args": _cache_key(args),
        "methods": rows,
        "n_simulations_sets": len(ctx.observations),
        "seconds": {
            "calibration": t_cal,
            "population_fit": pop["fit"]["seconds"],
            "sbi": time.perf_counter() - t_sbi,
        },
    }
    atomic_write_json(cache, out)
    return out


#: Bumped when a method changes, so cached seeds are recomputed.
BENCH_VERSION = 2


def _psi_errors_on(
    target: str,
    method: str,
    seed: int,
    args: argparse.Namespace,
    truth: Mapping[str, Any],
    realised: Mapping[str, Any],
) -> dict[str, Any]:
    """Ablation: ψ fitted (no intervals, no renders) on another method's run of this seed."""
    from bo_voids.calibration.population import build_emulator

    spec = _spec(target, method, seed, args)
    run_one(spec)
    ctx = CalibrationContext.from_run(spec.run_dir)
    emu, _ = build_emulator(ctx, seed)
    _, fit = emu.fit_population(seed=seed)
    dist = fit.psi.to_distribution()
    bounds = ctx.config.param_bounds
    return {
        **_errors(dist, truth, bounds, "nominal"),
        **_errors(dist, realised, bounds, "realised"),
        "distribution": dist,
    }


def _cache_key(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "version": BENCH_VERSION,
        "iterations": args.iterations,
        "image_size": args.image_size,
        "sbi": bool(args.sbi),
        "ablation_runs": args.ablation_runs,
        "npe_epochs": args.npe_epochs,
        "smoke": bool(args.smoke),
    }


def _num(value: Any) -> float:
    """A JSON figure as a float (``None``, the JSON form of NaN, as NaN)."""
    return math.nan if value is None else float(value)


def _median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not v.size:
        return math.nan, math.nan, math.nan
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return float(med), float(q1), float(q3)


def per_parameter(
    results: Sequence[Mapping[str, Any]], targets: Sequence[str], config: str | Path
) -> list[dict[str, Any]]:
    """Median per-parameter errors of every method's distribution, per target and reference."""
    from bo_voids.config import load_config

    out = []
    for target in targets:
        res = [r for r in results if r["target"] == target]
        methods = [m for m in METHODS if all(m in r["methods"] for r in res)]
        cfg = load_config(config, check_paths=False)
        bounds = cfg.param_bounds
        nominal = TARGETS.get(target) or {
            k: v.to_yaml() for k, v in cfg.param_distributions["real"].items()
        }
        for ref in ("nominal", "realised"):
            for m in methods:
                if m == "realised" and ref == "realised":
                    continue
                per: dict[str, list[float]] = {}
                for r in res:
                    truth = (
                        nominal if ref == "nominal" else r["methods"]["realised"]["distribution"]
                    )
                    e = distribution_errors(r["methods"][m]["distribution"], truth, bounds)
                    for name, v in e["per_parameter"].items():
                        for part, x in v.items():
                            label = name if part == "tv" else f"{name}.{part.split('_')[0]}"
                            per.setdefault(label, []).append(float(x))
                row: dict[str, Any] = {"target": target, "reference": ref, "method": m}
                row.update({k: float(np.median(v)) for k, v in per.items()})
                out.append(row)
    return out


def summarise(results: Sequence[Mapping[str, Any]], target: str) -> dict[str, Any]:
    """Per-method medians (IQR), shares, coverage and paired tests for one target."""
    res = [r for r in results if r["target"] == target]
    methods = [m for m in METHODS if all(m in r["methods"] for r in res)]
    table = []
    for m in methods:
        row: dict[str, Any] = {"target": target, "method": m, "seeds": len(res)}
        for fig in FIGURES:
            vals = [r["methods"][m].get(fig) for r in res]
            if fig == "held_out_inside":
                known = [v for v in vals if v is not None]
                row["held_out_inside_share"] = float(np.mean(known)) if known else math.nan
                continue
            med, q1, q3 = _median_iqr([_num(v) for v in vals])
            row[fig] = med
            row[f"{fig}_iqr"] = f"{q1:.3f}–{q3:.3f}" if math.isfinite(med) else ""
        if m == "psi":
            for ref in ("nominal", "realised"):
                cov = [r["methods"]["psi"][f"coverage_{ref}"] for r in res]
                cov = [c for c in cov if c]
                keys = sorted(cov[0]) if cov else []
                row[f"coverage_{ref}"] = (
                    float(np.mean([np.mean([c[k] for k in keys]) for c in cov]))
                    if cov
                    else math.nan
                )
        table.append(row)
    tests = []
    for fig in TESTED:
        pairs = []
        for m in methods:
            if m in ("psi", "realised"):
                continue
            a = np.array([_num(r["methods"]["psi"].get(fig)) for r in res])
            b = np.array([_num(r["methods"][m].get(fig)) for r in res])
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() < 5 or np.allclose(a[ok], b[ok]):
                continue
            p = float(wilcoxon(a[ok], b[ok], alternative="two-sided").pvalue)
            pairs.append(
                {
                    "target": target,
                    "figure": fig,
                    "psi_vs": m,
                    "n": int(ok.sum()),
                    "median_diff": float(np.median(a[ok] - b[ok])),
                    "psi_better_share": float(np.mean(a[ok] < b[ok])),
                    "p": p,
                }
            )
        for t, ph in zip(pairs, holm([t["p"] for t in pairs]), strict=True):
            t["p_holm"] = ph
        tests += pairs
    coverage_by_component: dict[str, float] = {}
    cov = [r["methods"]["psi"]["coverage_nominal"] for r in res if "psi" in r["methods"]]
    for key in sorted(cov[0]) if cov else []:
        coverage_by_component[key] = float(np.mean([c[key] for c in cov]))
    return {"table": table, "tests": tests, "coverage_nominal": coverage_by_component}


COLUMNS = {
    "target": "target",
    "method": "method",
    "seeds": "n",
    "mean_err_nominal": "mean err (nominal)",
    "std_err_nominal": "std err (nominal)",
    "tv_nominal": "shape TV (nominal)",
    "mean_err_realised": "mean err (realised)",
    "std_err_realised": "std err (realised)",
    "tv_realised": "shape TV (realised)",
    "in_sample_mmd2": "fresh MMD² in-sample",
    "held_out_mmd2": "fresh MMD² held-out",
    "held_out_p": "held-out p",
    "held_out_inside_share": "held-out inside band",
    "coverage_nominal": "90% interval coverage (nominal)",
}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibration_recovery")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--npe-epochs", type=int, default=200)
    p.add_argument("--no-sbi", dest="sbi", action="store_false", help="skip the sbi baseline")
    p.add_argument(
        "--ablation-runs",
        default="composite_ei",
        help="methods of the acquisition benchmark whose runs also get a psi fit (errors only)",
    )
    p.add_argument("--work-dir", default=str(ROOT / "experiments" / "bench" / "compare"))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--smoke", action="store_true", help="tiny settings (tests)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every (target, seed), then write the tables."""
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.iterations, args.image_size, args.seeds, args.npe_epochs = 2, 48, 1, 5
    targets = [t for t in args.targets.split(",") if t]
    t0 = time.perf_counter()
    results = []
    for target in targets:
        for seed in range(args.seeds):
            r = run_seed(target, seed, args)
            results.append(r)
            psi = r["methods"]["psi"]
            print(
                f"{target} seed {seed}: psi mean err {psi['mean_err_nominal']:.3f} "
                f"(realised {psi['mean_err_realised']:.3f}), held-out MMD² "
                f"{psi['held_out_mmd2']:.4f}",
                flush=True,
            )
    summaries = {t: summarise(results, t) for t in targets}
    rows = [row for t in targets for row in summaries[t]["table"]]
    tests = [row for t in targets for row in summaries[t]["tests"]]
    meta = {
        "args": cli_args(args),
        "wall_s": time.perf_counter() - t0,
        "coverage_nominal_by_component": {t: summaries[t]["coverage_nominal"] for t in targets},
    }
    tag = "_".join(targets)
    print_table(rows, COLUMNS)
    write_results(
        f"table_{tag}",
        rows,
        out_dir=args.out,
        meta=meta,
        columns=COLUMNS,
        markdown_title="Population calibration: recovery of the target distribution "
        f"(medians over seeds; {args.iterations} iterations, {args.image_size} px)",
        notes=[
            "Errors are |estimate − truth| / range averaged over the 5 numeric parameters "
            "(mean err, std err) and the total variation of the shape probabilities, against the "
            "nominal distribution and against the realised target sets. Fresh MMD²: a new "
            "sample of each distribution, rendered like the target clusters, against all "
            "targets (in-sample) or the held-out cluster after refitting on the others "
            "(leave-one-cluster-out; held-out p: stratified cluster permutation test; inside "
            "band: below the q95 of fresh draws of the true distribution). `realised` is the "
            "floor: the drawn target sets' own distribution.",
        ],
    )
    if tests:  # paired tests need ≥ 5 seeds
        write_results(
            f"tests_{tag}",
            tests,
            out_dir=args.out,
            meta=meta,
            markdown_title="Paired two-sided Wilcoxon tests of psi against each method (Holm)",
        )
    write_results(
        f"params_{tag}",
        per_parameter(results, targets, args.config),
        out_dir=args.out,
        meta=meta,
        markdown_title="Per parameter: median |error| / range over seeds (shape: TV)",
        notes=[
            "`nominal`: against the distribution the targets were drawn from; `realised`: "
            "against the drawn target sets' own distribution."
        ],
    )
    _plot(results, targets, Path(args.out) / f"recovery_{tag}.png")
    return {"summaries": summaries, "results": results}


def _plot(results: Sequence[Mapping[str, Any]], targets: Sequence[str], path: Path) -> None:
    from matplotlib.figure import Figure

    from bo_voids._io import atomic_write_bytes
    from bo_voids.plots import figure_to_png

    figs = ("mean_err_nominal", "std_err_nominal", "mean_err_realised", "held_out_mmd2")
    fig = Figure(figsize=(4.0 * len(figs), 3.4 * len(targets)))
    for i, target in enumerate(targets):
        res = [r for r in results if r["target"] == target]
        methods = [m for m in METHODS if all(m in r["methods"] for r in res)]
        for j, f in enumerate(figs):
            ax = fig.add_subplot(len(targets), len(figs), i * len(figs) + j + 1)
            data = [
                [_num(r["methods"][m].get(f)) for r in res]
                for m in methods
                if not (m == "realised" and f != "mean_err_nominal" and f != "std_err_nominal")
            ]
            labels = [
                m
                for m in methods
                if not (m == "realised" and f != "mean_err_nominal" and f != "std_err_nominal")
            ]
            data = [[v for v in d if math.isfinite(v)] or [math.nan] for d in data]
            ax.boxplot(data, tick_labels=labels)
            ax.set_title(f"{target}: {f}", fontsize=9)
            ax.tick_params(axis="x", labelsize=7, rotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, figure_to_png(fig))


if __name__ == "__main__":
    main()
