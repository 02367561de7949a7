"""Seconds for one 8-point proposal: model fit and acquisition optimisation, timed apart.

Run as ``python -m benchmarks.proposal_speed [--quick]``. For each history size (64, 150, 300
and 1,000 scored parameter sets of the synthetic problem in :mod:`bo_voids.testing.synthetic`):

* ``composite`` (the default): the summary map and the multi-output GP as one iteration of a run
  sees them — a warm-started refit (from the state of a cold fit on the same data) and the joint
  q-batch acquisition; median of ``--repeats`` repetitions;
* ``mixed`` / ``onehot`` (the first release's scalar GPs): a cold fit, then each acquisition with
  the package defaults (``num_restarts=8``, ``raw_samples=256``, fit ``maxiter=100``), optimised
  by BoTorch's sequential-greedy ``alternating`` optimiser (the default, 4 alternating steps) and
  by the ``joint`` one (the whole batch in one L-BFGS-B run); one repetition.

One torch thread. The load average is recorded (rows of one run are comparable; absolute values
depend on the load). Writes ``proposal_speed{_quick}.{csv,json,md}`` under ``--out``.
Goals (2 CPU cores): ≤ 1.5 s at ≤ 300 and ≤ 4 s at 1,000 observations.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings
from typing import Any

import torch

from benchmarks._results import RESULTS_DIR, cli_args, write_results
from bo_voids.optimizers import BoTorchOptimizer
from bo_voids.optimizers.botorch_gp import _torch_threads
from bo_voids.scoring import ScoreBook
from bo_voids.testing.synthetic import SyntheticProblem

TARGETS = {64: 1.5, 150: 1.5, 300: 1.5, 1000: 4.0}


def time_composite(
    problem: SyntheticProblem, n: int, acquisitions: list[str], repeats: int
) -> list[dict[str, Any]]:
    """Warm refit + joint acquisition of the composite GP on ``n`` sets; median of repeats."""
    import numpy as np

    from bo_voids.optimizers import CompositeGPOptimizer
    from bo_voids.surrogates.composite import CompositeSurrogate

    sets = problem.space.sample_uniform(n, 1000 + n)
    emb, meta = problem.evaluate(sets, 0, "close")
    book = ScoreBook(problem.space, problem.targets)
    book.add(emb, meta)
    obs = book.observations()
    rows = []
    for acq in acquisitions:
        opt = CompositeGPOptimizer(problem.space, acquisition=acq)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smap = opt._summary_map(list(obs.sets), None, 0)
            X, Y, Yvar = opt.training_data(list(obs.sets), smap)
            target = smap.transform(obs.targets).mean(axis=0)
            cold = CompositeSurrogate(problem.space, acquisition=acq).fit(
                X, Y, Yvar, target, seed=0
            )
            state = cold.state_dict()
            fits, acqs, value = [], [], 0.0
            for r in range(repeats):
                sur = CompositeSurrogate(problem.space, acquisition=acq)
                t0 = time.perf_counter()
                sur.fit(X, Y, Yvar, target, warm_state=state, seed=r + 1)
                fits.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, value = sur.propose(8, seed=r + 1)
                acqs.append(time.perf_counter() - t0)
        fit_s, acq_s = float(np.median(fits)), float(np.median(acqs))
        load = os.getloadavg()[0]
        rows.append(
            {
                "n_observations": n,
                "surrogate": "composite",
                "acquisition": acq,
                "acqf_optimizer": "joint",
                "fit_s": round(fit_s, 3),
                "acqf_s": round(acq_s, 3),
                "total_s": round(fit_s + acq_s, 3),
                "acq_value": round(float(value), 5),
                "target_s": TARGETS.get(n),
                "load_1min": round(load, 2),
                "repeats": repeats,
            }
        )
        print(
            f"n={n:5d} composite {acq:4s} warm fit {fit_s:6.2f}s  acqf {acq_s:6.2f}s  "
            f"(median of {repeats}, load {load:.1f})",
            flush=True,
        )
    return rows


def time_cell(
    problem: SyntheticProblem, n: int, surrogate: str, acquisitions: list[str]
) -> list[dict[str, Any]]:
    """Fit once on ``n`` sets, then time each acquisition; one row per acquisition."""
    sets = problem.space.sample_uniform(n, 1000 + n)
    emb, meta = problem.evaluate(sets, 0, "close")
    opt = BoTorchOptimizer(problem.space, surrogate=surrogate)
    book = ScoreBook(problem.space, problem.targets)
    book.add(emb, meta)
    obs = book.observations().sets
    rows = []
    with warnings.catch_warnings(), torch.random.fork_rng(), _torch_threads(1):
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        t0 = time.perf_counter()
        model = opt.fit_model(obs)
        fit_s = time.perf_counter() - t0
        X = opt._train_X(obs)
        with torch.no_grad():
            mean = model.posterior(X).mean.squeeze(-1)
        for acq, how in itertools.product(acquisitions, ("alternating", "joint")):
            opt.options["acquisition"] = acq
            opt.options["acqf_optimizer"] = how
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            acqf = opt.build_acquisition(model, X, mean)
            _, value = opt.optimize_acquisition(acqf, 8)
            acq_s = time.perf_counter() - t0
            row = {
                "n_observations": n,
                "surrogate": surrogate,
                "acquisition": acq,
                "acqf_optimizer": how,
                "fit_s": round(fit_s, 3),
                "acqf_s": round(acq_s, 3),
                "total_s": round(fit_s + acq_s, 3),
                "acq_value": round(value, 5),
                "target_s": TARGETS.get(n),
                "load_1min": round(load, 2),
            }
            print(
                f"n={n:5d} {surrogate:7s} {acq:4s} {how:11s} fit {fit_s:7.2f}s  "
                f"acqf {acq_s:7.2f}s  "
                f"total {fit_s + acq_s:7.2f}s  (load {load:.1f})",
                flush=True,
            )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 and 150 sets, ucb, mixed only")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions of the composite cells")
    args = ap.parse_args(argv)
    sizes = [64, 150] if args.quick else [64, 150, 300, 1000]
    surrogates = ["mixed"] if args.quick else ["mixed", "onehot"]
    acquisitions = ["ucb"] if args.quick else ["ucb", "ei", "nei"]
    problem = SyntheticProblem(seed=0)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for n in sizes:
        rows.extend(
            time_composite(
                problem,
                n,
                ["ei"] if args.quick else ["ei", "ucb", "nei"],
                1 if args.quick else args.repeats,
            )
        )
        for surrogate in surrogates:
            rows.extend(time_cell(problem, n, surrogate, acquisitions))
    write_results(
        "proposal_speed_quick" if args.quick else "proposal_speed",
        rows,
        out_dir=args.out,
        meta={
            "args": cli_args(args),
            "torch_threads": 1,
            "q": 8,
            "defaults": dict(BoTorchOptimizer.default_options),
            "wall_s": round(time.perf_counter() - t_start, 1),
        },
        columns={
            "n_observations": "n",
            "surrogate": "surrogate",
            "acquisition": "acquisition",
            "fit_s": "fit s",
            "acqf_s": "acqf s",
            "total_s": "total s",
            "target_s": "target s",
            "acq_value": "acq value",
            "load_1min": "load",
        },
        markdown_title="Proposal speed (q = 8, seconds): composite (default) vs the scalar GPs",
        notes="One torch thread. composite: warm-started refit + joint acquisition, median of "
        f"`repeats`; mixed / onehot: cold fit, one repetition, `acqf_optimizer` as given, "
        "otherwise the defaults "
        f"{dict(BoTorchOptimizer.default_options)}. `load` is the 1-min load average (the "
        "machine may be shared).",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
