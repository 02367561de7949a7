"""Figures of a run: the 2-D latent map, convergence curves, image grid and parameter trajectories.

Every function takes an :class:`~bo_voids.state.ExperimentRun` (from
:func:`~bo_voids.state.load_experiment`) and returns a :class:`matplotlib.figure.Figure` built
without pyplot (``matplotlib.figure.Figure`` renders PNG through Agg by itself), so the library
never touches pyplot's global state or the backend of an interactive session and works headless.
:func:`write_all_plots` renders the four figures into ``plots/`` of an experiment folder; the
pipeline calls it after every iteration, so it is kept quick (images are downsampled for the grid).

Colours follow the Okabe-Ito colour-blind-safe palette; iterations use the perceptually uniform
``viridis`` colormap.

Example:
    >>> from bo_voids.plots import write_all_plots
    >>> write_all_plots("experiments/quickstart")  # doctest: +SKIP
    [PosixPath('experiments/quickstart/plots/latent_pca.png'), ...]
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.colors import BoundaryNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch
from matplotlib.ticker import MaxNLocator

from bo_voids import image_grid
from bo_voids.config import (
    PARAMETER_NAMES,
    CategoricalBounds,
    CategoricalDistribution,
    NormalDistribution,
    NumericBounds,
)
from bo_voids.run_sets import (
    SetSummary,
    _num,
    best_sets,
    ranking_score_label,
    set_summaries,
)
from bo_voids.state import ExperimentRun, atomic_write_bytes, load_experiment

__all__ = [
    "COLORS",
    "DPI",
    "PLOT_FILES",
    "SetSummary",
    "best_sets",
    "figure_to_png",
    "plot_convergence",
    "plot_image_grid",
    "plot_latent",
    "plot_parameter_trajectories",
    "ranking_score_label",
    "set_summaries",
    "write_all_plots",
]

#: Resolution of the PNG files.
DPI = 110
#: Okabe-Ito colours used throughout (colour-blind safe).
COLORS: dict[str, str] = {
    "real": "#D55E00",  # vermillion
    "close": "#CC79A7",  # reddish purple
    "far": "#8C8C8C",  # grey
    "best": "#000000",
    "noise": "#56B4E9",  # sky blue
    "threshold": "#009E73",  # bluish green
    "accent": "#0072B2",  # blue
}
#: Colormap of the optimisation iterations.
ITERATION_CMAP = "viridis"
#: Colormap of per-set MMD² (dark = low = good; bad sets fade towards yellow).
SCORE_CMAP = "viridis"
#: File name of each figure inside ``plots/``.
PLOT_FILES: dict[str, str] = {
    "latent": "latent_pca.png",
    "convergence": "convergence.png",
    "image_grid": "image_grid.png",
    "parameters": "parameters.png",
}
_PARAM_LABELS: dict[str, str] = {
    "void_shape": "void shape",
    "void_count": "void count",
    "base_size": "base size (void radius, px)",
    "brightness_factor": "brightness factor",
    "size_std": "size std",
    "position_spread": "position spread",
}
_MARKERS = {"real": "*", "close": "D", "far": "^", "synthetic": "o"}
#: Legend text of the grey per-set markers of the convergence figure.
_SET_KIND_LABELS = {
    "close": "a close seed set (iteration 0)",
    "far": "a far seed set (iteration 0)",
    "synthetic": "a proposed set",
}


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes (white background).

    Args:
        fig: The figure.
        dpi: Resolution.

    Returns:
        The PNG file's bytes.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Latent space
# ---------------------------------------------------------------------------------------------


def plot_latent(run: ExperimentRun) -> Figure:
    """2-D PCA map of every image: targets, close/far seeds and each optimisation iteration.

    The real targets are large stars (with their 2-σ covariance ellipse), the close and far sets
    of iteration 0 diamonds and triangles, every later image a dot coloured by its iteration, and
    the images of the current best parameter sets are ringed (the best one labelled ``#1``).

    Args:
        run: The loaded run.

    Returns:
        The figure.
    """
    xy = _pca_xy(run)
    metadata = [m for it in run.iterations for m in it.metadata]
    dtype = np.array([str(m.get("dataset_type", "synthetic")) for m in metadata])
    iteration = np.array([int(m.get("iteration", 0)) for m in metadata])
    ps_ids = np.array([str(m.get("param_set_id")) for m in metadata])
    n_iter = len(run.iterations)

    syn = ~np.isin(dtype, ["real", "close", "far"])
    fig = Figure(figsize=(8.6, 6.6))
    ax = fig.add_axes((0.085, 0.075, 0.8 if syn.any() else 0.89, 0.86))
    handles: list[Any] = []
    for name, size, alpha in (("far", 42, 0.75), ("close", 38, 0.8)):
        sel = dtype == name
        if sel.any():
            ax.scatter(
                xy[sel][:, 0],
                xy[sel][:, 1],
                s=size,
                marker=_MARKERS[name],
                c=COLORS[name],
                alpha=alpha,
                edgecolors="white",
                linewidths=0.5,
                zorder=2,
            )
            handles.append(_legend_marker(name, f"{name} (iteration 0)"))
    if syn.any():
        last = int(iteration[syn].max())
        if last <= 15:  # one discrete colour per iteration
            cmap = colormaps[ITERATION_CMAP].resampled(max(last, 1))
            norm: Normalize = BoundaryNorm(np.arange(0.5, last + 1), cmap.N)
        else:
            cmap = colormaps[ITERATION_CMAP]
            norm = Normalize(vmin=1, vmax=last)
        order = np.argsort(iteration[syn], kind="stable")
        sc = ax.scatter(
            xy[syn][order][:, 0],
            xy[syn][order][:, 1],
            s=30,
            c=iteration[syn][order],
            cmap=cmap,
            norm=norm,
            alpha=0.85,
            edgecolors="white",
            linewidths=0.4,
            zorder=3,
        )
        cbar = fig.colorbar(sc, cax=fig.add_axes((0.9, 0.075, 0.022, 0.86)))
        cbar.set_label("optimisation iteration")
        if last <= 15:
            cbar.set_ticks(list(range(1, last + 1)))
        else:
            cbar.locator = MaxNLocator(integer=True)
            cbar.update_ticks()
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc=cmap(0.6),
                mec="white",
                ms=7,
                label="proposed sets (by iteration)",
            )
        )
    real = dtype == "real"
    if real.any():
        if real.sum() >= 3:
            _covariance_ellipse(ax, xy[real], COLORS["real"])
        ax.scatter(
            xy[real][:, 0],
            xy[real][:, 1],
            s=190,
            marker="*",
            c=COLORS["real"],
            edgecolors="black",
            linewidths=0.7,
            zorder=5,
        )
        handles.append(_legend_marker("real", f"real targets ({int(real.sum())})"))
        handles.append(Line2D([], [], color=COLORS["real"], ls="--", lw=1.2, label="targets 2σ"))
    best = best_sets(run)
    for rank, rec in enumerate(best):
        sel = ps_ids == rec["param_set_id"]
        if not sel.any():
            continue
        ax.scatter(
            xy[sel][:, 0],
            xy[sel][:, 1],
            s=230 if rank == 0 else 170,
            facecolors="none",
            edgecolors=COLORS["best"],
            linewidths=2.0 if rank == 0 else 1.1,
            zorder=6,
        )
        if rank == 0:
            cx, cy = xy[sel][0]
            ax.annotate(
                "#1",
                (cx, cy),
                xytext=(9, 9),
                textcoords="offset points",
                fontsize=10,
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "black", "lw": 0.6},
                zorder=7,
            )
    if best:
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                mfc="none",
                mec="black",
                mew=1.6,
                ms=11,
                label=f"current best {len(best)} sets",
            )
        )
    ratios = _explained_variance(run)
    for axis, label, i in ((ax.set_xlabel, "PC1", 0), (ax.set_ylabel, "PC2", 1)):
        if ratios is not None and i < len(ratios):
            label += f" ({100 * ratios[i]:.1f}% of variance)"
        axis(label)
    ax.set_title(
        f"Latent space (PCA fitted on iteration 0) — {run.manifest.get('experiment_name', '')}, "
        f"{n_iter - 1} optimisation iteration{'s' if n_iter != 2 else ''}",
        fontsize=11,
    )
    ax.grid(True, alpha=0.25, lw=0.6)
    ax.legend(handles=handles, loc="best", fontsize=8.5, framealpha=0.9)
    return fig


def _pca_xy(run: ExperimentRun) -> np.ndarray:
    xy = run.all_pca_2d() if run.iterations else np.zeros((0, 2))
    xy = np.asarray(xy, dtype=float).reshape(len(xy), -1)
    if xy.shape[1] == 1:
        xy = np.column_stack([xy, np.zeros(len(xy))])
    return xy[:, :2]


def _explained_variance(run: ExperimentRun) -> np.ndarray | None:
    """Explained-variance ratios of the PCA (``iteration_0/pca_model.npz``), if stored.

    Read with ``numpy`` directly (the ``.npz`` written by ``PCAProjector.save``, no pickle) so
    plotting does not import scikit-learn.
    """
    path = run.root / "iteration_0" / "pca_model.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            if "explained_variance_ratio" in data.files:
                return np.asarray(data["explained_variance_ratio"], dtype=float).ravel()
    except (OSError, ValueError):
        pass  # a missing or unreadable model only loses the axis annotation
    return None


def _covariance_ellipse(ax: Any, pts: np.ndarray, color: str, n_std: float = 2.0) -> None:
    cov = np.cov(pts, rowvar=False)
    if not np.all(np.isfinite(cov)):
        return
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 1e-12, None)
    angle = math.degrees(math.atan2(vecs[1, -1], vecs[0, -1]))
    width, height = 2 * n_std * np.sqrt(vals[::-1])
    centre = tuple(pts.mean(axis=0))
    # a faint fill of the real targets' colour under a dashed outline in the group's colour
    for style in (
        {"fill": True, "fc": COLORS["real"], "alpha": 0.07},
        {"fill": False, "ec": color, "ls": "--", "lw": 1.2},
    ):
        ax.add_patch(Ellipse(centre, width, height, angle=angle, zorder=1, **style))


def _legend_marker(kind: str, label: str) -> Line2D:
    size = {"real": 14, "close": 7, "far": 8}.get(kind, 7)
    return Line2D(
        [],
        [],
        ls="",
        marker=_MARKERS[kind],
        mfc=COLORS[kind],
        mec="black" if kind == "real" else "white",
        ms=size,
        label=label,
    )


# ---------------------------------------------------------------------------------------------
# Convergence
# ---------------------------------------------------------------------------------------------


def plot_convergence(run: ExperimentRun, summaries: list[SetSummary] | None = None) -> Figure:
    """Score curves over the iterations (x = iteration; iteration 0 = the close + far seeds).

    Panels: (a) per-set MMD² — every set evaluated (dots), the iteration's best and the best so
    far; (b) distribution similarity (MMD² of the pooled top-k sets) with the real set's own noise
    floor (mean ± std band, 95th-percentile line) and the convergence threshold; (c) the mean
    distance from each new image to its nearest real image; (d) the share of new images inside
    the ε-ball of some real image.

    Args:
        run: The loaded run.
        summaries: :func:`set_summaries` of ``run`` when the caller already has them.

    Returns:
        The figure.
    """
    scores = run.scores
    x = np.array([s.iteration for s in scores])

    def series(key: str) -> np.ndarray:
        return np.array([s.scalars()[key] for s in scores], dtype=float)

    fig = Figure(figsize=(11.5, 8.4))
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.07, top=0.83, wspace=0.2, hspace=0.2)
    axes = fig.subplots(2, 2, sharex=True)
    ax_a, ax_b, ax_c, ax_d = axes.ravel()

    # (a) per-set MMD²
    scored = [
        s_
        for s_ in (set_summaries(run) if summaries is None else summaries)
        if math.isfinite(s_.mmd2) and s_.dataset_type != "real"
    ]
    for kind in sorted({s_.dataset_type for s_ in scored}):
        pts = np.array([(s_.iteration, s_.mmd2) for s_ in scored if s_.dataset_type == kind])
        ax_a.scatter(
            pts[:, 0],
            pts[:, 1],
            s=14,
            c="#B0B0B0",
            marker=_MARKERS.get(kind, "o"),
            zorder=1,
            lw=0,
            label=_SET_KIND_LABELS.get(kind, f"{kind} sets"),
        )
    for key, style, color, lw, label, z in (
        ("iteration_best_mmd2", "o--", COLORS["accent"], 1.2, "lowest MMD² of the iteration", 3),
        ("best_mmd2", "o-", COLORS["real"], 2.2, "recommendation (in sample)", 4),
    ):
        ax_a.plot(x, series(key), style, color=color, ms=5, lw=lw, label=label, zorder=z)
    ax_a.set_ylabel("MMD² of one parameter set vs targets")
    ax_a.set_title("(a) Per-set MMD² (lower is better)", fontsize=10.5, loc="left")

    # (b) the recommendation on fresh images against the null band of one real set
    nf = run.noise_floor or {}
    q05, q50, q95 = _num(nf.get("q05")), _num(nf.get("q50")), _num(nf.get("q95"))
    if math.isfinite(q05) and math.isfinite(q95):
        ax_b.axhspan(
            q05,
            q95,
            color=COLORS["noise"],
            alpha=0.28,
            lw=0,
            label="noise floor of one real set (q05–q95)",
        )
        ax_b.axhline(q05, color=COLORS["noise"], ls="--", lw=1.3, label="q05 (stop rule)")
        if math.isfinite(q50):
            ax_b.axhline(q50, color=COLORS["noise"], lw=1.0, label="noise floor median")
    fresh = np.array([sc.fresh_mmd2 for sc in scores], dtype=float)
    threshold = _num(getattr(run.config, "convergence_threshold", None))
    dist_sim = series("distribution_similarity")
    ys = [v for v in (*fresh, *dist_sim, q05, q95) if math.isfinite(v)]
    y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span = (y1 - y0) or max(abs(y1), 1e-3)
    if math.isfinite(threshold):
        on_scale = y0 - span <= threshold <= y1 + span
        if on_scale:
            y0, y1 = min(y0, threshold), max(y1, threshold)
            span = (y1 - y0) or span
        ax_b.axhline(
            threshold if on_scale else np.nan,
            color=COLORS["threshold"],
            ls=":",
            lw=1.8,
            label=f"convergence threshold ({threshold:g}{'' if on_scale else ', off-scale'})",
        )
    ax_b.plot(
        x,
        dist_sim,
        "s-",
        color="#888888",
        ms=4,
        lw=1.2,
        label="top-k pool, in sample",
        zorder=3,
    )
    if np.isfinite(fresh).any():
        ax_b.plot(
            x,
            fresh,
            "o-",
            color="black",
            ms=5,
            lw=2,
            label="recommendation, fresh images",
            zorder=4,
        )
    ax_b.set_ylim(y0 - 0.08 * span, y1 + 0.08 * span)
    ax_b.set_ylabel("MMD² vs targets")
    ax_b.set_title("(b) Recommendation on fresh images", fontsize=10.5, loc="left")

    # (c) nearest-real distance, (d) ε-ball share
    ax_c.plot(x, series("mean_nearest_real"), "o-", color=COLORS["accent"], ms=5, lw=2)
    ax_c.set_ylabel("mean distance to nearest real")
    ax_c.set_title("(c) Mean nearest-real distance (new images)", fontsize=10.5, loc="left")
    ax_d.plot(x, 100 * series("epsilon_ball_share"), "o-", color=COLORS["close"], ms=5, lw=2)
    ax_d.set_ylabel("share of new images in ε-ball (%)")
    eps = scores[-1].epsilon if scores else math.nan
    eps_txt = f" (ε = {eps:.3g})" if math.isfinite(eps) else ""
    ax_d.set_title(f"(d) ε-ball share{eps_txt}", fontsize=10.5, loc="left")
    ax_d.set_ylim(-3, 103)

    for ax in axes.ravel():
        ax.grid(True, alpha=0.25, lw=0.6)
        _iteration_ticks(ax, x)
    # each top panel's legend sits in the band above it, inside its own column, so neither
    # covers the other panel or its data
    for ax, left in ((ax_a, 0.07), (ax_b, 0.535)):
        fig.legend(
            *ax.get_legend_handles_labels(),
            loc="upper left",
            bbox_to_anchor=(left, 0.945),
            ncol=2,
            fontsize=8,
            frameon=False,
            columnspacing=1.2,
            markerscale=1.3,
        )
    for ax in axes[1]:
        ax.set_xlabel("iteration (0 = close + far seeds)")
    status = run.manifest.get("status", "")
    fig.suptitle(
        f"Convergence — {run.manifest.get('experiment_name', '')} ({status})",
        fontsize=12,
        y=0.99,
    )
    return fig


def _iteration_ticks(ax: Any, iterations: Any) -> None:
    """Integer iteration ticks (every iteration while there are few) and a padded x range."""
    its = np.asarray(iterations, dtype=float)
    lo, hi = (float(its.min()), float(its.max())) if its.size else (0.0, 0.0)
    ax.set_xlim(lo - 0.45, hi + 0.45)
    if hi - lo <= 12:
        ax.set_xticks(np.arange(int(lo), int(hi) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# ---------------------------------------------------------------------------------------------
# Image grid (drawn by bo_voids.image_grid)
# ---------------------------------------------------------------------------------------------


def plot_image_grid(
    run: ExperimentRun,
    *,
    n: int = 6,
    max_sets: int = 4,
    summaries: list[SetSummary] | None = None,
    max_target_rows: int = 2,
) -> Figure:
    """Real targets beside the best sets' images (:func:`bo_voids.image_grid.plot_image_grid`).

    Drawn at :data:`DPI`, the resolution :func:`figure_to_png` saves at, so the mosaic's
    pixels are the PNG's.
    """
    return image_grid.plot_image_grid(
        run,
        n=n,
        max_sets=max_sets,
        summaries=summaries,
        max_target_rows=max_target_rows,
        dpi=DPI,
    )


# ---------------------------------------------------------------------------------------------
# Parameter trajectories
# ---------------------------------------------------------------------------------------------


def plot_parameter_trajectories(
    run: ExperimentRun, summaries: list[SetSummary] | None = None
) -> Figure:
    """One panel per parameter: what was tried at each iteration, and where the best set sits.

    Every evaluated set is a dot at its iteration (slightly jittered) coloured by its MMD² (dark
    = low = good); the recommendation's value (the set the run ranked best at each iteration) is
    the black step line; when the targets are
    simulated, the real distribution's mean (line) and ±1 sd (band) from the config are shown
    (for ``void_shape``: its category probabilities as shaded rows).

    Args:
        run: The loaded run (its config gives the real distribution's bands).
        summaries: :func:`set_summaries` of ``run`` when the caller already has them.

    Returns:
        The figure, one panel per parameter.
    """
    cfg = run.config
    every = set_summaries(run) if summaries is None else summaries
    sets = [s for s in every if s.params is not None and s.dataset_type != "real"]
    mmd = np.array([s.mmd2 for s in sets], dtype=float)
    finite = mmd[np.isfinite(mmd)]
    if len(finite):
        vmin, vmax = np.percentile(finite, [2, 98])
        vmax = vmax if vmax > vmin else vmin + 1e-9
    else:
        vmin, vmax = 0.0, 1.0
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    cmap = colormaps[SCORE_CMAP]
    jitter = np.random.default_rng(0).uniform(-0.18, 0.18, size=len(sets))
    xs = np.array([s.iteration for s in sets], dtype=float) + jitter
    best_x = [sc.iteration for sc in run.scores]
    best_params = [sc.best_params for sc in run.scores]
    simulated = getattr(cfg, "target_image_dir", None) is None
    real_dist = (getattr(cfg, "param_distributions", None) or {}).get("real", {})

    fig = Figure(figsize=(12.5, 7.6))
    fig.subplots_adjust(left=0.075, right=0.9, bottom=0.13, top=0.91, wspace=0.2, hspace=0.2)
    axes = fig.subplots(2, 3, sharex=True)
    names = [n for n in PARAMETER_NAMES][: axes.size]
    sc_handle = None
    for ax, name in zip(axes.ravel(), names, strict=True):
        bounds = cfg.param_bounds.get(name)
        categorical = isinstance(bounds, CategoricalBounds)
        choices = list(bounds.choices) if isinstance(bounds, CategoricalBounds) else []
        tick_labels = list(choices)

        def to_y(v: Any, _cat: bool = categorical, _ch: list[str] = choices) -> float:
            if _cat:
                return float(_ch.index(v)) if v in _ch else math.nan
            return _num(v)

        ys = np.array([to_y(s.params.get(name)) for s in sets if s.params is not None])
        if categorical and len(ys):
            ys = ys + np.random.default_rng(1).uniform(-0.16, 0.16, size=len(ys))
        dist = real_dist.get(name) if simulated else None
        if isinstance(dist, NormalDistribution):
            ax.axhspan(
                dist.mean - dist.std, dist.mean + dist.std, color=COLORS["real"], alpha=0.12, lw=0
            )
            ax.axhline(dist.mean, color=COLORS["real"], lw=1.6, ls="--")
        elif isinstance(dist, CategoricalDistribution):
            for i, c in enumerate(choices):
                p = float(dist.probabilities.get(c, 0.0))
                ax.axhspan(i - 0.42, i + 0.42, color=COLORS["real"], alpha=0.05 + 0.4 * p, lw=0)
                tick_labels[i] = f"{c}\n(real p={p:.2f})"
        if len(sets):
            order = np.argsort(-np.nan_to_num(mmd, nan=np.inf))  # best drawn on top
            sc_handle = ax.scatter(
                xs[order],
                ys[order],
                c=mmd[order],
                cmap=cmap,
                norm=norm,
                s=[20 if sets[i].dataset_type == "synthetic" else 16 for i in order],
                marker="o",
                edgecolors="white",
                linewidths=0.35,
                plotnonfinite=True,
                zorder=3,
            )
        by = [to_y(bp.get(name)) if isinstance(bp, dict) else math.nan for bp in best_params]
        if best_x:
            ax.plot(
                best_x,
                by,
                color="black",
                lw=2.0,
                drawstyle="steps-post",
                marker="o",
                ms=4,
                zorder=4,
            )
        if categorical:
            ax.set_yticks(range(len(choices)), tick_labels, fontsize=8.5)
            ax.set_ylim(-0.6, len(choices) - 0.4)
        elif isinstance(bounds, NumericBounds):
            pad = 0.04 * (bounds.high - bounds.low)
            ax.set_ylim(bounds.low - pad, bounds.high + pad)
        ax.set_title(_PARAM_LABELS.get(name, name), fontsize=10.5)
        ax.grid(True, alpha=0.25, lw=0.6)
        _iteration_ticks(ax, best_x or [0])
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    if sc_handle is not None:
        cbar = fig.colorbar(sc_handle, cax=fig.add_axes((0.915, 0.13, 0.014, 0.78)))
        cbar.set_label("per-set MMD² (dark = lower = better)")
    legend: list[Artist] = [
        Line2D([], [], color="black", lw=2, marker="o", ms=4, label=_recommendation_label(run)),
    ]
    if simulated:
        legend += [
            Line2D([], [], color=COLORS["real"], lw=1.6, ls="--", label="real distribution mean"),
            Patch(color=COLORS["real"], alpha=0.2, label="real ± 1 sd (shape: probability)"),
        ]
    fig.legend(
        handles=legend,
        loc="lower center",
        bbox_to_anchor=(0.49, 0.0),
        ncol=len(legend),
        fontsize=9,
        frameon=False,
    )
    fig.suptitle("Parameter trajectories — every evaluated set, coloured by its MMD²", fontsize=12)
    return fig


def _recommendation_label(run: ExperimentRun) -> str:
    """What the black line of the trajectories follows: the set the run ranked best.

    Each ``scores.json`` says what ranked its sets (``model``: the optimiser's surrogate;
    ``raw``: the per-set MMD²), so the label names the ranking the run actually used.
    """
    rankings = {sc.ranking for sc in run.scores}
    if rankings == {"model"}:
        return "recommendation (set ranked best by the model)"
    if "model" in rankings:
        return "recommendation (ranked by raw MMD², then by the model)"
    return "recommendation (lowest raw MMD² so far)"


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_all_plots(experiment_dir: str | Path, run: ExperimentRun | None = None) -> list[Path]:
    """Render the four figures of a run into ``plots/`` (each written atomically).

    Args:
        experiment_dir: The experiment folder.
        run: The run as the caller holds it in memory (the pipeline does, so nothing is read
            back from disk); ``None`` loads it from ``experiment_dir``.

    Returns:
        The paths written: ``latent_pca.png``, ``convergence.png``, ``image_grid.png``,
        ``parameters.png``.

    Raises:
        StateError: If the folder is not an experiment or cannot be read or written.
    """
    run = load_experiment(experiment_dir) if run is None else run
    out_dir = Path(experiment_dir) / "plots"
    makers: dict[str, Callable[..., Figure]] = {
        "latent": plot_latent,
        "convergence": plot_convergence,
        "image_grid": plot_image_grid,
        "parameters": plot_parameter_trajectories,
    }
    written: list[Path] = []
    if not run.iterations:
        return written
    summaries = set_summaries(run)  # the persisted per-set scores, read once for three figures
    for key, make in makers.items():
        fig = make(run) if key == "latent" else make(run, summaries=summaries)
        try:
            data = figure_to_png(fig)
        finally:
            fig.clear()
        path = out_dir / PLOT_FILES[key]
        atomic_write_bytes(path, data)
        written.append(path)
    return written
