"""CLI: distribution-level calibration of a finished (or running) experiment.

Usage::

    python -m bo_voids.calibration EXPERIMENT_DIR [--n-samples N] [--seed S] [--out PATH]
        [--folds K] [--sets-per-fold N] [--max-components K] [--min-weight W]
        [--std-correction {n_eff,none}] [--no-plot] [-q]

Fits a sparse mixture of the evaluated parameter sets to the targets, prints the implied
``param_distributions`` entry (YAML, ready to paste) and its validation on freshly rendered
images — in-sample and held out, side by side, with the permutation scheme and the null band
of each — and writes ``calibration.json`` (see :mod:`bo_voids.calibration`).
``python -m bo_voids.calibrate`` runs the same command.

Exit codes: 0 success, 2 user error (missing folder, not an experiment, too few targets, other
embedder, bad option), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bo_voids.exceptions import BoVoidsError, StateError, UserInputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """``argparse`` that reports errors on one line and exits with code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser(prog: str = "python -m bo_voids.calibration") -> argparse.ArgumentParser:
    """The command-line parser (``prog`` names the command in its messages)."""
    p = _Parser(
        prog=prog,
        description="Recover the distribution of parameters that reproduces the target images.",
    )
    p.add_argument("experiment_dir", type=Path, help="experiment folder (holds experiment.json)")
    p.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="parameter sets of each in-sample validation sample (default: the target sets, "
        "or the config's real image count for a target folder)",
    )
    p.add_argument("--seed", type=int, default=None, help="validation seed (default: run's seed)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output JSON (default: EXPERIMENT_DIR/calibration.json)",
    )
    p.add_argument("--folds", type=int, default=5, help="most held-out folds (default 5)")
    p.add_argument(
        "--sets-per-fold",
        type=int,
        default=None,
        help="sets of each fold's fresh sample (default: half of --n-samples, at least 3)",
    )
    p.add_argument("--max-components", type=int, default=8, help="most mixture components kept")
    p.add_argument("--min-weight", type=float, default=0.02, help="prune lighter components")
    p.add_argument(
        "--std-correction",
        choices=("n_eff", "none"),
        default="n_eff",
        help="small-sample correction of the implied std (default n_eff)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip plots/calibration_pca.png")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the output path")
    return p


def _num(value: Any, fmt: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt)


def _test_line(row: dict[str, Any]) -> str:
    if row.get("scheme") is None:
        return "n/a"
    kind = "exact" if row["exact"] else "random"
    return (
        f"{row['scheme']} permutation, {row['n_distinct_splits']} splits ({kind}), "
        f"min p {_num(row['min_attainable_p'], '.2g')}"
    )


#: What sample each comparator's MMD² is computed on (fresh renders of it vs the targets).
_COMPARATOR_SAMPLES = {
    "mixture": "the mixture's own component sets, drawn by weight",
    "best_point": "the run's best set {best}, re-rendered",
    "top_k_pool": "the run's top-k sets, re-rendered",
}
#: Names of the rows of the population comparison (each: fresh renders vs the targets).
POPULATION_ROW_LABELS = {
    "population": "p_psi (population fit)",
    "mixture": "implied by the mixture",
    "best_point": "best single point",
}


def format_result(result: dict[str, Any], path: Path) -> str:
    """Human-readable summary of a calibration result."""
    mix = result["mixture"]
    val = result["validation"]
    std = result["implied_std"]
    lines = [
        f"mixture fit: {mix['n_components']} component(s) of {mix['n_candidates']} evaluated sets "
        f"(its objective, MMD² {mix['objective_mmd2']:.4f}, is on the evaluated images it was "
        f"fitted to; {mix['solver']['same_seed_pairs_dropped']} same-seed cross pairs dropped)",
    ]
    for c in result["components"]:
        lines.append(f"  {c['weight']:.3f}  {c['param_set_id']}  {c['params']}")
    lines.append(
        f"implied distribution (paste under param_distributions:); std × {std['factor']:.3f} "
        f"for n_eff = {std['n_eff']:.2f} components ({std['correction']} correction):"
    )
    lines.append(result["yaml_snippet"].rstrip())
    lines.append(
        f"validation on fresh renders drawn from the implied distribution: {val['design']}"
    )
    rows = val["side_by_side"]
    head = f"  {'':<10} {'MMD²':>8} {'p':>7} {'null q95':>9}  inside  test"
    lines.append(head)
    for name, row in rows.items():
        lines.append(
            f"  {name:<10} {_num(row['mmd2']):>8} {_num(row['p_value'], '.3f'):>7} "
            f"{_num(row['null_q95']):>9}  {row['inside_noise_floor']!s:<6}  {_test_line(row)}"
        )
    held = val["held_out"]
    if held["available"]:
        lines.append(
            f"  held-out: {held['scheme']}, {held['n_folds']} folds, "
            f"{held['sets_per_fold']} fresh sets per fold, refitted on the other folds"
        )
    else:
        lines.append(f"  held-out: not available ({held['reason']})")
    band = val["null_band"]
    if band.get("reason"):
        lines.append(f"  in-sample null band: not available ({band['reason']})")
    lines.append(
        "comparators: fresh renders of each, scored against the same targets (in-sample; same "
        "shape and null band):"
    )
    for key in ("mixture", "best_point", "top_k_pool"):
        v = val[key]
        what = _COMPARATOR_SAMPLES[key].format(best=v.get("param_set_id", "?"))
        lines.append(
            f"  {key:<11} MMD² {_num(v['mmd2'])}  p {_num(v['p_value'], '.3f')}  "
            f"inside noise floor: {v['inside_noise_floor']}  ({what})"
        )
    if result.get("errors"):
        e = result["errors"]["implied"]
        lines.append(
            f"vs the true real distribution: mean error {e['mean_error']:.3f}, std error "
            f"{e['std_error']:.3f} (fractions of the range), shape TV {e['shape_tv']:.3f}"
        )
    lines += _population_lines(result)
    lines.append(f"wrote {path} ({result['timings']['total_s']:.1f} s)")
    return "\n".join(lines)


def _population_lines(result: dict[str, Any]) -> list[str]:
    pop = result.get("population")
    if pop is None:
        reason = result.get("population_error")
        return [f"population fit (psi): not available ({reason})"] if reason else []
    level = pop.get("interval_level") or 0.9
    lines = [
        f"population fit (psi, through the composite surrogate; {pop['fit']['emulator']}), "
        f"{level:.0%} intervals in brackets:"
    ]
    intervals = pop.get("intervals") or {}
    for name, value in pop["psi"].items():
        iv = intervals.get(name, {})
        parts = []
        for key, v in value.items():
            lo, hi = iv.get(key, (math.nan, math.nan))
            parts.append(f"{key} {v:.4g} [{lo:.4g}, {hi:.4g}]")
        lines.append(f"  {name}: " + ", ".join(parts))
    lines.append("  fresh renders of p_psi vs the targets (same tests and null bands as above):")
    for name, row in pop["comparison"].items():
        lines.append(
            f"    {POPULATION_ROW_LABELS.get(name, name):<22} "
            f"in-sample MMD² {_num(row['in_sample_mmd2'])} "
            f"p {_num(row['in_sample_p'], '.3f')}   held-out MMD² {_num(row['held_out_mmd2'])} "
            f"p {_num(row['held_out_p'], '.3f')}"
        )
    if pop.get("errors"):
        for ref, e in pop["errors"].items():
            lines.append(
                f"  vs the {ref} distribution: mean error {e['mean_error']:.3f}, std error "
                f"{e['std_error']:.3f} (fractions of the range), shape TV {e['shape_tv']:.3f}"
            )
    return lines


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.calibration") -> int:
    """Run the CLI; returns the exit code (``prog``: the command name ``--help`` shows)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    problems = []
    if args.n_samples is not None and args.n_samples < 1:
        problems.append(f"--n-samples must be >= 1, got {args.n_samples}")
    if args.seed is not None and args.seed < 0:
        problems.append(f"--seed must be >= 0, got {args.seed}")
    if args.max_components < 1 or not 0.0 <= args.min_weight < 1.0:
        problems.append("--max-components must be >= 1 and --min-weight in [0, 1)")
    if args.folds < 2:
        problems.append(f"--folds must be >= 2, got {args.folds}")
    if args.sets_per_fold is not None and args.sets_per_fold < 1:
        problems.append(f"--sets-per-fold must be >= 1, got {args.sets_per_fold}")
    root: Path = args.experiment_dir
    if not (root / "experiment.json").is_file():
        problems.append(f"{root} is not an experiment folder (no experiment.json)")
    from bo_voids.calibration import CALIBRATION_FILE, calibrate_experiment

    if args.out is not None:
        from bo_voids.ownership import check_output_file

        try:
            check_output_file(args.out, experiment_dir=root, own_name=CALIBRATION_FILE)
        except UserInputError as exc:
            problems.append(str(exc))
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE

    try:
        result = calibrate_experiment(
            root,
            n_samples=args.n_samples,
            seed=args.seed,
            out=args.out,
            max_components=args.max_components,
            min_weight=args.min_weight,
            std_correction=args.std_correction,
            folds=args.folds,
            sets_per_fold=args.sets_per_fold,
            plot=not args.no_plot,
        )
    except (UserInputError, StateError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except BoVoidsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILURE
    path = args.out or root / CALIBRATION_FILE
    print(path if args.quiet else format_result(result, path))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    from bo_voids.cli import run_module

    run_module(main)
