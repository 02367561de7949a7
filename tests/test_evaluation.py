"""Evaluation tasks, render seeds, the evaluator and the image records it writes."""

from __future__ import annotations

import re
from pathlib import Path

from bo_voids.evaluation import render_seeds, target_records
from bo_voids.generation.voids import image_record
from bo_voids.testing.runs import assert_same_results, small_spec, small_tasks

# ---------------------------------------------------------------------------------------------
# render_seeds
# ---------------------------------------------------------------------------------------------


def test_render_seeds_are_deterministic() -> None:
    for crn in (False, True):
        for dtype in ("real", "close", "far", "synthetic"):
            a = render_seeds(3, 2, dtype, 5, 4, crn)
            assert a == render_seeds(3, 2, dtype, 5, 4, crn)
            assert len(a) == 4 and len(set(a)) == 4  # replications differ
            assert all(isinstance(s, int) and 0 <= s < 2**63 for s in a)
    assert render_seeds(3, 2, "far", 5, 4, False) != render_seeds(4, 2, "far", 5, 4, False)


def test_crn_seed_blocks_are_shared_within_a_batch_only() -> None:
    ref = render_seeds(0, 3, "synthetic", 0, 3, True)
    assert render_seeds(0, 3, "synthetic", 7, 3, True) == ref  # same batch: same block
    # a prefix: replication r has the same seed whatever the number of replications
    assert render_seeds(0, 3, "synthetic", 1, 5, True)[:3] == ref
    blocks = [
        render_seeds(0, it, dtype, 0, 3, True)
        for it, dtype in [(0, "close"), (0, "far"), (1, "synthetic"), (2, "synthetic")]
    ]
    seen = [s for b in [*blocks, ref] for s in b]
    assert len(set(seen)) == len(seen)  # every batch (and iteration 0's close / far) is new


def test_real_sets_are_independent_even_with_crn() -> None:
    crn = set(render_seeds(0, 0, "close", 0, 3, True))
    real = [render_seeds(0, 0, "real", i, 3, True) for i in range(4)]
    seen = [s for seeds in real for s in seeds]
    assert len(set(seen)) == len(seen)  # no seed shared between real sets or replications
    assert not crn & set(seen)
    assert real[1] == render_seeds(0, 0, "real", 1, 3, False)  # CRN does not touch real sets


def test_without_crn_every_set_is_independent() -> None:
    seeds = [
        s
        for iteration, dtype, index in [
            (0, "close", 0),
            (0, "close", 1),
            (0, "far", 0),
            (1, "synthetic", 0),
        ]
        for s in render_seeds(0, iteration, dtype, index, 3, False)
    ]
    assert len(set(seeds)) == len(seeds)


# ---------------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------------


def test_evaluate_one_matches_evaluate_many(repo_root: Path) -> None:
    evaluator = small_spec(repo_root).build()
    tasks = small_tasks(repo_root, n=4)
    assert_same_results(evaluator.evaluate_many(tasks), [evaluator.evaluate_one(t) for t in tasks])
    assert evaluator.evaluate_many([]) == []


def test_records_are_the_design_schema_with_a_timestamp(repo_root: Path) -> None:
    evaluator = small_spec(repo_root).build()
    (task,) = small_tasks(repo_root, n=1, replications=2)
    records = evaluator.evaluate_one(task).records
    schema = list(image_record(iteration=0, dataset_type="x", param_set_id="p", replication_seed=0))
    for r, rec in enumerate(records):
        assert list(rec)[: len(schema) - 2] == schema[:-2]  # the design's keys, in order
        assert rec["replication_seed"] == r and rec["render_seed"] == task.seeds[r]
        assert rec["params"] == dict(task.params) and rec["base_image_id"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["timestamp"])
        assert {"voids", "void_area_pct"} <= set(rec)


def test_target_records(tmp_path: Path) -> None:
    recs = target_records(tmp_path, ["a.png", "b.png"])
    assert [r["source_file"] for r in recs] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert all(r["params"] is None and r["dataset_type"] == "real" for r in recs)
    assert all(r["timestamp"] and "void_area_pct" not in r for r in recs)
