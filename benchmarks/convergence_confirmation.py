"""How often did ``convergence_threshold`` stop a run on luck? Fresh renders of the stopping pool.

The distribution similarity is the pooled MMD² of the run's best-ranked sets against the
targets, computed on the very images they were ranked by, so it is biased low by that selection.
Before the stop rule asked for confirmation, a run stopped the first time that in-sample figure
fell below ``convergence_threshold`` (0 in the design's config: "no detectable difference").

This benchmark takes finished runs (the caches of :mod:`benchmarks.interval_coverage_runs` and
:mod:`benchmarks.folder_recovery`, made before the confirmation existed), finds every iteration
``k ≥ 1`` whose in-sample pool was below the run's threshold (a *candidate*), renders the same
pooled sets again with seeds no optimiser draws from
(:func:`bo_voids.scoring.fresh_pool_similarity`, as the pipeline now does) and scores that fresh
pool with the run's own scorer. Reported per cache: runs, runs the old rule stopped early, the
candidates, the share a fresh pool confirms, and the mean in-sample and fresh pooled MMD² of the
candidates (their difference is the selection bias).

Run as ``python -m benchmarks.convergence_confirmation [--cache DIR ...]``; it only reads the
runs (no run folder is written). Cost: one pool of about 15 images per candidate.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results

CACHES = (
    Path("experiments/interval_coverage_runs/runs"),
    Path("experiments/folder_recovery/runs"),
)


def candidates_of_run(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every candidate iteration of one run, with its in-sample and fresh pooled MMD²."""
    from bo_voids.calibration.context import CalibrationContext
    from bo_voids.scoring import fresh_pool_similarity

    threshold = float(manifest["config"]["convergence_threshold"])
    seed = int(manifest["config"]["seed"])
    found = []
    for k in range(1, int(manifest.get("iterations_completed") or 0) + 1):
        scores = json.loads((root / f"iteration_{k}" / "scores.json").read_text())
        similarity = float(scores.get("distribution_similarity", math.nan))
        if math.isfinite(similarity) and similarity < threshold and scores.get("best"):
            found.append({"iteration": k, "in_sample": similarity, "best": scores["best"]})
    if not found:
        return []
    ctx = CalibrationContext.from_run(root)
    evaluator = ctx.get_evaluator()
    out = []
    for c in found:
        fresh = fresh_pool_similarity(
            evaluator.evaluate_many, ctx.scorer, c["best"], seed=seed, iteration=c["iteration"]
        )
        out.append(
            {
                "run": root.name,
                "iteration": c["iteration"],
                "threshold": threshold,
                "in_sample": c["in_sample"],
                "fresh": fresh,
                "confirmed": bool(math.isfinite(fresh) and fresh < threshold),
            }
        )
    return out


def summarise(
    cache: Path, runs: dict[Path, dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """One table row for a cache (``runs``: each run folder's manifest)."""
    early = [m for m in runs.values() if str(m.get("stop_reason") or "").startswith("converged")]
    first = {}
    for r in rows:
        first.setdefault(r["run"], r)
    confirmed = [r["confirmed"] for r in rows]
    return {
        "cache": str(cache),
        "runs": len(runs),
        "stopped_by_old_rule": len(early),
        "candidates": len(rows),
        "confirmed": int(sum(confirmed)),
        "confirm_share": float(np.mean(confirmed)) if rows else math.nan,
        "first_candidate_confirmed": int(sum(r["confirmed"] for r in first.values())),
        "mean_in_sample": float(np.mean([r["in_sample"] for r in rows])) if rows else math.nan,
        "mean_fresh": float(np.nanmean([r["fresh"] for r in rows])) if rows else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, action="append", help="folders of run folders")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    args = ap.parse_args(argv)
    caches = args.cache or [c for c in CACHES if c.is_dir()]
    if not caches:
        print("no cached runs: run benchmarks.interval_coverage_runs or folder_recovery first")
        return 2
    t0 = time.perf_counter()
    table, rows = [], []
    for cache in caches:
        manifests = {
            p.parent: json.loads(p.read_text()) for p in sorted(cache.glob("*/experiment.json"))
        }
        # not one still running
        runs = {root: m for root, m in manifests.items() if m.get("status") == "completed"}
        mine = [r for root, m in runs.items() for r in candidates_of_run(root, m)]
        rows += [{"cache": str(cache), **r} for r in mine]
        table.append(summarise(cache, runs, mine))
    cols = list(table[0])
    print_table(table, cols)
    write_results(
        "convergence_confirmation",
        rows,
        out_dir=args.out,
        meta={"args": cli_args(args), "summary": table, "seconds": time.perf_counter() - t0},
        columns=cols,
        table_rows=table,
        markdown_title="convergence_threshold: in-sample candidates and their fresh confirmation",
        notes="A candidate is an iteration k ≥ 1 whose in-sample pooled MMD² of the best-ranked "
        "sets was below the run's convergence_threshold (the old rule stopped at the first one); "
        "confirmed: the same sets rendered again with fresh seeds pool below it too. The runs "
        "were made before the confirmation existed, by the benchmarks named in `cache`.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
