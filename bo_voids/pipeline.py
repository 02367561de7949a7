"""The fully automated calibration loop: ask → render → embed → score → tell → persist → plot.

Reads top to bottom like a training loop::

    pipeline = OptimizationPipeline(load_config("configs/quickstart.yaml"))
    summary = pipeline.run_full_experiment()

* **Iteration 0** samples the real / close / far parameter sets, renders them, embeds them and fits
  the 2-D PCA once on all of iteration 0. The real set (or the images in ``target_image_dir``) is
  the fixed target; the close and far sets are the optimiser's first observations.
* **Iterations 1..N**: the optimiser proposes ``iteration_batch_size`` parameter sets from the whole
  history → render ``replications_per_iteration`` seeded images each → embed → project with the
  fixed PCA → score (MMD² against the targets) → persist atomically → plot → check convergence.
* **Stops** when the pooled top-k distribution similarity falls below ``convergence_threshold``,
  inside the real set's own noise floor, after ``early_stop_patience`` iterations without
  improvement, or at ``max_iterations``.

The optimiser is stateless (it derives everything from the history and the seed), so a resumed
experiment proposes exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids.config import DATASET_TYPES, PARAMETER_NAMES, ExperimentConfig
from bo_voids.evaluation import (
    EvaluationExecutor,
    EvaluationResult,
    EvaluationTask,
    EvaluatorSpec,
    fault_point,
    make_executor,
    render_seeds,
    target_records,
)
from bo_voids.exceptions import (
    BoVoidsError,
    ExperimentExistsError,
    FailureBudgetError,
    FallbackWarning,
    ImageLoadError,
)
from bo_voids.generation.base_chips import load_base_images
from bo_voids.generation.voids import save_png
from bo_voids.metrics import (
    MMDScorer,
    epsilon_ball_share,
    epsilon_from_real,
    kid,
    nearest_real_distances,
    rescale_noise_floor,
)
from bo_voids.optimizers import optimizer_from_config
from bo_voids.projection import PCAProjector
from bo_voids.seeding import rng
from bo_voids.space import SearchSpace
from bo_voids.state import (
    FAILURES,
    ExperimentLock,
    ExperimentStore,
    IterationRecord,
    atomic_save_npy,
    atomic_write_json,
)

logger = logging.getLogger(__name__)

#: Dataset types that are targets, not observations.
TARGET_TYPES = frozenset({"real"})


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports."""

    experiment_dir: Path
    iterations_completed: int
    stop_reason: str
    current_best: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    noise_floor: dict[str, float]
    embedder: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any]:
        """The best parameter set (by the optimiser's ranking)."""
        return self.current_best[0] if self.current_best else {}


class OptimizationPipeline:
    """Runs one experiment end to end, with persistence and resume.

    Args:
        config: A validated experiment config.
        resume: Continue the experiment in ``config.experiment_dir`` from its last complete
            iteration (refused if the config or embedder differs).
        overwrite: Replace an existing experiment folder.
        progress: Show progress bars.
        log: Called with one human-readable line per event (default: ``logger.info``).
        executor: An evaluation executor to use instead of the one the config names.

    Raises:
        StateError: If the experiment folder exists and neither ``resume`` nor ``overwrite`` is set,
            or if it is locked by another process.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        executor: EvaluationExecutor | None = None,
    ) -> None:
        self.config = config
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.log = log or logger.info
        self.store = ExperimentStore(config.experiment_dir)
        self.space = SearchSpace.from_config(config)
        self.optimizer = optimizer_from_config(config, self.space)
        self.spec = EvaluatorSpec.from_config(config)
        self._executor = executor
        self.evaluator = None if executor is not None else self.spec.build()
        self.embedder_info = self._embedder_info()
        self.scorer = MMDScorer(bandwidth=config.metric.bandwidth)
        self.projector = PCAProjector(n_components=config.pca_components)
        self.records: list[IterationRecord] = []
        self.scores: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {"render": 0.0, "embed": 0.0, "propose": 0.0, "write": 0.0}
        self.stop_reason = ""
        self.noise_floor: dict[str, float] = {}
        self._epsilon = math.nan
        self._lock = ExperimentLock(self.store.root)
        self._last_proposal: dict[str, Any] | None = None
        self._targets: tuple[list[np.ndarray], list[str]] | None = None
        #: Whether this pipeline created or resumed the experiment folder (and may mark it).
        self.store_opened = False

    # ---- the loop ---------------------------------------------------------------------------

    def run_full_experiment(self, max_iterations: int | None = None) -> RunSummary:
        """Run (or resume) the experiment to the end.

        Args:
            max_iterations: Overrides ``config.max_iterations``.

        Returns:
            The run's :class:`RunSummary`.
        """
        n_iter = self.config.max_iterations if max_iterations is None else max_iterations
        if self.config.target_image_dir is not None and not (
            self.resume and self.store.iteration_dir(0).is_dir()
        ):
            self._targets = self._load_targets()  # bad target images stop before any work
        with self._lock, self._executor_ctx() as executor:
            self._executor = executor
            self._open_store()
            if not self.records:
                self.run_iteration_0()
            for k in range(len(self.records), n_iter + 1):
                if self.check_convergence(self.scores):
                    break
                t0 = time.perf_counter()
                proposal = self.recommend()
                self.timings["propose"] += time.perf_counter() - t0
                fault_point("propose", k)
                self.run_iteration_n(k, proposal["next_params"], proposal)
            else:
                if not self.check_convergence(self.scores):
                    self.stop_reason = f"reached max_iterations ({n_iter})"
            return self._finish()

    def recommend(self) -> dict[str, Any]:
        """Ask the optimiser for the next batch, from the whole history."""
        embeddings, metadata = self.history_arrays()
        return self.optimizer.recommend_next_batch(
            embeddings, metadata, self.target_embeddings, self.config.iteration_batch_size
        )

    def run_iteration_0(self) -> IterationRecord:
        """Sample real / close / far parameter sets, render, embed, fit the PCA, persist."""
        cfg = self.config
        tasks: list[EvaluationTask] = []
        for dtype in DATASET_TYPES:
            if dtype == "real" and cfg.target_image_dir is not None:
                continue  # the real images come from the target folder
            spec = cfg.dataset(dtype)
            for i, params in enumerate(
                self.space.sample(dtype, spec.param_sets, rng(cfg.seed, dtype))
            ):
                tasks.append(
                    self._task(0, dtype, i, f"{dtype}_ps_{i:03d}", params, spec.replications)
                )
        self.log(
            f"iteration 0: rendering {sum(len(t.seeds) for t in tasks)} images "
            f"({', '.join(DATASET_TYPES)})"
        )
        extra_images: list[np.ndarray] = []
        extra_emb = np.zeros((0, 0), dtype=np.float32)
        extra_meta: list[dict[str, Any]] = []
        if cfg.target_image_dir is not None:
            extra_images, ids = self._targets or self._load_targets()
            t0 = time.perf_counter()
            extra_emb = self._embedder().embed(extra_images, progress=self.progress)
            self.timings["embed"] += time.perf_counter() - t0
            if not np.all(np.isfinite(extra_emb)):
                bad = sorted({ids[i] for i in np.flatnonzero(~np.isfinite(extra_emb).all(axis=1))})
                raise BoVoidsError(
                    f"the embedder returned non-finite (NaN/inf) values for real target image(s) "
                    f"{bad} in {cfg.target_image_dir}"
                )
            extra_meta = target_records(cfg.target_image_dir, ids)
        results, failures = self._evaluate(tasks)
        self._check_failures(0, len(tasks), failures)
        n_real = len(extra_images) + sum(
            len(r.task.seeds) for r in results if r.task.dataset_type in TARGET_TYPES
        )
        n_obs = sum(1 for r in results if r.task.dataset_type not in TARGET_TYPES)
        if n_real < 2 or n_obs < 1:
            raise FailureBudgetError(
                f"iteration 0 is unusable after {len(failures)} failed evaluation(s): "
                f"{n_real} real image(s) (MMD needs 2) and {n_obs} observed parameter set(s) "
                "(needs 1) remain"
            )
        record = self._persist_iteration(
            0, results, None, extra_images, extra_emb, extra_meta, failures
        )
        self.log(
            f"iteration 0: {len(record.metadata)} images; noise floor of the real set "
            f"{self.noise_floor['mean']:.4f} ± {self.noise_floor['std']:.4f} (q95 "
            f"{self.noise_floor['q95']:.4f}); {self._status_line(self.scores[-1])}"
        )
        return record

    def run_iteration_n(
        self,
        iteration: int,
        param_sets: Sequence[dict[str, Any]],
        proposal: dict[str, Any] | None = None,
    ) -> IterationRecord:
        """Render, embed, score and persist the proposed parameter sets of one iteration."""
        reps = self.config.replications_per_iteration
        tasks = [
            self._task(iteration, "synthetic", i, f"iter{iteration}_ps_{i:03d}", p, reps)
            for i, p in enumerate(param_sets)
        ]
        results, failures = self._evaluate(tasks)
        self._check_failures(iteration, len(tasks), failures)
        record = self._persist_iteration(iteration, results, proposal, failures=failures)
        self.log(f"iteration {iteration}: {self._status_line(self.scores[-1])}")
        return record

    def check_convergence(self, scores: Sequence[dict[str, Any]]) -> bool:
        """Whether to stop, given the score records so far (sets :attr:`stop_reason`).

        Stops when the distribution similarity is below ``convergence_threshold``, when it is
        inside the real set's noise floor (below the 95th percentile of real-vs-real half-split
        MMD², rescaled to the pool-vs-targets sample sizes with
        :func:`~bo_voids.metrics.rescale_noise_floor`), or when it has not improved for
        ``early_stop_patience`` iterations.
        """
        if len(scores) < 2:
            return False  # iteration 0 alone is the initial design, never a stopping point
        last = scores[-1]["distribution_similarity"]
        cfg = self.config
        if last < cfg.convergence_threshold:
            self.stop_reason = (
                f"converged: distribution similarity {last:.4f} < threshold "
                f"{cfg.convergence_threshold}"
            )
            return True
        q95 = scores[-1].get("noise_floor_pool_q95", self.noise_floor.get("q95", -math.inf))
        if cfg.stop_at_noise_floor and q95 is not None and last <= q95:
            self.stop_reason = (
                f"inside the real set's noise floor: distribution similarity {last:.4f} <= "
                f"{q95:.4f} (95th percentile of real-vs-real MMD², rescaled to the pool's size)"
            )
            return True
        values = [s["distribution_similarity"] for s in scores]
        best_at = int(np.argmin(values))
        if len(values) - 1 - best_at >= cfg.early_stop_patience:
            self.stop_reason = (
                f"no improvement for {cfg.early_stop_patience} iterations (best "
                f"{values[best_at]:.4f} at iteration {best_at})"
            )
            return True
        return False

    # ---- history ------------------------------------------------------------------------------

    @property
    def target_embeddings(self) -> np.ndarray:
        """Embeddings of the real target images."""
        rec = self.records[0]
        mask = [m["dataset_type"] in TARGET_TYPES for m in rec.metadata]
        return rec.embeddings[np.asarray(mask)]

    def history_arrays(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """All embeddings and their metadata, concatenated over iterations."""
        embeddings = np.concatenate([r.embeddings for r in self.records], axis=0)
        metadata = [m for r in self.records for m in r.metadata]
        return embeddings, metadata

    # ---- private: setup ---------------------------------------------------------------------

    def _embedder(self) -> Any:
        if self.evaluator is None:
            self.evaluator = self.spec.build()
        return self.evaluator.embedder

    def _embedder_info(self) -> dict[str, Any]:
        emb = self._embedder()
        return {
            "name": emb.name,
            "dim": emb.dim,
            "fingerprint": emb.fingerprint(),
            **{k: v for k, v in emb.describe().items() if k not in {"name", "dim"}},
        }

    def _executor_ctx(self) -> EvaluationExecutor:
        if self._executor is not None:
            return self._executor
        assert self.evaluator is not None
        return make_executor(self.config, self.spec, self.evaluator)

    def _open_store(self) -> None:
        store = self.store
        if store.exists() and self.resume:
            store.check_resumable(self.config, self.embedder_info)
            removed = store.clean_partial()
            if removed:
                self.log(
                    f"resume: removed {len(removed)} partial leftover(s) of an interrupted write"
                )
            self.records = store.load_all()
            fields: dict[str, Any] = {"status": "running"}
            if self.records:
                self._restore_from_iteration_0()
                self.scores = [r.scores for r in self.records]
                # a crash between renaming an iteration into place and updating history.csv /
                # the manifest leaves them one iteration behind: both are derived, rebuild them
                store.write_history(self._history_rows())
                fields["iterations_completed"] = len(self.records) - 1
            store.update_manifest(**fields)
            self.store_opened = True
            self.log(f"resuming {store.root} after iteration {len(self.records) - 1}")
            return
        if store.exists() and not self.overwrite:
            raise ExperimentExistsError(
                f"experiment folder {store.root} already exists; pass --resume to continue it or "
                "--overwrite to replace it"
            )
        store.create(self.config, self.embedder_info, overwrite=self.overwrite)
        self.store_opened = True

    def _load_targets(self) -> tuple[list[np.ndarray], list[str]]:
        """Load and check every real target image (``target_image_dir``) up front."""
        folder = self.config.target_image_dir
        assert folder is not None
        images, ids = load_base_images(folder, self.config.image_size, label="real target image")
        if len(images) < 2:
            raise ImageLoadError(
                f"target_image_dir {folder} holds {len(images)} image(s) ({ids}); the MMD score "
                "needs at least 2 real target images"
            )
        return images, ids

    def _restore_from_iteration_0(self) -> None:
        folder = self.store.iteration_dir(0)
        self.projector = PCAProjector.load(folder / "pca_model.npz")
        self.scorer.fit(self.target_embeddings)
        self.noise_floor = self.records[0].scores.get("noise_floor", {})
        self._epsilon = epsilon_from_real(self.target_embeddings)

    def _task(
        self, iteration: int, dtype: str, index: int, ps_id: str, params: dict[str, Any], reps: int
    ) -> EvaluationTask:
        seeds = render_seeds(
            self.config.seed, iteration, dtype, index, reps, self.config.common_random_numbers
        )
        return EvaluationTask(iteration, dtype, index, ps_id, self.space.validate(params), seeds)

    def _evaluate(
        self, tasks: Sequence[EvaluationTask]
    ) -> tuple[list[EvaluationResult], list[dict[str, Any]]]:
        """Evaluate ``tasks``; returns the usable results and a record of each failed task.

        An evaluation fails when it raises (anything but a :class:`BoVoidsError`, which stops the
        run) or returns non-finite embeddings. When a batch raises, its tasks are evaluated one by
        one to find the failing ones. Failed sets are excluded from the history with a
        :class:`FallbackWarning` naming them, and counted against ``max_failure_fraction``.
        """
        assert self._executor is not None
        try:
            results = list(self._executor.evaluate(tasks, progress=self.progress))
        except BoVoidsError:
            raise
        except Exception as exc:
            if len(tasks) == 1:
                results = [_failed_result(tasks[0], exc)]
            else:
                logger.warning(
                    "evaluating a batch of %d parameter sets failed (%s: %s); evaluating them one "
                    "by one to find the failing ones",
                    len(tasks),
                    type(exc).__name__,
                    exc,
                )
                results = []
                for task in tasks:
                    try:
                        results.extend(self._executor.evaluate([task]))
                    except BoVoidsError:
                        raise
                    except Exception as one_exc:
                        results.append(_failed_result(task, one_exc))
        ok: list[EvaluationResult] = []
        failures: list[dict[str, Any]] = []
        for r in results:
            self.timings["render"] += r.render_seconds
            self.timings["embed"] += r.embed_seconds
            reason = r.error
            if reason is None:
                emb = np.asarray(r.embeddings)
                if emb.ndim != 2 or emb.shape[0] != len(r.task.seeds):
                    reason = (
                        f"the embedder returned an array of shape {emb.shape} for "
                        f"{len(r.task.seeds)} images"
                    )
                elif not np.all(np.isfinite(emb)):
                    reason = "the embedder returned non-finite (NaN/inf) values"
            if reason is None:
                ok.append(r)
                continue
            failures.append(
                {
                    "param_set_id": r.task.param_set_id,
                    "dataset_type": r.task.dataset_type,
                    "params": dict(r.task.params),
                    "error": reason,
                }
            )
            warnings.warn(
                f"evaluation of parameter set {r.task.param_set_id} {dict(r.task.params)} failed "
                f"and is excluded from the history: {reason}",
                FallbackWarning,
                stacklevel=2,
            )
        return ok, failures

    def _check_failures(self, k: int, n_tasks: int, failures: Sequence[dict[str, Any]]) -> None:
        """Stop when failed evaluations exceed ``max_failure_fraction`` of all evaluations so far.

        Also stops when every parameter set of an iteration failed: the history would not change,
        so the optimiser would only propose the same batch again.
        """
        if not failures:
            return
        total = sum(r.n_evaluated for r in self.records) + n_tasks
        failed = sum(len(r.failures) for r in self.records) + len(failures)
        budget = self.config.max_failure_fraction
        listing = "; ".join(
            f"{f['param_set_id']} {f['params']}: {f['error']}" for f in list(failures)[:5]
        )
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        if failed / total > budget:
            raise FailureBudgetError(
                f"{failed} of {total} evaluations failed ({failed / total:.0%} > "
                f"max_failure_fraction {budget:g}); stopping instead of looping on a broken setup. "
                f"Iteration {k}: {listing}{more}"
            )
        if len(failures) == n_tasks:
            raise FailureBudgetError(
                f"every parameter set of iteration {k} failed ({listing}{more}); stopping: the "
                "optimiser would only propose the same batch again"
            )

    # ---- private: scoring and persistence -----------------------------------------------------

    def _persist_iteration(
        self,
        k: int,
        results: Sequence[EvaluationResult],
        proposal: dict[str, Any] | None,
        extra_images: Sequence[np.ndarray] = (),
        extra_emb: np.ndarray | None = None,
        extra_meta: Sequence[dict[str, Any]] = (),
        failures: Sequence[dict[str, Any]] = (),
    ) -> IterationRecord:
        t0 = time.perf_counter()
        images: list[np.ndarray] = list(extra_images)
        masks: list[np.ndarray | None] = [None] * len(extra_images)
        metadata: list[dict[str, Any]] = [dict(m) for m in extra_meta]
        emb_parts = [extra_emb] if extra_emb is not None and len(extra_emb) else []
        counters: dict[str, int] = {}
        for res in results:
            images.extend(res.images)
            masks.extend(res.masks)
            emb_parts.append(res.embeddings)
            metadata.extend(res.records)
        for m in metadata:  # sample ids per (iteration, dataset_type), as in the design
            n = counters.get(m["dataset_type"], 0)
            counters[m["dataset_type"]] = n + 1
            m["sample_id"] = f"iter{k}_{m['dataset_type']}_{n:03d}"
            m["image_file"] = f"{m['sample_id']}.png"
            m["mask_file"] = None
        embeddings = np.concatenate(emb_parts, axis=0).astype(np.float32)
        if k == 0 and len(embeddings) and float(np.ptp(embeddings, axis=0).max()) == 0.0:
            raise BoVoidsError(
                f"the {self.embedder_info.get('name')} embedder returned the same embedding for "
                f"all {len(embeddings)} images of iteration 0: every score would be 0 and the run "
                "would 'converge' at once. Check the embedder (weights, device) and the images"
            )
        if k == 0:
            pca_2d = self.projector.fit_transform(embeddings)
            real = embeddings[[m["dataset_type"] in TARGET_TYPES for m in metadata]]
            self.scorer.fit(real)
            self.noise_floor = self.scorer.noise_floor(
                n_splits=self.config.metric.noise_floor_splits,
                random_state=rng(self.config.seed, "split"),
            )
            self._epsilon = epsilon_from_real(real)
        else:
            pca_2d = self.projector.transform(embeddings)
        record = IterationRecord(k, embeddings, metadata, pca_2d, failures=list(failures))
        self.records.append(record)
        per_set = self._per_set()  # scored once, used by the scores and history.csv
        scores = self._score(k, per_set)
        if k == 0:
            scores["noise_floor"] = dict(self.noise_floor)
            scores["scorer"] = self.scorer.to_dict()
        record.scores = scores
        self.scores.append(scores)
        with self.store.writing_iteration(k) as tmp:
            for img, mask, m in zip(images, masks, metadata, strict=True):
                # the folder is renamed into place as a whole: no per-file atomicity needed
                save_png(tmp / "images" / m["image_file"], img, atomic=False, compress_level=1)
                if mask is not None:
                    m["mask_file"] = f"{m['sample_id']}_mask.png"
                    save_png(tmp / "images" / m["mask_file"], mask, atomic=False, compress_level=1)
            fault_point("write", k)
            atomic_save_npy(tmp / "embeddings.npy", embeddings)
            atomic_save_npy(tmp / "pca_2d.npy", pca_2d)
            if k == 0:
                self.projector.save(tmp / "pca_model.npz")
            atomic_write_json(tmp / "metadata.json", metadata)
            atomic_write_json(tmp / "scores.json", scores)
            if proposal is not None:
                atomic_write_json(tmp / "proposals.json", _proposal_record(proposal))
            if failures:
                atomic_write_json(tmp / FAILURES, list(failures))
        fault_point("commit", k)
        record.folder = self.store.iteration_dir(k)
        self.store.write_history(self._history_rows(per_set))
        self.store.update_manifest(
            iterations_completed=k,
            failed_evaluations=sum(len(r.failures) for r in self.records),
            noise_floor=self.noise_floor,
            latest_scores={key: v for key, v in scores.items() if key not in {"scorer", "per_set"}},
        )
        self.timings["write"] += time.perf_counter() - t0
        self._plot()
        return record

    def _per_set(self) -> list[dict[str, Any]]:
        """Per-set MMD² of every observed (non-target) set, in evaluation order."""
        rows: dict[str, dict[str, Any]] = {}
        for rec in self.records:
            for i, m in enumerate(rec.metadata):
                if m["dataset_type"] in TARGET_TYPES:
                    continue
                row = rows.setdefault(
                    m["param_set_id"],
                    {
                        "param_set_id": m["param_set_id"],
                        "iteration": rec.iteration,
                        "dataset_type": m["dataset_type"],
                        "params": m["params"],
                        "rows": [],
                        "void_area_pct": [],
                    },
                )
                row["rows"].append(rec.embeddings[i])
                row["void_area_pct"].append(m.get("void_area_pct", math.nan))
        out = []
        for row in rows.values():
            emb = np.stack(row.pop("rows"))
            row["embeddings"] = emb
            row["mmd2"] = self.scorer.score(emb)
            row["n_images"] = len(emb)
            row["void_area_pct"] = float(np.mean(row["void_area_pct"]))
            out.append(row)
        return out

    def _score(self, k: int, per_set: list[dict[str, Any]]) -> dict[str, Any]:
        targets = self.target_embeddings
        ranked = sorted(per_set, key=lambda r: r["mmd2"])
        top = ranked[: self.config.bo.top_k]
        pooled = np.concatenate([r["embeddings"] for r in top], axis=0)
        rec = self.records[k]
        own = rec.embeddings[[m["dataset_type"] not in TARGET_TYPES for m in rec.metadata]]
        dists = nearest_real_distances(own, targets) if len(own) else np.zeros(0)
        return {
            "iteration": k,
            "n_sets": len(per_set),
            "best_mmd2": float(ranked[0]["mmd2"]),
            "best_param_set_id": ranked[0]["param_set_id"],
            "best_params": ranked[0]["params"],
            "distribution_similarity": float(self.scorer.score(pooled)),
            "pool_size": len(pooled),
            "noise_floor_pool_q95": self._pool_floor(len(pooled)),
            "kid": float(kid(pooled, targets)),
            "iteration_best_mmd2": float(
                min((r["mmd2"] for r in per_set if r["iteration"] == k), default=math.nan)
            ),
            "mean_nearest_real": float(dists.mean()) if len(dists) else math.nan,
            "epsilon": float(self._epsilon),
            "epsilon_ball_share": float(epsilon_ball_share(own, targets, self._epsilon))
            if len(own)
            else math.nan,
            "top_k": [r["param_set_id"] for r in top],
            "per_set": [
                {"param_set_id": r["param_set_id"], "mmd2": r["mmd2"]}
                for r in per_set
                if r["iteration"] == k
            ],
        }

    def _pool_floor(self, n_pool: int) -> float:
        """The real set's noise floor (q95) rescaled to a pool of ``n_pool`` vs all targets."""
        m = len(self.target_embeddings)
        if not self.noise_floor or n_pool < 2 or "half_size" not in self.noise_floor:
            return float(self.noise_floor.get("q95", math.nan))
        return rescale_noise_floor(self.noise_floor, n_pool, m)["q95"]

    def _history_rows(self, per_set: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        rows = []
        nearest: dict[str, list[float]] = {}
        targets = self.target_embeddings
        for rec in self.records:
            d = nearest_real_distances(rec.embeddings, targets)
            for m, dist in zip(rec.metadata, d, strict=True):
                nearest.setdefault(m["param_set_id"], []).append(float(dist))
        for row in per_set if per_set is not None else self._per_set():
            rows.append(
                {
                    "iteration": row["iteration"],
                    "param_set_id": row["param_set_id"],
                    "dataset_type": row["dataset_type"],
                    **{name: row["params"][name] for name in PARAMETER_NAMES},
                    "mmd2": row["mmd2"],
                    "n_images": row["n_images"],
                    "mean_nearest_real": float(np.mean(nearest[row["param_set_id"]])),
                    "void_area_pct": row["void_area_pct"],
                }
            )
        real_sets: dict[str, dict[str, Any]] = {}
        for m in self.records[0].metadata:
            if m["dataset_type"] in TARGET_TYPES and m["params"] is not None:
                real_sets.setdefault(m["param_set_id"], m)
        for ps_id, m in real_sets.items():
            rows.append(
                {
                    "iteration": 0,
                    "param_set_id": ps_id,
                    "dataset_type": m["dataset_type"],
                    **{name: m["params"][name] for name in PARAMETER_NAMES},
                    "mmd2": math.nan,
                    "n_images": sum(
                        1 for x in self.records[0].metadata if x["param_set_id"] == ps_id
                    ),
                    "mean_nearest_real": math.nan,
                    "void_area_pct": math.nan,
                }
            )
        return rows

    def _status_line(self, s: dict[str, Any]) -> str:
        nf = s.get("noise_floor_pool_q95", self.noise_floor.get("q95", math.nan))
        return (
            f"best MMD² {s['best_mmd2']:.4f} ({s['best_param_set_id']}), distribution similarity "
            f"{s['distribution_similarity']:.4f} (noise floor q95 {nf:.4f}), ε-share "
            f"{s['epsilon_ball_share']:.2f}"
        )

    def _plot(self) -> None:
        t0 = time.perf_counter()
        try:
            from bo_voids.plots import write_all_plots

            write_all_plots(self.store.root)
        except Exception as exc:  # a plot must never lose a run
            logger.warning("plotting failed: %s", exc)
        self.timings["plot"] = self.timings.get("plot", 0.0) + time.perf_counter() - t0

    def _calibrate(self) -> None:
        """Fit the implied parameter distribution (``calibration.json``); never loses a run."""
        t0 = time.perf_counter()
        try:
            from bo_voids.calibration import calibrate_experiment

            result = calibrate_experiment(self.store.root, evaluator=self.evaluator)
            implied = result.get("validation", {}).get("implied", {})
            if implied:
                self.log(
                    f"calibration: implied distribution of {len(result.get('components', []))} "
                    f"components, fresh-sample MMD² {implied.get('mmd2', math.nan):.4f} "
                    f"(p={implied.get('p_value', math.nan):.3f}) -> calibration.json"
                )
        except Exception as exc:  # calibration is an add-on: report, keep the run
            logger.warning("calibration failed: %s", exc)
        self.timings["calibrate"] = time.perf_counter() - t0

    def _finish(self) -> RunSummary:
        t0 = time.perf_counter()
        final = self.recommend()
        self.timings["propose"] += time.perf_counter() - t0
        self._last_proposal = final
        current_best = final.get("current_best", [])
        self.store.update_manifest(
            status="completed",
            stop_reason=self.stop_reason,
            current_best=current_best,
            next_params=final.get("next_params", []),
            timings=self.timings,
        )
        if self.config.calibrate:
            self._calibrate()
        self._plot()  # final plots show the completed status (and calibration)
        return RunSummary(
            experiment_dir=self.store.root,
            iterations_completed=len(self.records) - 1,
            stop_reason=self.stop_reason,
            current_best=current_best,
            scores=[{k: v for k, v in s.items() if k != "per_set"} for s in self.scores],
            noise_floor=self.noise_floor,
            embedder=self.embedder_info,
            timings=dict(self.timings),
        )


def _failed_result(task: EvaluationTask, exc: BaseException) -> EvaluationResult:
    """An :class:`EvaluationResult` recording that ``task`` raised ``exc``."""
    empty = np.zeros((0, 0, 0), dtype=np.float32)
    return EvaluationResult(
        task,
        empty,
        empty.astype(bool),
        np.zeros((0, 0), dtype=np.float32),
        [],
        error=f"{type(exc).__name__}: {exc}",
    )


def _proposal_record(proposal: dict[str, Any]) -> dict[str, Any]:
    scores = proposal.get("scores", {})
    return {
        "next_params": proposal.get("next_params", []),
        "current_best": proposal.get("current_best", []),
        "distribution_similarity": scores.get("distribution_similarity"),
        "info": proposal.get("info", {}),
    }
