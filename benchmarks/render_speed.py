"""Rendering speed of :class:`bo_voids.generation.VoidGenerator` (ms per image, one CPU core).

Run as ``python -m benchmarks.render_speed``. Prints a table and writes
``benchmarks/results/render_speed.{csv,json,md}``. Each row renders images of one shape at one
size with 10 voids (``base_size`` 20, ``size_std`` 7, ``brightness_factor`` 0.6,
``position_spread`` 0.5: the centre of the design's *real* distribution), each with a different
seed; the time is the median over repeats of the mean time per image. A worst-case row (20
irregular voids of ``base_size`` 40 spread over 0.8 of the image) bounds the cost from above.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids.generation import VoidGenerator

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BASE_CHIPS = REPO / "data" / "base_chips"
SIZES = (128, 256, 512)
SHAPES = ("circle", "ellipse", "irregular")
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


def main() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for size in SIZES:
        gen = VoidGenerator(BASE_CHIPS, image_size=size)
        n = {128: 200, 256: 100, 512: 50}[size]
        cases = [(shape, {"void_shape": shape, **TYPICAL}) for shape in SHAPES]
        cases.append(("worst case (20 irregular, r=40)", WORST))
        for label, params in cases:
            ms = _ms_per_image(gen, params, n)
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


def _write(rows: list[dict[str, object]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": "VoidGenerator.render, median over 5 repeats of the mean time per image "
        "(different seed per image), single process",
        "typical_params": TYPICAL,
        "worst_params": WORST,
    }
    with open(RESULTS / "render_speed.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / "render_speed.json").write_text(
        json.dumps({"meta": meta, "results": rows}, indent=2) + "\n"
    )
    lines = [
        "# render speed",
        "",
        f"numpy {meta['numpy']}, Python {meta['python']}, {meta['platform']}, "
        f"{meta['cpu_count']} CPUs; {meta['method']}. Typical parameters: 10 voids, "
        "base_size 20, size_std 7, brightness_factor 0.6, position_spread 0.5.",
        "",
        "| image size | case | voids | ms / image | images / s |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image_size']} | {r['case']} | {r['void_count']} "
            f"| {r['ms_per_image']:.2f} | {r['images_per_s']:,.0f} |"
        )
    (RESULTS / "render_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    results = main()
    _write(results)
    width = max(len(str(r["case"])) for r in results)
    print(f"{'size':>5}  {'case':<{width}}  {'ms/image':>9}  {'img/s':>8}")
    for r in results:
        print(
            f"{r['image_size']:>5}  {r['case']:<{width}}  {r['ms_per_image']:>9.2f}  "
            f"{r['images_per_s']:>8,.0f}"
        )
    print(f"\nwrote {RESULTS}/render_speed.{{csv,json,md}}")
