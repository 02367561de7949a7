"""Render + embed parameter sets: the expensive unit of work that the executors run.

:class:`EvaluationTask` names one parameter set and its render seeds; an :class:`Evaluator`
(one generator, one embedder) turns tasks into :class:`EvaluationResult` s; an
:class:`EvaluatorSpec` is the picklable recipe from which any worker process builds its own
evaluator. Where the tasks run is :mod:`bo_voids.executors`' business.

Every draw is seeded by (experiment seed, iteration, dataset type, parameter-set index,
replication) — or, with common random numbers, by (experiment seed, iteration, dataset type,
replication): a *seed block* shared by the sets of one batch only (:func:`render_seeds`) — so
results are identical whichever executor ran them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.config import DATASET_TYPES, ExperimentConfig, ImagingSettings
from bo_voids.embedding import Embedder, make_embedder
from bo_voids.generation.voids import ImageRecord, VoidGenerator, image_record
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import ParamMapping, SearchSpace

logger = logging.getLogger(__name__)

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
    records: list[ImageRecord]
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
    imaging: ImagingSettings = field(default_factory=ImagingSettings)

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
            imaging=cfg.imaging,
        )

    def generator_settings(self) -> JsonObject:
        """What the rendered images depend on (for fingerprints of cached renders)."""
        chips = sorted(Path(self.base_image_dir).glob("*"))
        return {
            "image_size": self.image_size,
            "edge_blur": self.edge_blur,
            "imaging": self.imaging.to_yaml(),
            "base_chips": [[c.name, c.stat().st_size] for c in chips if c.is_file()],
        }

    def build(self) -> Evaluator:
        """Load the generator and the embedder."""
        generator = VoidGenerator(
            self.base_image_dir,
            image_size=self.image_size,
            edge_blur=self.edge_blur,
            imaging=self.imaging,
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

    def render(self, task: EvaluationTask) -> tuple[np.ndarray, np.ndarray, list[ImageRecord]]:
        """Render one task's replications: images, masks and per-image records."""
        images, masks, records = [], [], []
        for r, seed in enumerate(task.seeds):
            out = self.generator.render(task.params, int(seed))
            images.append(out.image)
            masks.append(out.mask)
            records.append(
                image_record(
                    iteration=task.iteration,
                    dataset_type=task.dataset_type,
                    param_set_id=task.param_set_id,
                    replication_seed=r,
                    render_seed=seed,
                    params=task.params,
                    rendered=out,
                )
            )
        return np.stack(images), np.stack(masks), records

    def evaluate_one(self, task: EvaluationTask) -> EvaluationResult:
        """Render and embed one task."""
        t0 = time.perf_counter()
        images, masks, records = self.render(task)
        t1 = time.perf_counter()
        emb = self.embedder.embed(list(images), batch_size=self.embed_batch_size)
        return EvaluationResult(
            task, images, masks, emb, records, t1 - t0, time.perf_counter() - t1
        )

    def evaluate_many(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """Render all tasks, then embed all their images in large batches."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        rendered = [
            self.render(task)
            for task in tqdm(tasks, desc="render", unit="set", leave=False, disable=not progress)
        ]
        t1 = time.perf_counter()
        all_images = [img for imgs, _, _ in rendered for img in imgs]
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


def target_records(folder: Path, ids: Sequence[str]) -> list[ImageRecord]:
    """Metadata records of real target images loaded from a folder."""
    return [
        image_record(
            iteration=0,
            dataset_type="real",
            param_set_id="target",
            replication_seed=None,
            source_file=str(Path(folder) / name),
        )
        for name in ids
    ]


# ---------------------------------------------------------------------------------------------
# One iteration's images, masks, embeddings and metadata
# ---------------------------------------------------------------------------------------------


@dataclass
class IterationImages:
    """Images, masks, embeddings and per-image metadata of (part of) one iteration.

    Iteration 0 also holds what it did not render: a target folder's images and the sets of a
    warm-start experiment.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    embeddings: np.ndarray
    metadata: list[ImageRecord]


def assemble_iteration(
    k: int, results: Sequence[EvaluationResult], prefix: Sequence[IterationImages] = ()
) -> IterationImages:
    """One iteration's images in order (``prefix`` first), with the design's sample ids.

    Args:
        k: The iteration.
        results: The evaluated tasks.
        prefix: What was evaluated outside the executor (iteration 0 only).

    Returns:
        The iteration's :class:`IterationImages`, ``sample_id`` and ``image_file`` set per
        (iteration, dataset_type).
    """
    images: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    metadata: list[ImageRecord] = []
    parts: list[np.ndarray] = []
    for p in prefix:
        images.extend(p.images)
        masks.extend(p.masks)
        metadata.extend(m.copy() for m in p.metadata)
        parts.append(p.embeddings)
    for res in results:
        images.extend(res.images)
        masks.extend(res.masks)
        parts.append(res.embeddings)
        metadata.extend(m.copy() for m in res.records)
    counters: dict[str, int] = {}
    for m in metadata:  # sample ids per (iteration, dataset_type), as in the design
        n = counters.get(m["dataset_type"], 0)
        counters[m["dataset_type"]] = n + 1
        m["sample_id"] = f"iter{k}_{m['dataset_type']}_{n:03d}"
        m["image_file"] = f"{m['sample_id']}.png"
        m["mask_file"] = None
    embeddings = np.concatenate(parts, axis=0).astype(np.float32)
    return IterationImages(images, masks, embeddings, metadata)


# ---------------------------------------------------------------------------------------------
# The tasks of an iteration
# ---------------------------------------------------------------------------------------------


def _task(
    config: ExperimentConfig,
    space: SearchSpace,
    iteration: int,
    dtype: str,
    index: int,
    ps_id: str,
    params: Mapping[str, Any],
    reps: int,
) -> EvaluationTask:
    seeds = render_seeds(config.seed, iteration, dtype, index, reps, config.common_random_numbers)
    return EvaluationTask(iteration, dtype, index, ps_id, space.validate(dict(params)), seeds)


def initial_tasks(config: ExperimentConfig, space: SearchSpace) -> list[EvaluationTask]:
    """Iteration 0: the config's real (unless a target folder is given), close and far sets.

    The close and far sets are left out with a ``warm_start``: the observations come from it.
    """
    tasks: list[EvaluationTask] = []
    for dtype in DATASET_TYPES:
        if dtype == "real" and config.target_image_dir is not None:
            continue  # the real images come from the target folder
        if dtype != "real" and config.warm_start is not None:
            continue  # the observations come from the earlier experiment
        spec = config.dataset(dtype)
        for i, params in enumerate(space.sample(dtype, spec.param_sets, rng(config.seed, dtype))):
            ps_id = f"{dtype}_ps_{i:03d}"
            tasks.append(_task(config, space, 0, dtype, i, ps_id, params, spec.replications))
    return tasks


def batch_tasks(
    config: ExperimentConfig, space: SearchSpace, k: int, param_sets: Sequence[ParamMapping]
) -> list[EvaluationTask]:
    """Iteration ``k ≥ 1``: the batch the optimiser proposed after iteration ``k - 1``."""
    reps = config.replications_per_iteration
    return [
        _task(config, space, k, "synthetic", i, f"iter{k}_ps_{i:03d}", p, reps)
        for i, p in enumerate(param_sets)
    ]


def describe_tasks(tasks: Sequence[EvaluationTask]) -> str:
    """What a batch renders, in words: ``rendering 18 images (real, close, far)``."""
    kinds = sorted({t.dataset_type for t in tasks}, key=DATASET_TYPES.index)
    return f"rendering {sum(len(t.seeds) for t in tasks)} images ({', '.join(kinds)})"
