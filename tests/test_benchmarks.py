"""The acquisition benchmark never rots: its smoke run, and the Optuna peers' optimiser contract."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bo_voids.testing.synthetic import SyntheticProblem

optuna = pytest.importorskip("optuna")

from benchmarks.compare_acquisitions import __main__ as bench  # noqa: E402
from benchmarks.peers import PEERS, make_benchmark_optimizer  # noqa: E402

PEER_NAMES = sorted(PEERS)
# Optuna's GPSampler refits on every ask (several seconds a call on 2 cores): its checks run
# with the slow tests
PEER_PARAMS = [
    pytest.param(n, marks=pytest.mark.slow) if n == "optuna_gp" else n for n in PEER_NAMES
]


def _history(problem: SyntheticProblem) -> tuple[np.ndarray, list[dict]]:
    init = problem.space.sample_uniform(16, 7)
    return problem.evaluate(init, 0, "close")


@pytest.mark.parametrize("name", PEER_PARAMS)
def test_peer_proposals_valid_unique_reproducible(name: str) -> None:
    from bo_voids.optimizers import OPTIMIZERS

    make_optimizer = make_benchmark_optimizer
    assert name not in OPTIMIZERS, "the package registry is never mutated by benchmarks"
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


@pytest.mark.parametrize("name", PEER_PARAMS)
def test_peer_is_stateless_over_a_loop(name: str) -> None:
    """A fresh optimiser on the same history proposes what the one used in the loop did."""
    make_optimizer = make_benchmark_optimizer
    problem = SyntheticProblem(seed=2)
    emb, meta = _history(problem)
    opt = make_optimizer(name, problem.space, seed=0)
    first = opt.recommend_next_batch(emb, meta, problem.targets, 4)["next_params"]
    e, m = problem.evaluate(first, 1)
    emb2, meta2 = np.concatenate([emb, e]), meta + m
    second = opt.recommend_next_batch(emb2, meta2, problem.targets, 4)["next_params"]
    fresh = make_optimizer(name, problem.space, seed=0)
    assert fresh.recommend_next_batch(emb2, meta2, problem.targets, 4)["next_params"] == second


SMOKE = ["--smoke", "--targets", "real", "--workers", "1"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], dict]:
    """One smoke run of two methods: its output folder, work folder, arguments and summary."""
    tmp = tmp_path_factory.mktemp("smoke")
    out, work = tmp / "out", tmp / "work"
    argv = [*SMOKE, "--methods", "random,composite_ei", "--out", str(out), "--work-dir", str(work)]
    return out, work, argv, bench.main(argv)


def test_smoke_run(smoke: tuple[Path, Path, list[str], dict]) -> None:
    """--smoke: tiny images, 2 seeds, 2 iterations; paired iteration 0, tables, tests, resume."""
    out, _, argv, summary = smoke
    assert summary["pairing"]["ok"]
    with (out / "runs_real.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    judged = [r for r in rows if r["method"] != "oracle"]
    assert len(judged) == 2 * 2 * 2  # methods x seeds x (iteration 0, the last)
    assert len([r for r in rows if r["method"] == "oracle"]) == 2 * 2
    for r in judged:
        assert np.isfinite(float(r["fresh_mmd2"])) and np.isfinite(float(r["err_true_mean"]))
        assert r["shape_right"] in {"0", "1"}
    # iteration 0's recommendation is the same for every method only through the shared data:
    # the fresh seeds are shared, so equal picks get equal fresh scores
    first = {(r["method"], r["seed"]): r for r in judged if r["iteration"] == "0"}
    assert first[("random", "0")]["fresh_mmd2"] == first[("composite_ei", "0")]["fresh_mmd2"]
    real = summary["targets"]["real"]
    assert real["seeds"] == [0, 1] and real["tests"] and real["table"]
    for name in ("table_real.md", "tests_real.md", "runs_real.json", "recommendation_real.png"):
        assert (out / name).stat().st_size > 0
    again = bench.main(argv)  # every run is reused from its bench_result.json
    assert again["targets"]["real"]["table"] == real["table"]


def test_a_complete_run_without_its_result_file_is_judged_again(
    smoke: tuple[Path, Path, list[str], dict], tmp_path: Path
) -> None:
    """A run folder that is complete but lost its result file is judged without re-running."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(smoke[1], work)
    for result in (work / "real" / "random").rglob("bench_result.json"):
        result.unlink()
    argv = [*SMOKE, "--methods", "random", "--out", str(tmp_path / "out"), "--work-dir", str(work)]
    again = bench.main(argv)["targets"]["real"]["table"]
    before = [r for r in smoke[3]["targets"]["real"]["table"] if r["method"] == "random"]
    assert [r for r in again if r["method"] == "random"] == before


def test_smoke_skips_a_method_whose_optional_package_is_missing(
    smoke: tuple[Path, Path, list[str], dict], tmp_path: Path, monkeypatch, capsys
) -> None:
    """On the `dev` install (no sbi) the smoke run skips sbi_npe with one line naming the extra.

    It runs in a copy of the smoke run's work folder, so random search's runs are reused.
    """
    import importlib.util
    import shutil

    real_find_spec = importlib.util.find_spec

    def no_sbi(name: str, *args, **kwargs):
        return None if name == "sbi" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", no_sbi)
    out, work = tmp_path / "out", tmp_path / "work"
    shutil.copytree(smoke[1], work)
    argv = [*SMOKE, "--methods", "random,sbi_npe"]
    capsys.readouterr()
    summary = bench.main([*argv, "--out", str(out), "--work-dir", str(work)])
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipping")]
    assert skipped == [
        "skipping sbi_npe: it needs the optional package 'sbi' (pip install -e '.[bench]')"
    ]
    assert "Traceback" not in err
    methods = {row["method"] for row in summary["targets"]["real"]["table"]}
    assert methods == {"random"}


def test_write_results_csv_json_markdown(tmp_path: Path) -> None:
    from benchmarks._results import print_table, write_results

    rows = [
        {"case": "a|b", "n": 3, "ms": np.float64(1234.5678), "ok": True, "curve": [0.5, 0.25]},
        {"case": "c", "n": 4, "ms": float("nan"), "ok": False, "extra": None},
    ]
    paths = write_results(
        "demo",
        rows,
        out_dir=tmp_path / "out",
        meta={"args": {"quick": True}},
        columns={"case": "case", "ms": "ms / call", "ok": "ok"},
        markdown_title="Demo",
        notes="How it was measured.",
    )
    assert [p.name for p in paths] == ["demo.csv", "demo.json", "demo.md"]
    with paths.csv.open(encoding="utf-8", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["case", "n", "ms", "ok", "curve", "extra"]  # union, first-seen order
    assert got[0]["curve"] == "[0.5, 0.25]" and got[1]["extra"] == ""
    assert float(got[0]["ms"]) == 1234.5678
    record = json.loads(paths.json.read_text(encoding="utf-8"))
    assert set(record) == {"name", "machine", "meta", "rows"}
    assert record["meta"] == {"args": {"quick": True}}
    assert record["rows"][1]["ms"] is None  # NaN is not JSON
    assert {"platform", "python", "cpu_count", "load_average", "versions"} <= set(record["machine"])
    md = paths.md.read_text(encoding="utf-8")
    assert md.startswith("# Demo\n\nHow it was measured.\n\n| case | ms / call | ok |")
    assert "| a\\|b | 1,235 | yes |" in md and "| c |  | no |" in md
    assert "Machine: " in md
    print_table(rows, ["case", "n"])  # console form of the same table
    with pytest.raises(ValueError, match="no rows"):
        write_results("empty", [], out_dir=tmp_path)


def test_render_speed_quick_keeps_its_files_and_columns(tmp_path: Path) -> None:
    from benchmarks import render_speed

    rows = render_speed.main(["--quick", "--out", str(tmp_path)])
    assert len(rows) == len(render_speed.SIZES) * (len(render_speed.SHAPES) + 1)
    with (tmp_path / "render_speed.csv").open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["image_size", "case", "void_count", "ms_per_image", "images_per_s"]
    record = json.loads((tmp_path / "render_speed.json").read_text(encoding="utf-8"))
    assert record["rows"] == rows and "out" not in record["meta"]["args"]
    assert "| image size | case |" in (tmp_path / "render_speed.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_npe_peer_recovers_a_simple_simulator() -> None:
    """The sbi peer (skipped where sbi is absent): posterior summary near the truth."""
    pytest.importorskip("sbi")
    from benchmarks.compare_acquisitions.sbi_peer import npe_recommendation
    from bo_voids.testing.synthetic import SyntheticProblem

    problem = SyntheticProblem(seed=0)
    space = problem.space
    sets = space.sample_uniform(300, 5)
    emb, _ = problem.evaluate(sets, 0, "close")
    reps = problem.replications
    xs = emb.reshape(len(sets), reps, -1).mean(axis=1)
    thetas = np.stack([space.encode(p) for p in sets])
    truth = problem.optimum
    x_o = problem.targets.mean(axis=0)
    point = npe_recommendation(space, thetas, xs, x_o, seed=0, max_epochs=60)
    assert space.validate(point) == point
    err = space.normalized_distance(point, truth, shape_weight=0.0)
    rnd = np.median([space.normalized_distance(p, truth, shape_weight=0.0) for p in sets])
    assert err < rnd


@pytest.mark.slow
def test_calibration_recovery_smoke(tmp_path: Path) -> None:
    """The population-calibration benchmark end to end on tiny runs (no sbi)."""
    from benchmarks import calibration_recovery

    argv = ["--smoke", "--targets", "real", "--no-sbi", "--work-dir", str(tmp_path / "work")]
    out = calibration_recovery.main([*argv, "--out", str(tmp_path / "out")])
    (result,) = out["results"]
    assert {"psi", "psi_on_composite_ei", "mixture", "best_point", "realised"} <= set(
        result["methods"]
    )
    psi = result["methods"]["psi"]
    assert 0.0 <= psi["mean_err_nominal"] <= 1.0 and psi["coverage_nominal"]
    assert (tmp_path / "out" / "table_real.md").is_file()
    # a rerun reads the cached seed instead of recomputing it
    again = calibration_recovery.main([*argv, "--out", str(tmp_path / "out2")])
    assert again["results"][0]["methods"]["psi"] == psi
