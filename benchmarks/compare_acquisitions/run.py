"""One benchmark run through the pipeline's public seams, and the fresh re-scoring of its picks.

The pipeline runs unchanged (``optimizer=`` injects a peer, ``callbacks=`` records the
recommendation after every iteration); nothing is subclassed. After the run, the recommendation
at each checkpoint — and the oracle point, the mean of the realised target sets — is re-rendered
on :data:`~benchmarks.compare_acquisitions.specs.N_FRESH` images whose seeds depend on the
(seed, iteration) only, so every method's pick is judged on the same images.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks.compare_acquisitions.specs import (
    CHECKPOINTS,
    METHODS,
    N_FRESH,
    NUMERIC,
    TARGETS,
    RunSpec,
    build_config,
)

RESULT_FILE = "bench_result.json"


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Run (or resume, or reuse) one experiment and judge its recommendations.

    Args:
        spec: The run.

    Returns:
        ``{"spec", "fingerprint", "iteration0_sha", "rows", "seconds"}``; ``rows`` holds one
        record per checkpoint (and one ``oracle`` record).
    """
    import torch

    from bo_voids.pipeline import IterationEvent, OptimizationPipeline
    from bo_voids.scoring import fresh_mmd2
    from bo_voids.space import SearchSpace
    from bo_voids.state import atomic_write_json, read_json

    torch.set_num_threads(1)
    path = spec.run_dir / RESULT_FILE
    if path.exists():
        old = read_json(path)
        if old.get("fingerprint") == spec.fingerprint():
            return _with_realised_shapes(spec, old)
    if "from_run" in METHODS[spec.method]:
        return _run_sbi(spec)
    cfg = build_config(spec)
    space = SearchSpace.from_config(cfg)
    optimizer = None
    if "peer" in METHODS[spec.method]:
        from benchmarks.peers import make_benchmark_optimizer

        optimizer = make_benchmark_optimizer(
            METHODS[spec.method]["peer"], space, seed=cfg.seed, top_k=cfg.bo.top_k
        )
    picks: dict[int, dict[str, Any]] = {}

    def record(event: IterationEvent) -> None:
        best = event.scores.best
        if best:
            picks[event.iteration] = {
                "params": dict(best[0]["params"]),
                "mmd2_in_sample": best[0]["mmd2"],
                "n_images": best[0]["n_images"],
            }

    t0 = time.perf_counter()
    resume = (spec.run_dir / "experiment.json").exists()
    pipe = OptimizationPipeline(
        cfg,
        resume=resume,
        overwrite=not resume,
        optimizer=optimizer,
        callbacks=[record],
        plots=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.run_full_experiment()
    if len(picks) < len(pipe.scores):  # a resumed run: earlier iterations from disk
        for k, s in enumerate(pipe.scores):
            if k not in picks and s.best:
                b = s.best[0]
                picks[k] = {
                    "params": dict(b["params"]),
                    "mmd2_in_sample": b["mmd2"],
                    "n_images": b["n_images"],
                }
    if pipe.book is None or pipe.evaluator is None:
        # the folder held a complete run (its result file lost or stale): nothing was rendered,
        # so the scorer is the one stored with the run and the evaluator is built here
        from bo_voids.calibration import CalibrationContext
        from bo_voids.evaluation import EvaluatorSpec

        evaluator = EvaluatorSpec.from_config(cfg).build()
        scorer = CalibrationContext.from_run(spec.run_dir).scorer
    else:
        evaluator, scorer = pipe.evaluator, pipe.book.scorer
    real_sets = _realised_sets(pipe.records[0].metadata)
    truth = _true_means(cfg, spec.target)
    realised = _mean_point(real_sets)

    def fresh(params: Mapping[str, Any], k: int) -> float:
        return fresh_mmd2(
            lambda tasks: [evaluator.evaluate_one(t) for t in tasks],
            scorer,
            params,
            seed=spec.seed,
            iteration=k,
            n_images=N_FRESH,
            stream="bench-fresh",
        )

    rows = []
    checkpoints = sorted({c for c in CHECKPOINTS if c <= spec.iterations} | {spec.iterations})
    for k in [c for c in checkpoints if c in picks]:
        p = picks[k]["params"]
        rows.append(
            {
                "target": spec.target,
                "method": spec.method,
                "seed": spec.seed,
                "iteration": k,
                "fresh_mmd2": fresh(p, k),
                "mmd2_in_sample": picks[k]["mmd2_in_sample"],
                "n_images": picks[k]["n_images"],
                **_errors(space, p, truth, "true"),
                **_errors(space, p, realised, "realised"),
                **_shape_fields(p["void_shape"], truth, real_sets),
                **{f"param_{n}": p[n] for n in NUMERIC},
            }
        )
    oracle = {
        "target": spec.target,
        "method": "oracle",
        "seed": spec.seed,
        "iteration": -1,
        "fresh_mmd2": fresh(realised, 10_000),
        **_errors(space, realised, truth, "true"),
        "shape_right": int(realised["void_shape"] == truth["void_shape"]),
    }
    emb0 = pipe.records[0].embeddings
    result = {
        "spec": spec.__dict__,
        "fingerprint": spec.fingerprint(),
        "iteration0_sha": hashlib.sha256(np.ascontiguousarray(emb0).tobytes()).hexdigest()[:16],
        "rows": rows,
        "oracle": oracle,
        "seconds": time.perf_counter() - t0,
        "timings": dict(pipe.timings),
    }
    atomic_write_json(path, result)
    return result


def _run_sbi(spec: RunSpec) -> dict[str, Any]:
    """The NPE peer: trained on the random-search run of the same seed, judged the same way."""
    from dataclasses import replace

    from benchmarks.compare_acquisitions.sbi_peer import npe_recommendation
    from bo_voids.evaluation import EvaluationTask, EvaluatorSpec
    from bo_voids.scoring import score_book_from_iterations
    from bo_voids.seeding import derive_seed
    from bo_voids.space import SearchSpace
    from bo_voids.state import atomic_write_json, load_experiment

    t0 = time.perf_counter()
    source_spec = replace(spec, method=METHODS[spec.method]["from_run"])
    source = run_one(source_spec)
    cfg = build_config(source_spec)
    space = SearchSpace.from_config(cfg)
    run = load_experiment(source_spec.run_dir)
    book = score_book_from_iterations(
        space, run.iterations, bandwidth=cfg.metric.bandwidth, top_k=cfg.bo.top_k
    )
    evaluator = EvaluatorSpec.from_config(cfg).build()
    real_sets = _realised_sets(run.iterations[0].metadata)
    truth = _true_means(cfg, spec.target)
    realised = _mean_point(real_sets)
    x_o = book.targets.mean(axis=0)
    rows = []
    checkpoints = sorted({c for c in CHECKPOINTS if c <= spec.iterations} | {spec.iterations})
    for k in checkpoints:
        sets = [o for o in book.observations().sets if o.first_iteration <= k]
        thetas = np.stack([space.encode(o.params) for o in sets])
        xs = np.stack([o.embeddings[o.image_iterations <= k].mean(axis=0) for o in sets])
        p = npe_recommendation(space, thetas, xs, x_o, seed=derive_seed(spec.seed, "npe", k))
        seeds = tuple(derive_seed(spec.seed, "bench-fresh", k, r) for r in range(N_FRESH))
        task = EvaluationTask(k, "synthetic", 0, f"fresh_{k}", dict(p), seeds)
        fresh = float(book.scorer.score(evaluator.evaluate_one(task).embeddings))
        rows.append(
            {
                "target": spec.target,
                "method": spec.method,
                "seed": spec.seed,
                "iteration": k,
                "fresh_mmd2": fresh,
                "mmd2_in_sample": math.nan,
                "n_images": 0,
                **_errors(space, p, truth, "true"),
                **_errors(space, p, realised, "realised"),
                **_shape_fields(p["void_shape"], truth, real_sets),
                **{f"param_{n}": p[n] for n in NUMERIC},
            }
        )
    result = {
        "spec": spec.__dict__,
        "fingerprint": spec.fingerprint(),
        "iteration0_sha": source["iteration0_sha"],
        "rows": rows,
        "oracle": {**source["oracle"], "method": "oracle"},
        "seconds": time.perf_counter() - t0,
        "timings": {},
    }
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec.run_dir / RESULT_FILE, result)
    return result


def _shape_fields(
    shape: str, truth: Mapping[str, Any], real_sets: list[dict[str, Any]]
) -> dict[str, Any]:
    """The pick's shape, and whether it is the nominal modal shape and a realised modal one."""
    shapes = [r["void_shape"] for r in real_sets]
    top = max((shapes.count(x) for x in shapes), default=0)
    return {
        "shape": shape,
        "shape_right": int(shape == truth["void_shape"]),
        "shape_right_realised": int(shapes.count(shape) == top > 0),
    }


def _with_realised_shapes(spec: RunSpec, result: dict[str, Any]) -> dict[str, Any]:
    """A stored result with the realised-shape fields added (results stored before them)."""
    if (
        all("shape_right_realised" in r for r in result["rows"])
        and "shape_right" in result["oracle"]
    ):
        return result
    from bo_voids.state import read_json

    source = spec.run_dir
    if "from_run" in METHODS[spec.method]:
        source = source.parents[1] / METHODS[spec.method]["from_run"] / source.name
    real_sets = _realised_sets(read_json(source / "iteration_0" / "metadata.json"))
    cfg = build_config(spec)
    truth = _true_means(cfg, spec.target)
    rows = [{**r, **_shape_fields(r["shape"], truth, real_sets)} for r in result["rows"]]
    oracle = dict(result["oracle"])
    oracle["shape_right"] = int(_mean_point(real_sets)["void_shape"] == truth["void_shape"])
    return {**result, "rows": rows, "oracle": oracle}


def _realised_sets(metadata: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for m in metadata:
        if m["dataset_type"] == "real" and m.get("params") is not None:
            seen.setdefault(m["param_set_id"], m["params"])
    return list(seen.values())


def _mean_point(sets: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of the realised target sets (numeric mean, modal shape, rounded count)."""
    shapes = [s["void_shape"] for s in sets]
    point: dict[str, Any] = {"void_shape": max(sorted(set(shapes)), key=shapes.count)}
    for n in NUMERIC:
        v = float(np.mean([s[n] for s in sets]))
        point[n] = round(v) if n == "void_count" else v
    return point


def _true_means(cfg: Any, target: str) -> dict[str, Any]:
    dist = TARGETS.get(target) or cfg.to_dict()["param_distributions"]["real"]
    probs = dist["void_shape"]
    out: dict[str, Any] = {"void_shape": max(probs, key=probs.get)}
    out.update({n: float(dist[n]["mean"]) for n in NUMERIC})
    return out


def _errors(
    space: Any, params: Mapping[str, Any], ref: Mapping[str, Any], label: str
) -> dict[str, float]:
    """|params − ref| / range per numeric parameter, and their mean."""
    errs = {}
    for p in space.parameters:
        if p.kind == "categorical":
            continue
        errs[f"err_{label}_{p.name}"] = abs(float(params[p.name]) - float(ref[p.name])) / (
            p.high - p.low
        )
    vals = [v for v in errs.values() if math.isfinite(v)]
    errs[f"err_{label}_mean"] = float(np.mean(vals)) if vals else math.nan
    return errs
