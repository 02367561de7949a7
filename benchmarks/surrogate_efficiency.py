"""Do the speed choices cost sample efficiency? Best-after-N on the synthetic problem.

Run as ``python -m benchmarks.surrogate_efficiency [--quick]``. Each variant of
:class:`~bo_voids.optimizers.BoTorchOptimizer` (surrogate, fit ``maxiter``, noise model,
alternating steps) and random search run the same loop on
:class:`~bo_voids.testing.synthetic.SyntheticProblem`: 16 uniform initial sets, then 4
iterations of 8 proposals, over several seeds (the initial design depends only on the seed, so
every variant starts from the same points). The score is the normalised distance of the best
*evaluated* set to the known optimum (lower is better). Writes
``surrogate_efficiency{_quick}.{csv,json,md}`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results
from bo_voids.optimizers import BoTorchOptimizer, RandomSearchOptimizer
from bo_voids.testing.synthetic import SyntheticProblem, run_loop

VARIANTS: dict[str, dict[str, Any] | None] = {
    "random": None,
    "mixed (default: fixed+learned noise, maxiter 100)": {},
    "onehot": {"surrogate": "onehot"},
    "mixed, fit maxiter 1000": {"maxiter": 1000},
    "mixed, noise fixed": {"noise": "fixed"},
    "mixed, noise learned": {"noise": "learned"},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 2 iterations, 3 variants")
    ap.add_argument("--acquisition", default="ucb")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = ap.parse_args(argv)
    seeds = range(2 if args.quick else args.seeds)
    n_iter = 2 if args.quick else 4
    variants = dict(list(VARIANTS.items())[:3]) if args.quick else VARIANTS
    problem = SyntheticProblem(seed=0)
    rows: list[dict[str, Any]] = []
    for name, kw in variants.items():
        traces, t0 = [], time.perf_counter()
        for s in seeds:
            if kw is None:
                opt = RandomSearchOptimizer(problem.space, seed=s)
            else:
                opt = BoTorchOptimizer(problem.space, seed=s, acquisition=args.acquisition, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traces.append(run_loop(opt, problem, n_iter=n_iter, init_seed=s))
        tr = np.array(traces)
        row = {
            "variant": name,
            "acquisition": args.acquisition if kw is not None else "",
            "seeds": len(tr),
            "median_best_per_iter": [round(float(v), 4) for v in np.median(tr, axis=0)],
            "final_per_seed": [round(float(v), 4) for v in tr[:, -1]],
            "median_final": round(float(np.median(tr[:, -1])), 4),
            "mean_final": round(float(np.mean(tr[:, -1])), 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{name}: median final {row['median_final']} ({row['seconds']} s)", flush=True)
        rows.append(row)
    columns = {
        "variant": "variant",
        "median_best_per_iter": "median best after each iteration",
        "final_per_seed": "final per seed",
        "median_final": "median final",
        "mean_final": "mean final",
        "seconds": "seconds",
    }
    write_results(
        "surrogate_efficiency_quick" if args.quick else "surrogate_efficiency",
        rows,
        out_dir=args.out,
        meta={"args": cli_args(args), "iterations": n_iter, "initial_sets": 16, "batch_size": 8},
        columns=columns,
        markdown_title="Sample efficiency on the synthetic problem (distance of the best "
        "evaluated set to the optimum; lower is better)",
        notes=f"16 initial uniform sets + {n_iter} iterations of 8; {len(seeds)} seeds; "
        f"acquisition {args.acquisition}.",
    )
    print_table(rows, columns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
