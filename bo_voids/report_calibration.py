"""The report's calibration sections, from ``calibration.json`` (:mod:`bo_voids.calibration`).

The population fit ψ with its intervals beside the mixture and the truth, the fresh renders
against the targets (each row says which sample it is), the implied marginals, the ψ pairplot,
the surrogate's cross-validated predictions per summary, and everything in the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bo_voids import _html as _h
from bo_voids.exceptions import BoVoidsError
from bo_voids.state import ExperimentRun, read_json
from bo_voids.void_metrics_report import void_metrics_section

__all__ = ["CALIBRATION_FILE", "calibration_section"]

#: The implied parameter distribution (``bo_voids.calibration``), shown when present.
CALIBRATION_FILE = "calibration.json"


def calibration_section(run: ExperimentRun) -> str:
    """The calibration sections of the report (``""`` without ``calibration.json``)."""
    path = run.root / CALIBRATION_FILE
    if not path.exists():
        return ""
    try:
        data = read_json(path)
    except BoVoidsError as exc:
        return f'<h2>Implied parameter distribution</h2><p class="note">{_h.e(exc)}</p>'
    body = (
        "".join(f"<h3>{_h.e(k)}</h3>{_h.render_value(v)}" for k, v in data.items())
        if isinstance(data, Mapping)
        else _h.render_value(data)
    )
    population = _population_section(run, data) if isinstance(data, Mapping) else ""
    population += (
        void_metrics_section(data.get("void_metrics")) if isinstance(data, Mapping) else ""
    )
    return (
        f"{population}<h2>Implied parameter distribution</h2>"
        f'<p class="note">From {_h.e(CALIBRATION_FILE)}.</p>'
        f"<details><summary>Everything in {_h.e(CALIBRATION_FILE)}</summary>{body}</details>"
    )


def _population_section(run: ExperimentRun, data: Mapping[str, Any]) -> str:
    """ψ with its intervals beside the mixture and the truth, the fresh validation, the plot."""
    pop = data.get("population")
    if not isinstance(pop, Mapping):
        reason = data.get("population_error")
        return (
            f'<h2>Population calibration</h2><p class="note">Not available: {_h.e(reason)}</p>'
            if reason
            else ""
        )
    psi = pop.get("psi") or {}
    intervals = pop.get("intervals") or {}
    mixture = data.get("implied_distribution") or {}
    truth = pop.get("truth") or {}
    level = _h.num(pop.get("interval_level"))
    rows = []
    for name, value in psi.items():
        for part, v in value.items():
            lo, hi = (intervals.get(name) or {}).get(part, (math.nan, math.nan))
            rows.append(
                (
                    [
                        f"{name}.{part}",
                        _h.fmt(v),
                        f"{_h.fmt(lo)} – {_h.fmt(hi)}",
                        _h.fmt((mixture.get(name) or {}).get(part)),
                        _h.fmt((truth.get(name) or {}).get(part)) if truth else "-",
                    ],
                    "",
                )
            )
    head = ["parameter", "ψ", f"{level:.0%} interval", "mixture", "truth"]
    from bo_voids.calibration.__main__ import POPULATION_ROW_LABELS

    comp = [
        (
            [
                POPULATION_ROW_LABELS.get(str(k), str(k)),
                _h.fmt(v.get("in_sample_mmd2")),
                _h.fmt(v.get("in_sample_p")),
                _h.fmt(v.get("held_out_mmd2")),
                _h.fmt(v.get("held_out_p")),
                _h.fmt(v.get("held_out_inside_noise_floor")),
            ],
            "best" if k == "population" else "",
        )
        for k, v in (pop.get("comparison") or {}).items()
    ]
    chead = [
        "fresh renders of",
        "MMD² vs all targets (in-sample)",
        "p",
        "MMD² vs held-out targets",
        "p",
        "inside null band",
    ]
    errors = pop.get("errors") or {}
    err = "".join(
        f"<li>vs the {_h.e(ref)} distribution: mean error {_h.fmt(e.get('mean_error'))}, std "
        f"error {_h.fmt(e.get('std_error'))} (fractions of the range), shape TV "
        f"{_h.fmt(e.get('shape_tv'))}</li>"
        for ref, e in errors.items()
    )
    plots = run.root / "plots"
    figures = _h.embedded_figure(
        plots / "calibration_marginals.png",
        "calibration-marginals",
        "Implied marginals",
        "ψ (blue, with the interval of its mean), the mixture's implied distribution (green, "
        "dashed), the truth and the realised target sets (red) when the targets are simulated, "
        "the best single point (dotted).",
    ) + _h.embedded_figure(
        plots / "psi_pairplot.png",
        "psi-pairplot",
        "ψ pairplot",
        "Draws from the population fit p_ψ, every pair of numeric parameters, coloured by void "
        "shape; stars: the simulated target sets (when the targets are simulated); cross: the "
        "run's best set.",
    )
    return (
        "<h2>Population calibration (ψ)</h2>"
        f'<p class="note">{_h.e(pop.get("method", ""))}. Intervals: '
        f"{_h.e(pop.get('interval_method', ''))}. Paste under <code>param_distributions:</code>:"
        f"</p><pre>{_h.e(pop.get('yaml_snippet', ''))}</pre>"
        f'<div class="scroll">{_h.table(head, rows)}</div>'
        "<h3>Fresh renders against the targets</h3>"
        f'<div class="scroll">{_h.table(chead, comp)}</div>'
        + (f"<ul>{err}</ul>" if err else "")
        + figures
        + _surrogate_section(run, data.get("surrogate_cv"))
    )


def _surrogate_section(run: ExperimentRun, cv: Any) -> str:
    """Cross-validated predicted vs observed per summary: the figure and a table."""
    if not isinstance(cv, Mapping) or not cv.get("per_summary"):
        return ""
    rows = [
        (
            [
                str(name),
                _h.fmt(stats.get("r2")),
                _h.pct(stats.get("coverage_2sd")),
                _h.fmt(stats.get("rmse")),
            ],
            "",
        )
        for name, stats in cv["per_summary"].items()
    ]
    head = ["summary", "out-of-sample R²", "inside ±2 sd (≈95 % if calibrated)", "RMSE"]
    figure = _h.embedded_figure(
        run.root / "plots" / "surrogate_cv.png",
        "surrogate-cv",
        "Cross-validated predictions",
        "Each held-out set's predicted mean summary against its observed mean, ±2 predictive "
        "sd; dashed: perfect prediction.",
    )
    return (
        "<h2>Surrogate diagnostics</h2>"
        f'<p class="note">How well the composite GP predicts sets it has not seen: '
        f"{_h.e(cv.get('note', ''))}. Summaries with R² near 0 carry little the model can "
        "predict from the parameters; a coverage far below 95 % means over-confident "
        f"predictions.</p>{figure}"
        f'<details><summary>Per-summary statistics</summary><div class="scroll">'
        f"{_h.table(head, rows, table_id='surrogate-cv')}</div></details>"
    )
