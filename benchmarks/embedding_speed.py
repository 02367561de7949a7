"""Embedding throughput on this machine: handcrafted vs DINOv2 ViT-S/14 and ViT-B/14.

DINOv2 models are built from their known configurations with random weights (no download;
throughput does not depend on the weight values). Images are 512 x 512 grayscale renders of the
real distribution's means; DINOv2 resizes them to 256 and crops 224.

Usage::

    python -m benchmarks.embedding_speed [--quick]

Writes ``benchmarks/results/embedding_speed.{csv,json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bo_voids.embedding import DinoV2Embedder, HandcraftedEmbedder, dinov2_config
from bo_voids.generation.voids import VoidGenerator
from bo_voids.testing import REAL_MEANS

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
MEANS = REAL_MEANS


def time_embedder(emb: Any, images: list[np.ndarray], batch: int, min_s: float) -> dict[str, float]:
    emb.embed(images[:batch], batch_size=batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        emb.embed(images[:batch], batch_size=batch)
        n += batch
        el = time.perf_counter() - t0
        if el >= min_s:
            break
    return {"images": n, "seconds": el, "img_per_s": n / el, "ms_per_img": 1000 * el / n}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing windows")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    min_s = 1.0 if args.quick else 4.0
    gen = VoidGenerator(ROOT / "data" / "base_chips", image_size=512)
    images = [gen.render(MEANS, s).image for s in range(32)]
    rows: list[dict[str, Any]] = []

    def add(model: str, dtype: str, batch: int, res: dict[str, float], note: str = "") -> None:
        row = {"embedder": model, "dtype": dtype, "batch": batch, **res, "note": note}
        rows.append(row)
        print(
            f"{model:24s} {dtype:9s} batch {batch:>2}: {res['img_per_s']:8.1f} img/s "
            f"({res['ms_per_img']:.1f} ms/img) {note}"
        )

    hc = HandcraftedEmbedder()
    for size in (512, 256):
        imgs = (
            [gen.render(MEANS, s).image for s in range(32)]
            if size == 512
            else [
                VoidGenerator(ROOT / "data" / "base_chips", image_size=256).render(MEANS, s).image
                for s in range(32)
            ]
        )
        add("handcrafted", "float64", 32, time_embedder(hc, imgs, 32, min_s), f"{size} px input")

    settings = [
        ("dinov2_vits14", "float32", (1, 8, 32)),
        ("dinov2_vitb14", "float32", (1, 8, 32)),
        ("dinov2_vitb14", "bfloat16", (1, 8, 32)),
    ]
    from transformers import Dinov2Model

    for variant, dtype, batches in settings:
        torch.manual_seed(0)
        model = Dinov2Model(dinov2_config(variant)).eval()
        emb = DinoV2Embedder(variant, weights=model, device="cpu", dtype=dtype)
        for b in batches:
            add(variant, dtype, b, time_embedder(emb, images, b, min_s), "224 crop, random weights")
        del emb, model

    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        meta = {
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_avg_1_5_15": os.getloadavg(),
        }
        (RESULTS / "embedding_speed.json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=2)
        )
        with open(RESULTS / "embedding_speed.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        lines = [
            f"# Embedding throughput (CPU, torch {meta['torch']}, {meta['threads']} threads, "
            f"load average {meta['load_avg_1_5_15'][0]:.1f} at the end: other jobs shared the CPU)",
            "",
            "| embedder | dtype | batch | img/s | ms/img | note |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['embedder']} | {r['dtype']} | {r['batch']} | {r['img_per_s']:.1f} | "
            f"{r['ms_per_img']:.1f} | {r['note']} |"
            for r in rows
        ]
        (RESULTS / "embedding_speed.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}/embedding_speed.{{csv,json,md}}")
    return rows


if __name__ == "__main__":
    main()
