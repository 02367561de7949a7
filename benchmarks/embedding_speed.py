"""Embedding throughput on this machine: handcrafted vs DINOv2 ViT-S/14 and ViT-B/14.

DINOv2 models are built from their known configurations with random weights (no download;
throughput does not depend on the weight values). Images are 512 x 512 grayscale renders of the
real distribution's means; DINOv2 resizes them to 256 and crops 224.

Usage::

    python -m benchmarks.embedding_speed [--quick] [--no-dino] [--no-write] [--out DIR]

Writes ``embedding_speed.{csv,json,md}`` under ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._results import RESULTS_DIR, cli_args, write_results
from bo_voids.embedding import DinoV2Embedder, HandcraftedEmbedder, dinov2_config
from bo_voids.generation.voids import VoidGenerator
from bo_voids.testing import REAL_MEANS

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
    ap.add_argument("--no-dino", action="store_true", help="handcrafted embedder only")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
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
    for variant, dtype, batches in [] if args.no_dino else settings:
        from transformers import Dinov2Model

        torch.manual_seed(0)
        model = Dinov2Model(dinov2_config(variant)).eval()
        emb = DinoV2Embedder(variant, weights=model, device="cpu", dtype=dtype)
        for b in batches:
            add(variant, dtype, b, time_embedder(emb, images, b, min_s), "224 crop, random weights")
        del emb, model

    if not args.no_write:
        paths = write_results(
            "embedding_speed",
            rows,
            out_dir=args.out,
            meta={"args": cli_args(args), "min_seconds_per_cell": min_s},
            columns={
                "embedder": "embedder",
                "dtype": "dtype",
                "batch": "batch",
                "img_per_s": "img/s",
                "ms_per_img": "ms/img",
                "note": "note",
            },
            markdown_title="Embedding throughput (CPU)",
            notes="The load average below is read at the end: other jobs may have shared the CPU.",
        )
        print(f"wrote {paths.md.with_suffix('')}.{{csv,json,md}}")
    return rows


if __name__ == "__main__":
    main()
