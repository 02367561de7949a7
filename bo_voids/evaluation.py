"""Render + embed parameter sets: the expensive unit of work, and the executors that run it.

The BO loop stays in one driver process; evaluation fans out through an executor:

* ``local`` — in-process: render every image (progress bar), then embed them in large batches
  (progress bar). Best for one GPU or a quick CPU run.
* ``processes`` — a local process pool sized to the cores; each worker builds its generator and
  embedder once (pool initializer), then renders and embeds whole parameter sets.
* ``dask`` — an existing Dask distributed cluster (``dask.scheduler_address``) or a
  ``LocalCluster`` started on the spot (``dask.local_workers``); see :mod:`bo_voids.distributed`.

Every draw is seeded by (experiment seed, iteration, dataset type, parameter-set index,
replication) — or, with common random numbers, by (experiment seed, iteration, dataset type,
replication): a *seed block* shared by the sets of one batch only — so results are identical
whichever executor ran them. Workers only return arrays and metadata; the driver alone
writes state.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids.config import ExperimentConfig
from bo_voids.embedding import Embedder, make_embedder
from bo_voids.generation.voids import VoidGenerator
from bo_voids.seeding import derive_seed

logger = logging.getLogger(__name__)

#: Test hook (never set in normal use): ``"phase:iteration[,phase:iteration...]"``.
TEST_KILL_ENV = "BO_VOIDS_TEST_KILL_AT"
#: Phases :func:`fault_point` is called at.
FAULT_PHASES = ("render", "embed", "propose", "write", "commit")


def fault_point(phase: str, iteration: int) -> None:
    """Crash-test hook: kill this process with ``SIGKILL`` at ``phase`` of ``iteration``.

    Only active when the environment variable ``BO_VOIDS_TEST_KILL_AT`` names this point, e.g.
    ``BO_VOIDS_TEST_KILL_AT=render:2`` kills the process while it renders iteration 2 (after the
    first image). Phases: ``render`` and ``embed`` (in whichever process evaluates; the driver
    for the ``local`` executor), ``propose`` (the driver, after the optimiser answered),
    ``write`` (while iteration files are written into ``iteration_k.partial/``) and ``commit``
    (after ``iteration_k/`` is renamed into place, before ``history.csv`` and the manifest are
    updated). The reliability tests use it to check that every crash point resumes to the result
    of an uninterrupted run; it costs one environment lookup otherwise.
    """
    spec = os.environ.get(TEST_KILL_ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, it = item.strip().partition(":")
        if name == phase and it.strip() == str(iteration):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# ---------------------------------------------------------------------------------------------
# Tasks and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationTask:
    """One parameter set to render ``len(seeds)`` times and embed.

    Attributes:
        iteration: Iteration number.
        dataset_type: ``real`` / ``close`` / ``far`` / ``synthetic``.
        index: Index of the set within (iteration, dataset_type).
        param_set_id: Unique id of the set in the experiment.
        params: The six-parameter dict.
        seeds: Render seed of each replication.
    """

    iteration: int
    dataset_type: str
    index: int
    param_set_id: str
    params: Mapping[str, Any]
    seeds: tuple[int, ...]


@dataclass
class EvaluationResult:
    """Rendered images, masks, embeddings and per-image metadata of one task."""

    task: EvaluationTask
    images: np.ndarray  # `R x H x W` float32
    masks: np.ndarray  # `R x H x W` bool
    embeddings: np.ndarray  # `R x D` float32
    records: list[dict[str, Any]]
    render_seconds: float = 0.0
    embed_seconds: float = 0.0
    error: str | None = None


def render_seeds(
    seed: int,
    iteration: int,
    dataset_type: str,
    index: int,
    replications: int,
    common_random_numbers: bool,
) -> tuple[int, ...]:
    """Render seeds of one parameter set's replications.

    The real target sets always get independent seeds. With common random numbers the sets of
    one batch — one ``(iteration, dataset_type)``: iteration 0's close and far sets are separate
    blocks — share a *seed block*: replication ``r`` of every set in the block uses one seed (the
    same chip, rotation and random draws), so differences between the sets of a batch are not
    drowned by rendering noise. Each batch gets a new block, so a set evaluated again in a later
    iteration gets new images and the run does not minimise one fixed sample of scenarios.
    """
    if dataset_type == "real" or not common_random_numbers:
        return tuple(
            derive_seed(seed, "render", iteration, dataset_type, index, r)
            for r in range(replications)
        )
    return tuple(
        derive_seed(seed, "render", "block", iteration, dataset_type, r)
        for r in range(replications)
    )


@dataclass(frozen=True)
class EvaluatorSpec:
    """A picklable recipe for an :class:`Evaluator`, so any process can build its own."""

    base_image_dir: str
    image_size: int
    edge_blur: float
    embedder: str
    dino_model: str = "dinov2_vitb14"
    dino_weights: str | None = None
    device: str = "auto"
    embed_batch_size: int | None = None

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, embedder: str | None = None) -> EvaluatorSpec:
        """Build the spec of an experiment (``embedder`` overrides the config's choice)."""
        return cls(
            base_image_dir=str(cfg.base_image_dir),
            image_size=cfg.image_size,
            edge_blur=cfg.edge_blur,
            embedder=embedder or cfg.embedder,
            dino_model=cfg.dino_model,
            dino_weights=str(cfg.dino_weights) if cfg.dino_weights else None,
            device=cfg.device,
        )

    def build(self) -> Evaluator:
        """Load the generator and the embedder."""
        generator = VoidGenerator(
            self.base_image_dir, image_size=self.image_size, edge_blur=self.edge_blur
        )
        embedder = make_embedder(
            self.embedder,
            dino_model=self.dino_model,
            dino_weights=self.dino_weights,
            device=self.device,
        )
        return Evaluator(generator, embedder, embed_batch_size=self.embed_batch_size)


@dataclass
class Evaluator:
    """Renders and embeds parameter sets with one generator and one embedder."""

    generator: VoidGenerator
    embedder: Embedder
    embed_batch_size: int | None = None
    _timings: dict[str, float] = field(default_factory=lambda: {"render": 0.0, "embed": 0.0})

    def render(self, task: EvaluationTask) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Render one task's replications: images, masks and per-image records."""
        images, masks, records = [], [], []
        for r, seed in enumerate(task.seeds):
            if r == 1:
                fault_point("render", task.iteration)
            out = self.generator.render(task.params, int(seed))
            images.append(out.image)
            masks.append(out.mask)
            records.append(
                {
                    "iteration": task.iteration,
                    "dataset_type": task.dataset_type,
                    "param_set_id": task.param_set_id,
                    "replication_seed": r,
                    "render_seed": int(seed),
                    "base_image_id": out.base_image_id,
                    "params": dict(task.params),
                    "uncontrolled_params": dict(out.uncontrolled_params),
                    "voids": out.voids,
                    "void_area_pct": float(out.void_area_pct),
                }
            )
        return np.stack(images), np.stack(masks), records

    def evaluate_one(self, task: EvaluationTask) -> EvaluationResult:
        """Render and embed one task."""
        t0 = time.perf_counter()
        images, masks, records = self.render(task)
        t1 = time.perf_counter()
        fault_point("embed", task.iteration)
        emb = self.embedder.embed(list(images), batch_size=self.embed_batch_size)
        return EvaluationResult(
            task, images, masks, emb, records, t1 - t0, time.perf_counter() - t1
        )

    def evaluate_many(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Render all tasks, then embed all their images in large batches."""
        rendered = []
        t0 = time.perf_counter()
        iterable: Any = tasks
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(tasks, desc="render", unit="set", leave=False)
        for task in iterable:
            rendered.append(self.render(task))
        t1 = time.perf_counter()
        all_images = [img for imgs, _, _ in rendered for img in imgs]
        if tasks:
            fault_point("embed", tasks[0].iteration)
        emb = self.embedder.embed(all_images, batch_size=self.embed_batch_size, progress=progress)
        t2 = time.perf_counter()
        out, start = [], 0
        n_total = max(1, len(all_images))
        for task, (imgs, masks, recs) in zip(tasks, rendered, strict=True):
            share = len(imgs) / n_total
            out.append(
                EvaluationResult(
                    task,
                    imgs,
                    masks,
                    emb[start : start + len(imgs)],
                    recs,
                    (t1 - t0) * share,
                    (t2 - t1) * share,
                )
            )
            start += len(imgs)
        return out


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------


class EvaluationExecutor:
    """Runs tasks; subclasses decide where. Use as a context manager to release workers."""

    name = "base"

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Evaluate ``tasks``; results come back in task order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers."""

    def __enter__(self) -> EvaluationExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(EvaluationExecutor):
    """In-process evaluation (the default)."""

    name = "local"

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Render all, then embed all, in this process."""
        return self.evaluator.evaluate_many(tasks, progress=progress)


_WORKER_EVALUATOR: Evaluator | None = None


def _init_worker(spec: EvaluatorSpec) -> None:
    global _WORKER_EVALUATOR
    import torch

    torch.set_num_threads(1)
    _WORKER_EVALUATOR = spec.build()


def _worker_evaluate(task: EvaluationTask) -> EvaluationResult:
    assert _WORKER_EVALUATOR is not None, "worker not initialised"
    return _WORKER_EVALUATOR.evaluate_one(task)


class ProcessPoolEvaluationExecutor(EvaluationExecutor):
    """A local process pool: each worker builds its evaluator once."""

    name = "processes"

    def __init__(self, spec: EvaluatorSpec, max_workers: int | None = None) -> None:
        import multiprocessing as mp

        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool = cf.ProcessPoolExecutor(
            self.max_workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(spec,),
        )

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Fan the tasks out over the pool."""
        futures = [self._pool.submit(_worker_evaluate, t) for t in tasks]
        return _gather(futures, progress)

    def close(self) -> None:
        """Shut the pool down."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _gather(futures: Sequence[Any], progress: bool) -> list[EvaluationResult]:
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc="render+embed", unit="set", leave=False)
        for _ in cf.as_completed(futures):
            bar.update(1)
        bar.close()
    return [f.result() for f in futures]


def make_executor(
    cfg: ExperimentConfig,
    spec: EvaluatorSpec,
    evaluator: Evaluator | None = None,
) -> EvaluationExecutor:
    """Build the executor named by ``cfg.executor``.

    Args:
        cfg: The experiment config (``executor``, ``dask``).
        spec: How workers build their evaluator.
        evaluator: The driver's own evaluator, reused by the ``local`` executor.
    """
    if cfg.executor == "local":
        return LocalExecutor(evaluator or spec.build())
    if cfg.executor == "processes":
        return ProcessPoolEvaluationExecutor(spec)
    from bo_voids.distributed import DaskEvaluationExecutor

    return DaskEvaluationExecutor(
        spec,
        scheduler_address=cfg.dask.scheduler_address,
        local_workers=cfg.dask.local_workers,
        resources=cfg.dask.resources,
        tasks_per_job=cfg.dask.tasks_per_job,
    )


def target_records(folder: Path, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Metadata records of real target images loaded from a folder."""
    return [
        {
            "iteration": 0,
            "dataset_type": "real",
            "param_set_id": "target",
            "replication_seed": None,
            "render_seed": None,
            "base_image_id": None,
            "params": None,
            "uncontrolled_params": None,
            "source_file": str(Path(folder) / name),
        }
        for name in ids
    ]
