"""The real-vs-synthetic void metrics in a figure and a report section.

Reads the ``void_metrics`` entry of ``calibration.json`` (written by
:func:`bo_voids.void_metrics.compare_void_metrics` during calibration) and shows, side by side
for the real targets, the recommendation's fresh renders and ψ's samples, the distributions of
the void area share, the largest void's share, the void count and the pooled size classes,
with the detector's own error on the synthetic images.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bo_voids.state import atomic_write_bytes

__all__ = [
    "VOID_METRICS_PLOT",
    "plot_void_metrics",
    "void_metrics_section",
    "write_void_metrics_plot",
]

#: Where calibration writes the figure, relative to the experiment folder.
VOID_METRICS_PLOT = Path("plots") / "void_metrics.png"
_COLOURS = {"targets": "#d62728", "recommendation": "#2ca02c", "psi": "#1f77b4"}
_SHORT = {"targets": "real", "recommendation": "recomm.", "psi": "ψ"}
_TITLES = {
    "void_area_pct": "void area (% of image)",
    "largest_void_pct": "largest void (% of image)",
    "void_count": "voids per image",
}


def plot_void_metrics(comparison: Mapping[str, Any]) -> Figure:
    """Box plots of each figure per group, and the pooled size classes as grouped bars.

    Args:
        comparison: :func:`~bo_voids.void_metrics.compare_void_metrics`'s result.

    Returns:
        The figure (four panels).
    """
    groups = comparison.get("groups") or {}
    names = list(groups)
    fig = Figure(figsize=(13.0, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, figure in zip(axes[:3], comparison.get("figures") or list(_TITLES), strict=False):
        data = [[m[figure] for m in groups[g]["per_image"]] for g in names]
        if names:
            box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=True)
            for patch, g in zip(box["boxes"], names, strict=True):
                patch.set(facecolor=_COLOURS.get(g, "#7f7f7f"), alpha=0.45)
            for k, values in enumerate(data, start=1):
                ax.plot([k] * len(values), values, ".", color="black", alpha=0.4, ms=3)
            ax.set_xticks(range(1, len(names) + 1), [_SHORT.get(g, g) for g in names])
        ax.set_title(_TITLES.get(figure, figure), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[3]
    bins = comparison.get("diameter_bins") or []
    labels = [_bin_label(lo, hi) for lo, hi in itertools.pairwise(bins)]
    width = 0.8 / max(1, len(names))
    for k, g in enumerate(names):
        counts = groups[g]["summary"]["size_classes"]
        n = max(1, groups[g]["summary"]["n_images"])
        ax.bar(
            [i + (k - (len(names) - 1) / 2) * width for i in range(len(counts))],
            [c / n for c in counts],
            width=width,
            color=_COLOURS.get(g, "#7f7f7f"),
            alpha=0.7,
            label=str(groups[g]["label"]),
        )
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("equivalent diameter (px at 512 px)", fontsize=9)
    ax.set_title("voids per image by size", fontsize=10)
    if names:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _bin_label(lo: float | None, hi: float | None) -> str:
    if hi is None or (isinstance(hi, float) and math.isinf(hi)):
        return f"≥{lo:g}"
    return f"{lo:g}–{hi:g}"


def write_void_metrics_plot(experiment_dir: str | Path, comparison: Mapping[str, Any]) -> Path:
    """Write :func:`plot_void_metrics` to ``plots/void_metrics.png``; returns the path."""
    path = Path(experiment_dir) / VOID_METRICS_PLOT
    atomic_write_bytes(path, _png(plot_void_metrics(comparison)))
    return path


def _png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white")
    return buf.getvalue()


def _cell(summary: Mapping[str, Any], figure: str) -> str:
    s = summary.get(figure) or {}
    fmt = "{:.0f}" if figure == "void_count" else "{:.2f}"
    try:
        return f"{fmt.format(s['median'])} ({fmt.format(s['q25'])}–{fmt.format(s['q75'])})"
    except (KeyError, TypeError, ValueError):
        return "-"


def void_metrics_section(comparison: object) -> str:
    """The report's HTML section (empty when ``calibration.json`` holds no void metrics).

    Args:
        comparison: The ``void_metrics`` entry of ``calibration.json``.

    Returns:
        An ``<h2>`` section: a table of medians (quartiles) per group, the detector's error on
        the synthetic images and the figure.
    """
    if not isinstance(comparison, Mapping) or not comparison.get("groups"):
        return ""
    e = html.escape
    groups = comparison["groups"]
    figures = comparison.get("figures") or list(_TITLES)
    titles = ["group", "images", *(_TITLES.get(f, f) for f in figures)]
    head = "".join(f"<th>{e(h)}</th>" for h in titles)
    rows = "".join(
        f"<tr><td>{e(str(g['label']))}</td><td class='num'>{g['summary']['n_images']}</td>"
        + "".join(f"<td class='num'>{e(_cell(g['summary'], f))}</td>" for f in figures)
        + "</tr>"
        for g in groups.values()
    )
    acc = comparison.get("detector_accuracy") or {}
    accuracy = ""
    if acc:
        area, count = acc.get("area_pct") or {}, acc.get("count") or {}
        accuracy = (
            f"<p class='note'>Detector error on the {acc.get('n_images')} synthetic images "
            f"(against the generator's masks): void area {area.get('bias', math.nan):+.2f} "
            f"percentage points on average (mean absolute {area.get('mae', math.nan):.2f}, true "
            f"mean {area.get('true_mean', math.nan):.2f} %), void count "
            f"{count.get('bias', math.nan):+.2f} (mean absolute {count.get('mae', math.nan):.2f}"
            f"), pixel IoU {acc.get('iou', math.nan):.2f}.</p>"
        )
    missing = comparison.get("missing") or {}
    note = "".join(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in missing.items())
    data64 = base64.b64encode(_png(plot_void_metrics(comparison))).decode("ascii")
    return (
        "<h2 id='void-metrics'>Void metrics (inspection units)</h2>"
        f"<p class='note'>{e(str(comparison.get('method', '')).capitalize())}. Median "
        "(quartiles) per image; "
        "shares are of the whole image.</p>"
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
        "</table></div>"
        + accuracy
        + (f"<p class='note'>Not shown:</p><ul>{note}</ul>" if note else "")
        + "<figure id='fig-void-metrics'>"
        f"<img alt='void metrics, real vs synthetic' src='data:image/png;base64,{data64}'>"
        "<figcaption>Real targets (red), the recommendation's fresh renders (green) and ψ's "
        "samples (blue), measured by the same detector.</figcaption></figure>"
    )
