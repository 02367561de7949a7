"""Summaries of the acquisition benchmark: medians, paired tests with Holm correction, plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: The method the goals are about (the package default) and what it is tested against.
DEFAULT_METHOD = "composite_ei"
BASELINES: tuple[str, ...] = ("optuna_tpe", "random", "sbi_npe")
#: The baselines the goals name (the sbi peer is tested too, in the same Holm family).
GOAL_BASELINES: tuple[str, ...] = ("optuna_tpe", "random")
METRICS: tuple[str, ...] = ("fresh_mmd2", "err_true_mean", "err_realised_mean")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def summarise(rows: Sequence[dict[str, Any]], oracle: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per target: a table of medians and IQRs, paired tests and the goals.

    Args:
        rows: One record per (target, method, seed, checkpoint).
        oracle: One oracle record per (target, seed).

    Returns:
        ``{target: {"table", "tests", "oracle", "goals", "seeds"}}``.
    """
    from scipy.stats import wilcoxon

    out: dict[str, Any] = {}
    for target in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == target]
        methods = sorted({r["method"] for r in rs})
        iterations = sorted({r["iteration"] for r in rs})
        seeds_by = {m: {r["seed"] for r in rs if r["method"] == m} for m in methods}
        common = sorted(set.intersection(*seeds_by.values())) if seeds_by else []
        table = []
        for m in methods:
            for k in iterations:
                sel = [r for r in rs if r["method"] == m and r["iteration"] == k]
                sel = [r for r in sel if r["seed"] in common]
                if not sel:
                    continue
                row: dict[str, Any] = {"method": m, "iteration": k, "n_seeds": len(sel)}
                for metric in METRICS:
                    v = np.array([r[metric] for r in sel], dtype=float)
                    row[f"{metric}_median"] = float(np.median(v))
                    q1, q3 = np.percentile(v, [25, 75])
                    row[f"{metric}_iqr"] = f"{q1:.4f}–{q3:.4f}"
                row["shape_right_share"] = float(np.mean([r["shape_right"] for r in sel]))
                row["shape_right_realised_share"] = float(
                    np.mean([r.get("shape_right_realised", math.nan) for r in sel])
                )
                for n in ("void_count", "base_size", "brightness_factor"):
                    v = np.array([r[f"err_realised_{n}"] for r in sel], dtype=float)
                    row[f"{n}_within_0.10"] = float(np.mean(v <= 0.10))
                table.append(row)
        tests = []
        if DEFAULT_METHOD in methods:
            for base in (b for b in BASELINES if b in methods):
                for k in (k for k in iterations if k > 0):
                    for metric in METRICS:
                        a = _by_seed(rs, DEFAULT_METHOD, k, metric, common)
                        b = _by_seed(rs, base, k, metric, common)
                        diff = a - b
                        p = math.nan
                        if len(diff) >= 5 and np.any(diff != 0):
                            p = float(wilcoxon(a, b, alternative="two-sided").pvalue)
                        tests.append(
                            {
                                "vs": base,
                                "iteration": k,
                                "metric": metric,
                                "n": len(diff),
                                "median_diff": float(np.median(diff)) if len(diff) else math.nan,
                                "wins": int(np.sum(diff < 0)),
                                "p": p,
                            }
                        )
            finite = [t for t in tests if math.isfinite(t["p"])]
            for t, adj in zip(finite, holm([t["p"] for t in finite]), strict=True):
                t["p_holm"] = adj
        # every method of a seed carries the same oracle record: one per seed
        ors = list(
            {o["seed"]: o for o in oracle if o["target"] == target and o["seed"] in common}.values()
        )
        oracle_fresh = float(np.median([o["fresh_mmd2"] for o in ors])) if ors else math.nan
        # the nominal modal shape is also the realised targets' in this share of seeds: the
        # most a pick that matches the realised targets can score on ``shape_right``
        oracle_shape = (
            float(np.mean([o.get("shape_right", math.nan) for o in ors])) if ors else math.nan
        )
        out[target] = {
            "seeds": common,
            "table": table,
            "tests": tests,
            "oracle": {
                "fresh_mmd2_median": oracle_fresh,
                "shape_right_share": oracle_shape,
                "n": len(ors),
            },
            "goals": _goals(table, tests, oracle_fresh),
        }
    return out


def _by_seed(
    rows: Sequence[dict[str, Any]], method: str, k: int, metric: str, seeds: Sequence[int]
) -> np.ndarray:
    values = {r["seed"]: r[metric] for r in rows if r["method"] == method and r["iteration"] == k}
    return np.array([values[s] for s in seeds if s in values], dtype=float)


def _goals(
    table: Sequence[dict[str, Any]], tests: Sequence[dict[str, Any]], oracle_fresh: float
) -> dict[str, Any]:
    last = max((r["iteration"] for r in table), default=0)
    row = next((r for r in table if r["method"] == DEFAULT_METHOD and r["iteration"] == last), None)
    if row is None:
        return {}
    beats = [t for t in tests if t["iteration"] in (3, 6, 10) and t["vs"] in GOAL_BASELINES]
    return {
        "beats_tpe_and_random_holm_0.05": bool(beats)
        and all(
            t.get("p_holm", 1.0) < 0.05 and t["median_diff"] < 0
            for t in beats
            if t["metric"] != "err_true_mean"
        ),
        "mean_error_realised_median": row["err_realised_mean_median"],
        "mean_error_realised_le_0.08": row["err_realised_mean_median"] <= 0.08,
        "key_params_within_0.10_share": {
            n: row[f"{n}_within_0.10"] for n in ("void_count", "base_size", "brightness_factor")
        },
        "modal_shape_right_share": row["shape_right_share"],
        "modal_shape_right_realised_share": row["shape_right_realised_share"],
        "fresh_vs_oracle_ratio": row["fresh_mmd2_median"] / oracle_fresh
        if oracle_fresh and math.isfinite(oracle_fresh) and oracle_fresh > 0
        else math.nan,
    }


def plot(rows: Sequence[dict[str, Any]], target: str, path: Path) -> None:
    """Median fresh MMD² and mean parameter error against the iteration, per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    axes = fig.subplots(1, 2)
    rs = [r for r in rows if r["target"] == target]
    for m in sorted({r["method"] for r in rs}):
        its = sorted({r["iteration"] for r in rs if r["method"] == m})
        for ax, metric in zip(axes, ("fresh_mmd2", "err_realised_mean"), strict=True):
            med = [
                np.median([r[metric] for r in rs if r["method"] == m and r["iteration"] == k])
                for k in its
            ]
            ax.plot(its, med, marker="o", label=m, lw=2 if m == DEFAULT_METHOD else 1)
    axes[0].set(xlabel="iteration", ylabel="fresh MMD² of the recommendation (median)")
    axes[1].set(xlabel="iteration", ylabel="mean |error| / range vs realised targets (median)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"target {target}")
    fig.tight_layout()
    fig.savefig(path)
