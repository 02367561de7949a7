"""Speed of ``bo-voids export``: wall-clock and CPU time of a labelled export, end to end.

Run as ``python -m benchmarks.export_speed [--n 1000] [--image-size 512] [--jobs 2] [--out DIR]``.
Builds the tiny finished test experiment (:func:`bo_voids.testing.runs.build_tiny_run`, cached in
a temporary folder), or takes ``--experiment``, and times :func:`bo_voids.export.export_dataset`
of ``--n`` images drawn from ``--source`` (default ``real``: the config's distribution, the
design's typical voids, 8 ± 3 of radius 20 ± 5 reference px) at ``--image-size``, once per
``--jobs`` value, into a fresh folder each time. The time is the whole call: worker start-up,
rendering, PNG encoding, the metadata and the COCO file. CPU seconds (this process and its
workers) are recorded beside the wall clock, with the load average: on a shared machine the
wall clock depends on what else runs, the CPU time much less.
The goal of issue 23: 1,000 images at 512 px in at most 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from joblib.externals.loky import get_reusable_executor

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results
from bo_voids.export import export_dataset
from bo_voids.testing.runs import build_tiny_run

GOAL_S = 60.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(
    n: int,
    image_size: int,
    jobs: list[int],
    work: Path,
    experiment: Path | None = None,
    source: str = "real",
) -> list[dict[str, object]]:
    """Export ``n`` images once per worker count; one row each."""
    experiment = experiment if experiment is not None else build_tiny_run(work)
    rows: list[dict[str, object]] = []
    for n_jobs in jobs:
        out = work / f"export_{n_jobs}"
        shutil.rmtree(out, ignore_errors=True)
        load = os.getloadavg()[0]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = export_dataset(
            experiment, out, n, source=source, image_size=image_size, jobs=n_jobs, progress=False
        )
        wall = time.perf_counter() - t0
        # the workers' CPU time is counted once they have exited and been reaped
        get_reusable_executor().shutdown(wait=True)
        cpu = _cpu_seconds() - cpu0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        rows.append(
            {
                "source": source,
                "n_images": n,
                "image_size": image_size,
                "jobs": n_jobs,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "images_per_s": round(n / wall, 1),
                "ms_cpu_per_image": round(1e3 * cpu / n, 2),
                "annotations": result.n_annotations,
                "mb_written": round(size / 1e6, 1),
                "load_1min_before": round(load, 2),
                "meets_goal": bool(n < 1000 or wall <= GOAL_S),
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Parse arguments, time the exports, write the result files and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images per export")
    ap.add_argument("--image-size", type=int, default=512, help="render size (px)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[2], help="worker counts to time")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument(
        "--experiment", default=None, help="export this experiment (default: the tiny test run)"
    )
    ap.add_argument("--source", default="real", help="export source (psi needs a calibration)")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = ap.parse_args(argv)
    exp = Path(args.experiment) if args.experiment else None
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="export_speed_") as work:
            rows = measure(args.n, args.image_size, args.jobs, Path(work), exp, args.source)
    else:
        rows = measure(args.n, args.image_size, args.jobs, Path(args.work), exp, args.source)
    columns = {
        "source": "source",
        "n_images": "images",
        "image_size": "size (px)",
        "jobs": "workers",
        "wall_s": "wall (s)",
        "cpu_s": "CPU (s)",
        "images_per_s": "images / s",
        "ms_cpu_per_image": "CPU ms / image",
        "annotations": "voids annotated",
        "mb_written": "MB written",
        "load_1min_before": "load before",
    }
    method = (
        "export_dataset end to end (worker start-up, render with instance maps, PNG level 1, "
        "metadata, COCO file); CPU = this process + its workers"
    )
    write_results(
        "export_speed",
        rows,
        out_dir=args.out,
        meta={"args": cli_args(args), "method": method, "goal_s_for_1000": GOAL_S},
        columns=columns,
        markdown_title="export speed",
        notes=f"{method}. Goal (issue 23): 1,000 images at 512 px in at most {GOAL_S:.0f} s on 2 "
        "cores. The machine is shared: compare the CPU column across runs, the wall clock only "
        "at a similar load.",
    )
    print_table(rows, columns)
    return rows


if __name__ == "__main__":
    main()
