"""The verdict's false-alarm rate on well-specified folders and its power under imaging mismatch.

Each replicate draws a folder of ``--folder`` i.i.d. "real" images from a population P (the
quickstart's ``param_distributions.real``; every image its own parameter set), and a generator
sample of ``--generated`` images from the same P (one fresh parameter set per image): the
generator reproduces the folder exactly, as if ψ were fitted without error. The folder is then
passed through an imaging chain the generator lacks, at strengths 0 (none: the well-specified
case) to 1 (strong): a Gaussian point-spread blur of ``1.5 · s`` px, a contrast curve
``x^(1 + 0.5 · s)`` and Gaussian sensor noise of sd ``0.03 · s``.

The verdict's test (:func:`bo_voids.statistics.permutation_test` on the run's kernel, images
exchangeable on both sides) and its per-summary checks
(:func:`bo_voids.statistics.verdict.summary_checks`, Holm over the handcrafted embedder's
parameter-head block) are applied to every strength. Reported per strength: the alarm rate of
the test (the false-alarm rate at strength 0, the power above it) with a Clopper-Pearson
interval, and how often each parameter's check fires. This measures the test given a perfect
fit; the end-to-end false-alarm rate (ψ fitted by a run, held-out folds) is a separate, slower
measurement.

Usage::

    python -m benchmarks.verdict_power [--replicates 60] [--image-size 96] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from benchmarks._results import cli_args, print_table, write_results
from bo_voids.config import load_config
from bo_voids.evaluation import EvaluatorSpec
from bo_voids.metrics import MMDScorer
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace
from bo_voids.statistics import permutation_test
from bo_voids.statistics.intervals import binomial_interval
from bo_voids.statistics.verdict import VERDICT_ALPHA, summary_checks

ROOT = Path(__file__).resolve().parent.parent
STRENGTHS = (0.0, 0.1, 0.25, 0.5, 1.0)
#: The handcrafted embedding ends with 3 × its parameter head (shape one-hot + 5 numbers).
HEAD_NAMES = (
    "head_void_shape=circle",
    "head_void_shape=ellipse",
    "head_void_shape=irregular",
    "head_void_count",
    "head_base_size",
    "head_brightness_factor",
    "head_size_std",
    "head_position_spread",
)


def imaging_chain(image: np.ndarray, strength: float, gen: np.random.Generator) -> np.ndarray:
    """Blur, contrast curve and sensor noise the generator lacks (strength 0: unchanged)."""
    if strength <= 0:
        return image
    out = ndi.gaussian_filter(image.astype(np.float64), 1.5 * strength)
    out = np.clip(out, 0.0, 1.0) ** (1.0 + 0.5 * strength)
    out = out + 0.03 * strength * gen.standard_normal(out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _images(evaluator: Any, space: SearchSpace, n: int, seed: int, tag: str) -> list[np.ndarray]:
    params = space.sample("real", n, rng(seed, "verdict_power", tag))
    return [
        evaluator.generator.render(p, derive_seed(seed, "verdict_power", tag, i)).image
        for i, p in enumerate(params)
    ]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=60)
    ap.add_argument("--folder", type=int, default=15, help="real images per folder")
    ap.add_argument("--generated", type=int, default=30, help="images drawn from the population")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--permutations", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="3 replicates, nothing written")
    args = ap.parse_args(argv)
    if args.smoke:
        args.replicates = 3
    t0 = time.perf_counter()
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", check_paths=False)
    cfg = cfg.replace(base_image_dir=str(ROOT / "data" / "base_chips"), image_size=args.image_size)
    space = SearchSpace.from_config(cfg)
    evaluator = EvaluatorSpec.from_config(cfg, embedder="handcrafted").build()
    k = len(HEAD_NAMES)
    alarms = {s: 0 for s in STRENGTHS}
    fired = {s: dict.fromkeys(HEAD_NAMES, 0) for s in STRENGTHS}
    for rep in range(args.replicates):
        seed = derive_seed(args.seed, rep)
        real = _images(evaluator, space, args.folder, seed, "real")
        generated = evaluator.embedder.embed(_images(evaluator, space, args.generated, seed, "gen"))
        for s in STRENGTHS:
            noise = np.random.default_rng(derive_seed(seed, "noise", int(s * 100)))
            R = evaluator.embedder.embed([imaging_chain(x, s, noise) for x in real])
            scorer = MMDScorer(bandwidth=cfg.metric.bandwidth).fit(R)
            assert scorer.bandwidths_ is not None
            test = permutation_test(
                generated,
                R,
                args.permutations,
                derive_seed(seed, "perm", int(s * 100)),
                bandwidth=list(scorer.bandwidths_),
            )
            alarms[s] += test.p_value <= VERDICT_ALPHA
            for c in summary_checks(R[:, -k:], generated[:, -k:], HEAD_NAMES):
                fired[s][c.summary] += c.off
    rows = []
    for s in STRENGTHS:
        lo, hi = binomial_interval(alarms[s], args.replicates)
        row: dict[str, Any] = {
            "strength": s,
            "alarm_rate": alarms[s] / args.replicates,
            "alarm_ci": f"[{lo:.2f}, {hi:.2f}]",
            "n": args.replicates,
        }
        for name in HEAD_NAMES:
            row[name.removeprefix("head_")] = fired[s][name] / args.replicates
        rows.append(row)
    print_table(rows, ["strength", "alarm_rate", "alarm_ci", "n"])
    if not args.smoke:
        write_results(
            "verdict_power",
            rows,
            meta={"args": cli_args(args), "seconds": time.perf_counter() - t0},
            markdown_title="Verdict: false alarms on well-specified folders, power under mismatch",
            notes=(
                "Strength 0 is the well-specified folder (alarm rate = false-alarm rate, goal "
                "<= 10 %); strength 1 is the strong mismatch (goal: power >= 80 %). The other "
                "columns: share of replicates in which each parameter's Holm-corrected check "
                "fired. Reproduce: python -m benchmarks.verdict_power "
                f"--replicates {args.replicates} --image-size {args.image_size} --seed {args.seed}"
            ),
        )
    return rows


if __name__ == "__main__":
    main()
