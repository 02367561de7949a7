"""CLI of the acquisition benchmark (see :mod:`benchmarks.compare_acquisitions`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks._results import cli_args, print_table, write_results
from benchmarks.compare_acquisitions.run import run_one
from benchmarks.compare_acquisitions.specs import (
    DEFAULT_OUT,
    METHODS,
    OPTIONAL_DEPENDENCIES,
    ROOT,
    TARGETS,
    RunSpec,
)
from benchmarks.compare_acquisitions.summary import plot, summarise


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_acquisitions")
    p.add_argument("--config", default=str(ROOT / "configs" / "experiment_config.yaml"))
    p.add_argument("--seeds", type=int, default=20, help="seeds on the design's real target")
    p.add_argument("--extra-seeds", type=int, default=10, help="seeds on each extra target")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--work-dir", default=str(ROOT / "experiments" / "bench" / "compare"))
    p.add_argument("--smoke", action="store_true", help="tiny settings (tests)")
    return p


def available_methods(methods: Sequence[str]) -> list[str]:
    """The methods whose optional dependency is installed; one line per method skipped.

    Args:
        methods: Keys of :data:`METHODS`.

    Returns:
        ``methods`` without those whose package (:data:`OPTIONAL_DEPENDENCIES`) is missing.
    """
    kept = []
    for method in methods:
        module, extra = OPTIONAL_DEPENDENCIES.get(method, ("", ""))
        if module and importlib.util.find_spec(module) is None:
            print(
                f"skipping {method}: it needs the optional package {module!r} "
                f"(pip install -e '.[{extra}]')",
                file=sys.stderr,
            )
            continue
        kept.append(method)
    return kept


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every run, then write the tables, tests and plots.

    Returns:
        The summary per target.
    """
    args = build_parser().parse_args(argv)
    methods = available_methods([m for m in args.methods.split(",") if m])
    targets = [t for t in args.targets.split(",") if t]
    if args.smoke:
        args.iterations, args.image_size, args.seeds, args.extra_seeds = 2, 48, 2, 1
    specs = [
        RunSpec(t, m, s, args.iterations, args.image_size, args.config, args.work_dir, args.smoke)
        for t in targets
        for s in range(args.seeds if t == "real" else args.extra_seeds)
        for m in methods
    ]
    results: list[dict[str, Any]] = []
    # methods trained on another method's run (the sbi peer) go second, so that run exists and
    # no two processes ever write one experiment folder
    direct = [s for s in specs if "from_run" not in METHODS[s.method]]
    derived = [s for s in specs if "from_run" in METHODS[s.method]]
    for batch in (direct, derived):
        if args.workers > 1 and len(batch) > 1:
            with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_one, s) for s in batch]
                for f in as_completed(futures):
                    results.append(f.result())
                    print(f"done {len(results)}/{len(specs)}", file=sys.stderr, flush=True)
        else:
            for s in batch:
                results.append(run_one(s))
                print(f"done {len(results)}/{len(specs)}", file=sys.stderr, flush=True)
    rows = [r for res in results for r in res["rows"]]
    oracle = [res["oracle"] for res in results]
    pairing: dict[tuple[str, int], set[str]] = {}
    for res in results:
        key = (res["spec"]["target"], res["spec"]["seed"])
        pairing.setdefault(key, set()).add(res["iteration0_sha"])
    paired = all(len(v) == 1 for v in pairing.values())
    summary = summarise(rows, oracle)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for target, s in summary.items():
        plot(rows, target, out / f"recommendation_{target}.png")
        write_results(
            f"table_{target}",
            s["table"],
            out_dir=out,
            meta={"args": cli_args(args), "goals": s["goals"], "oracle": s["oracle"]},
            markdown_title=f"Recommendations on target {target} ({len(s['seeds'])} paired seeds)",
            notes=[
                f"Oracle (realised targets' mean point) fresh MMD² median "
                f"{s['oracle']['fresh_mmd2_median']:.4f}; its modal shape (the realised "
                f"targets') is the nominal one in {s['oracle']['shape_right_share']:.0%} of "
                "seeds, the most `shape_right_share` can reach by matching the realised "
                "targets (`shape_right_realised_share`: the pick's shape is one of theirs).",
                f"Goals: {s['goals']}",
            ],
        )
        if s["tests"]:
            write_results(
                f"tests_{target}",
                s["tests"],
                out_dir=out,
                meta={"args": cli_args(args)},
                markdown_title=f"Paired two-sided Wilcoxon tests on target {target} (Holm)",
            )
        print_table(
            s["table"],
            [
                "method",
                "iteration",
                "n_seeds",
                "fresh_mmd2_median",
                "err_realised_mean_median",
                "shape_right_share",
            ],
        )
    write_results(
        f"runs_{'_'.join(targets)}",
        rows + oracle,
        out_dir=out,
        meta={"args": cli_args(args), "paired": paired},
    )
    return {"targets": summary, "pairing": {"ok": paired}}


if __name__ == "__main__":
    main()
