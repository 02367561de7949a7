"""Population calibration of a run: ψ through the composite surrogate, validated on fresh renders.

The simplex mixture (:mod:`~bo_voids.calibration.mixture`) answers "which *observed* sets,
weighted, look like the targets?"; this module answers "which *distribution* ``p_ψ`` of
parameters generates them?" with the parametric fit of :mod:`bo_voids.surrogates.population`:

1. **Emulator.** The run's composite surrogate (summary map and GP hyper-parameters from the last
   iteration's proposal state when the run used it, else fitted afresh on every observation).
2. **Fit and intervals.** ψ's posterior mode under the Gaussian synthetic likelihood of the target
   clusters, and quantile intervals combining a Laplace approximation (finite targets) with
   surrogate sample paths (emulator uncertainty), whose spread is widened per summary by the
   emulator's cross-validated error (:func:`~bo_voids.calibration.diagnostics.emulator_sd_scale`).
3. **Validation.** A fresh sample of ``p_ψ`` rendered in the shape of the target clusters (sets ×
   the targets' renders per set, seeds disjoint from the run's) scored against all targets
   (in-sample) and, refitting ψ on the other folds, against each held-out fold
   (leave-one-cluster-out), with the same cluster-aware tests and null bands as the mixture.

:func:`plan_population` fits and says what to render; :func:`score_population` turns the renders
into the ``population`` section of ``calibration.json``. :func:`write_marginals_plot` draws the
implied marginals (against the truth when the targets are simulated).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids._io import atomic_write_bytes
from bo_voids._types import JsonObject, JsonScalar
from bo_voids.config import NumericBounds
from bo_voids.exceptions import StateError
from bo_voids.optimizers.composite_gp import CompositeGPOptimizer, Emulator
from bo_voids.scoring import ObservationSet
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import ParamMapping
from bo_voids.statistics import NullBand
from bo_voids.statistics.verdict import Verdict, bound_notes, make_verdict, summary_checks
from bo_voids.surrogates.population import (
    PopulationFit,
    PopulationModel,
    PopulationParameters,
    population_intervals,
)

from .diagnostics import CrossValidation, emulator_sd_scale, surrogate_cross_validation
from .distribution import distribution_errors, yaml_snippet
from .validate import (
    SEED_STREAM,
    CalibrationContext,
    FoldPlan,
    HeldOutResult,
    Rendered,
    RenderRequest,
    score_held_out,
    score_sample,
    target_folds,
)

__all__ = [
    "IDENTIFIABLE_R2",
    "MARGINALS_PLOT",
    "PopulationFoldFit",
    "PopulationOptions",
    "PopulationPlan",
    "build_emulator",
    "identifiability",
    "plan_population",
    "population_verdict",
    "score_population",
    "write_marginals_plot",
]

logger = logging.getLogger(__name__)

#: Where the marginals plot goes, relative to the experiment folder.
MARGINALS_PLOT = Path("plots") / "calibration_marginals.png"
IN_SAMPLE_LABEL = "population"


@dataclass(frozen=True)
class PopulationOptions:
    """Options of the population calibration.

    Attributes:
        n_draws: Quasi-Monte-Carlo draws of the numeric parameters per categorical combination.
        n_paths: Surrogate sample paths behind the intervals (0: Laplace only).
        n_anchors: Anchor points of each sample path (drawn from the fitted ``p_ψ``).
        level: Central probability of the intervals.
        interval_draws: ψ draws behind the intervals.
        fold_draws: QMC draws of each held-out fold's refit (cheaper than the main fit).
        interval_method: ``"laplace"`` or ``"bootstrap"``
            (:func:`~bo_voids.surrogates.population.population_intervals`).
    """

    n_draws: int = 128
    n_paths: int = 16
    n_anchors: int = 256
    level: float = 0.9
    interval_draws: int = 400
    fold_draws: int = 64
    interval_method: str = "laplace"


@dataclass
class PopulationFoldFit:
    """ψ refitted on a fold's training clusters."""

    psi: PopulationParameters
    log_likelihood: float
    n_train_clusters: int
    n_train_images: int

    def fold_summary(self) -> JsonObject:
        """What the fold reports of this fit."""
        return {
            "n_train_images": self.n_train_images,
            "n_train_clusters": self.n_train_clusters,
            "log_likelihood": self.log_likelihood,
            "population": self.psi.to_distribution(),
        }


@dataclass
class PopulationPlan:
    """The fitted ψ and the renders its validation needs.

    Attributes:
        emulator: The surrogate ψ was fitted through.
        emulator_source: ``"stored state"`` or ``"refitted"``.
        model: The population model on the posterior mean.
        fit: The fit on all target clusters, with intervals.
        requests: Fresh samples to render (in-sample first, then one per held-out fold).
        folds: The held-out plans (empty when the targets allow no split).
        scheme: The held-out scheme, or why there is none.
        seconds: Fit time.
        cross_validation: The emulator's cross-validation (``None`` when it could not be run),
            which also sized the sample paths behind the intervals.
    """

    emulator: Emulator
    emulator_source: str
    model: PopulationModel
    fit: PopulationFit
    requests: list[RenderRequest]
    folds: list[FoldPlan]
    scheme: str
    seconds: float = 0.0
    cross_validation: CrossValidation | None = None


def build_emulator(context: CalibrationContext, seed: int) -> tuple[Emulator, str]:
    """The run's composite surrogate: from the last stored proposal state, else refitted.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        seed: Seed of the (warm or cold) fit.

    Returns:
        ``(emulator, source)``.

    Raises:
        ValueError: The observations cannot carry a surrogate (fewer than 2 sets, no replicate).
    """
    optimizer = CompositeGPOptimizer(context.space, seed=int(context.config.seed))
    observations = ObservationSet(
        sets=context.observations,
        targets=context.targets,
        target_groups=context.design.groups,
    )
    state = None
    for it in reversed(context.run.iterations):
        stored = (it.proposals or {}).get("state") or {}
        if "summary_map" in stored and "surrogate" in stored:
            state = stored
            break
    if state is not None:
        try:
            return optimizer.emulator(observations, seed=seed, warm_state=state), "stored state"
        except (StateError, ValueError, KeyError) as exc:
            logger.info("stored surrogate state unusable (%s); refitting the emulator", exc)
    return optimizer.emulator(observations, seed=seed), "refitted"


def _cluster_labels(context: CalibrationContext) -> list[Any]:
    """Target cluster labels in the row order of :func:`cluster_means`."""
    return np.unique(context.design.groups).tolist()


def plan_population(
    context: CalibrationContext,
    *,
    n_sets: int,
    sets_per_fold: int,
    seed: int,
    max_folds: int = 5,
    options: PopulationOptions | None = None,
) -> PopulationPlan:
    """Fit ψ on all target clusters (with intervals) and on each fold; plan the fresh renders.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        n_sets: Sets of the in-sample validation sample.
        sets_per_fold: Sets of each fold's sample.
        seed: Seed of the fits, the draws and the fold split (the mixture's split: same folds).
        max_folds: Largest number of held-out folds.
        options: :class:`PopulationOptions`.

    Returns:
        The :class:`PopulationPlan`.

    Raises:
        ValueError: No surrogate can be fitted to this run.
    """
    opts = options or PopulationOptions()
    t0 = time.perf_counter()
    emu, source = build_emulator(context, seed)
    model, fit = emu.fit_population(n_draws=opts.n_draws, seed=seed)
    cv: CrossValidation | None = None
    try:
        cv = surrogate_cross_validation(emu, seed=seed)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        logger.warning("calibration: no surrogate cross-validation: %s", exc)
    paths = []
    if opts.n_paths > 0:
        anchors = context.space.sample(
            fit.psi.to_typed(), opts.n_anchors, rng(seed, SEED_STREAM, "population", "anchors")
        )
        X = np.stack([context.space.to_raw(p) for p in anchors])
        scale = emulator_sd_scale(cv) if cv is not None else None
        fit.info["emulator_sd_scale"] = None if scale is None else [float(x) for x in scale]
        paths = emu.surrogate.function_samples(
            X,
            opts.n_paths,
            seed=derive_seed(seed, SEED_STREAM, "population", "paths"),
            sd_scale=scale,
        )
    population_intervals(
        model,
        fit,
        emu.target_means,
        emu.target_sizes,
        paths=paths,
        n_draws=opts.interval_draws,
        level=opts.level,
        seed=derive_seed(seed, SEED_STREAM, "population", "intervals"),
        method=opts.interval_method,
    )
    reps = context.design.cluster_size
    draws = context.space.sample(
        fit.psi.to_typed(), n_sets, rng(seed, SEED_STREAM, "population", "sample")
    )
    requests = [RenderRequest(IN_SAMPLE_LABEL, tuple(dict(p) for p in draws), reps)]
    folds, scheme = target_folds(context.design, max_folds, seed)
    labels = _cluster_labels(context)
    plans: list[FoldPlan] = []
    for fold in folds:
        train = np.array([lab not in fold.units for lab in labels], dtype=bool)
        _, ffit = emu.fit_population(
            mask=train,
            start=fit.psi,
            only_start=True,
            n_draws=opts.fold_draws,
            seed=seed,
            maxiter=100,
        )
        sample = context.space.sample(
            ffit.psi.to_typed(),
            sets_per_fold,
            rng(seed, SEED_STREAM, "population_held_out", fold.index, "sample"),
        )
        req = RenderRequest(
            f"population_held_out_{fold.index}", tuple(dict(p) for p in sample), reps
        )
        fold_fit = PopulationFoldFit(
            ffit.psi, ffit.log_likelihood, int(train.sum()), int((~fold.held_out).sum())
        )
        plans.append(FoldPlan(fold, fold_fit, req))
        requests.append(req)
    return PopulationPlan(
        emulator=emu,
        emulator_source=source,
        model=model,
        fit=fit,
        requests=requests,
        folds=plans,
        scheme=scheme,
        seconds=time.perf_counter() - t0,
        cross_validation=cv,
    )


def score_population(
    context: CalibrationContext,
    plan: PopulationPlan,
    rendered: Mapping[str, Rendered],
    *,
    band: NullBand,
    pool: Rendered | None,
    sets_per_fold: int,
    seed: int,
    comparators: Mapping[str, Mapping[str, JsonScalar]] | None = None,
) -> JsonObject:
    """The ``population`` section of ``calibration.json``.

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        plan: From :func:`plan_population`.
        rendered: The renders of ``plan.requests`` (by label).
        band: The in-sample null band (the shape of ``n_sets`` × the cluster size).
        pool: The rendered null pool (simulated targets) or ``None``.
        sets_per_fold: Sets of each fold's sample.
        seed: Seed of the tests.
        comparators: ``{name: {"in_sample_mmd2", "in_sample_p", "held_out_mmd2", ...}}`` of the
            other calibrations (mixture, best point), copied into ``comparison``.

    Returns:
        The section (JSON-serialisable).
    """
    fit = plan.fit
    in_sample = score_sample(context, rendered[IN_SAMPLE_LABEL], band, seed=seed)
    if plan.folds:
        held = score_held_out(
            context,
            plan.folds,
            rendered,
            scheme=plan.scheme,
            sets_per_fold=sets_per_fold,
            pool=pool,
            seed=derive_seed(seed, "population"),
        )
    else:
        held = HeldOutResult.unavailable(plan.scheme, sets_per_fold, context.design.cluster_size)
    dist = fit.psi.to_distribution()
    nuisance = context.space.nuisance_names
    comparison = {
        "population": {
            "in_sample_mmd2": in_sample.mmd2,
            "in_sample_p": in_sample.p_value,
            "held_out_mmd2": held.mmd2,
            "held_out_p": held.p_value,
            "held_out_inside_noise_floor": held.inside_noise_floor,
        },
        **{k: dict(v) for k, v in (comparators or {}).items()},
    }
    section: dict[str, Any] = {
        "method": (
            "Gaussian synthetic likelihood of the target cluster means through the composite "
            "surrogate (moments of f under p_psi by exact sums over categories and QMC over the "
            "numeric parameters), posterior mode under uniform priors"
        ),
        "psi": dist,
        "intervals": fit.intervals,
        "interval_level": fit.info.get("level"),
        "interval_method": (
            (
                "Laplace approximation"
                if fit.info.get("interval_method", "laplace") == "laplace"
                else "one-step Bayesian bootstrap over the target clusters"
            )
            + f" around the mode of each of {fit.info.get('n_paths', 0)} "
            "surrogate sample paths (and the posterior mean; the paths' spread widened per "
            "summary by the emulator's cross-validated error), quantiles of "
            f"{fit.info.get('n_interval_draws', 0)} draws"
        ),
        # the design's six are the answer (pasteable under param_distributions); the imaging
        # nuisance says what the detector looks like and is reported apart
        "yaml_snippet": yaml_snippet({k: v for k, v in dist.items() if k not in nuisance}),
        "imaging": {k: {"psi": dist[k], "interval": (fit.intervals or {}).get(k)} for k in nuisance}
        or None,
        "identifiability": identifiability(plan.emulator.summary_map.settings),
        "fit": {
            "log_likelihood": fit.log_likelihood,
            "log_posterior": fit.log_posterior,
            "converged": fit.converged,
            "n_starts": fit.n_starts,
            "n_clusters": fit.n_clusters,
            "n_summaries": int(plan.emulator.target_means.shape[1]),
            "n_observed_sets": len(plan.emulator.sets),
            "emulator": plan.emulator_source,
            "summaries": plan.emulator.summary_map.fingerprint(),
            "emulator_sd_scale": fit.info.get("emulator_sd_scale"),
            "seconds": plan.seconds,
        },
        "validation": {
            "in_sample": in_sample.to_dict(),
            "held_out": held.to_dict(),
        },
        "comparison": comparison,
        "truth": None,
        "errors": None,
        "coverage": None,
    }
    if context.config.target_image_dir is None:
        section["truth"], section["errors"], section["coverage"] = _truth_figures(context, fit)
    return section


#: A parameter whose summary head explains less than this share of its held-out variance is
#: reported as not identifiable from the images: ψ's value for it is the prior's, not theirs.
IDENTIFIABLE_R2 = 0.1


def identifiability(summary_settings: Mapping[str, Any]) -> JsonObject | None:
    """How well the images show each parameter: the summary head's held-out R².

    The head is fitted on the reference design (or iteration 0) and cross-validated by set; a
    categorical parameter counts by its best-predicted level. A parameter below
    :data:`IDENTIFIABLE_R2` is listed in ``not_identified`` (at this image size and with this
    embedder, the images barely change with it, so no fit can recover it from them).

    Args:
        summary_settings: :attr:`~bo_voids.summaries.SummaryMap.settings`.

    Returns:
        ``{"held_out_r2": {param: r2}, "threshold", "not_identified": [...], "note"}``, or ``None``
        when the summaries have no head.
    """
    head = summary_settings.get("head") or {}
    targets, r2s = head.get("targets") or [], head.get("cv_r2") or []
    if not targets or len(targets) != len(r2s):
        return None
    best: dict[str, float] = {}
    for target, r2 in zip(targets, r2s, strict=True):
        name = str(target).split("=", 1)[0]
        value = float(r2) if r2 is not None else -math.inf
        best[name] = max(best.get(name, -math.inf), value)
    held = {k: (round(v, 4) if math.isfinite(v) else None) for k, v in best.items()}
    lost = [k for k, v in best.items() if not v >= IDENTIFIABLE_R2]
    return {
        "held_out_r2": held,
        "threshold": IDENTIFIABLE_R2,
        "not_identified": lost,
        "note": (
            "held-out R² (cross-validated by set) of the summary head that predicts each "
            "parameter from one image's embedding; below the threshold the images barely show "
            "the parameter, so ψ's value for it is the prior's"
        ),
    }


def population_verdict(
    context: CalibrationContext,
    plan: PopulationPlan,
    rendered: Mapping[str, Rendered],
    section: Mapping[str, Any],
) -> Verdict:
    """Can the generator reproduce the targets? The held-out test of ψ, checks, bounds.

    The decision is the held-out test of ``section`` (fresh images of ψ refitted without each
    fold against that fold); the posterior predictive checks compare the summaries of the
    targets with those of the in-sample ψ sample (:mod:`bo_voids.statistics.verdict`).

    Args:
        context: From :meth:`CalibrationContext.from_run`.
        plan: From :func:`plan_population`.
        rendered: The renders of ``plan.requests``.
        section: The ``population`` section from :func:`score_population`.

    Returns:
        The :class:`~bo_voids.statistics.verdict.Verdict`.
    """
    held = section["validation"]["held_out"]
    smap = plan.emulator.summary_map
    sample = rendered[IN_SAMPLE_LABEL]
    checks = summary_checks(
        smap.transform(context.targets),
        smap.transform(sample.embeddings),
        smap.names,
        real_groups=context.design.test_groups,
        generated_groups=sample.groups if sample.replications > 1 else None,
    )
    bounds = {
        name: (float(b.low), float(b.high))
        for name, b in context.config.param_bounds.items()
        if isinstance(b, NumericBounds)
    }
    notes = bound_notes(plan.fit.psi.means, bounds)
    if held.get("available") and held.get("p_value") is not None:
        test = (
            f"{held['scheme']}: fresh images of the population refitted without each fold "
            f"against that fold, {held['test']['scheme']}-level permutation test"
        )
        p_value = float(held["p_value"])
    else:
        test = f"no held-out test ({held.get('reason') or 'the targets allow no split'})"
        p_value = None
    return make_verdict(p_value, test=test, checks=checks, bound_messages=notes)


def _truth_figures(
    context: CalibrationContext, fit: PopulationFit
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Errors against the nominal distribution and the realised target sets; coverage."""
    bounds = context.config.param_bounds
    truth = context.nominal_distribution()
    dist = fit.psi.to_distribution()
    errors = {"nominal": distribution_errors(dist, truth, bounds)}
    emp = context.realised_distribution()
    if emp is not None:
        errors["realised"] = distribution_errors(dist, emp, bounds)
    coverage = {
        "nominal": _covered(fit.intervals or {}, truth),
        "realised": _covered(fit.intervals or {}, emp) if emp is not None else None,
    }
    return truth, errors, coverage


def _covered(
    intervals: Mapping[str, Mapping[str, Sequence[float]]], truth: Mapping[str, Mapping[str, float]]
) -> dict[str, bool]:
    """Whether each component of ``truth`` lies inside its interval."""
    out = {}
    for name, parts in intervals.items():
        for part, (lo, hi) in parts.items():
            if name in truth and part in truth[name]:
                v = float(truth[name][part])
                out[f"{name}.{part}"] = bool(lo - 1e-12 <= v <= hi + 1e-12)
    return out


def _clipped_normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    if std <= 0:
        return np.zeros_like(x)
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def write_marginals_plot(
    root: Path,
    context: CalibrationContext,
    population: Mapping[str, Any],
    mixture: Mapping[str, Mapping[str, float]] | None = None,
    best_point: ParamMapping | None = None,
) -> Path:
    """Plot ψ's marginals (and intervals of the means) against the mixture and the truth.

    Args:
        root: The experiment folder.
        context: The calibration context.
        population: The ``population`` section.
        mixture: The mixture's implied distribution.
        best_point: The best single parameter set.

    Returns:
        The written PNG's path.
    """
    from matplotlib.figure import Figure

    from bo_voids.plots import figure_to_png

    params = list(context.space.parameters)
    cols = 3
    rows = math.ceil(len(params) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    truth = population.get("truth")
    realised = context.real_param_sets() if truth is not None else []
    psi = population["psi"]
    intervals = population.get("intervals") or {}
    for i, p in enumerate(params):
        ax = fig.add_subplot(rows, cols, i + 1)
        if p.kind == "categorical":
            xs = np.arange(len(p.choices))
            series = [("ψ (population)", psi[p.name], "#1f77b4")]
            if mixture is not None:
                series.append(("mixture", mixture[p.name], "#2ca02c"))
            if truth is not None:
                series.append(("truth", truth[p.name], "#d62728"))
            width = 0.8 / len(series)
            for j, (label, probs, color) in enumerate(series):
                ax.bar(
                    xs + (j - (len(series) - 1) / 2) * width,
                    [float(probs.get(c, 0.0)) for c in p.choices],
                    width,
                    label=label,
                    color=color,
                )
            ax.set_xticks(xs, p.choices)
            ax.set_ylabel("probability")
        else:
            x = np.linspace(p.low, p.high, 300)
            est = psi[p.name]
            ax.plot(x, _clipped_normal_pdf(x, est["mean"], est["std"]), c="#1f77b4", label="ψ")
            lo, hi = (intervals.get(p.name) or {}).get("mean", (None, None))
            if lo is not None:
                ax.axvspan(lo, hi, color="#1f77b4", alpha=0.12, label="ψ mean interval")
            if mixture is not None and p.name in mixture:  # the mixture has no nuisance
                m = mixture[p.name]
                ax.plot(
                    x,
                    _clipped_normal_pdf(x, m["mean"], m["std"]),
                    c="#2ca02c",
                    ls="--",
                    label="mixture",
                )
            if truth is not None and p.name in truth:  # nuisance parameters have no truth
                t = truth[p.name]
                ax.plot(x, _clipped_normal_pdf(x, t["mean"], t["std"]), c="#d62728", label="truth")
            if realised and all(p.name in r for r in realised):
                ax.plot(
                    [r[p.name] for r in realised],
                    np.zeros(len(realised)),
                    "|",
                    c="#d62728",
                    ms=14,
                    label="realised target sets",
                )
            if best_point is not None:
                ax.axvline(float(best_point[p.name]), c="k", ls=":", label="best point")
            ax.set_xlim(p.low, p.high)
            ax.set_yticks([])
        nuisance = p.name in context.space.nuisance_names
        ax.set_title(f"{p.name} (imaging nuisance)" if nuisance else p.name, fontsize=10)
        if i == 0 or (p.kind != "categorical" and i == 1):
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Population calibration: implied marginals ({context.config.experiment_name})")
    fig.tight_layout()
    path = root / MARGINALS_PLOT
    atomic_write_bytes(path, figure_to_png(fig))
    return path
