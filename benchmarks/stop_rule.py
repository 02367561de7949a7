"""How often does the stop rule stop on luck? False stops of the old and the confirmed rule.

On the real generator and the offline ``handcrafted`` embedder, with the quickstart's design
(targets: 5 parameter sets × 3 renders from ``param_distributions.real``), every parameter set
below is rendered four times with ``fresh_images`` independent images (samples A, B, C, D) and
each sample scored against the targets with the run's kernel:

* **Real-population sets** (``--real-sets``, drawn from the targets' own distribution): the null
  the rule's threshold is taken from. The *oracle threshold* Q is the 5 % quantile of their
  single-sample fresh MMD² (sample A) over all of them: "closer to the targets than 95 % of real
  parameter sets are".
* **Candidate recommendations** (the real-population sets and ``--close-sets`` drawn from the
  config's ``close`` distribution, what an optimiser recommends early on). A candidate's expected
  fresh MMD² is estimated from samples C and D, which no rule sees.

Rules, each replicated ``--replicates`` times per candidate with a fresh random subset of the
real-population sets (never the candidate itself) as its null draws:

* **old**: sample A at or below the empirical q05 of 20 null draws (the release's rule);
* **confirmed**: samples A and B both at or below the 95 % lower bound of the q05 from 200 null
  draws (:func:`bo_voids.statistics.stop_rule.threshold_from_null`).

A *false stop* is a stop of a candidate whose expected fresh MMD² is above Q (it is not closer to
the targets than 95 % of real sets). Reported: the false-stop rate (share of all candidate
looks that end in a false stop), the stop rate, and the share of stops that are false.

Usage::

    python -m benchmarks.stop_rule [--real-sets 240] [--close-sets 80] [--image-size 96]
        [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import cli_args, print_table, write_results
from bo_voids.config import load_config
from bo_voids.evaluation import EvaluationTask, EvaluatorSpec
from bo_voids.metrics import MMDScorer
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace
from bo_voids.statistics.stop_rule import MIN_NULL_DRAWS, threshold_from_null

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 4  # A, B (the rule), C, D (the truth)


def _scores(evaluator: Any, scorer: MMDScorer, params: list[dict], tag: str, seed: int, n: int):
    """`(len(params), SAMPLES)` fresh MMD² of each set, each sample its own ``n`` images."""
    out = np.empty((len(params), SAMPLES))
    for i, p in enumerate(params):
        seeds = tuple(derive_seed(seed, "stop_rule", tag, i, r) for r in range(SAMPLES * n))
        res = evaluator.evaluate_one(EvaluationTask(0, "synthetic", i, f"{tag}_{i}", p, seeds))
        for s in range(SAMPLES):
            out[i, s] = scorer.score(res.embeddings[s * n : (s + 1) * n])
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-sets", type=int, default=240)
    ap.add_argument("--close-sets", type=int, default=80)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--fresh-images", type=int, default=12)
    ap.add_argument("--replicates", type=int, default=20, help="null subsets per candidate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, nothing written")
    args = ap.parse_args(argv)
    if args.smoke:
        args.real_sets, args.close_sets, args.replicates = 30, 6, 3
    t0 = time.perf_counter()
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", check_paths=False)
    cfg = cfg.replace(base_image_dir=str(ROOT / "data" / "base_chips"), image_size=args.image_size)
    space = SearchSpace.from_config(cfg)
    evaluator = EvaluatorSpec.from_config(cfg, embedder="handcrafted").build()
    target_sets = space.sample("real", 5, rng(args.seed, "stop_rule", "targets"))
    T = []
    for i, p in enumerate(target_sets):
        seeds = tuple(derive_seed(args.seed, "stop_rule", "targets", i, r) for r in range(3))
        T.append(evaluator.evaluate_one(EvaluationTask(0, "real", i, f"t{i}", p, seeds)).embeddings)
    scorer = MMDScorer(bandwidth=cfg.metric.bandwidth).fit(np.concatenate(T))
    n = args.fresh_images
    real = space.sample("real", args.real_sets, rng(args.seed, "stop_rule", "real"))
    close = space.sample("close", args.close_sets, rng(args.seed, "stop_rule", "close"))
    S_real = _scores(evaluator, scorer, real, "real", args.seed, n)
    S_close = _scores(evaluator, scorer, close, "close", args.seed, n)
    t_render = time.perf_counter() - t0
    oracle_q05 = float(np.quantile(S_real[:, 0], 0.05))
    gen = np.random.default_rng(derive_seed(args.seed, "stop_rule", "subsets"))
    n_null = min(MIN_NULL_DRAWS, args.real_sets - 1)
    rows = []
    for label, S, is_real in (("real-population", S_real, True), ("close", S_close, False)):
        looks = old_stop = old_false = new_stop = new_false = 0
        for j in range(len(S)):
            truth = S[j, 2:].mean()
            pool = np.delete(np.arange(len(S_real)), j) if is_real else np.arange(len(S_real))
            for _ in range(args.replicates):
                null = S_real[gen.choice(pool, n_null, replace=False), 0]
                old_t = float(np.quantile(null[:20], 0.05))
                new_t = threshold_from_null(null, min_draws=n_null).value
                fired_old = S[j, 0] <= old_t
                fired_new = S[j, 0] <= new_t and S[j, 1] <= new_t
                looks += 1
                old_stop += fired_old
                new_stop += fired_new
                old_false += fired_old and truth > oracle_q05
                new_false += fired_new and truth > oracle_q05
        for rule, stops, false in (
            ("old", old_stop, old_false),
            ("confirmed", new_stop, new_false),
        ):
            rows.append(
                {
                    "candidates": label,
                    "rule": rule,
                    "looks": looks,
                    "stop_rate": stops / looks,
                    "false_stop_rate": false / looks,
                    "false_share_of_stops": false / stops if stops else float("nan"),
                }
            )
    print_table(rows)
    if not args.smoke:
        write_results(
            "stop_rule",
            rows,
            meta={
                "args": cli_args(args),
                "oracle_q05": oracle_q05,
                "null_draws_per_threshold": n_null,
                "render_and_score_seconds": t_render,
            },
            markdown_title="Stop rule: false stops of the old and the confirmed rule",
            notes=(
                f"Oracle q05 of a real set's fresh MMD² (sample A over {args.real_sets} sets): "
                f"{oracle_q05:.4f}. Each candidate looked at {args.replicates} times with a "
                f"fresh null subset of {n_null} real sets. Render + score: {t_render:.0f} s. "
                "Reproduce: python -m benchmarks.stop_rule "
                f"--real-sets {args.real_sets} --close-sets {args.close_sets} "
                f"--image-size {args.image_size} --seed {args.seed}"
            ),
        )
    return rows


if __name__ == "__main__":
    main()
