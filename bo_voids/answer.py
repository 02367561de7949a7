"""The answer a run gives, in a few plain lines: ψ with its intervals, the verdict, what is off.

Read from ``calibration.json`` (the dict :func:`~bo_voids.calibration.calibrate_experiment`
returns) by the terminal summary and the report, so both lead with the same words. Imports
nothing heavy: the report command uses it without loading the calibration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["answer_lines", "calibration_line", "psi_lines", "verdict_warning"]


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def calibration_line(calibration: Mapping[str, Any]) -> str | None:
    """The run's one line on its calibration: how well the implied distribution's renders score.

    Args:
        calibration: The calibration record.

    Returns:
        The line, or ``None`` when the record has no validation of the implied distribution.
    """
    implied = (calibration.get("validation") or {}).get("implied") or {}
    if not implied:
        return None
    return (
        f"calibration: a mixture of {len(calibration.get('components', []))} evaluated sets; "
        "fresh renders drawn from its implied distribution score MMD² "
        f"{implied.get('mmd2', math.nan):.4f} vs the targets "
        f"(p={implied.get('p_value', math.nan):.3f}) -> calibration.json"
    )


def psi_lines(calibration: Mapping[str, Any]) -> list[str]:
    """One line per parameter of the fitted population ψ, with its intervals.

    Args:
        calibration: The ``calibration.json`` dict.

    Returns:
        ``"base_size: mean 17.2 [15.1, 19.0], std 3.1 [1.2, 5.0]"``-style lines (empty without a
        population fit).
    """
    pop = calibration.get("population") or {}
    psi, intervals = pop.get("psi") or {}, pop.get("intervals") or {}
    lines = []
    for name, dist in psi.items():
        iv = intervals.get(name) or {}
        if "mean" in dist:
            parts = []
            for key in ("mean", "std"):
                lo_hi = iv.get(key)
                ci = f" [{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else ""
                parts.append(f"{key} {_fmt(dist[key])}{ci}")
            lines.append(f"{name}: " + ", ".join(parts))
        else:
            parts = []
            for choice, p in dist.items():
                lo_hi = iv.get(choice)
                ci = f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""
                parts.append(f"{choice} {p:.2f}{ci}")
            lines.append(f"{name}: " + ", ".join(parts))
    return lines


def verdict_warning(calibration: Mapping[str, Any]) -> str | None:
    """The exit-0 warning line when the verdict says the generator cannot reproduce the images."""
    verdict = calibration.get("verdict") or {}
    if verdict.get("reproduces") is not False:
        return None
    off = " ".join(f"{s}." for s in (verdict.get("what_is_off") or [])[:3])
    return f"{verdict.get('headline', '')} {off}".strip()


def answer_lines(calibration: Mapping[str, Any]) -> list[str]:
    """The answer block: verdict, what is off, ψ with its intervals (plain text lines).

    Args:
        calibration: The ``calibration.json`` dict.

    Returns:
        Lines, the verdict first.
    """
    verdict = calibration.get("verdict") or {}
    lines = [f"Verdict: {verdict.get('headline', 'no verdict (calibration incomplete)')}"]
    for sentence in verdict.get("what_is_off") or []:
        lines.append(f"  - {sentence}")
    for sentence in verdict.get("hints") or []:
        lines.append(f"  - hint (the fitted population, not the generator): {sentence}")
    pop = calibration.get("population") or {}
    level = pop.get("interval_level")
    if pop.get("psi"):
        head = "Population of generator settings that reproduces the targets (ψ"
        head += f", {level:.0%} intervals):" if isinstance(level, float) else "):"
        lines.append(head)
        lines += [f"  {line}" for line in psi_lines(calibration)]
        method = pop.get("interval_method")
        if method:
            lines.append(f"  (intervals: {method})")
    lost = (pop.get("identifiability") or {}).get("not_identified") or []
    if lost:
        lines.append(
            "  Not identifiable from these images (their summaries barely change with it, held-out "
            f"R² < {(pop.get('identifiability') or {}).get('threshold', 0.1)}): "
            + ", ".join(lost)
            + " — ψ's values for them are the prior's; raise image_size or use another embedder"
        )
    return lines
