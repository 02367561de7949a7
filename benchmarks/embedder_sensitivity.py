"""Is an embedder's MMD² a meaningful objective? Separation, one-at-a-time sweeps, rank signal.

For each seed:

1. **Separation.** Real targets: 5 parameter sets from the real distribution x 3 replications;
   close and far: 8 sets x 3 each. Pooled MMD² (``MMDScorer(bandwidth="multi")`` fitted on the
   real targets, as the optimiser uses it) of close and far against the targets, and the mean
   per-set MMD² of each.
2. **Sweeps.** From the real distribution's means (shape ``ellipse``), one parameter at a time is
   moved across its whole range (6 replications per value, common random numbers); per-set MMD²
   vs the targets. A good objective has its minimum near the true mean and rises on both sides.
3. **Rank signal.** 100 uniformly random parameter sets x 3 replications: Spearman correlation
   between the normalised parameter distance to the real means (numeric parameters divided by
   their range; a shape mismatch counts ``--shape-weight``, default 1) and the per-set MMD².

Usage::

    python -m benchmarks.embedder_sensitivity --embedder handcrafted [--image-size 256] [--seeds 3]
    python -m benchmarks.embedder_sensitivity --calibrate [--constants-out PATH]

Writes ``embedder_sensitivity_<embedder>_<size><tag>.{csv,json,md,png}`` under ``--out`` (default
``benchmarks/results``). ``--calibrate`` instead refits the handcrafted embedder's constants
(:func:`bo_voids.embedding.handcrafted.refit_constants`) and writes them to its package data, or
to ``--constants-out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from benchmarks._results import RESULTS_DIR, cli_args, markdown_table, write_results
from bo_voids.config import load_config
from bo_voids.embedding import make_embedder
from bo_voids.embedding.base import Embedder
from bo_voids.generation.voids import VoidGenerator
from bo_voids.metrics import MMDScorer
from bo_voids.seeding import derive_seed
from bo_voids.space import SearchSpace
from bo_voids.statistics import half_split_noise_floor

ROOT = Path(__file__).resolve().parent.parent

SWEEPS: dict[str, list[Any]] = {
    "void_shape": ["circle", "ellipse", "irregular"],
    "void_count": [3, 5, 8, 11, 14, 17, 20],
    "base_size": [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0],
    "brightness_factor": [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8],
    "size_std": [0.0, 2.0, 4.0, 7.0, 10.0, 12.5, 15.0],
    "position_spread": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
}


class Bench:
    """Renders and embeds parameter sets for one seed."""

    def __init__(self, space: SearchSpace, gen: VoidGenerator, emb: Embedder) -> None:
        self.space, self.gen, self.emb = space, gen, emb
        self.embed_s = 0.0
        self.n_images = 0

    def embed_sets(self, sets: list[dict[str, Any]], reps: int, *keys: Any) -> list[np.ndarray]:
        """Render ``reps`` images per set (seeds from ``keys``) and embed them, per set."""
        imgs = []
        for i, p in enumerate(sets):
            for r in range(reps):
                imgs.append(self.gen.render(p, derive_seed(*keys, i, r)).image)
        t = time.perf_counter()
        e = self.emb.embed(imgs)
        self.embed_s += time.perf_counter() - t
        self.n_images += len(imgs)
        return [e[i * reps : (i + 1) * reps] for i in range(len(sets))]

    def embed_crn(self, sets: list[dict[str, Any]], reps: int, *keys: Any) -> list[np.ndarray]:
        """Like :meth:`embed_sets`, but replication r of every set shares one seed (CRN)."""
        imgs = [self.gen.render(p, derive_seed(*keys, r)).image for p in sets for r in range(reps)]
        t = time.perf_counter()
        e = self.emb.embed(imgs)
        self.embed_s += time.perf_counter() - t
        self.n_images += len(imgs)
        return [e[i * reps : (i + 1) * reps] for i in range(len(sets))]


def run_seed(b: Bench, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    sp = b.space
    real_sets = sp.sample("real", 5, derive_seed(seed, "real"))
    close_sets = sp.sample("close", 8, derive_seed(seed, "close"))
    far_sets = sp.sample("far", 8, derive_seed(seed, "far"))
    real = np.concatenate(b.embed_sets(real_sets, 3, seed, "real"))
    close = b.embed_sets(close_sets, 3, seed, "close")
    far = b.embed_sets(far_sets, 3, seed, "far")
    scorer = MMDScorer(bandwidth="multi").fit(real)
    out: dict[str, Any] = {
        "seed": seed,
        "pooled_close": scorer.score(np.concatenate(close)),
        "pooled_far": scorer.score(np.concatenate(far)),
        "perset_close": float(np.mean(scorer.score_many(close))),
        "perset_far": float(np.mean(scorer.score_many(far))),
        "noise_floor_q95": float(half_split_noise_floor(scorer, random_state=seed)["q95"]),
    }
    means = sp.distribution_means("real")
    sweeps: dict[str, list[float]] = {}
    for name, values in SWEEPS.items():
        sets = [{**means, name: v} for v in values]
        embs = b.embed_crn(sets, args.sweep_reps, seed, "sweep")
        sweeps[name] = [float(v) for v in scorer.score_many(embs)]
    out["sweeps"] = sweeps
    uni = sp.sample_uniform(args.n_random, derive_seed(seed, "uniform"))
    embs = b.embed_sets(uni, 3, seed, "uniform")
    mmd = scorer.score_many(embs)
    dist = np.array([sp.normalized_distance(p, means, shape_weight=args.shape_weight) for p in uni])
    out["spearman"] = float(spearmanr(dist, mmd).statistic)
    out["random_sets"] = [
        {**p, "distance": float(d), "mmd2": float(m)}
        for p, d, m in zip(uni, dist, mmd, strict=True)
    ]
    # Per-parameter rank signal: correlation of |param - mean| (or mismatch) with MMD².
    per_param = {}
    for name in sp.parameter_names:
        if name == "void_shape":
            x = np.array([float(p[name] != means[name]) for p in uni])
        else:
            x = np.array([abs(float(p[name]) - float(means[name])) for p in uni])
        per_param[name] = float(spearmanr(x, mmd).statistic)
    out["spearman_per_param"] = per_param
    return out


def sweep_summary(results: list[dict[str, Any]], means: dict[str, Any]) -> dict[str, Any]:
    tol = {
        "void_count": 3,
        "base_size": 5.0,
        "brightness_factor": 0.1,
        "size_std": 2.5,
        "position_spread": 0.15,
    }
    summ = {}
    for name, values in SWEEPS.items():
        curve = np.mean([r["sweeps"][name] for r in results], axis=0)
        k = int(np.argmin(curve))
        vmin = values[k]
        if name == "void_shape":
            near = vmin == means[name]
        else:
            near = abs(float(vmin) - float(means[name])) <= tol[name] + 1e-9
        lo, hi = float(curve[0]), float(curve[-1])
        summ[name] = {
            "values": values,
            "mean_curve": [float(c) for c in curve],
            "argmin": vmin,
            "true_mean": means[name],
            "min_near_mean": bool(near),
            "rises_both_sides": bool(
                k not in (0, len(values) - 1) and lo > curve[k] and hi > curve[k]
            ),
            "end_over_min": [lo - float(curve[k]), hi - float(curve[k])],
        }
    return summ


def plot(summary: dict[str, Any], results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (name, s) in zip(axes.flat, summary.items(), strict=False):
        x = np.arange(len(s["values"])) if name == "void_shape" else np.asarray(s["values"], float)
        for r in results:
            ax.plot(x, r["sweeps"][name], color="0.75", lw=0.8)
        ax.plot(x, s["mean_curve"], "o-", color="C0", label="mean over seeds")
        if name == "void_shape":
            ax.set_xticks(x, s["values"])
            ax.axvline(s["values"].index(s["true_mean"]), color="C3", ls="--", label="true mean")
        else:
            ax.axvline(float(s["true_mean"]), color="C3", ls="--", label="true mean")
        ax.set_title(name)
        ax.set_ylabel("per-set MMD²")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate(args: argparse.Namespace) -> None:
    """Refit the handcrafted embedder's constants (scaling and head) and write their JSON."""
    from bo_voids.embedding.handcrafted import constants_path, load_constants, refit_constants

    cfg = load_config(ROOT / "configs" / "experiment_config.yaml")
    out = Path(args.constants_out) if args.constants_out else constants_path()
    before = load_constants(out) if out.exists() else None
    after = refit_constants(
        SearchSpace.from_config(cfg), ROOT / "data" / "base_chips", out, n_images=args.n_calibrate
    )
    same = before is not None and (before.scaling, before.head) == (after.scaling, after.head)
    print(f"wrote {out} ({'unchanged constants' if same else 'new constants'})")


def _csv_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long form of every measured MMD²: separation, sweep points and random sets."""
    rows: list[dict[str, Any]] = []
    for r in results:
        seed = r["seed"]
        for kind in ("close", "far"):
            rows.append(_long("separation", seed, kind, "pooled", r[f"pooled_{kind}"]))
        for name, vals in r["sweeps"].items():
            rows += [
                _long("sweep", seed, name, v, m) for v, m in zip(SWEEPS[name], vals, strict=True)
            ]
        rows += [
            _long("random", seed, "distance", x["distance"], x["mmd2"]) for x in r["random_sets"]
        ]
    return rows


def _long(kind: str, seed: int, parameter: str, value: Any, mmd2: float) -> dict[str, Any]:
    return {"kind": kind, "seed": seed, "parameter": parameter, "value": value, "mmd2": mmd2}


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedder", default="handcrafted", choices=["handcrafted", "dinov2", "auto"])
    ap.add_argument("--dino-model", default="dinov2_vitb14")
    ap.add_argument("--dino-weights", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sweep-reps", type=int, default=6)
    ap.add_argument("--n-random", type=int, default=100)
    ap.add_argument("--shape-weight", type=float, default=1.0)
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="output folder")
    ap.add_argument("--calibrate", action="store_true", help="refit the handcrafted constants")
    ap.add_argument("--n-calibrate", type=int, default=1200)
    ap.add_argument("--constants-out", default=None, help="--calibrate output (default: package)")
    args = ap.parse_args(argv)
    if args.calibrate:
        calibrate(args)
        return None

    cfg = load_config(ROOT / "configs" / "experiment_config.yaml")
    sp = SearchSpace.from_config(cfg)
    gen = VoidGenerator(ROOT / "data" / "base_chips", image_size=args.image_size)
    emb = make_embedder(
        args.embedder, dino_model=args.dino_model, dino_weights=args.dino_weights, dtype=args.dtype
    )
    bench = Bench(sp, gen, emb)
    t0 = time.perf_counter()
    results = [run_seed(bench, s, args) for s in range(args.seeds)]
    wall = time.perf_counter() - t0
    means = sp.distribution_means("real")
    summ = sweep_summary(results, means)

    print(f"embedder {emb.fingerprint()}  image_size {args.image_size}  seeds {args.seeds}")
    print(f"{bench.n_images} images embedded, {1000 * bench.embed_s / bench.n_images:.1f} ms/image")
    print("\nSeparation (MMD² vs real targets, multi-bandwidth RBF)")
    print(
        f"{'seed':>4} {'pooled close':>13} {'pooled far':>11} {'set close':>10} {'set far':>9}"
        f" {'far/close':>9} {'floor q95':>9}"
    )
    for r in results:
        ratio = r["pooled_far"] / max(r["pooled_close"], 1e-12)
        print(
            f"{r['seed']:>4} {r['pooled_close']:>13.4f} {r['pooled_far']:>11.4f}"
            f" {r['perset_close']:>10.4f}"
            f" {r['perset_far']:>9.4f} {ratio:>9.1f} {r['noise_floor_q95']:>9.4f}"
        )
    print("\nSweeps (mean over seeds): argmin vs true mean")
    for name, s in summ.items():
        curve = " ".join(f"{c:.3f}" for c in s["mean_curve"])
        print(
            f"  {name:18s} argmin {s['argmin']!s:>9} true {s['true_mean']!s:>7}"
            f"  near={s['min_near_mean']!s:5}"
            f" both-sides={s['rises_both_sides']!s:5}  [{curve}]"
        )
    sp_vals = [r["spearman"] for r in results]
    print(f"\nSpearman(normalised param distance, per-set MMD²) over {args.n_random} random sets:")
    print("  per seed " + " ".join(f"{v:.3f}" for v in sp_vals) + f"   mean {np.mean(sp_vals):.3f}")
    pp = {
        k: float(np.mean([r["spearman_per_param"][k] for r in results])) for k in sp.parameter_names
    }
    print("  per parameter |Δ| vs MMD²: " + ", ".join(f"{k} {v:.2f}" for k, v in pp.items()))
    print(f"wall {wall:.1f} s")

    separation = [
        {
            k: r[k]
            for k in (
                "seed",
                "pooled_close",
                "pooled_far",
                "perset_close",
                "perset_far",
                "noise_floor_q95",
            )
        }
        for r in results
    ]
    record = {
        "embedder": emb.describe(),
        "image_size": args.image_size,
        "seeds": args.seeds,
        "sweep_reps": args.sweep_reps,
        "n_random": args.n_random,
        "shape_weight": args.shape_weight,
        "ms_per_image": 1000 * bench.embed_s / bench.n_images,
        "wall_s": wall,
        "separation": separation,
        "sweeps": summ,
        "spearman": sp_vals,
        "spearman_mean": float(np.mean(sp_vals)),
        "spearman_per_param": pp,
    }
    if not args.no_write:
        stem = f"embedder_sensitivity_{emb.name}_{args.image_size}{args.tag}"
        sweep_rows = [
            {
                "parameter": name,
                "argmin": sw["argmin"],
                "true_mean": sw["true_mean"],
                "min_near_mean": sw["min_near_mean"],
                "rises_both_sides": sw["rises_both_sides"],
                "mean_curve": sw["mean_curve"],
            }
            for name, sw in summ.items()
        ]
        paths = write_results(
            stem,
            _csv_rows(results),
            out_dir=args.out,
            meta={"args": cli_args(args), **record},
            markdown_title=f"Embedder sensitivity: {emb.fingerprint()} at {args.image_size} px",
            notes=[
                f"{args.seeds} seeds; {bench.n_images} images embedded at "
                f"{record['ms_per_image']:.1f} ms/image. Separation (MMD² vs the real targets, "
                "multi-bandwidth RBF):",
                markdown_table(separation),
                f"Spearman(normalised parameter distance, per-set MMD²) over {args.n_random} "
                f"random sets: {', '.join(f'{v:.3f}' for v in sp_vals)} (mean "
                f"{record['spearman_mean']:.3f}); per parameter |Δ| vs MMD²: "
                + ", ".join(f"{k} {v:.2f}" for k, v in pp.items())
                + ".",
                "One-at-a-time sweeps from the real means (mean over seeds):",
            ],
            table_rows=sweep_rows,
        )
        png = paths.md.with_suffix(".png")
        plot(summ, results, png, f"{emb.fingerprint()} @ {args.image_size}px")
        print(f"wrote {paths.md.with_suffix('')}.{{csv,json,md,png}}")
    return record


if __name__ == "__main__":
    main()
