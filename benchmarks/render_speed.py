"""Rendering speed of :class:`bo_voids.generation.VoidGenerator` (ms per image, one CPU core).

Run as ``python -m benchmarks.render_speed [--quick] [--out DIR]``. Prints a table and writes
``render_speed.{csv,json,md}`` under ``--out`` (default ``benchmarks/results``). Each row renders
images of one shape at one size with 10 voids (``base_size`` 20, ``size_std`` 7,
``brightness_factor`` 0.6, ``position_spread`` 0.5: the centre of the design's *real*
distribution), each with a different seed; the time is the median over repeats of the mean time
per image. A worst-case row (20 irregular voids of ``base_size`` 40 spread over 0.8 of the image)
bounds the cost from above.
``--quick`` renders a tenth of the images, two repeats (a smoke run: noisy timings).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results
from bo_voids.config import VOID_SHAPES as SHAPES
from bo_voids.generation import VoidGenerator

REPO = Path(__file__).resolve().parents[1]
BASE_CHIPS = REPO / "data" / "base_chips"
SIZES = (128, 256, 512)
TYPICAL: dict[str, Any] = {
    "void_count": 10,
    "base_size": 20.0,
    "brightness_factor": 0.6,
    "size_std": 7.0,
    "position_spread": 0.5,
}
WORST: dict[str, Any] = {
    "void_shape": "irregular",
    "void_count": 20,
    "base_size": 40.0,
    "brightness_factor": 0.3,
    "size_std": 15.0,
    "position_spread": 0.8,
}


def _ms_per_image(gen: VoidGenerator, params: dict[str, Any], n: int, repeat: int = 5) -> float:
    gen.render(params, 0)  # warm-up
    runs = []
    for rep in range(repeat):
        t0 = time.perf_counter()
        for seed in range(n):
            gen.render(params, rep * n + seed)
        runs.append((time.perf_counter() - t0) / n)
    return float(np.median(runs) * 1e3)


def measure(quick: bool = False) -> list[dict[str, object]]:
    """Time every case at every size; one row per (size, case)."""
    rows: list[dict[str, object]] = []
    for size in SIZES:
        gen = VoidGenerator(BASE_CHIPS, image_size=size)
        n = {128: 200, 256: 100, 512: 50}[size] // (10 if quick else 1)
        cases = [(shape, {"void_shape": shape, **TYPICAL}) for shape in SHAPES]
        cases.append(("worst case (20 irregular, r=40)", WORST))
        for label, params in cases:
            ms = _ms_per_image(gen, params, n, repeat=2 if quick else 5)
            rows.append(
                {
                    "image_size": size,
                    "case": label,
                    "void_count": params["void_count"],
                    "ms_per_image": round(ms, 3),
                    "images_per_s": round(1e3 / ms, 1),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Parse arguments, time the renders, write the result files and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the images, 2 repeats")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    args = ap.parse_args(argv)
    rows = measure(args.quick)
    columns = {
        "image_size": "image size",
        "case": "case",
        "void_count": "voids",
        "ms_per_image": "ms / image",
        "images_per_s": "images / s",
    }
    method = (
        f"VoidGenerator.render, median over {2 if args.quick else 5} repeats of the mean time "
        "per image (different seed per image), single process"
    )
    write_results(
        "render_speed",
        rows,
        out_dir=args.out,
        meta={
            "args": cli_args(args),
            "method": method,
            "typical_params": TYPICAL,
            "worst_params": WORST,
        },
        columns=columns,
        markdown_title="render speed",
        notes=f"{method}. Typical parameters: 10 voids, base_size 20, size_std 7, "
        "brightness_factor 0.6, position_spread 0.5.",
    )
    print_table(rows, columns)
    return rows


if __name__ == "__main__":
    main()
