"""Speed of the scores in :mod:`bo_voids.metrics` on DINOv2-sized embeddings (d = 768).

Run as ``python -m benchmarks.metrics_speed [--quick] [--out DIR]``. Prints a table and writes
``metrics_speed.{csv,json,md}`` under ``--out`` (default ``benchmarks/results``). Each row is the
best (minimum) over several repeats of the mean time per call (``timeit``), in microseconds. A
naive per-permutation loop is included as a reference for the vectorised permutation test; it is
timed once. Every case runs twice: with OpenBLAS's default thread pool and limited to one
thread (``threadpoolctl``); on a small VM the multi-threaded pool costs more than it saves on
these small matrices. Timings on a shared machine are noisy: compare rows of one run only.
``--quick`` times the small size only, with at most 3 repeats (a smoke run).
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results
from bo_voids.metrics import MMDScorer, kid, mmd2
from bo_voids.seeding import rng
from bo_voids.statistics import permutation_test

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


def run(
    blas_threads: int | None,
    with_naive: bool,
    sizes: Sequence[tuple[int, int]] = SIZES,
    max_repeat: int = 7,
) -> list[dict[str, object]]:
    """Time every case with the BLAS thread pool limited to ``blas_threads`` (None: default).

    Args:
        blas_threads: BLAS pool size; ``None`` keeps the library default.
        with_naive: Also time the naive permutation loop (slow reference).
        sizes: ``(n_synthetic, n_real)`` pairs.
        max_repeat: Cap on the timeit repeats of each case.
    """
    limit = threadpool_limits(blas_threads, user_api="blas") if blas_threads else nullcontext()
    with limit:
        threads = _blas_threads()
        return _cases(threads, with_naive, sizes, max_repeat)


def _cases(
    threads: int, with_naive: bool, sizes: Sequence[tuple[int, int]], max_repeat: int
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n_syn, n_real in sizes:
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
                us = _time_us(fn, repeat=min(repeat, max_repeat))
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


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Time every case with the default BLAS threads, then single-threaded (+ naive reference).

    Writes ``metrics_speed.{csv,json,md}`` and prints the table.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small size only, at most 3 repeats")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = ap.parse_args(argv)
    kw = {"sizes": SIZES[:1], "max_repeat": 3} if args.quick else {}
    rows = run(None, with_naive=False, **kw) + run(1, with_naive=True, **kw)
    method = "best of repeats of mean time per call (timeit), float32 inputs, d=768"
    columns = {
        "metric": "metric",
        "n_synthetic": "n_synthetic",
        "n_real": "n_real",
        "blas_threads": "BLAS threads",
        "us_per_call": "µs / call",
        "ms_per_call": "ms / call",
    }
    write_results(
        "metrics_speed",
        rows,
        out_dir=args.out,
        meta={"args": cli_args(args), "method": method, "dim": DIM},
        columns=columns,
        markdown_title="metrics speed",
        notes=f"{method}.",
    )
    print_table(rows, columns)
    return rows


if __name__ == "__main__":
    main()
