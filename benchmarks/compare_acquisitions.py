r"""Acquisition functions vs random search vs Optuna: sample efficiency, recovery and cost.

Runs whole experiments (:class:`~bo_voids.pipeline.OptimizationPipeline`) with the same budget for
every method — iteration 0 (the design's real / close / far sets) plus ``--iterations`` iterations
of 8 parameter sets x 3 replications — with every stopping rule disabled, for:

* ``random``: uniform random search (the baseline);
* ``ucb`` / ``ei`` / ``nei``: the BoTorch GP with ``qUCB`` / ``qLogEI`` / ``qLogNEI`` (the
  config's ``bo:`` settings, i.e. what a user gets);
* ``optuna_tpe`` / ``optuna_gp``: Optuna's TPE and GP samplers through the same optimiser
  interface (:mod:`benchmarks.peers`), a user's most likely alternative.

**Paired seeds.** Each (method, target, seed) is its own experiment folder with the same config
seed, so every method renders the same targets and the same iteration 0; this is checked (the
SHA-256 of the iteration-0 embeddings must agree across methods) and reported.

**Targets.** ``real``: the design's ``param_distributions.real``; ``small_dense``: many small,
mid-bright, mostly circular voids spread wide; ``few_large_faint``: a few large, faint, mostly
irregular voids; each replaces ``param_distributions.real`` in the config (and so the 5 simulated
target parameter sets). ``--target-dir PATH`` adds a target made of a folder of images (target
``dir``; parameter recovery is then not available).

**Measured per (method, target, seed, iteration)** (``runs.csv``): best per-set MMD² so far, the
distribution similarity of the top-5 pool and the real set's noise floor (q95, mean); the best
parameter set as the optimiser ranks it at that iteration (the GP: by posterior mean —
``current_best[0]`` of the next proposal, or of the manifest after the last iteration) and its
recovery error per parameter (|best − true mean| / range; shape == modal shape); evaluations used;
wall time of the iteration split into render / embed / propose / write. At the end of each ``ucb``
run (``--calibrate-methods``) :func:`~bo_voids.calibration.calibrate_experiment` fits the implied
parameter distribution; its fresh-render MMD² is compared with the single best point's.

**Fresh re-score.** The best per-set MMD² so far is the minimum of noisy 3-replication scores
(their noise is of the order of the differences between good sets), so it rewards luck as much as
search. Each iteration's recommended set is therefore also re-rendered on ``N_FRESH`` new images
with seeds shared by every method (``fresh_mmd2``): what the user would actually get.

**Summary** (``summary.md`` / ``summary.json``): median and inter-quartile range over seeds; the
iteration at which each method's median best-so-far reaches random search's final median
("speed-up over random"), and per seed; whether the best GP acquisition reaches it by iteration 4
and is ahead of Optuna TPE at every iteration >= 3 (on the best-so-far and on the fresh score);
recovery at the final iteration. Methods run on more seeds than others (the costly ``ei`` /
``nei`` can be given fewer) are summarised on their common seeds, plus a section with all
methods on the seeds they share (see :func:`sections`).
Plots: ``best_so_far_<target>.png`` (median + IQR bands), ``recovery_<target>.png``.

**Resumable, parallel.** Experiment folders live under ``--work-dir`` (default
``experiments/bench/compare_acquisitions_<size>_it<iterations>``, git-ignored); a run whose
``bench_result.json`` exists is skipped, an interrupted one is resumed. Runs go through a process
pool of ``--workers`` processes, one torch / BLAS thread each.

Usage::

    python -m benchmarks.compare_acquisitions --config configs/experiment_config.yaml \\
        --seeds 10 --out benchmarks/results/compare_acquisitions \\
        [--methods random,ucb,ei,nei,optuna_tpe,optuna_gp] \\
        [--targets real,small_dense,few_large_faint] [--extra-seeds 3] \\
        [--extra-methods random,ucb,optuna_tpe] [--target-dir PATH] [--iterations 10] \\
        [--image-size 128] [--workers 2] [--smoke]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "compare_acquisitions"
RESULT_FILE = "bench_result.json"
TIMINGS_FILE = "bench_timings.json"
RESULT_VERSION = 2
#: Fresh images rendered to re-score each recommended parameter set (not seen by the optimiser).
N_FRESH = 12

#: Methods: config overrides, and the peer optimiser injected into the pipeline (if any).
METHODS: dict[str, dict[str, Any]] = {
    "random": {"config": {"optimizer": "random"}},
    "ucb": {"config": {"optimizer": "botorch", "acquisition_function": "ucb"}},
    "ei": {"config": {"optimizer": "botorch", "acquisition_function": "ei"}},
    "nei": {"config": {"optimizer": "botorch", "acquisition_function": "nei"}},
    "optuna_tpe": {"config": {"optimizer": "random"}, "peer": "optuna_tpe"},
    "optuna_gp": {"config": {"optimizer": "random"}, "peer": "optuna_gp"},
}
GP_METHODS: tuple[str, ...] = ("ucb", "ei", "nei")
NUMERIC: tuple[str, ...] = (
    "void_count",
    "base_size",
    "brightness_factor",
    "size_std",
    "position_spread",
)
#: Target distributions that replace ``param_distributions.real`` (``None``: the config's own).
TARGETS: dict[str, dict[str, Any] | None] = {
    "real": None,
    "small_dense": {
        "void_shape": {"circle": 0.7, "ellipse": 0.2, "irregular": 0.1},
        "void_count": {"mean": 16, "std": 2},
        "base_size": {"mean": 8.0, "std": 1.5},
        "brightness_factor": {"mean": 0.5, "std": 0.05},
        "size_std": {"mean": 2.0, "std": 0.7},
        "position_spread": {"mean": 0.7, "std": 0.05},
    },
    "few_large_faint": {
        "void_shape": {"circle": 0.1, "ellipse": 0.25, "irregular": 0.65},
        "void_count": {"mean": 4, "std": 1},
        "base_size": {"mean": 32.0, "std": 3.0},
        "brightness_factor": {"mean": 0.75, "std": 0.03},
        "size_std": {"mean": 4.0, "std": 1.0},
        "position_spread": {"mean": 0.4, "std": 0.08},
    },
}
#: Overrides of smoke mode: tiny images, a small iteration 0 and cheap acquisition optimisation.
SMOKE_CONFIG: dict[str, Any] = {
    "real": {"param_sets": 3, "replications": 2},
    "close": {"param_sets": 4, "replications": 2},
    "far": {"param_sets": 4, "replications": 2},
    "iteration_batch_size": 4,
    "replications_per_iteration": 2,
}
SMOKE_BO: dict[str, Any] = {
    "num_restarts": 1,
    "raw_samples": 16,
    "maxiter": 10,
}


@dataclass(frozen=True)
class RunSpec:
    """One (method, target, seed) experiment of the benchmark (picklable, for the pool)."""

    method: str
    target: str
    seed: int
    config_path: str
    work_dir: str
    iterations: int
    image_size: int
    embedder: str
    smoke: bool
    calibrate: bool
    target_dir: str | None = None

    @property
    def run_dir(self) -> Path:
        """The experiment folder of this run."""
        return Path(self.work_dir) / self.target / self.method / f"seed_{self.seed:03d}"

    def fingerprint(self) -> str:
        """Identity of the settings that shape the result (a stale result is rerun)."""
        d = asdict(self)
        d.pop("work_dir")
        d.pop("config_path")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# One run (executed in a worker process)
# ---------------------------------------------------------------------------------------------


def build_config(spec: RunSpec) -> Any:
    """The validated experiment config of one run.

    Args:
        spec: The run.

    Returns:
        An :class:`~bo_voids.config.ExperimentConfig` with every stopping rule disabled.
    """
    from bo_voids.config import load_config

    cfg = load_config(spec.config_path, check_paths=False)
    raw = cfg.to_dict()
    changes: dict[str, Any] = {
        "experiment_name": f"bench_{spec.target}_{spec.method}_s{spec.seed}",
        "experiment_dir": str(spec.run_dir),
        "base_image_dir": str(_abs(raw["base_image_dir"])),
        "seed": spec.seed,
        "image_size": spec.image_size,
        "embedder": spec.embedder,
        "device": "cpu",
        "executor": "local",
        "max_iterations": spec.iterations,
        "convergence_threshold": -1e9,
        "stop_at_noise_floor": False,
        "early_stop_patience": 100_000,
        "calibrate": False,
        **METHODS[spec.method]["config"],
    }
    if spec.smoke:
        changes.update(SMOKE_CONFIG)
        changes["bo"] = {**raw["bo"], **SMOKE_BO}
        changes["metric"] = {**raw["metric"], "noise_floor_splits": 10, "permutations": 50}
    dist = TARGETS.get(spec.target)
    if dist is not None:
        changes["param_distributions"] = {**raw["param_distributions"], "real": dist}
    if spec.target_dir is not None:
        changes["target_image_dir"] = str(_abs(spec.target_dir))
    return cfg.replace(**changes)


def _abs(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def _make_pipeline_class() -> type:
    """An :class:`OptimizationPipeline` that times every iteration and skips per-iteration plots."""
    from bo_voids.pipeline import OptimizationPipeline
    from bo_voids.state import atomic_write_json, read_json

    class TimedPipeline(OptimizationPipeline):
        """Records cumulative timings after every iteration into ``bench_timings.json``."""

        def __init__(self, config: Any, *, optimizer: Any = None, **kwargs: Any) -> None:
            super().__init__(config, **kwargs)
            if optimizer is not None:
                self.optimizer = optimizer
            self._path = Path(config.experiment_dir) / TIMINGS_FILE
            self._t_start = time.perf_counter()
            self._base: dict[str, float] = dict(self.timings)

        def _plot(self) -> None:  # plots of every iteration are irrelevant to the benchmark
            return None

        def _persist_iteration(self, k: int, *args: Any, **kwargs: Any) -> Any:
            record = super()._persist_iteration(k, *args, **kwargs)
            now = dict(self.timings)
            delta = {key: now.get(key, 0.0) - self._base.get(key, 0.0) for key in now}
            delta["wall"] = time.perf_counter() - self._t_start
            self._base, self._t_start = now, time.perf_counter()
            stored = read_json(self._path) if self._path.exists() else {}
            stored[str(k)] = delta
            atomic_write_json(self._path, stored)
            return record

        def _finish(self) -> Any:
            t0 = time.perf_counter()
            summary = super()._finish()
            stored = read_json(self._path) if self._path.exists() else {}
            stored["final_recommend"] = {"propose": time.perf_counter() - t0}
            atomic_write_json(self._path, stored)
            return summary

    return TimedPipeline


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run (or resume, or skip) one experiment and return its per-iteration rows.

    Args:
        spec: The run.

    Returns:
        ``{'spec', 'fingerprint', 'rows', 'iteration0_sha256', 'calibration', 'seconds'}``.
    """
    from bo_voids.state import atomic_write_json, read_json

    result_path = spec.run_dir / RESULT_FILE
    if result_path.exists():
        old = read_json(result_path)
        if old.get("fingerprint") == spec.fingerprint() and old.get("version") == RESULT_VERSION:
            old["skipped"] = True
            return old
        if old.get("fingerprint") == spec.fingerprint() and old.get("version") == 1:
            # a finished run of the previous format: only the fresh re-scoring is missing
            add_fresh_scores(old["rows"], build_config(spec), spec)
            old["version"] = RESULT_VERSION
            atomic_write_json(result_path, old)
            return old
    t0 = time.perf_counter()
    cfg = build_config(spec)
    optimizer = None
    if "peer" in METHODS[spec.method]:
        from benchmarks.peers import register_peers
        from bo_voids.optimizers import make_optimizer
        from bo_voids.space import SearchSpace

        register_peers()
        optimizer = make_optimizer(
            METHODS[spec.method]["peer"],
            SearchSpace.from_config(cfg),
            seed=cfg.seed,
            top_k=cfg.bo.top_k,
            bandwidth=cfg.metric.bandwidth,
        )
    resume = (spec.run_dir / "experiment.json").exists()
    pipeline_cls = _make_pipeline_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipeline = pipeline_cls(cfg, optimizer=optimizer, resume=resume, log=lambda _m: None)
        pipeline.run_full_experiment()
    calibration = None
    if spec.calibrate:
        calibration = _calibrate(spec.run_dir)
    collected = collect_rows(spec, cfg)
    add_fresh_scores(collected["rows"], cfg, spec)
    out = {
        "version": RESULT_VERSION,
        "spec": asdict(spec),
        "fingerprint": spec.fingerprint(),
        **collected,
        "calibration": calibration,
        "seconds": time.perf_counter() - t0,
        "resumed": resume,
    }
    atomic_write_json(result_path, out)
    return out


def _calibrate(run_dir: Path) -> dict[str, Any]:
    """The implied distribution vs the single best point (fresh renders), flattened."""
    from bo_voids.calibration import calibrate_experiment

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = calibrate_experiment(run_dir, plot=False)
    except Exception as exc:  # an add-on: report, keep the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    val = res["validation"]
    out: dict[str, Any] = {
        "n_components": res["mixture"]["n_components"],
        "noise_floor_q95": val["noise_floor"].get("q95"),
        "implied_beats_best_point": val["implied_beats_best_point"],
    }
    for key in ("implied", "mixture", "best_point", "top_k_pool"):
        out[f"{key}_mmd2"] = val[key]["mmd2"]
        out[f"{key}_p"] = val[key]["p_value"]
    for key, errs in (res.get("errors") or {}).items():
        for m in ("mean_error", "std_error", "shape_tv"):
            if m in errs:
                out[f"{key}_{m}"] = errs[m]
    return out


def add_fresh_scores(rows: list[dict[str, Any]], cfg: Any, spec: RunSpec) -> None:
    """Re-score each iteration's recommended parameter set on fresh renders (in place).

    The best per-set MMD² so far is the minimum of noisy 3-replication scores, so it rewards luck
    as much as search. This adds ``fresh_mmd2``: the MMD² of ``N_FRESH`` new images of the
    recommended set (``current_best[0]``) against the targets, with render seeds that depend only
    on the experiment seed — the same for every method and iteration, so identical
    recommendations get identical scores and methods are compared on common random numbers.

    Args:
        rows: The rows of :func:`collect_rows` (``best_*`` parameters).
        cfg: The run's config.
        spec: The run.
    """
    from bo_voids.evaluation import EvaluationTask, EvaluatorSpec
    from bo_voids.metrics import MMDScorer
    from bo_voids.seeding import derive_seed
    from bo_voids.space import SearchSpace
    from bo_voids.state import load_experiment

    run = load_experiment(spec.run_dir)
    rec0 = run.iterations[0]
    targets = rec0.embeddings[[m["dataset_type"] == "real" for m in rec0.metadata]]
    scorer = MMDScorer(bandwidth=cfg.metric.bandwidth).fit(targets)
    evaluator = EvaluatorSpec.from_config(cfg).build()
    space = SearchSpace.from_config(cfg)
    seeds = [derive_seed(cfg.seed, "bench-fresh", r) % 2**31 for r in range(N_FRESH)]
    cache: dict[tuple[Any, ...], float] = {}
    for row in rows:
        params = {p: row.get(f"best_{p}") for p in ("void_shape", *NUMERIC)}
        if any(v is None for v in params.values()):
            row["fresh_mmd2"] = math.nan
            continue
        params = space.validate(params)
        key = space.key(params)
        if key not in cache:
            task = EvaluationTask(-1, "synthetic", 0, "bench_fresh", params, seeds)
            emb = evaluator.evaluate_one(task).embeddings
            cache[key] = float(scorer.score(np.asarray(emb, dtype=np.float64)))
        row["fresh_mmd2"] = cache[key]


def collect_rows(spec: RunSpec, cfg: Any) -> dict[str, Any]:
    """Per-iteration rows of a finished run, read back from its folder.

    Args:
        spec: The run.
        cfg: Its config.

    Returns:
        ``{'rows': [...], 'iteration0_sha256': str}``.
    """
    from bo_voids.state import load_experiment, read_json

    run = load_experiment(spec.run_dir)
    timings = (
        read_json(spec.run_dir / TIMINGS_FILE) if (spec.run_dir / TIMINGS_FILE).exists() else {}
    )
    nf = run.noise_floor
    truth = None if cfg.target_image_dir is not None else cfg.param_distributions["real"]
    bounds = cfg.param_bounds
    iterations = run.iterations
    rows = []
    for k, it in enumerate(iterations):
        s = it.scores
        if k + 1 < len(iterations) and iterations[k + 1].proposals:
            ranked = iterations[k + 1].proposals.get("current_best") or []
        else:
            ranked = run.current_best
        best = ranked[0] if ranked else {}
        params = best.get("params") or s.get("best_params") or {}
        n_sets = int(s.get("n_sets", 0))
        n_images = sum(
            1 for i in iterations[: k + 1] for m in i.metadata if m["dataset_type"] != "real"
        )
        t = timings.get(str(k), {})
        row: dict[str, Any] = {
            "method": spec.method,
            "target": spec.target,
            "seed": spec.seed,
            "iteration": k,
            "n_sets_evaluated": n_sets,
            "n_images_rendered": n_images,
            "best_mmd2": s.get("best_mmd2"),
            "iteration_best_mmd2": s.get("iteration_best_mmd2"),
            "distribution_similarity": s.get("distribution_similarity"),
            "kid": s.get("kid"),
            "epsilon_ball_share": s.get("epsilon_ball_share"),
            "noise_floor_q95": nf.get("q95"),
            "noise_floor_mean": nf.get("mean"),
            "recommended_mmd2": best.get("mmd2"),
            "recommended_predicted_mmd2": best.get("predicted_mmd2"),
            "recommended_uid": best.get("uid"),
            **{f"best_{p}": params.get(p) for p in ("void_shape", *NUMERIC)},
        }
        if truth is not None and params:
            modal = max(truth["void_shape"].probabilities.items(), key=lambda kv: kv[1])[0]
            for p in NUMERIC:
                b = bounds[p]
                row[f"err_{p}"] = abs(float(params[p]) - float(truth[p].mean)) / (b.high - b.low)
            row["shape_found"] = int(params["void_shape"] == modal)
            row["err_mean_numeric"] = float(np.mean([row[f"err_{p}"] for p in NUMERIC]))
        else:
            for p in NUMERIC:
                row[f"err_{p}"] = math.nan
            row["shape_found"] = math.nan
            row["err_mean_numeric"] = math.nan
        for key in ("render", "embed", "propose", "write", "wall"):
            row[f"t_{key}"] = t.get(key, math.nan)
        rows.append(row)
    if "final_recommend" in timings and rows:
        rows[-1]["t_final_recommend"] = timings["final_recommend"]["propose"]
    emb0 = np.ascontiguousarray(iterations[0].embeddings, dtype=np.float32)
    realised = _realised_error(iterations[0].metadata, truth, bounds)
    return {
        "rows": rows,
        "iteration0_sha256": hashlib.sha256(emb0.tobytes()).hexdigest(),
        "realised_targets_error": realised,
    }


def _realised_error(meta: Sequence[dict[str, Any]], truth: Any, bounds: Any) -> dict[str, float]:
    """Error of the mean of the target parameter sets actually drawn (a reference floor)."""
    if truth is None:
        return {}
    sets = {m["param_set_id"]: m["params"] for m in meta if m["dataset_type"] == "real"}
    if not sets:
        return {}
    out = {}
    for p in NUMERIC:
        b = bounds[p]
        mean = float(np.mean([float(v[p]) for v in sets.values()]))
        out[f"err_{p}"] = abs(mean - float(truth[p].mean)) / (b.high - b.low)
    return out


def _init_worker() -> None:
    """Each worker process: one torch thread, one BLAS thread."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    warnings.simplefilter("ignore")


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def _q(values: Iterable[float]) -> tuple[float, float, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not v.size:
        return (math.nan, math.nan, math.nan)
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def _fmt(m: tuple[float, float, float], digits: int = 4) -> str:
    if not np.isfinite(m[0]):
        return "n/a"
    return f"{m[0]:.{digits}f} [{m[1]:.{digits}f}, {m[2]:.{digits}f}]"


def paired_seeds(
    results: Sequence[dict[str, Any]], target: str, methods: Sequence[str]
) -> list[int]:
    """Seeds of ``target`` completed by every method in ``methods``."""
    by: dict[int, set[str]] = {}
    for r in results:
        if r["spec"]["target"] == target:
            by.setdefault(r["spec"]["seed"], set()).add(r["spec"]["method"])
    return sorted(s for s, m in by.items() if set(methods) <= m)


def check_pairing(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether every method of a (target, seed) saw the same iteration 0 (embedding hashes)."""
    groups: dict[tuple[str, int], set[str]] = {}
    for r in results:
        key = (r["spec"]["target"], r["spec"]["seed"])
        groups.setdefault(key, set()).add(r["iteration0_sha256"])
    bad = [f"{t}/seed {s}" for (t, s), h in sorted(groups.items()) if len(h) > 1]
    return {"n_groups": len(groups), "mismatched": bad, "ok": not bad}


def summarise(results: Sequence[dict[str, Any]], iterations: int) -> dict[str, Any]:
    """Median / IQR curves, speed-up over random, goals and recovery, per target.

    Args:
        results: The run results (``run_one`` outputs).
        iterations: Iterations of every run.

    Returns:
        A JSON-able summary.
    """
    summary: dict[str, Any] = {"targets": {}, "pairing": check_pairing(results)}
    for section, target, methods, seeds in sections(results):
        runs = {
            (r["spec"]["method"], r["spec"]["seed"]): r
            for r in results
            if r["spec"]["target"] == target and r["spec"]["seed"] in seeds
        }
        ts: dict[str, Any] = {
            "target": target,
            "methods": methods,
            "seeds": seeds,
            "per_method": {},
        }
        curve: dict[str, dict[str, list[float]]] = {}
        fresh_curve: dict[str, dict[str, list[float]]] = {}
        for m in methods:
            per = _curve(runs, m, seeds, "best_mmd2", iterations)
            sim = _curve(runs, m, seeds, "distribution_similarity", iterations)
            fresh = _curve(runs, m, seeds, "fresh_mmd2", iterations)
            curve[m] = per
            fresh_curve[m] = fresh
            final = [_row(runs[(m, s)], iterations) for s in seeds]
            rec = {p: _q(r.get(f"err_{p}") for r in final) for p in NUMERIC}
            shape = [
                r.get("shape_found") for r in final if np.isfinite(r.get("shape_found", math.nan))
            ]
            timing = {
                key: float(
                    np.nanmean(
                        [
                            r.get(f"t_{key}", math.nan)
                            for s in seeds
                            for r in runs[(m, s)]["rows"][1:]
                        ]
                    )
                )
                if seeds
                else math.nan
                for key in ("render", "embed", "propose", "write", "wall")
            }
            ts["per_method"][m] = {
                "best_mmd2": per,
                "distribution_similarity": sim,
                "fresh_mmd2": fresh,
                "recovery_final": {p: list(v) for p, v in rec.items()},
                "shape_found_share": float(np.mean(shape)) if shape else math.nan,
                "err_mean_numeric_final": list(_q(r.get("err_mean_numeric") for r in final)),
                "seconds_per_iteration": timing,
                "run_seconds": list(_q(runs[(m, s)]["seconds"] for s in seeds)),
            }
        nf = (
            _q(_row(runs[(methods[0], s)], 0).get("noise_floor_q95") for s in seeds)
            if seeds
            else (math.nan,) * 3
        )
        ts["noise_floor_q95"] = list(nf)
        realised = [runs[(methods[0], s)].get("realised_targets_error") or {} for s in seeds]
        ts["realised_targets_error"] = {
            p: list(_q(r.get(f"err_{p}") for r in realised)) for p in NUMERIC
        }
        if "random" in curve and seeds:
            ts.update(_speedup(curve, runs, seeds, methods, iterations))
            if all(np.isfinite(fresh_curve[m]["median"]).all() for m in methods):
                fresh_sp = _speedup(fresh_curve, runs, seeds, methods, iterations, "fresh_mmd2")
                ts["fresh"] = {
                    "random_final_median": fresh_sp["random_final_median"],
                    "reach_random_final": fresh_sp["reach_random_final"],
                    "goals": fresh_sp.get("goals"),
                }
        cal = [runs[(m, s)].get("calibration") for m in methods for s in seeds]
        cal = [c for c in cal if c and "error" not in c]
        if cal:
            ts["calibration"] = {
                "n_runs": len(cal),
                "methods": sorted(
                    {m for m in methods for s in seeds if runs[(m, s)].get("calibration")}
                ),
                **{
                    key: list(_q(c.get(key) for c in cal))
                    for key in (
                        "implied_mmd2",
                        "best_point_mmd2",
                        "top_k_pool_mmd2",
                        "mixture_mmd2",
                        "noise_floor_q95",
                        "implied_mean_error",
                        "best_point_mean_error",
                        "implied_p",
                        "best_point_p",
                    )
                },
                "implied_beats_best_point": int(
                    sum(bool(c.get("implied_beats_best_point")) for c in cal)
                ),
            }
        summary["targets"][section] = ts
    return summary


def sections(results: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[str], list[int]]]:
    """Which (section, target, methods, paired seeds) to summarise.

    Every method of a target is summarised on the seeds that all of them completed. When some
    methods ran on more seeds than others (e.g. the costly ``ei`` / ``nei`` on fewer seeds), the
    subset of methods (with ``random``) that has the most (method, paired seed) runs gets its own
    section (named after the target: the headline), and all methods together a second one
    (``<target>_all_methods``).

    Args:
        results: The run results.

    Returns:
        ``(section name, target, methods, seeds)`` tuples.
    """
    out = []
    targets = sorted({r["spec"]["target"] for r in results}, key=_target_order)
    for target in targets:
        counts: dict[str, int] = {}
        for r in results:
            if r["spec"]["target"] == target:
                counts[r["spec"]["method"]] = counts.get(r["spec"]["method"], 0) + 1
        methods = [m for m in METHODS if m in counts]
        seeds_all = paired_seeds(results, target, methods)
        core, seeds_core = methods, seeds_all
        for c in sorted(set(counts.values())):
            cand = [m for m in methods if counts[m] >= c]
            cand_seeds = paired_seeds(results, target, cand)
            if "random" in cand and len(cand) >= 2:
                if len(cand) * len(cand_seeds) > len(core) * len(seeds_core):
                    core, seeds_core = cand, cand_seeds
        if core != methods and len(seeds_core) > len(seeds_all):
            out.append((target, target, core, seeds_core))
            if seeds_all:
                out.append((f"{target}_all_methods", target, methods, seeds_all))
        else:
            out.append((target, target, methods, seeds_all))
    return out


def _curve(
    runs: dict[tuple[str, int], dict[str, Any]],
    method: str,
    seeds: Sequence[int],
    key: str,
    iterations: int,
) -> dict[str, list[float]]:
    """Median and quartiles over seeds of one column, per iteration."""
    out: dict[str, list[float]] = {"median": [], "q25": [], "q75": []}
    for k in range(iterations + 1):
        q = _q(_row(runs[(method, s)], k).get(key) for s in seeds)
        out["median"].append(q[0])
        out["q25"].append(q[1])
        out["q75"].append(q[2])
    return out


def _target_order(name: str) -> tuple[int, str]:
    order = list(TARGETS)
    return (order.index(name) if name in order else len(order), name)


def _row(result: dict[str, Any], k: int) -> dict[str, Any]:
    rows = result["rows"]
    return rows[k] if k < len(rows) else {}


def _speedup(
    curve: dict[str, dict[str, list[float]]],
    runs: dict[tuple[str, int], dict[str, Any]],
    seeds: list[int],
    methods: list[str],
    iterations: int,
    key: str = "best_mmd2",
) -> dict[str, Any]:
    """Iterations to reach random search's final median of ``key``, goals vs random and TPE."""
    ref = curve["random"]["median"][iterations]
    reach: dict[str, Any] = {}
    for m in methods:
        med = curve[m]["median"]
        k_med = next((k for k, v in enumerate(med) if v <= ref), None)
        per_seed = []
        for s in seeds:
            vals = [r.get(key, math.nan) for r in runs[(m, s)]["rows"]]
            per_seed.append(next((k for k, v in enumerate(vals) if v <= ref), math.inf))
        ks = np.array(per_seed, dtype=float)
        n0 = runs[(m, seeds[0])]["rows"][0]["n_sets_evaluated"]
        n_per_it = (runs[(m, seeds[0])]["rows"][1]["n_sets_evaluated"] - n0) if iterations else 0
        reach[m] = {
            "iteration_median_curve": k_med,
            "iteration_per_seed_median": float(np.median(ks)),
            "share_of_seeds_reaching": float(np.mean(np.isfinite(ks))),
            "sets_evaluated": None if k_med is None else n0 + n_per_it * k_med,
            "speedup_iterations": None if not k_med else iterations / k_med,
            "speedup_sets": None
            if k_med is None
            else (n0 + n_per_it * iterations) / (n0 + n_per_it * k_med),
        }
    gps = [m for m in GP_METHODS if m in curve]
    out: dict[str, Any] = {"random_final_median": ref, "reach_random_final": reach}
    if gps:
        best_gp = min(gps, key=lambda m: (curve[m]["median"][iterations], sum(curve[m]["median"])))
        k_best = reach[best_gp]["iteration_median_curve"]
        goals: dict[str, Any] = {
            "best_gp_acquisition": best_gp,
            "reaches_random_final_by_iteration_4": k_best is not None and k_best <= 4,
            "iteration_reaching_random_final": k_best,
        }
        if "optuna_tpe" in curve:
            ahead = [
                curve[best_gp]["median"][k] < curve["optuna_tpe"]["median"][k]
                for k in range(3, iterations + 1)
            ]
            goals["ahead_of_tpe_every_iteration_from_3"] = bool(ahead) and all(ahead)
            goals["iterations_ahead_of_tpe_from_3"] = [
                k for k, a in zip(range(3, iterations + 1), ahead, strict=True) if a
            ]
        out["goals"] = goals
    return out


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def write_csv(path: Path, results: Sequence[dict[str, Any]]) -> None:
    """Every (method, target, seed, iteration) row."""
    rows = [row for r in results for row in r["rows"]]
    rows.sort(
        key=lambda x: (
            _target_order(x["target"]),
            list(METHODS).index(x["method"]),
            x["seed"],
            x["iteration"],
        )
    )
    cols: list[str] = []
    for row in rows:
        cols.extend(c for c in row if c not in cols)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in cols})


def markdown(summary: dict[str, Any], args: argparse.Namespace, iterations: int) -> str:
    """The Markdown summary: headline table, goals, recovery, calibration, cost."""
    pairing = summary["pairing"]
    pairing = "agree" if pairing["ok"] else "DIFFER: " + ", ".join(pairing["mismatched"])
    checkpoints = sorted({k for k in (0, 1, 2, 3, 4, 6, iterations) if k <= iterations})
    lines = [
        "# Acquisition functions vs random search vs Optuna",
        "",
        f"Config `{args.config}`, image_size {args.image_size}, embedder `{args.embedder}`, "
        f"iteration 0 + {iterations} iterations x {args.batch_desc}; stopping rules off. "
        "Median [IQR] over paired seeds (every method sees the same targets and iteration 0: "
        f"iteration-0 embedding hashes {pairing} "
        f"over {summary['pairing']['n_groups']} (target, seed) groups).",
        "",
        "*Best MMD²*: smallest per-set MMD² (3 replications vs the 15 target images) found so "
        "far — the minimum of noisy values, so it is optimistic. *Pool*: MMD² of the pooled "
        "top-5 sets (distribution similarity). *Noise floor*: q95 of MMD² between random halves "
        "of the target set. *Recovery*: |recommended best − true mean| / range at the final "
        "iteration (recommended = the optimiser's `current_best[0]`: GP posterior mean for "
        "ucb/ei/nei, raw score otherwise). *Reach*: first iteration at which the median "
        "best-so-far is <= random search's final median.",
        "",
    ]
    for ts in summary["targets"].values():
        lines += [
            f"## Target `{ts['target']}`: {', '.join(ts['methods'])} "
            f"({len(ts['seeds'])} paired seeds: {ts['seeds']})",
            "",
        ]
        if not ts["seeds"]:
            lines += ["No seed completed by every method yet.", ""]
            continue
        lines.append(
            f"Noise floor q95 (median over seeds): {ts['noise_floor_q95'][0]:.4f}."
            + (
                f" Random search's final median best MMD²: {ts['random_final_median']:.4f}."
                if "random_final_median" in ts
                else ""
            )
        )
        lines.append("")
        head = (
            "| method | "
            + " | ".join(f"best MMD² it {k}" for k in checkpoints)
            + f" | pool it {iterations} | reach (it) | speed-up |"
        )
        lines += [head, "|" + "---|" * (len(checkpoints) + 4)]
        for m, pm in ts["per_method"].items():
            b = pm["best_mmd2"]
            cells = [_fmt((b["median"][k], b["q25"][k], b["q75"][k])) for k in checkpoints]
            sim = pm["distribution_similarity"]
            reach = ts.get("reach_random_final", {}).get(m, {})
            k = reach.get("iteration_median_curve")
            sp = reach.get("speedup_iterations")
            lines.append(
                f"| {m} | "
                + " | ".join(cells)
                + f" | {_fmt(tuple(sim[q][iterations] for q in ('median', 'q25', 'q75')))}"
                + f" | {'—' if k is None else k} (per seed "
                + f"{reach.get('iteration_per_seed_median', math.nan):g}, "
                + f"{100 * reach.get('share_of_seeds_reaching', math.nan):.0f}% reach)"
                + f" | {'—' if sp is None else f'{sp:.1f}x'} |"
            )
        lines.append("")
        fresh = ts.get("fresh")
        if fresh:
            fcp = [k for k in checkpoints if k > 0]
            lines += [
                f"Fresh re-score of the recommended set (`current_best[0]`, {N_FRESH} new images, "
                "common seeds across methods; an unbiased measure of what the user would get). "
                f"Random search's final median: {fresh['random_final_median']:.4f}.",
                "",
                "| method | " + " | ".join(f"fresh MMD² it {k}" for k in fcp) + " | reach (it) |",
                "|" + "---|" * (len(fcp) + 2),
            ]
            for m, pm in ts["per_method"].items():
                f = pm["fresh_mmd2"]
                reach = fresh["reach_random_final"].get(m, {})
                k = reach.get("iteration_median_curve")
                lines.append(
                    f"| {m} | "
                    + " | ".join(_fmt((f["median"][i], f["q25"][i], f["q75"][i])) for i in fcp)
                    + f" | {'—' if k is None else k} "
                    + f"({100 * reach.get('share_of_seeds_reaching', math.nan):.0f}% of seeds) |"
                )
            fg = fresh.get("goals")
            if fg:
                lines += [
                    "",
                    f"On the fresh score, the best GP acquisition `{fg['best_gp_acquisition']}` "
                    "reaches random's final median by iteration <= 4: "
                    f"**{_yes(fg['reaches_random_final_by_iteration_4'])}** (iteration "
                    f"{fg['iteration_reaching_random_final']}); ahead of TPE at every iteration "
                    f">= 3: **{_yes(fg.get('ahead_of_tpe_every_iteration_from_3'))}** (ahead at "
                    f"{fg.get('iterations_ahead_of_tpe_from_3')}).",
                ]
            lines.append("")
        goals = ts.get("goals")
        if goals:
            lines += [
                "**Goals** — best GP acquisition (lowest final median): "
                f"`{goals['best_gp_acquisition']}`; reaches random's {iterations}-iteration best "
                f"by iteration <= 4: **{_yes(goals['reaches_random_final_by_iteration_4'])}** "
                f"(iteration {goals['iteration_reaching_random_final']}); ahead of Optuna TPE at "
                "every iteration >= 3: "
                f"**{_yes(goals.get('ahead_of_tpe_every_iteration_from_3'))}** "
                f"(ahead at {goals.get('iterations_ahead_of_tpe_from_3')}).",
                "",
            ]
        if np.isfinite(ts["realised_targets_error"]["base_size"][0]):
            lines += [
                f"Recovery at iteration {iterations} (|best − true mean| / range, median [IQR]; "
                "shape = share of seeds whose recommended shape is the modal one):",
                "",
                "| method | " + " | ".join(NUMERIC) + " | mean | shape |",
                "|" + "---|" * (len(NUMERIC) + 3),
            ]
            for m, pm in ts["per_method"].items():
                rec = pm["recovery_final"]
                lines.append(
                    f"| {m} | "
                    + " | ".join(_fmt(tuple(rec[p]), 3) for p in NUMERIC)
                    + f" | {_fmt(tuple(pm['err_mean_numeric_final']), 3)}"
                    + f" | {100 * pm['shape_found_share']:.0f}% |"
                )
            rt = ts["realised_targets_error"]
            lines.append(
                "| *realised targets' mean* | "
                + " | ".join(_fmt(tuple(rt[p]), 3) for p in NUMERIC)
                + " | | |"
            )
            lines.append("")
        cal = ts.get("calibration")
        if cal:
            lines += [
                f"**Calibration extra row** ({cal['n_runs']} runs of {cal['methods']}): implied "
                f"distribution fresh-render MMD² {_fmt(tuple(cal['implied_mmd2']))} vs single best "
                f"point {_fmt(tuple(cal['best_point_mmd2']))} vs top-5 pool "
                f"{_fmt(tuple(cal['top_k_pool_mmd2']))} (noise floor q95 "
                f"{_fmt(tuple(cal['noise_floor_q95']))}); implied beats the best point in "
                f"{cal['implied_beats_best_point']}/{cal['n_runs']} runs; mean |mean error|/range "
                f"implied {_fmt(tuple(cal['implied_mean_error']), 3)} vs best point "
                f"{_fmt(tuple(cal['best_point_mean_error']), 3)}.",
                "",
            ]
        lines += [
            "Seconds per iteration (mean over iterations 1.., seeds):",
            "",
            "| method | render | embed | propose | write | wall | run total (median) |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, pm in ts["per_method"].items():
            t = pm["seconds_per_iteration"]
            lines.append(
                f"| {m} | {t['render']:.2f} | {t['embed']:.2f} | {t['propose']:.2f} | "
                f"{t['write']:.2f} | {t['wall']:.2f} | {pm['run_seconds'][0]:.0f} s |"
            )
        lines.append("")
    lines += [
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, {args.workers} worker(s), one "
        "thread each. Reproduce: `"
        + " ".join(
            ["python -m benchmarks.compare_acquisitions"]
            + [a for a in args.argv if a != "--aggregate-only"]
        )
        + "` (resumable: finished runs are skipped, so a larger `--seeds` adds seeds; "
        "`--aggregate-only` rewrites these files from the finished runs).",
        "",
    ]
    return "\n".join(lines)


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def plot(
    summary: dict[str, Any], results: Sequence[dict[str, Any]], out: Path, iterations: int
) -> list[Path]:
    """Best-so-far curves with IQR bands, and recovery error per parameter, per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    x = np.arange(iterations + 1)
    for target, ts in summary["targets"].items():
        if not ts["seeds"]:
            continue
        keys = ("best_mmd2", "fresh_mmd2", "distribution_similarity")
        titles = (
            "best per-set MMD² so far",
            f"recommended set, {N_FRESH} fresh images",
            "top-5 pool MMD² (distribution similarity)",
        )
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
        for m, pm in ts["per_method"].items():
            for ax, key in zip(axes, keys, strict=True):
                c = pm[key]
                ax.plot(x, c["median"], "-o", ms=3, color=colors[m], label=m)
                ax.fill_between(x, c["q25"], c["q75"], color=colors[m], alpha=0.15)
        for ax, title in zip(axes, titles, strict=True):
            ax.axhline(ts["noise_floor_q95"][0], color="k", ls=":", lw=1, label="noise floor q95")
            if "random_final_median" in ts and title.startswith("best"):
                ax.axhline(
                    ts["random_final_median"],
                    color=colors["random"],
                    ls="--",
                    lw=0.8,
                    label="random final",
                )
            ax.set_xticks(x)
            ax.set_xlabel("iteration (8 sets x 3 images each)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("MMD² (median, IQR band)")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"target {ts['target']}: {len(ts['seeds'])} paired seeds")
        fig.tight_layout()
        p = out / f"best_so_far_{target}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
        if not np.isfinite(ts["realised_targets_error"]["base_size"][0]):
            continue
        fig, ax = plt.subplots(figsize=(11, 4.5))
        methods = list(ts["per_method"])
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            rec = ts["per_method"][m]["recovery_final"]
            med = np.array([rec[p][0] for p in NUMERIC])
            lo = med - np.array([rec[p][1] for p in NUMERIC])
            hi = np.array([rec[p][2] for p in NUMERIC]) - med
            share = ts["per_method"][m]["shape_found_share"]
            ax.bar(
                np.arange(len(NUMERIC)) + i * width,
                med,
                width,
                yerr=[lo, hi],
                capsize=2,
                color=colors[m],
                label=f"{m} (shape {100 * share:.0f}%)",
            )
        rt = ts["realised_targets_error"]
        ax.scatter(
            np.arange(len(NUMERIC)) + 0.4 - width / 2,
            [rt[p][0] for p in NUMERIC],
            marker="_",
            s=400,
            color="k",
            label="realised targets' mean",
            zorder=3,
        )
        ax.axhline(0.1, color="k", ls=":", lw=1)
        ax.set_xticks(np.arange(len(NUMERIC)) + 0.4 - width / 2)
        ax.set_xticklabels(NUMERIC)
        ax.set_ylabel("|best − true mean| / range (median, IQR)")
        ax.set_title(f"target {ts['target']}: parameter recovery at iteration {iterations}")
        ax.legend(fontsize=8, ncol=2)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        p = out / f"recovery_{target}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    """All runs, seed-major so that partial results hold complete paired seeds."""
    targets = [t for t in args.targets.split(",") if t]
    if args.target_dir:
        targets.append("dir")
    specs = []
    for target in targets:
        if target not in TARGETS and target != "dir":
            raise SystemExit(f"unknown target {target!r}; valid: {[*TARGETS, 'dir']}")
    methods_main = [m for m in args.methods.split(",") if m]
    methods_extra = [m for m in (args.extra_methods or args.methods).split(",") if m]
    for m in {*methods_main, *methods_extra}:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; valid: {list(METHODS)}")
    calibrate = {m for m in args.calibrate_methods.split(",") if m}
    n_extra = args.extra_seeds or args.seeds
    keyed: list[tuple[float, int, RunSpec]] = []
    for target in targets:
        main = target == "real"
        n = args.seeds if main else n_extra
        for i, seed in enumerate(range(args.seed0, args.seed0 + n)):
            # real-target seeds in order; the other targets' seeds interleaved evenly among them,
            # so that a run cut short still holds complete, paired seeds of every target
            key = float(i) if main else (i + 1) * args.seeds / (n_extra + 1) - 0.5
            for method in methods_main if main else methods_extra:
                spec = RunSpec(
                    method=method,
                    target=target,
                    seed=seed,
                    config_path=str(_abs(args.config)),
                    work_dir=str(_abs(args.work_dir)),
                    iterations=args.iterations,
                    image_size=args.image_size,
                    embedder=args.embedder,
                    smoke=args.smoke,
                    calibrate=method in calibrate,
                    target_dir=args.target_dir if target == "dir" else None,
                )
                keyed.append((key, len(keyed), spec))
    specs = [spec for _, _, spec in sorted(keyed, key=lambda t: (t[0], t[1]))]
    return specs


def run_all(
    specs: Sequence[RunSpec], workers: int, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run every spec (skipping finished ones) on a process pool; results in completion order."""
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def done(res: dict[str, Any]) -> None:
        results.append(res)
        s = res["spec"]
        last = res["rows"][-1]
        log(
            f"[{len(results)}/{len(specs)} {time.perf_counter() - t0:6.0f}s] {s['target']:>16} "
            f"{s['method']:>10} seed {s['seed']:3d}: best MMD² {last['best_mmd2']:.4f} "
            f"({'cached' if res.get('skipped') else format(res['seconds'], '.0f') + 's'})"
        )

    if workers <= 1:
        _init_worker()
        for spec in specs:
            done(run_one(spec))
        return results
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker
    ) as pool:
        futures = {pool.submit(run_one, spec): spec for spec in specs}
        for fut in as_completed(futures):
            try:
                done(fut.result())
            except Exception as exc:  # one failed run must not lose the others
                spec = futures[fut]
                log(
                    f"FAILED {spec.target} {spec.method} seed {spec.seed}: "
                    f"{type(exc).__name__}: {exc}"
                )
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/experiment_config.yaml")
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the `real` target")
    ap.add_argument("--seed0", type=int, default=0, help="first seed")
    ap.add_argument("--extra-seeds", type=int, default=None, help="seeds of the other targets")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument(
        "--work-dir", default=None, help="experiment folders (default under experiments/bench)"
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--extra-methods", default=None, help="methods of the non-`real` targets")
    ap.add_argument("--targets", default="real,small_dense,few_large_faint")
    ap.add_argument("--target-dir", default=None, help="a folder of target images (target `dir`)")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--embedder", default="handcrafted")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--calibrate-methods", default="ucb", help="runs followed by calibrate_experiment"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny images, 2 seeds, 2 iterations")
    ap.add_argument("--aggregate-only", action="store_true", help="summarise finished runs only")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.smoke:
        args.image_size = 64
        args.iterations = min(args.iterations, 2)
        args.seeds = min(args.seeds, 2)
        args.extra_seeds = min(args.extra_seeds or 1, 1)
    if args.work_dir is None:
        tag = f"{'smoke_' if args.smoke else ''}{args.image_size}_it{args.iterations}"
        args.work_dir = str(ROOT / "experiments" / "bench" / f"compare_acquisitions_{tag}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``runs.csv``, ``summary.{md,json}`` and the plots.

    Returns:
        The summary.
    """
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # inherited by the spawned workers before they import numpy
    specs = build_specs(args)
    out = _abs(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.aggregate_only:
        from bo_voids.state import read_json

        results = []
        for spec in specs:
            if (spec.run_dir / RESULT_FILE).exists():
                res = read_json(spec.run_dir / RESULT_FILE)
                if res.get("version") != RESULT_VERSION:
                    res = run_one(spec)  # upgrades a finished run of the previous format
                results.append(res)
    else:
        print(f"{len(specs)} runs, {args.workers} worker(s), work dir {args.work_dir}", flush=True)
        results = run_all(specs, args.workers, log=lambda m: print(m, flush=True))
    cfg = build_config(specs[0]) if specs else None
    args.batch_desc = (
        f"{cfg.iteration_batch_size} sets x {cfg.replications_per_iteration} replications"
        if cfg is not None
        else "?"
    )
    summary = summarise(results, args.iterations)
    summary["args"] = {k: v for k, v in vars(args).items() if k != "argv"}
    summary["code"] = code_versions()
    write_csv(out / "runs.csv", results)
    (out / "summary.md").write_text(markdown(summary, args, args.iterations), encoding="utf-8")
    summary["plots"] = [
        str(p.relative_to(out)) for p in plot(summary, results, out, args.iterations)
    ]
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2), encoding="utf-8")
    print((out / "summary.md").read_text(encoding="utf-8"))
    return summary


def code_versions() -> dict[str, str]:
    """SHA-256 (first 12 hex digits) of the optimiser and embedder sources the runs used."""
    out = {}
    for rel in (
        "bo_voids/optimizers/botorch_gp.py",
        "bo_voids/optimizers/base.py",
        "bo_voids/embedding/handcrafted.py",
        "bo_voids/pipeline.py",
        "benchmarks/peers.py",
    ):
        path = ROOT / rel
        if path.exists():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


if __name__ == "__main__":
    main()
