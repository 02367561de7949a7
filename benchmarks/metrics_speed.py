"""Speed of the scores in :mod:`bo_voids.metrics` on DINOv2-sized embeddings (d = 768).

Run as ``python -m benchmarks.metrics_speed``. Prints a table and writes
``benchmarks/results/metrics_speed.{csv,json,md}``. Each row is the best (minimum) over several
repeats of the mean time per call (``timeit``), in microseconds. A naive per-permutation loop is
included as a reference for the vectorised permutation test (see ``MEASUREMENTS.md``); it is
timed once. Every case runs twice: with OpenBLAS's default thread pool and limited to one
thread (``threadpoolctl``); on a small VM the multi-threaded pool costs more than it saves on
these small matrices. Timings on a shared machine are noisy: compare rows of one run only.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
import timeit
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from bo_voids.metrics import MMDScorer, kid, mmd2, permutation_test
from bo_voids.seeding import rng

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ((24, 16), (300, 16))
DIM = 768
N_PERMUTATIONS = 1000


def _time_us(fn: Callable[[], object], repeat: int = 7) -> float:
    """Best (minimum) over ``repeat`` runs of the mean µs per call (timeit's advice)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=repeat, number=number)
    return float(min(runs) / number * 1e6)


def _naive_permutation(X: np.ndarray, Y: np.ndarray, n_perm: int) -> float:
    """Reference: re-run ``mmd2`` on every permuted split (what the vectorised test avoids)."""
    Z = np.vstack([X, Y])
    n = X.shape[0]
    obs = mmd2(X, Y)
    g = np.random.default_rng(0)
    count = 0
    for _ in range(n_perm):
        idx = g.permutation(Z.shape[0])
        count += mmd2(Z[idx[:n]], Z[idx[n:]]) >= obs
    return (1 + count) / (1 + n_perm)


def _blas_threads() -> int:
    pools = [int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    return max(pools, default=1)


def run(blas_threads: int | None, with_naive: bool) -> list[dict[str, object]]:
    """Time every case with the BLAS thread pool limited to ``blas_threads`` (None: default)."""
    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else nullcontext()
    with limit:
        threads = _blas_threads()
        return _cases(threads, with_naive)


def _cases(threads: int, with_naive: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n_syn, n_real in SIZES:
        X = rng(0, "bench-metrics", n_syn).normal(size=(n_syn, DIM)).astype(np.float32)
        Y = rng(1, "bench-metrics", n_real).normal(size=(n_real, DIM)).astype(np.float32) + 0.1
        scorer = MMDScorer("multi").fit(Y)
        cases: list[tuple[str, Callable[[], object], int]] = [
            ("mmd2 (median)", lambda X=X, Y=Y: mmd2(X, Y, bandwidth="median"), 7),
            ("mmd2 (multi)", lambda X=X, Y=Y: mmd2(X, Y, bandwidth="multi"), 7),
            ("MMDScorer.score (multi)", lambda X=X, s=scorer: s.score(X), 7),
            ("kid", lambda X=X, Y=Y: kid(X, Y), 7),
            (
                f"permutation_test ({N_PERMUTATIONS} perms)",
                lambda X=X, Y=Y: permutation_test(X, Y, n_permutations=N_PERMUTATIONS),
                5,
            ),
            (
                f"naive permutation loop ({N_PERMUTATIONS} perms, reference)",
                lambda X=X, Y=Y: _naive_permutation(X, Y, N_PERMUTATIONS),
                1,
            ),
        ]
        if not with_naive:
            cases = cases[:-1]
        for name, fn, repeat in cases:
            if repeat == 1:  # slow reference: one timed call, no warm-up
                start = time.perf_counter()
                fn()
                us = (time.perf_counter() - start) * 1e6
            else:
                fn()  # warm-up
                us = _time_us(fn, repeat=repeat)
            rows.append(
                {
                    "metric": name,
                    "n_synthetic": n_syn,
                    "n_real": n_real,
                    "dim": DIM,
                    "blas_threads": threads,
                    "us_per_call": round(us, 1),
                    "ms_per_call": round(us / 1000, 3),
                }
            )
    return rows


def main() -> list[dict[str, object]]:
    """Run every case with the default BLAS threads, then single-threaded (+ naive reference)."""
    return run(None, with_naive=False) + run(1, with_naive=True)


def _write(rows: list[dict[str, object]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": "best of repeats of mean time per call (timeit), float32 inputs, d=768",
    }
    with open(RESULTS / "metrics_speed.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / "metrics_speed.json").write_text(
        json.dumps({"meta": meta, "results": rows}, indent=2) + "\n"
    )
    lines = [
        "# metrics speed",
        "",
        f"numpy {meta['numpy']}, Python {meta['python']}, {meta['platform']}, "
        f"{meta['cpu_count']} CPUs; {meta['method']}.",
        "",
        "| metric | n_synthetic × d | n_real × d | BLAS threads | µs / call | ms / call |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['n_synthetic']}×{r['dim']} | {r['n_real']}×{r['dim']} "
            f"| {r['blas_threads']} | {r['us_per_call']:,.1f} | {r['ms_per_call']:.3f} |"
        )
    (RESULTS / "metrics_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    results = main()
    _write(results)
    width = max(len(str(r["metric"])) for r in results)
    print(f"{'metric':<{width}}  {'sizes':>10}  {'BLAS thr':>8}  {'µs/call':>12}")
    for r in results:
        sizes = f"{r['n_synthetic']} vs {r['n_real']}"
        print(
            f"{r['metric']:<{width}}  {sizes:>10}  {r['blas_threads']:>8}  "
            f"{r['us_per_call']:>12,.1f}"
        )
    print(f"\nwrote {RESULTS}/metrics_speed.{{csv,json,md}}")
