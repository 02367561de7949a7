"""One command, one table: what each stage of a calibration run costs on this machine.

Unifies the earlier micro-benchmarks with small budgets (their full versions are
``benchmarks/render_speed.py``, ``embedding_speed.py`` and ``metrics_speed.py``) and adds the
optimisers' proposal time:

* **render** — ms per image of :class:`~bo_voids.generation.VoidGenerator` at 128 / 256 / 512 px,
  typical parameters (10 ellipses) and the worst case (20 large irregular voids), via
  :func:`benchmarks.render_speed._ms_per_image`;
* **embed** — images per second of each embedder (handcrafted on 256 / 512 px inputs; DINOv2
  ViT-S/14 and ViT-B/14 with random weights — throughput does not depend on the weights — batch
  8), via :func:`benchmarks.embedding_speed.time_embedder`;
* **propose** — seconds per ``recommend_next_batch`` call (batch 8) against the number of
  observed parameter sets (16 = iteration 0, 56 = iteration 5, 96 = iteration 10 of the
  benchmark budget), for random search, the BoTorch GP (ucb / ei / nei, default options) and the
  Optuna peers, on the synthetic problem (:mod:`bo_voids.testing.synthetic`: 16-d embeddings;
  the cost is dominated by the surrogate, not by the embedding dimension);
* **metric** — µs per call of the MMD² / KID scores on DINOv2-sized embeddings (d = 768), one
  BLAS thread, via :func:`benchmarks.metrics_speed.run`.

Everything runs in this process with one torch thread and one BLAS thread (the per-worker setting
of the pipeline's process pool). Timings on a shared machine are noisy; the load average is
recorded.

Usage::

    python -m benchmarks.speed [--quick] [--no-dino] [--out benchmarks/results]

Writes ``speed.{csv,json,md}`` under ``--out``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._results import RESULTS_DIR, cli_args, print_table, write_results

ROOT = Path(__file__).resolve().parent.parent
PROPOSERS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("random", "random", {}),
    ("botorch ucb", "botorch", {"acquisition": "ucb"}),
    ("botorch ei", "botorch", {"acquisition": "ei"}),
    ("botorch nei", "botorch", {"acquisition": "nei"}),
    ("optuna_tpe", "optuna_tpe", {}),
    ("optuna_gp", "optuna_gp", {}),
)


def _row(stage: str, case: str, size: str, value: float, unit: str, note: str = "") -> dict:
    return {"stage": stage, "case": case, "size": size, "value": value, "unit": unit, "note": note}


def render_rows(quick: bool) -> list[dict[str, Any]]:
    """Milliseconds per rendered image, typical and worst case, per image size."""
    from benchmarks.render_speed import BASE_CHIPS, TYPICAL, WORST, _ms_per_image
    from bo_voids.generation import VoidGenerator

    rows = []
    for size in (128, 256, 512):
        gen = VoidGenerator(BASE_CHIPS, image_size=size)
        n = max(4, (40 if quick else 120) * 128 // size)
        for label, params in (
            ("typical (10 ellipses)", {"void_shape": "ellipse", **TYPICAL}),
            ("worst (20 irregular, r=40)", WORST),
        ):
            ms = _ms_per_image(gen, params, n, repeat=3)
            rows.append(_row("render", label, f"{size} px", ms, "ms / image"))
    return rows


def embed_rows(quick: bool, dino: bool) -> list[dict[str, Any]]:
    """Images per second of each embedder."""
    from benchmarks.embedding_speed import MEANS, time_embedder
    from bo_voids.embedding import HandcraftedEmbedder
    from bo_voids.generation.voids import VoidGenerator

    min_s = 0.5 if quick else 2.0
    rows = []
    images = {
        size: [
            VoidGenerator(ROOT / "data" / "base_chips", image_size=size).render(MEANS, s).image
            for s in range(16)
        ]
        for size in (128, 256, 512)
    }
    hc = HandcraftedEmbedder()
    for size in (128, 256, 512):
        res = time_embedder(hc, images[size], 16, min_s)
        rows.append(_row("embed", "handcrafted", f"{size} px", res["img_per_s"], "images / s"))
    if dino:
        try:
            import torch
            from transformers import Dinov2Model

            from bo_voids.embedding import DinoV2Embedder, dinov2_config
        except ImportError as exc:  # pragma: no cover - depends on the environment
            rows.append(_row("embed", "dinov2", "-", float("nan"), "images / s", str(exc)))
            return rows
        for variant in ("dinov2_vits14", "dinov2_vitb14"):
            torch.manual_seed(0)
            model = Dinov2Model(dinov2_config(variant)).eval()
            emb = DinoV2Embedder(variant, weights=model, device="cpu", dtype="float32")
            res = time_embedder(emb, images[512], 8, min_s)
            rows.append(
                _row(
                    "embed",
                    f"{variant} (cpu, float32, batch 8)",
                    "512 px -> 224 crop",
                    res["img_per_s"],
                    "images / s",
                    "random weights, 1 thread",
                )
            )
            del emb, model
    return rows


def propose_rows(quick: bool, sizes: Sequence[int] = (16, 56, 96)) -> list[dict[str, Any]]:
    """Seconds per proposal of a batch of 8 against the number of observed sets."""
    from benchmarks.peers import PEERS, make_benchmark_optimizer, optuna_available
    from bo_voids.testing.synthetic import SyntheticProblem

    peers = set(PEERS) if optuna_available() else set()
    problem = SyntheticProblem(seed=0)
    rows = []
    for n in sizes if not quick else sizes[:2]:
        sets = problem.space.sample_uniform(n, 11)
        emb, meta = problem.evaluate(sets, 0, "close")
        for label, name, kwargs in PROPOSERS:
            if name.startswith("optuna") and name not in peers:
                continue
            opt = make_benchmark_optimizer(name, problem.space, seed=0, **kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                out = opt.recommend_next_batch(emb, meta, problem.targets, 8)
                dt = time.perf_counter() - t0
            note = (
                "fallback: " + str(out["info"]["fallback"]) if out["info"].get("fallback") else ""
            )
            rows.append(_row("propose", label, f"{n} sets", dt, "s / batch of 8", note))
    return rows


def metric_rows() -> list[dict[str, Any]]:
    """µs per call of the scores (d = 768, one BLAS thread)."""
    from benchmarks.metrics_speed import run

    rows = []
    for r in run(1, with_naive=False):
        rows.append(
            _row(
                "metric",
                str(r["metric"]),
                f"{r['n_synthetic']} vs {r['n_real']} x {r['dim']}",
                float(r["us_per_call"]),
                "µs / call",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every stage and write ``speed.{csv,json,md}``.

    Returns:
        The rows of the table.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter timing windows, fewer sizes")
    ap.add_argument("--no-dino", action="store_true", help="skip the DINOv2 embedders")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    ap.add_argument(
        "--stages", default="render,embed,propose,metric", help="comma-separated subset"
    )
    args = ap.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    stages: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "render": lambda: render_rows(args.quick),
        "embed": lambda: embed_rows(args.quick, not args.no_dino),
        "propose": lambda: propose_rows(args.quick),
        "metric": metric_rows,
    }
    rows: list[dict[str, Any]] = []
    with threadpool_limits(1):
        for name in args.stages.split(","):
            t0 = time.perf_counter()
            new = stages[name]()
            rows += new
            print(f"{name}: {len(new)} rows in {time.perf_counter() - t0:.0f}s", flush=True)
    mode = "quick" if args.quick else "full"
    paths = write_results(
        "speed",
        rows,
        out_dir=args.out,
        meta={"args": cli_args(args), "mode": mode, "torch_threads": 1, "blas_threads": 1},
        markdown_title="Cost of each stage (`python -m benchmarks.speed`)",
        notes=f"One torch and one BLAS thread; {mode} mode. Timings on a shared machine are "
        "noisy: see the load average below.",
    )
    print_table(rows)
    print(f"wrote {paths.md.with_suffix('')}.{{csv,json,md}}")
    return rows


if __name__ == "__main__":
    main()
