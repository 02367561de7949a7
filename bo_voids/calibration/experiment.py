"""Calibrating one experiment: the mixture, ψ, their validation and ``calibration.json``.

:func:`calibrate_experiment` runs everything and writes the file and its figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bo_voids.config import PARAMETER_NAMES, CategoricalBounds
from bo_voids.exceptions import CalibrationError, StateError
from bo_voids.scoring import ScoreBook
from bo_voids.seeding import rng
from bo_voids.state import (
    ExperimentRun,
    atomic_write_bytes,
    atomic_write_json,
    load_experiment,
    utc_timestamp,
)

if TYPE_CHECKING:
    from bo_voids.evaluation import Evaluator

from .diagnostics import (
    write_cross_validation_plot,
    write_psi_pairplot,
)
from .distribution import (
    STD_CORRECTIONS,
    distribution_errors,
    distribution_from_yaml,
    point_distribution,
    typed_distribution,
    yaml_snippet,
)
from .mixture import MixtureFit
from .population import (
    plan_population,
    population_verdict,
    score_population,
    write_marginals_plot,
)
from .validate import (
    SEED_STREAM,
    CalibrationContext,
    FitOptions,
    HeldOutResult,
    ImpliedFit,
    RenderRequest,
    TargetDesign,
    ValidationResult,
    default_pool_sets,
    default_sets_per_fold,
    default_validation_sets,
    fit_implied,
    in_sample_band,
    plan_held_out,
    render_null_pool,
    render_requests,
    score_held_out,
    score_sample,
)

__all__ = ["CALIBRATION_FILE", "CALIBRATION_PLOT", "CALIBRATION_VERSION", "calibrate_experiment"]

logger = logging.getLogger(__name__)

#: File written into the experiment folder.
CALIBRATION_FILE = "calibration.json"
#: Where the PCA plot goes, relative to the experiment folder.
CALIBRATION_PLOT = Path("plots") / "calibration_pca.png"
CALIBRATION_VERSION = 3
#: In-sample validations rendered, in order: the implied distribution, then its comparators.
IN_SAMPLE_LABELS = ("implied", "mixture", "best_point", "top_k_pool")


def calibrate_experiment(
    experiment_dir: str | Path,
    *,
    n_samples: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    max_components: int | None = 8,
    min_weight: float = 0.02,
    std_floor: float = 0.0,
    within: str = "biased",
    std_correction: str = "n_eff",
    folds: int = 5,
    sets_per_fold: int | None = None,
    plot: bool = True,
    evaluator: Evaluator | None = None,
    population: bool = True,
    void_metric_images: int = 16,
    book: ScoreBook | None = None,
) -> dict[str, Any]:
    """Fit the mixture, derive the implied distribution, validate it, write ``calibration.json``.

    Args:
        experiment_dir: The experiment folder (holding ``experiment.json``).
        n_samples: Parameter sets of each in-sample validation sample, each rendered like a
            target cluster (default: :func:`~bo_voids.calibration.validate.default_validation_sets`:
            the number of target sets, or of images × 1 render for a target folder).
        seed: Seed of the validation draws / render seeds / permutations (default: the run's).
        out: Where to write the JSON (default ``experiment_dir/calibration.json``).
        max_components: At most this many mixture components.
        min_weight: Components lighter than this are pruned (weights refitted).
        std_floor: Minimum std of the implied distribution, as a fraction of each range.
        within: Within-set estimator of the mixture fit (see :func:`fit_mixture`).
        std_correction: ``"n_eff"`` (default: small-sample corrected std) or ``"none"``.
        folds: Largest number of held-out folds (leave-one-cluster-out up to this many clusters).
        sets_per_fold: Sets of each fold's fresh sample (default: half of ``n_samples``, ≥ 3).
        plot: Write ``plots/calibration_pca.png``.
        evaluator: A prebuilt :class:`~bo_voids.evaluation.Evaluator` (default: built from the
            run's config; its embedder must match the run's).
        population: Also fit the population parameters ψ through the composite surrogate
            (:mod:`~bo_voids.calibration.population`), validated like the mixture.
        void_metric_images: Images rendered from the recommendation and from ψ for the
            real-vs-synthetic void metrics (:func:`~bo_voids.void_metrics.compare_void_metrics`,
            stored as ``void_metrics``); 0 leaves them out.
        book: The run's own score book when the caller holds it (the pipeline does), so the
            evaluated sets are not scored again; by default it is rebuilt from the folder.

    Returns:
        The dict written to ``calibration.json``.

    Raises:
        CalibrationError: The run cannot be calibrated (too few targets, other embedder, bad
            option, ...).
        StateError: The folder is not a readable experiment.
    """
    t0 = time.perf_counter()
    run = load_experiment(experiment_dir)
    ctx = CalibrationContext.from_run(run, evaluator=evaluator, book=book)
    cfg = run.config
    seed = cfg.seed if seed is None else int(seed)
    _check_options(seed, n_samples, folds, sets_per_fold, std_correction)
    design = ctx.design
    reps = design.cluster_size
    n_sets = default_validation_sets(ctx) if n_samples is None else int(n_samples)
    if n_sets * reps < 2:
        raise CalibrationError(
            f"a validation sample of {n_sets} set(s) × {reps} render(s) has fewer than the 2 "
            "images the MMD² needs: raise --n-samples"
        )
    spf = default_sets_per_fold(n_sets) if sets_per_fold is None else int(sets_per_fold)
    options = FitOptions(max_components, min_weight, within, std_floor, std_correction)

    full = fit_implied(ctx, options)
    distribution_from_yaml(full.distribution, cfg)  # must round-trip through the config loader
    components = [
        {
            "param_set_id": o.uid,
            "iteration": o.first_iteration,
            "iterations": list(o.iterations),
            "dataset_type": o.dataset_type,
            "params": dict(o.params),
            "weight": w,
            "per_set_mmd2": float(o.mmd2),
            "n_images": o.n_images,
        }
        for o, w in full.components
    ]
    best_id, top_ids = _best_and_top(run, ctx, full.mixture)
    plans, scheme = plan_held_out(ctx, options, sets_per_fold=spf, seed=seed, max_folds=folds)
    pop_error: str | None = None if population else "disabled (population=False)"
    pop_plan = None
    if population:
        try:
            pop_plan = plan_population(
                ctx, n_sets=n_sets, sets_per_fold=spf, seed=seed, max_folds=folds
            )
        except (ValueError, np.linalg.LinAlgError) as exc:
            logger.warning("calibration: no population fit: %s", exc)
            pop_error = f"{type(exc).__name__}: {exc}"
    t_fit = time.perf_counter()

    requests = _in_sample_requests(ctx, full, best_id, top_ids, n_sets, seed)
    requests += [p.request for p in plans]
    if pop_plan is not None:
        requests += pop_plan.requests
    if design.source == "simulated":
        requests.append(render_null_pool(ctx, default_pool_sets(max(n_sets, spf)), seed))
    rendered = render_requests(ctx, requests, seed)
    t_render = time.perf_counter()

    pool = rendered.get("null_pool")
    band = in_sample_band(ctx, n_sets, reps, pool, seed)
    val = {k: score_sample(ctx, rendered[k], band, seed=seed) for k in IN_SAMPLE_LABELS}
    if plans:
        held = score_held_out(
            ctx, plans, rendered, scheme=scheme, sets_per_fold=spf, pool=pool, seed=seed
        )
    else:
        held = HeldOutResult.unavailable(scheme, spf, reps)
        logger.warning("calibration: no held-out validation: %s", scheme)
    t_val = time.perf_counter()

    implied = val["implied"]
    result: dict[str, Any] = {
        "version": CALIBRATION_VERSION,
        # the answer first: filled in below once the population is validated
        "verdict": {
            "reproduces": None,
            "headline": "Cannot judge whether the generator reproduces these images: "
            f"no population fit ({pop_error}).",
            "what_is_off": [],
        },
        "created": utc_timestamp(),
        "experiment_name": cfg.experiment_name,
        "experiment_status": run.manifest.get("status"),
        "iterations_completed": len(run.iterations) - 1,
        "seed": seed,
        "embedder": {
            "name": (run.manifest.get("embedder") or {}).get("name"),
            "fingerprint": (run.manifest.get("embedder") or {}).get("fingerprint"),
        },
        "scorer": ctx.scorer.to_dict(),
        "targets": design.to_dict(),
        "mixture": {
            "objective_mmd2": full.mixture.mmd2,
            "objective_fitted_form": full.mixture.objective,
            "within": full.mixture.within,
            "n_candidates": len(ctx.observations),
            "n_components": full.mixture.n_components,
            "single_best": {
                "param_set_id": full.mixture.best_single[0],
                "mmd2": full.mixture.best_single[1],
            },
            "solver": full.mixture.solver,
            "note": "objective_mmd2 is in-sample (fitted on the targets); see validation",
        },
        "components": components,
        "implied_distribution": full.distribution,
        "implied_std": _std_section(full, std_correction, cfg.param_bounds),
        "std_floor": std_floor,
        "yaml_snippet": yaml_snippet(full.distribution),
        "validation": {
            "side_by_side": _side_by_side(implied, held, design),
            "n_param_sets": n_sets,
            "replications": reps,
            "design": _design_note(design, n_sets, reps),
            "null_band": band.to_dict(),
            **{k: v.to_dict() for k, v in val.items()},
            "held_out": held.to_dict(),
            "implied_beats_best_point": bool(implied.mmd2 < val["best_point"].mmd2),
        },
        "population": None,
        "population_error": pop_error,
        "truth": None,
        "errors": None,
        "plot": None,
        "marginals_plot": None,
        "pairplot": None,
        "surrogate_cv": None,
        "surrogate_cv_plot": None,
    }
    result["validation"]["best_point"]["param_set_id"] = best_id
    result["validation"]["top_k_pool"]["param_set_ids"] = top_ids
    if cfg.target_image_dir is None:
        result["truth"], result["errors"] = _errors(ctx, full, best_id)
    if pop_plan is not None:
        comparators = {
            "mixture": {
                "in_sample_mmd2": implied.mmd2,
                "in_sample_p": implied.p_value,
                "held_out_mmd2": held.mmd2,
                "held_out_p": held.p_value,
                "held_out_inside_noise_floor": held.inside_noise_floor,
            },
            "best_point": {
                "in_sample_mmd2": val["best_point"].mmd2,
                "in_sample_p": val["best_point"].p_value,
                "held_out_mmd2": None,
                "held_out_p": None,
                "held_out_inside_noise_floor": None,
            },
        }
        result["population"] = score_population(
            ctx,
            pop_plan,
            rendered,
            band=band,
            pool=pool,
            sets_per_fold=spf,
            seed=seed,
            comparators=comparators,
        )
        if result["errors"] is not None and result["population"]["errors"] is not None:
            result["errors"]["population"] = result["population"]["errors"]["nominal"]
        verdict = population_verdict(ctx, pop_plan, rendered, result["population"])
        result["verdict"] = verdict.to_dict()
        result["surrogate_cv"] = pop_plan.cross_validation
    result["void_metrics"] = None
    t_voids = time.perf_counter()
    if void_metric_images > 0:
        from bo_voids.void_metrics import compare_void_metrics

        try:
            result["void_metrics"] = compare_void_metrics(
                run.root, calibration=result, n_images=int(void_metric_images), seed=seed
            )
        except Exception as exc:  # the inspection figures must never lose the calibration
            logger.warning("calibration: no void metrics: %s", exc)
    t_voids = time.perf_counter() - t_voids
    if plot:
        if result["void_metrics"] is not None:
            from bo_voids.void_metrics_report import write_void_metrics_plot

            try:
                write_void_metrics_plot(run.root, result["void_metrics"])
            except Exception as exc:  # a plot must never lose the calibration
                logger.warning("void metrics plot failed: %s", exc)
        try:
            result["plot"] = str(_write_plot(run, ctx, val, held, best_id))
        except Exception as exc:  # a plot must never lose the calibration
            logger.warning("calibration plot failed: %s", exc)
        if result["population"] is not None:
            try:
                result["marginals_plot"] = str(
                    write_marginals_plot(
                        run.root,
                        ctx,
                        result["population"],
                        mixture=full.distribution,
                        best_point=ctx.observation(best_id).params,
                    )
                )
            except Exception as exc:  # a plot must never lose the calibration
                logger.warning("calibration marginals plot failed: %s", exc)
            try:
                result["pairplot"] = str(
                    write_psi_pairplot(
                        run.root,
                        ctx,
                        result["population"]["psi"],
                        realised=ctx.real_param_sets(),
                        best_point=ctx.observation(best_id).params,
                        seed=seed,
                    )
                )
            except Exception as exc:  # a plot must never lose the calibration
                logger.warning("calibration pairplot failed: %s", exc)
        if result.get("surrogate_cv") is not None:
            try:
                result["surrogate_cv_plot"] = str(
                    write_cross_validation_plot(run.root, result["surrogate_cv"])
                )
            except Exception as exc:  # a plot must never lose the calibration
                logger.warning("surrogate cross-validation plot failed: %s", exc)
    result["timings"] = {
        "fit_s": t_fit - t0,
        "render_s": t_render - t_fit,
        "score_s": t_val - t_render,
        "void_metrics_s": t_voids,
        "total_s": time.perf_counter() - t0,
    }
    path = Path(out) if out is not None else run.root / CALIBRATION_FILE
    atomic_write_json(path, result)
    return result


def _check_options(
    seed: int, n_samples: int | None, folds: int, sets_per_fold: int | None, std_correction: str
) -> None:
    if seed < 0:
        raise CalibrationError(f"seed must be >= 0, got {seed}")
    if n_samples is not None and int(n_samples) < 1:
        raise CalibrationError(f"n_samples must be >= 1, got {n_samples}")
    if int(folds) < 2:
        raise CalibrationError(f"folds must be >= 2, got {folds}")
    if sets_per_fold is not None and int(sets_per_fold) < 1:
        raise CalibrationError(f"sets_per_fold must be >= 1, got {sets_per_fold}")
    if std_correction not in STD_CORRECTIONS:
        raise CalibrationError(f"std_correction must be one of {STD_CORRECTIONS}")


def _best_and_top(
    run: ExperimentRun, ctx: CalibrationContext, fit: MixtureFit
) -> tuple[str, list[str]]:
    """The run's best set (its one ranking) and top-k pool, as observation uids."""
    uids = {o.uid for o in ctx.observations}
    last = run.scores[-1] if run.scores else None
    best = str(last.best_param_set_id or "") if last else ""
    if best not in uids:
        best = fit.best_single[0]
    top = [u for u in (b["uid"] for b in (last.best if last else [])) if u in uids] or [best]
    return best, top


def _in_sample_requests(
    ctx: CalibrationContext,
    full: ImpliedFit,
    best_id: str,
    top_ids: list[str],
    n_sets: int,
    seed: int,
) -> list[RenderRequest]:
    """The implied distribution and its comparators, each ``n_sets`` sets like a target cluster."""
    reps = ctx.design.cluster_size
    draws = ctx.space.sample(
        typed_distribution(full.distribution, ctx.config),
        n_sets,
        rng(seed, SEED_STREAM, "implied", "sample"),
    )
    weights = np.array([w for _, w in full.components])
    picks = rng(seed, SEED_STREAM, "mixture", "sample").choice(
        len(full.components), size=n_sets, p=weights / weights.sum()
    )
    best = ctx.observation(best_id).params
    top = [ctx.observation(u).params for u in top_ids]
    sets = {
        "implied": draws,
        "mixture": [full.components[int(i)][0].params for i in picks],
        "best_point": [best] * n_sets,
        "top_k_pool": [top[i % len(top)] for i in range(n_sets)],
    }
    return [RenderRequest(k, tuple(dict(p) for p in sets[k]), reps) for k in IN_SAMPLE_LABELS]


def _design_note(design: TargetDesign, n_sets: int, reps: int) -> str:
    if design.clustered:
        return (
            f"{n_sets} fresh sets × {reps} renders, the shape of the {design.n_units} target "
            "clusters, so whole sets are exchangeable with target clusters (cluster permutation)"
        )
    return (
        f"{n_sets} fresh sets × 1 render against {design.n_images} iid target images, so every "
        "image is exchangeable with every other (image permutation)"
    )


def _figure(
    mmd2: float,
    test: Any,
    band: Any,
    inside: bool | None,
    n_images: int,
    fitted_on: str,
    scored_against: str,
) -> dict[str, Any]:
    available = band is not None and band.available
    z = (mmd2 - band.mean) / band.std if available and band.std > 0 else None
    return {
        "mmd2": mmd2,
        "p_value": test.p_value if test is not None else float("nan"),
        "scheme": test.scheme if test is not None else None,
        "n_distinct_splits": test.n_distinct_splits if test is not None else None,
        "min_attainable_p": test.min_attainable_p if test is not None else None,
        "exact": test.exact if test is not None else None,
        "null_mean": band.mean if available else None,
        "null_q95": band.q95 if available else None,
        "noise_floor_z": z,
        "null_scheme": band.scheme if band is not None else None,
        "inside_noise_floor": inside,
        "n_fresh_images": n_images,
        "fitted_on": fitted_on,
        "scored_against": scored_against,
    }


def _side_by_side(
    implied: ValidationResult, held: HeldOutResult, design: TargetDesign
) -> dict[str, dict[str, Any]]:
    """In-sample and held-out figures of the implied distribution, one row each."""
    held_row = _figure(
        held.mmd2,
        held.test,
        held.band,
        held.inside_noise_floor,
        int(held.embeddings.shape[0]),
        "the other folds",
        f"held-out fold ({held.scheme})" if held.available else "-",
    )
    if not held.available:
        held_row["reason"] = held.reason
    return {
        "in-sample": _figure(
            implied.mmd2,
            implied.test,
            implied.band,
            implied.inside_noise_floor,
            len(implied.render_seeds),
            f"all {design.n_images} targets",
            f"all {design.n_images} targets",
        ),
        "held-out": held_row,
    }


def _std_section(full: ImpliedFit, correction: str, bounds: Mapping[str, Any]) -> dict[str, Any]:
    numeric = [n for n in PARAMETER_NAMES if not isinstance(bounds[n], CategoricalBounds)]
    return {
        "correction": correction,
        "n_eff": full.n_eff,
        "factor": full.std_factor,
        "uncorrected": {n: full.uncorrected[n]["std"] for n in numeric},
        "note": (
            "std = weighted std of the mixture components × sqrt(n_eff / (n_eff - 1)), "
            "n_eff = 1 / Σ w² (Bessel's correction with reliability weights); a single "
            "component has no spread (std 0)"
            if correction == "n_eff"
            else "std = weighted std of the mixture components (no small-sample correction)"
        ),
    }


def _errors(
    ctx: CalibrationContext, full: ImpliedFit, best_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Errors against the config's real distribution (the simulated targets' truth)."""
    bounds = ctx.config.param_bounds
    truth = ctx.nominal_distribution()
    best = point_distribution(ctx.observation(best_id).params, bounds)
    errors = {
        "implied": distribution_errors(full.distribution, truth, bounds),
        "implied_uncorrected_std": distribution_errors(full.uncorrected, truth, bounds),
        "best_point": distribution_errors(best, truth, bounds),
    }
    emp = ctx.realised_distribution()
    if emp is not None:
        errors["realised_targets"] = distribution_errors(emp, truth, bounds)
        errors["implied_vs_realised"] = distribution_errors(full.distribution, emp, bounds)
    return truth, errors


def _write_plot(
    run: ExperimentRun,
    ctx: CalibrationContext,
    val: Mapping[str, ValidationResult],
    held: HeldOutResult,
    best_id: str,
) -> Path:
    """PCA map (the run's fixed PCA) of the fresh samples over the targets.

    Every MMD² in the legend says which fresh images it is on; the best single point's is on
    this calibration's renders of it, so beside it stands the run's own fresh score of the same
    set (other seeds, another count), which the run summary quotes.
    """
    from matplotlib.figure import Figure

    from bo_voids.plots import figure_to_png
    from bo_voids.projection import PCAProjector

    model = run.root / "iteration_0" / "pca_model.npz"
    if not model.is_file():
        raise StateError(f"{model} is missing")
    pca = PCAProjector.load(model)
    emb, _ = run.all_embeddings()
    fig = Figure(figsize=(7.2, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    bg = pca.transform(emb)
    ax.scatter(bg[:, 0], bg[:, 1], s=10, c="#cccccc", label="all evaluated images", zorder=1)
    tg = pca.transform(ctx.targets)
    ax.scatter(tg[:, 0], tg[:, 1], s=120, marker="*", c="#d62728", label="targets", zorder=4)
    best = val["best_point"]
    run_fresh = next(
        (
            sc.recommendation
            for sc in reversed(run.scores)
            if sc.recommendation is not None and sc.recommendation.uid == best_id
        ),
        None,
    )
    also = (
        f"; the run's {run_fresh.fresh_images} fresh: {run_fresh.fresh_mmd2:.4f}"
        if run_fresh is not None and run_fresh.fresh_images
        else ""
    )
    implied = val["implied"]
    points = [
        (
            "o",
            "#1f77b4",
            f"implied distribution: {len(implied.embeddings)} fresh renders, "
            f"MMD² {implied.mmd2:.4f}",
            implied.embeddings,
        ),
        (
            "x",
            "#2ca02c",
            f"best single point {best_id}: {len(best.embeddings)} fresh renders, "
            f"MMD² {best.mmd2:.4f}{also}",
            best.embeddings,
        ),
    ]
    if held.available:
        points.append(
            (
                "^",
                "#9467bd",
                f"implied, held-out folds: {len(held.embeddings)} fresh renders, mean MMD² "
                f"{held.mmd2:.4f}",
                held.embeddings,
            )
        )
    for marker, color, label, X in points:
        xy = pca.transform(X)
        ax.scatter(xy[:, 0], xy[:, 1], s=36, marker=marker, c=color, label=label, zorder=3)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"Calibration: fresh samples vs targets ({run.config.experiment_name})")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = run.root / CALIBRATION_PLOT
    atomic_write_bytes(path, figure_to_png(fig))
    return path
