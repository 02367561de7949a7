"""CLI: distribution-level calibration of a finished (or running) experiment.

Usage::

    python -m bo_voids.calibrate EXPERIMENT_DIR [--n-samples N] [--seed S] [--out PATH]

Fits a sparse mixture of the evaluated parameter sets to the real targets, prints the implied
``param_distributions`` entry (YAML, ready to paste) and its validation on freshly rendered images,
and writes ``calibration.json`` (see :mod:`bo_voids.calibration`).

Exit codes: 0 success, 2 user error (missing folder, not an experiment, other embedder, bad
option), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import logging
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = _Parser(
        prog="python -m bo_voids.calibrate",
        description="Recover the distribution of parameters that reproduces the real images.",
    )
    p.add_argument("experiment_dir", type=Path, help="experiment folder (holds experiment.json)")
    p.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="parameter sets drawn from the implied distribution for validation "
        "(default: the real set's param_sets)",
    )
    p.add_argument("--seed", type=int, default=None, help="validation seed (default: run's seed)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output JSON (default: EXPERIMENT_DIR/calibration.json)",
    )
    p.add_argument("--max-components", type=int, default=8, help="most mixture components kept")
    p.add_argument("--min-weight", type=float, default=0.02, help="prune lighter components")
    p.add_argument("--no-plot", action="store_true", help="skip plots/calibration_pca.png")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the output path")
    return p


def format_result(result: dict[str, Any], path: Path) -> str:
    """Human-readable summary of a calibration result."""
    mix = result["mixture"]
    val = result["validation"]
    lines = [
        f"mixture: {mix['n_components']} component(s) of {mix['n_candidates']} evaluated sets "
        f"(in-sample MMD² {mix['objective_mmd2']:.4f})",
    ]
    for c in result["components"]:
        lines.append(f"  {c['weight']:.3f}  {c['param_set_id']}  {c['params']}")
    lines.append("implied distribution (paste under param_distributions:):")
    lines.append(result["yaml_snippet"].rstrip())
    q95 = val["noise_floor"].get("q95")
    lines.append(
        f"validation on fresh renders ({val['n_param_sets']} sets x {val['replications']}); "
        f"noise floor q95 {q95 if q95 is None else f'{q95:.4f}'}:"
    )
    for key in ("implied", "mixture", "best_point", "top_k_pool"):
        v = val[key]
        lines.append(
            f"  {key:<11} MMD² {v['mmd2']:.4f}  p {v['p_value']:.3f}  "
            f"inside noise floor: {v['inside_noise_floor']}"
        )
    if result.get("errors"):
        e = result["errors"]["implied"]
        lines.append(
            f"vs the true real distribution: mean error {e['mean_error']:.3f}, std error "
            f"{e['std_error']:.3f} (fractions of the range), shape TV {e['shape_tv']:.3f}"
        )
    lines.append(f"wrote {path}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if args.n_samples is not None and args.n_samples < 1:
        print(f"error: --n-samples must be >= 1, got {args.n_samples}", file=sys.stderr)
        return EXIT_USAGE
    if args.seed is not None and args.seed < 0:
        print(f"error: --seed must be >= 0, got {args.seed}", file=sys.stderr)
        return EXIT_USAGE
    if args.max_components < 1 or not 0.0 <= args.min_weight < 1.0:
        print("error: --max-components must be >= 1 and --min-weight in [0, 1)", file=sys.stderr)
        return EXIT_USAGE
    root: Path = args.experiment_dir
    if not (root / "experiment.json").is_file():
        print(f"error: {root} is not an experiment folder (no experiment.json)", file=sys.stderr)
        return EXIT_USAGE
    from bo_voids.calibration import CALIBRATION_FILE, calibrate_experiment

    try:
        result = calibrate_experiment(
            root,
            n_samples=args.n_samples,
            seed=args.seed,
            out=args.out,
            max_components=args.max_components,
            min_weight=args.min_weight,
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
    sys.exit(main())
