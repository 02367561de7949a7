"""The acquisition benchmark never rots: its smoke run, and the Optuna peers' optimiser contract."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from bo_voids.optimizers.synthetic import SyntheticProblem

optuna = pytest.importorskip("optuna")

from benchmarks import compare_acquisitions as bench  # noqa: E402
from benchmarks.peers import PEERS, register_peers  # noqa: E402

PEER_NAMES = sorted(PEERS)


def _history(problem: SyntheticProblem) -> tuple[np.ndarray, list[dict]]:
    init = problem.space.sample_uniform(16, 7)
    return problem.evaluate(init, 0, "close")


@pytest.mark.parametrize("name", PEER_NAMES)
def test_peer_proposals_valid_unique_reproducible(name: str) -> None:
    from bo_voids.optimizers import OPTIMIZERS, make_optimizer

    assert set(register_peers()) == set(PEERS)
    assert OPTIMIZERS[name] is PEERS[name]
    problem = SyntheticProblem(seed=1)
    space = problem.space
    emb, meta = _history(problem)

    q = 4  # Optuna's GPSampler refits per ask: keep the test short
    out = make_optimizer(name, space, seed=3).recommend_next_batch(emb, meta, problem.targets, q)
    batch = out["next_params"]
    assert len(batch) == q
    for p in batch:
        assert space.validate(p) == p  # inside the bounds, right kinds
    evaluated = {space.key(m["params"]) for m in meta}
    keys = [space.key(p) for p in batch]
    assert len(set(keys)) == q, "duplicate inside the batch"
    assert not set(keys) & evaluated, "re-proposes an evaluated set"
    assert out["info"]["optimizer"] == name
    assert len(out["current_best"]) == 5
    best = [b["mmd2"] for b in out["current_best"]]
    assert best == sorted(best)  # ranked by the raw score
    assert np.isfinite(out["scores"]["distribution_similarity"])

    again = make_optimizer(name, space, seed=3).recommend_next_batch(emb, meta, problem.targets, q)
    assert again["next_params"] == batch, "not reproducible for the same seed and history"
    other = make_optimizer(name, space, seed=4).recommend_next_batch(emb, meta, problem.targets, q)
    assert other["next_params"] != batch, "the seed is ignored"


@pytest.mark.parametrize("name", PEER_NAMES)
def test_peer_is_stateless_over_a_loop(name: str) -> None:
    """A fresh optimiser on the same history proposes what the one used in the loop did."""
    from bo_voids.optimizers import make_optimizer

    register_peers()
    problem = SyntheticProblem(seed=2)
    emb, meta = _history(problem)
    opt = make_optimizer(name, problem.space, seed=0)
    first = opt.recommend_next_batch(emb, meta, problem.targets, 4)["next_params"]
    e, m = problem.evaluate(first, 1)
    emb2, meta2 = np.concatenate([emb, e]), meta + m
    second = opt.recommend_next_batch(emb2, meta2, problem.targets, 4)["next_params"]
    fresh = make_optimizer(name, problem.space, seed=0)
    assert fresh.recommend_next_batch(emb2, meta2, problem.targets, 4)["next_params"] == second


def test_smoke_run(tmp_path: Path) -> None:
    """--smoke: tiny images, 2 seeds, 2 iterations, every method; outputs, pairing, resume."""
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["--smoke", "--targets", "real", "--out", str(out), "--work-dir", str(work)]
    summary = bench.main([*argv, "--workers", "2"])

    methods = list(bench.METHODS)
    with (out / "runs.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(methods) * 2 * 3  # methods x seeds x (iteration 0 + 2)
    assert {r["method"] for r in rows} == set(methods)
    for r in rows:
        assert np.isfinite(float(r["best_mmd2"]))
        assert np.isfinite(float(r["err_base_size"]))
        assert np.isfinite(float(r["fresh_mmd2"]))
        assert r["shape_found"] in {"0", "1"}
    # best-so-far never gets worse
    for m in methods:
        for s in (0, 1):
            curve = [
                float(r["best_mmd2"]) for r in rows if r["method"] == m and r["seed"] == str(s)
            ]
            assert all(b <= a + 1e-12 for a, b in itertools.pairwise(curve))
    assert summary["pairing"]["ok"], summary["pairing"]
    real = summary["targets"]["real"]
    assert real["seeds"] == [0, 1]
    assert set(real["per_method"]) == set(methods)
    assert "goals" in real and "reach_random_final" in real and "fresh" in real
    assert "calibration" in real  # the ucb runs were calibrated
    for name in ("summary.md", "summary.json", "best_so_far_real.png", "recovery_real.png"):
        assert (out / name).stat().st_size > 0
    json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "| ucb |" in (out / "summary.md").read_text(encoding="utf-8")

    # resumable: a second invocation finds every run complete and reruns nothing
    manifests = sorted(work.rglob("experiment.json"))
    assert manifests
    before = {p: p.stat().st_mtime_ns for p in manifests}
    again = bench.main([*argv, "--workers", "1"])
    assert {p: p.stat().st_mtime_ns for p in manifests} == before
    assert again["targets"]["real"]["per_method"]["ucb"]["best_mmd2"]["median"] == pytest.approx(
        real["per_method"]["ucb"]["best_mmd2"]["median"]
    )
