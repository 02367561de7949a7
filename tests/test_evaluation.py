"""Evaluation tasks, render seeds and the in-process / process-pool executors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from bo_voids.config import load_config
from bo_voids.evaluation import (
    EvaluationResult,
    EvaluationTask,
    EvaluatorSpec,
    LocalExecutor,
    ProcessPoolEvaluationExecutor,
    make_executor,
    render_seeds,
)
from bo_voids.exceptions import ConfigError
from bo_voids.seeding import rng
from bo_voids.space import SearchSpace

# ---------------------------------------------------------------------------------------------
# Helpers shared with tests/test_distributed.py
# ---------------------------------------------------------------------------------------------


def small_spec(repo_root: Path, image_size: int = 64) -> EvaluatorSpec:
    """A cheap evaluator recipe: handcrafted embedder on the bundled base chips."""
    return EvaluatorSpec(
        base_image_dir=str(repo_root / "data" / "base_chips"),
        image_size=image_size,
        edge_blur=2.0,
        embedder="handcrafted",
    )


def small_tasks(repo_root: Path, n: int = 6, replications: int = 2) -> list[EvaluationTask]:
    """``n`` tasks over several dataset types, drawn from the quickstart search space."""
    cfg = load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)
    space = SearchSpace.from_config(cfg)
    tasks = []
    kinds = ("real", "close", "far", "synthetic")
    for i in range(n):
        dtype = kinds[i % len(kinds)]
        iteration = 0 if dtype != "synthetic" else 1
        (params,) = space.sample(dtype if dtype != "synthetic" else "close", 1, rng(7, i))
        seeds = render_seeds(cfg.seed, iteration, dtype, i, replications, i % 2 == 0)
        tasks.append(EvaluationTask(iteration, dtype, i, f"{dtype}_ps_{i:03d}", params, seeds))
    return tasks


def assert_same_results(
    expected: list[EvaluationResult], actual: list[EvaluationResult], *, rtol: float = 1e-5
) -> None:
    """Bit-identical images and masks, equal metadata, embeddings equal to float tolerance."""
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual, strict=True):
        assert a.task == b.task  # task order is kept
        assert a.images.dtype == b.images.dtype and a.images.shape == b.images.shape
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=rtol, atol=1e-6)
        assert a.records == b.records
        assert b.error is None


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
# Executors
# ---------------------------------------------------------------------------------------------


def test_evaluate_one_matches_evaluate_many(repo_root: Path) -> None:
    evaluator = small_spec(repo_root).build()
    tasks = small_tasks(repo_root, n=4)
    assert_same_results(evaluator.evaluate_many(tasks), [evaluator.evaluate_one(t) for t in tasks])
    assert LocalExecutor(evaluator).evaluate([]) == []


def test_process_pool_gives_the_same_results_as_local(repo_root: Path) -> None:
    spec = small_spec(repo_root)
    tasks = small_tasks(repo_root, n=6)
    expected = LocalExecutor(spec.build()).evaluate(tasks)
    with ProcessPoolEvaluationExecutor(spec, max_workers=2) as pool:
        actual = pool.evaluate(tasks, progress=True)
    assert_same_results(expected, actual)


def test_make_executor_local_reuses_the_drivers_evaluator(repo_root: Path) -> None:
    cfg = load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)
    spec = small_spec(repo_root)
    evaluator = spec.build()
    with make_executor(cfg.replace(executor="local"), spec, evaluator) as ex:
        assert isinstance(ex, LocalExecutor) and ex.evaluator is evaluator


def test_dask_executor_without_dask_gives_the_install_hint(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bo_voids.distributed import DaskEvaluationExecutor

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[dask\]'"):
        DaskEvaluationExecutor(small_spec(repo_root), local_workers=1)


def test_dask_executor_needs_an_address_or_local_workers(repo_root: Path) -> None:
    from bo_voids.distributed import DaskEvaluationExecutor

    with pytest.raises(ConfigError, match="scheduler_address"):
        DaskEvaluationExecutor(small_spec(repo_root))
    with pytest.raises(ConfigError, match="local_workers"):
        DaskEvaluationExecutor(small_spec(repo_root), local_workers=0)


def test_importing_bo_voids_does_not_import_dask() -> None:
    import subprocess

    code = (
        "import sys, bo_voids, bo_voids.evaluation, bo_voids.pipeline, bo_voids.distributed; "
        "print(any(m == 'distributed' or m.startswith(('distributed.', 'dask')) "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
