"""The verdict: can this generator reproduce these images, and if not, what is off?

Two pieces of evidence, each valid for how its samples were drawn:

1. **The test.** Images drawn from the fitted population ``p_ψ`` (one fresh parameter set per
   image, or per cluster when the targets are sets × renders) against target images the fit of
   ``ψ`` never saw (the held-out folds), with a permutation test that relabels exchangeable
   units only (:func:`~bo_voids.statistics.permutation.stratified_permutation_test`). Both sides
   are i.i.d. draws of their process under "the generator reproduces the images", so its p-value
   is exact. A small p says no ``ψ`` under these bounds makes images like the targets.
2. **Per-summary posterior predictive checks** (:func:`summary_checks`). For each summary of the
   run's summary map, the mean over the target images is compared with the mean over fresh
   images drawn from ``p_ψ`` (Welch tests on the means of exchangeable units). The summaries
   of the parameter head (``E[θ | image]``, Fearnhead & Prangle 2012) carry a parameter's name,
   so a failed check reads as words ("voids in the real images look larger than the generator's
   draws"); a Holm correction across the summaries keeps the family's false-alarm rate at
   ``alpha``. They check ψ as fitted, so a failure with a passing test points at a biased fit
   (a hint), and with a failing test at what the generator misses.

A ψ component at its search bound is reported too (:func:`bound_notes`): the fit wants to go
further than the bounds allow, which is the most common reason a generator cannot reach the
targets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import ttest_ind

from bo_voids._types import JsonObject, Labels

__all__ = [
    "VERDICT_ALPHA",
    "SummaryCheck",
    "Verdict",
    "bound_notes",
    "holm",
    "make_verdict",
    "summary_checks",
]

#: Level of the verdict's test and of the Holm-corrected family of summary checks.
VERDICT_ALPHA = 0.05
#: A ψ mean within this share of the range of a bound is "at its bound".
BOUND_SHARE = 0.03

#: What a higher / lower value of each parameter's head summary looks like, in words.
_WORDS: dict[str, tuple[str, str]] = {
    "void_count": ("more voids per image", "fewer voids per image"),
    "base_size": ("larger voids", "smaller voids"),
    "brightness_factor": ("fainter voids (less contrast)", "darker voids (more contrast)"),
    "size_std": ("more varied void sizes", "more uniform void sizes"),
    "position_spread": ("voids spread further out", "voids gathered nearer the centre"),
}


def _words(summary: str, higher: bool) -> str:
    name = summary.removeprefix("head_")
    if name in _WORDS:
        return _WORDS[name][0 if higher else 1]
    if "=" in name:
        param, choice = name.split("=", 1)
        return f"{'more' if higher else 'fewer'} {choice} {param.replace('_', ' ')}s"
    return f"a {'higher' if higher else 'lower'} '{summary}' summary"


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control), NaN kept as NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class SummaryCheck:
    """One posterior predictive check: the targets' mean summary against ψ's replicates.

    Attributes:
        summary: The summary's name (``head_base_size``, ``pca_1``, ...).
        real_mean: Mean over the target images.
        generated_mean: Mean over the images drawn from ``p_ψ``.
        generated_range: 95 % confidence range of the generated mean.
        p_value: Two-sided Welch p-value of the unit means.
        p_holm: Holm-adjusted over the family of checks.
        off: Whether the check fails at the verdict's level (``p_holm <= alpha``).
        message: What is off, in words (``None`` when nothing is).
    """

    summary: str
    real_mean: float
    generated_mean: float
    generated_range: tuple[float, float]
    p_value: float
    p_holm: float
    off: bool
    message: str | None


def _unit_means(X: np.ndarray, groups: Labels | None) -> np.ndarray:
    """Mean of each exchangeable unit (cluster, or image when ``groups`` is ``None``)."""
    if groups is None:
        return X
    labels = np.asarray(groups)
    return np.stack([X[labels == u].mean(axis=0) for u in np.unique(labels)])


def summary_checks(
    real: np.ndarray,
    generated: np.ndarray,
    names: Sequence[str],
    *,
    real_groups: Labels | None = None,
    generated_groups: Labels | None = None,
    alpha: float = VERDICT_ALPHA,
) -> list[SummaryCheck]:
    """Posterior predictive checks of the mean of every summary (Welch tests on unit means).

    Each side's exchangeable units are its clusters (renders of one parameter set) or single
    images; the unit means of the targets and of the ψ sample are compared with Welch's
    unequal-variance t-test, which carries the sampling error of both sides. Holm's correction
    over the summaries keeps the family's false-alarm rate at ``alpha``.

    Args:
        real: `(m, k)` summaries of the target images.
        generated: `(n, k)` summaries of images drawn from ``p_ψ``.
        names: The ``k`` summary names.
        real_groups: Cluster label of each target image, or ``None`` (an i.i.d. folder).
        generated_groups: Cluster label of each generated image, or ``None``.
        alpha: Level of the Holm-corrected family.

    Returns:
        One :class:`SummaryCheck` per summary (NaN p-values with fewer than 2 units a side).
    """
    R = np.asarray(real, dtype=np.float64)
    G = np.asarray(generated, dtype=np.float64)
    if R.ndim != 2 or G.ndim != 2 or R.shape[1] != G.shape[1] or R.shape[1] != len(names):
        raise ValueError(f"summaries of shapes {R.shape} and {G.shape} for {len(names)} names")
    ur, ug = _unit_means(R, real_groups), _unit_means(G, generated_groups)
    observed, expected = ur.mean(axis=0), ug.mean(axis=0)
    if len(ur) >= 2 and len(ug) >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.asarray(ttest_ind(ur, ug, axis=0, equal_var=False).pvalue, dtype=np.float64)
        se_g = ug.std(axis=0, ddof=1) / math.sqrt(len(ug))
    else:
        p = np.full(R.shape[1], np.nan)
        se_g = np.full(R.shape[1], np.nan)
    lo, hi = expected - 1.96 * se_g, expected + 1.96 * se_g
    p_adj = holm(p)
    out = []
    for j, name in enumerate(names):
        off = bool(np.isfinite(p_adj[j]) and p_adj[j] <= alpha)
        higher = bool(observed[j] > expected[j])
        message = None
        if off and name.startswith("head_"):
            message = (
                f"the real images show {_words(name, higher)} than the generator's draws from "
                f"the fitted population (summary {name}: {observed[j]:.3g} against "
                f"{expected[j]:.3g}, Holm p {p_adj[j]:.2g})"
            )
        elif off:
            message = (
                f"the real images differ from the generator's draws in summary {name} "
                f"({observed[j]:.3g} against {expected[j]:.3g}, Holm p {p_adj[j]:.2g})"
            )
        out.append(
            SummaryCheck(
                summary=str(name),
                real_mean=float(observed[j]),
                generated_mean=float(expected[j]),
                generated_range=(float(lo[j]), float(hi[j])),
                p_value=float(p[j]),
                p_holm=float(p_adj[j]),
                off=off,
                message=message,
            )
        )
    return out


def bound_notes(
    means: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    *,
    share: float = BOUND_SHARE,
) -> list[str]:
    """ψ means at (within ``share`` of the range of) a search bound, in words.

    Args:
        means: ψ's mean of every numeric parameter.
        bounds: ``{name: (low, high)}`` of the search space.
        share: Closeness to a bound, as a share of the range.

    Returns:
        One sentence per parameter at a bound.
    """
    notes = []
    for name, mean in means.items():
        if name not in bounds:
            continue
        low, high = (float(v) for v in bounds[name])
        span = high - low
        if not span > 0 or not math.isfinite(mean):
            continue
        if mean - low <= share * span:
            side, value = "lower", low
        elif high - mean <= share * span:
            side, value = "upper", high
        else:
            continue
        notes.append(
            f"{name} is at its {side} bound ({mean:.3g}, bound {value:.3g}): the fit wants to go "
            f"further than param_bounds.{name} allows"
        )
    return notes


@dataclass(frozen=True)
class Verdict:
    """The answer to "can this generator reproduce these images?".

    Attributes:
        reproduces: ``True`` (no evidence against), ``False`` (the test rejects at ``alpha``)
            or ``None`` (cannot judge: no held-out test).
        headline: One sentence a user acts on.
        p_value: The held-out test's p-value (``None`` when unavailable).
        alpha: The level.
        test: How the test was done (or why it was not).
        what_is_off: Sentences naming what differs (failed checks, ψ at a bound) when the test
            rejects.
        hints: The same sentences when it does not (differences of the fitted ψ, not proof
            that the generator cannot reach the targets).
        checks: Every summary check.
    """

    reproduces: bool | None
    headline: str
    p_value: float | None
    alpha: float
    test: str
    what_is_off: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    checks: list[SummaryCheck] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        """The exit-0 warning line printed at the end of a run, or ``None``."""
        if self.reproduces is False:
            return f"{self.headline} " + " ".join(f"{s}." for s in self.what_is_off[:3])
        return None

    def to_dict(self) -> JsonObject:
        """JSON-serialisable form."""
        out = asdict(self)
        out["checks"] = [
            {**asdict(c), "generated_range": list(c.generated_range)} for c in self.checks
        ]
        return out


def make_verdict(
    p_value: float | None,
    *,
    test: str,
    checks: Sequence[SummaryCheck] = (),
    bound_messages: Sequence[str] = (),
    alpha: float = VERDICT_ALPHA,
) -> Verdict:
    """Combine the held-out test, the summary checks and the bound notes into the verdict.

    The decision is the test's alone (its level is exact); the checks and bound notes say what
    is off when it rejects, and are listed as hints when it does not.

    Args:
        p_value: The held-out test's p-value, or ``None`` when there is none.
        test: Description of the test (or why there is none).
        checks: From :func:`summary_checks`.
        bound_messages: From :func:`bound_notes`.
        alpha: The level.

    Returns:
        The :class:`Verdict`.
    """
    off = [c.message for c in checks if c.off and c.message]
    named = [m for m in off if "summary head_" in m] + [m for m in off if "summary head_" not in m]
    what = named + list(bound_messages)
    if p_value is None or not math.isfinite(p_value):
        headline = f"Cannot judge whether the generator reproduces these images: {test}."
        return Verdict(None, headline, None, alpha, test, [], what, list(checks))
    if p_value <= alpha:
        headline = (
            f"WARNING: the generator does not reproduce these images (held-out test p = "
            f"{p_value:.3g} <= {alpha}); treat the fitted population as the closest it gets, "
            "not as the answer."
        )
        if not what:
            what = ["no single summary or bound explains the difference"]
        return Verdict(False, headline, float(p_value), alpha, test, what, [], list(checks))
    headline = (
        f"No evidence that the generator cannot reproduce these images (held-out test p = "
        f"{p_value:.3g} > {alpha})."
    )
    return Verdict(True, headline, float(p_value), alpha, test, [], what, list(checks))
