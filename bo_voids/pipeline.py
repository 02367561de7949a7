"""The calibration loop: evaluate → score → ask → persist → callbacks → check, top to bottom.

::

    pipeline = OptimizationPipeline(load_config("configs/quickstart.yaml"))
    summary = pipeline.run_full_experiment()

Each iteration ``k`` runs the same six steps (:meth:`OptimizationPipeline.step`):

1. **evaluate** — render ``replications`` seeded images of each parameter set and embed them
   (iteration 0: the real / close / far sets of the config; iteration ``k ≥ 1``: the batch the
   optimiser proposed after iteration ``k - 1``) through the executor;
2. **score** — add the images to the :class:`~bo_voids.scoring.ScoreBook` (new sets scored,
   re-evaluated sets merged);
3. **ask** — the optimiser proposes the next batch from the scored observations; its model's
   predictions rank the observed sets ("best", the recommendation);
4. **persist** — the iteration folder (images, embeddings, metadata, scores, the proposal and the
   model's warm-start state) is written atomically, then ``history.csv`` and the manifest;
5. **callbacks** — plots (and any caller's callbacks) get an :class:`IterationEvent`;
6. **check** — :func:`stop_reason` decides whether to stop.

The optimiser is stateless (proposals derive from the observations, the seed of the iteration
and the persisted warm-start state), so a resumed experiment proposes exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bo_voids import reference_design
from bo_voids.config import DATASET_TYPES, PARAMETER_NAMES, ExperimentConfig
from bo_voids.evaluation import (
    EvaluationResult,
    EvaluationTask,
    Evaluator,
    EvaluatorSpec,
    render_seeds,
    target_records,
)
from bo_voids.exceptions import (
    BoVoidsError,
    ExperimentExistsError,
    FailureBudgetError,
    FallbackWarning,
    ImageLoadError,
    ResumeMismatchError,
)
from bo_voids.executors import EvaluationExecutor, make_executor
from bo_voids.generation.base_chips import load_base_images
from bo_voids.generation.voids import save_png
from bo_voids.metrics import NullBand, null_band_from_statistics, split_null_band
from bo_voids.optimizers import BaseOptimizer, Proposal, optimizer_from_config
from bo_voids.projection import PCAProjector
from bo_voids.scoring import (
    TARGET_TYPES,
    FreshScore,
    RankedSet,
    RunScores,
    ScoreBook,
    fresh_mmd2,
    target_clusters,
)
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace
from bo_voids.state import (
    FAILURES,
    PROPOSAL_FILE,
    SCORES_FILE,
    ExperimentLock,
    ExperimentRun,
    ExperimentStore,
    IterationRecord,
    atomic_save_npy,
    atomic_write_json,
    load_experiment,
)

logger = logging.getLogger(__name__)

#: Config keys that must agree for a warm start (they decide what an image looks like).
WARM_START_KEYS: tuple[str, ...] = ("image_size", "edge_blur", "base_image_dir", "param_bounds")
#: Images, masks, embeddings and metadata evaluated outside the executor (iteration 0 only).
_Evaluated = tuple[list[np.ndarray], list["np.ndarray | None"], np.ndarray, list[dict[str, Any]]]


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports."""

    experiment_dir: Path
    iterations_completed: int
    stop_reason: str
    current_best: list[RankedSet]
    scores: list[RunScores]
    noise_floor: dict[str, float]
    embedder: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> RankedSet | dict[str, Any]:
        """The recommended parameter set (the best by the package's one ranking)."""
        return self.current_best[0] if self.current_best else {}


@dataclass(frozen=True)
class IterationEvent:
    """What a callback receives after every persisted iteration.

    Attributes:
        iteration: The iteration just persisted.
        max_iterations: The run's iteration budget.
        scores: Its run-level scores.
        proposal: The proposal made after it (the next batch and the model's ranking).
        timings: Cumulative seconds per stage so far.
        experiment_dir: The experiment folder.
        config: The run's config.
        embedder: Identity of the embedder (name, dim, fingerprint, settings).
        records: Every iteration persisted so far, this one last (scores, proposals).
        book: Every observation of the run, scored (read it; the pipeline owns it).
    """

    iteration: int
    max_iterations: int
    scores: RunScores
    proposal: Proposal
    timings: Mapping[str, float]
    experiment_dir: Path
    config: ExperimentConfig
    embedder: Mapping[str, Any]
    records: Sequence[IterationRecord]
    book: ScoreBook


#: A per-iteration callback (plots, trackers, progress).
Callback = Callable[[IterationEvent], None]


def stop_reason(
    scores: Sequence[RunScores], config: ExperimentConfig, max_iterations: int
) -> str | None:
    """Why the run should stop after the iterations scored so far, or ``None`` to go on.

    Stops when the distribution similarity is below ``convergence_threshold``; when the
    recommendation's fresh MMD² is below ``noise_floor_q05``, the 5th percentile of what one
    parameter set drawn from the targets' own population scores on as many fresh images (the
    recommendation is then closer to the targets than 95 % of real parameter sets are: a real
    set's own score is a wide distribution, so "inside the band" would hold from the start);
    when the distribution similarity has not improved for ``early_stop_patience`` iterations;
    or at ``max_iterations``.
    Iteration 0 alone is the initial design, never a convergence point.

    Args:
        scores: The run-level scores of every completed iteration.
        config: The experiment config.
        max_iterations: The iteration budget.

    Returns:
        The reason, or ``None``.
    """
    if not scores:
        return None
    done = len(scores) - 1
    if done >= 1:
        last = scores[-1].distribution_similarity
        if last < config.convergence_threshold:
            return (
                f"converged: distribution similarity {last:.4f} < threshold "
                f"{config.convergence_threshold}"
            )
        q05 = scores[-1].noise_floor_q05
        fresh = scores[-1].fresh_mmd2
        if config.stop_at_noise_floor and math.isfinite(q05) and fresh <= q05:
            return (
                f"below the noise floor: the recommendation's fresh MMD² {fresh:.4f} <= "
                f"{q05:.4f}, closer to the targets than 95 % of real parameter sets are"
            )
        values = [s.distribution_similarity for s in scores]
        best_at = int(np.nanargmin(values)) if np.isfinite(values).any() else 0
        if len(values) - 1 - best_at >= config.early_stop_patience:
            return (
                f"no improvement for {config.early_stop_patience} iterations (best "
                f"{values[best_at]:.4f} at iteration {best_at})"
            )
    if done >= max_iterations:
        return f"reached max_iterations ({max_iterations})"
    return None


class OptimizationPipeline:
    """Runs one experiment end to end, with persistence and resume.

    The constructor only stores and validates; the generator, the embedder's weights and the
    executor are set up when the run starts.

    Args:
        config: A validated experiment config.
        resume: Continue the experiment in ``config.experiment_dir`` from its last complete
            iteration (refused if the config or embedder differs).
        overwrite: Replace an existing experiment folder.
        progress: Show progress bars.
        log: Called with one human-readable line per event (default: ``logger.info``).
        optimizer: An optimiser to use instead of the one the config names.
        executor: An evaluation executor to use instead of the one the config names; the caller
            owns it (the pipeline does not close it).
        callbacks: Called after every persisted iteration with an :class:`IterationEvent`, after
            the built-in plots (``plots=False`` turns those off).
        plots: Draw the plots after every iteration and at the end.

    Raises:
        ConfigError: An invalid optimiser setting.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        optimizer: BaseOptimizer | None = None,
        executor: EvaluationExecutor | None = None,
        callbacks: Sequence[Callback] = (),
        plots: bool = True,
    ) -> None:
        self.config = config
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress
        self.log = log or logger.info
        self.store = ExperimentStore(config.experiment_dir)
        self.space = SearchSpace.from_config(config)
        self.optimizer = optimizer or optimizer_from_config(config, self.space)
        self.spec = EvaluatorSpec.from_config(config)
        self.callbacks = list(callbacks)
        self.plots = plots
        self.projector = PCAProjector(n_components=config.pca_components)
        self.records: list[IterationRecord] = []
        self.scores: list[dict[str, Any]] = []
        self.book: ScoreBook | None = None
        self.proposal: Proposal | None = None
        self.noise_floor: dict[str, float] = {}
        self.timings: dict[str, float] = {"render": 0.0, "embed": 0.0, "propose": 0.0, "write": 0.0}
        self.stop_reason = ""
        self.evaluator: Evaluator | None = None
        self._executor = executor
        self._owns_executor = executor is None
        self._embedder_info: dict[str, Any] | None = None
        self._lock = ExperimentLock(self.store.root)
        self._targets: tuple[list[np.ndarray], list[str]] | None = None
        self._max_iterations = config.max_iterations
        self._warm_run: ExperimentRun | None = None
        self._stage_listeners: list[Callable[[str, int], None]] = []
        self._reference_attached = False
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
        self._max_iterations = n_iter
        if self.config.target_image_dir is not None and not (
            self.resume and self.store.iteration_dir(0).is_dir()
        ):
            self._targets = self._load_targets()  # bad target images stop before any work
        _ = self.embedder_info  # bad base chips or weights stop before anything is written
        if self.config.warm_start is not None and not self.store.iteration_dir(0).is_dir():
            self._warm_run = self._check_warm_start()  # refused before anything is written
        with self._lock, self._executor_ctx() as executor:
            self._executor = executor
            self._open_store()
            try:
                if not self.records:
                    self.step(0, self._initial_tasks())
                while (reason := stop_reason(self.scores, self.config, n_iter)) is None:
                    k = len(self.records)
                    assert self.proposal is not None
                    self.step(k, self._batch_tasks(k, self.proposal.next_params))
                self.stop_reason = reason
                summary = self._finish()
            except KeyboardInterrupt:
                self._finish_callbacks("KILLED")
                raise
            except BaseException:
                self._finish_callbacks("FAILED")
                raise
            self._finish_callbacks("FINISHED")
            return summary

    def step(self, k: int, tasks: Sequence[EvaluationTask]) -> IterationRecord:
        """One iteration: evaluate → score → ask → persist → callbacks.

        Args:
            k: The iteration number.
            tasks: The parameter sets to render and embed.

        Returns:
            The persisted :class:`~bo_voids.state.IterationRecord`.
        """
        self._stage("render+embed", k)
        results, failures = self._evaluate(tasks)
        self._check_failures(k, len(tasks), failures)
        prefix = []
        if k == 0:
            prefix = [p for p in (self._evaluate_targets(), self._warm_start_sets()) if p]
        images, masks, embeddings, metadata = self._collect(k, results, prefix)
        if k == 0:
            self._stage("null band", k)
            self._start_scoring(embeddings, metadata, len(failures))
        assert self.book is not None
        self.book.add(embeddings, metadata, iteration=k)
        self._stage("propose", k)
        proposal = self._ask(k)
        scores = self._run_scores(k, self.book.scores(k, proposal.predicted_mmd2))
        self._stage("fresh score", k)
        scores = replace(scores, recommendation=self._fresh_score(k, scores.best))
        self._stage("write", k)
        record = self._persist(k, images, masks, embeddings, metadata, scores, proposal, failures)
        self._after_iteration(k, scores, proposal)
        self.log(f"iteration {k}: {_status_line(scores)}")
        return record

    def add_stage_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(stage, iteration)`` as each stage of an iteration starts.

        Stages, in order: ``render+embed``, ``null band`` (iteration 0), ``propose``,
        ``fresh score``, ``write`` (the files go to ``iteration_k.partial/``), ``commit`` (every
        file written; the folder is renamed to ``iteration_k/``), ``history`` (``history.csv``
        and the manifest are rebuilt), ``plot``, ``callbacks``. ``commit`` and ``history`` start
        where a crash leaves a different state on disk, so the crash tests stop there
        (:mod:`bo_voids.testing.faults`); progress displays show every stage
        (:mod:`bo_voids.progress`).

        Args:
            listener: Called in the driver process; an exception it raises ends the run as an
                exception of that stage would.
        """
        self._stage_listeners.append(listener)

    def _stage(self, stage: str, k: int) -> None:
        for listener in self._stage_listeners:
            listener(stage, k)

    # ---- the steps ----------------------------------------------------------------------------

    def _initial_tasks(self) -> list[EvaluationTask]:
        """Iteration 0: the config's real (unless a target folder is given), close and far sets."""
        cfg = self.config
        tasks: list[EvaluationTask] = []
        for dtype in DATASET_TYPES:
            if dtype == "real" and cfg.target_image_dir is not None:
                continue  # the real images come from the target folder
            if dtype != "real" and cfg.warm_start is not None:
                continue  # the observations come from the earlier experiment
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
        return tasks

    def _batch_tasks(self, k: int, param_sets: Sequence[Mapping[str, Any]]) -> list[EvaluationTask]:
        reps = self.config.replications_per_iteration
        return [
            self._task(k, "synthetic", i, f"iter{k}_ps_{i:03d}", p, reps)
            for i, p in enumerate(param_sets)
        ]

    def _ask(self, k: int) -> Proposal:
        """Propose the batch of iteration ``k + 1`` from every observation through ``k``."""
        assert self.book is not None
        warm = self.proposal.state if self.proposal is not None else None
        t0 = time.perf_counter()
        if not self._reference_attached and self.config.bo.reference_sets > 0:
            self._reference_attached = reference_design.attach(
                self.optimizer, self.store.root, self.config, self.space, self._evaluator,
                self.spec.generator_settings(), lambda: self.embedder_info, self.log,
            )  # fmt: skip
        proposal = self.optimizer.propose(
            self.book.observations(),
            self.config.iteration_batch_size,
            seed=derive_seed(self.config.seed, "optimizer", k),
            warm_state=warm,
        )
        self.timings["propose"] += time.perf_counter() - t0
        self.proposal = proposal
        return proposal

    def _fresh_score(self, k: int, best: Sequence[RankedSet]) -> FreshScore | None:
        """Re-score the recommendation on fresh, independently seeded images.

        The in-sample score of the best-ranked set is biased low (it was selected for being low:
        the winner's curse); this one is not, and is never shown to the optimiser.
        """
        n = self.config.metric.fresh_images
        if n < 2 or not best or not getattr(self._executor, "renders", True):
            return None
        rec = best[0]
        assert self.book is not None
        fresh = fresh_mmd2(
            lambda tasks: self._evaluate(tasks)[0],
            self.book.scorer,
            rec["params"],
            seed=self.config.seed,
            iteration=k,
            n_images=n,
        )
        return FreshScore(
            uid=rec["uid"],
            params=dict(rec["params"]),
            mmd2_in_sample=rec["mmd2"],
            predicted_mmd2=rec["predicted_mmd2"],
            fresh_mmd2=fresh,
            fresh_images=n,
            fresh_seed_stream=("fresh", k),
        )

    def _run_scores(self, k: int, scores: RunScores) -> RunScores:
        assert self.book is not None
        return replace(
            scores,
            noise_floor_q05=float(self.noise_floor.get("q05", math.nan)),
            noise_floor_q95=float(self.noise_floor.get("q95", math.nan)),
            noise_floor=dict(self.noise_floor) if k == 0 else None,
            scorer=self.book.scorer.to_dict() if k == 0 else None,
        )

    def _persist(
        self,
        k: int,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None],
        embeddings: np.ndarray,
        metadata: list[dict[str, Any]],
        scores: RunScores,
        proposal: Proposal,
        failures: Sequence[dict[str, Any]],
    ) -> IterationRecord:
        t0 = time.perf_counter()
        pca_2d = self.projector.transform(embeddings)
        record = IterationRecord(
            k, embeddings, metadata, pca_2d, scores=scores, failures=list(failures)
        )
        record.proposals = _proposal_record(proposal)
        with self.store.writing_iteration(k) as tmp:
            for img, mask, m in zip(images, masks, metadata, strict=True):
                # the folder is renamed into place as a whole: no per-file atomicity needed
                save_png(tmp / "images" / m["image_file"], img, atomic=False, compress_level=1)
                if mask is not None:
                    m["mask_file"] = f"{m['sample_id']}_mask.png"
                    save_png(tmp / "images" / m["mask_file"], mask, atomic=False, compress_level=1)
            atomic_save_npy(tmp / "embeddings.npy", embeddings)
            atomic_save_npy(tmp / "pca_2d.npy", pca_2d)
            if k == 0:
                self.projector.save(tmp / "pca_model.npz")
            atomic_write_json(tmp / "metadata.json", metadata)
            atomic_write_json(tmp / SCORES_FILE, scores.to_dict())
            atomic_write_json(tmp / PROPOSAL_FILE, record.proposals)
            if failures:
                atomic_write_json(tmp / FAILURES, list(failures))
            self._stage("commit", k)
        record.folder = self.store.iteration_dir(k)
        self.records.append(record)
        self.scores.append(scores)
        self._stage("history", k)
        self._write_derived(k)
        self.timings["write"] += time.perf_counter() - t0
        return record

    def _finish_callbacks(self, status: str) -> None:
        """Tell callbacks that keep something open (a tracker run, a report) that the run ended."""
        for callback in self.callbacks:
            finish = getattr(callback, "finish", None)
            if callable(finish):
                try:
                    finish(status)
                except Exception as exc:  # a tracker must never change how a run ends
                    logger.warning("callback %r failed to finish: %s", callback, exc)

    def _after_iteration(self, k: int, scores: RunScores, proposal: Proposal) -> None:
        event = IterationEvent(
            iteration=k,
            max_iterations=self._max_iterations,
            scores=scores,
            proposal=proposal,
            timings=dict(self.timings),
            experiment_dir=self.store.root,
            config=self.config,
            embedder=dict(self.embedder_info),
            records=tuple(self.records),
            book=self.book,
        )
        if self.plots:
            self._stage("plot", k)
            self._plot()
        self._stage("callbacks", k)
        for callback in self.callbacks:
            callback(event)

    # ---- private: setup ---------------------------------------------------------------------

    @property
    def embedder_info(self) -> dict[str, Any]:
        """Identity of the embedder (name, dim, fingerprint, settings); builds it on first use."""
        if self._embedder_info is None:
            emb = self._evaluator().embedder
            self._embedder_info = {
                "name": emb.name,
                "dim": emb.dim,
                "fingerprint": emb.fingerprint(),
                **{k: v for k, v in emb.describe().items() if k not in {"name", "dim"}},
            }
        return self._embedder_info

    def _evaluator(self) -> Evaluator:
        if self.evaluator is None:
            self.evaluator = self.spec.build()
        return self.evaluator

    def _executor_ctx(self) -> contextlib.AbstractContextManager[EvaluationExecutor]:
        if self._executor is not None and not self._owns_executor:
            return contextlib.nullcontext(self._executor)
        return make_executor(self.config, self.spec, self._evaluator())

    def _open_store(self) -> None:
        store = self.store
        if store.exists() and self.resume:
            store.check_resumable(self.config, self.embedder_info)
            removed = store.clean_partial()
            if removed:
                self.log(
                    f"resume: removed {len(removed)} partial leftover(s) of an interrupted write"
                )
            self._restore(store.load_all())
            fields: dict[str, Any] = {"status": "running"}
            if self.records:
                # a crash between renaming an iteration into place and updating history.csv /
                # the manifest leaves them one iteration behind: both are derived, rebuild them
                self._write_derived(len(self.records) - 1)
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

    def _restore(self, records: list[IterationRecord]) -> None:
        """Rebuild the in-memory run (score book, PCA, last proposal) from persisted iterations."""
        if not records:
            return
        first = records[0]
        self.projector = PCAProjector.load(self.store.iteration_dir(0) / "pca_model.npz")
        self._start_scoring(first.embeddings, first.metadata, len(first.failures))
        self.noise_floor = first.scores.noise_floor or self.noise_floor
        assert self.book is not None
        for rec in records:
            self.book.add(rec.embeddings, rec.metadata, iteration=rec.iteration)
        self.records = records
        self.scores = [r.scores for r in records]
        last = records[-1].proposals or {}
        self.proposal = Proposal(
            next_params=tuple(last.get("next_params", [])),
            predicted_mmd2=last.get("predicted_mmd2"),
            replicates=tuple(last.get("replicates", [])),
            info=dict(last.get("info", {})),
            state=last.get("state"),
        )

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

    def _task(
        self, iteration: int, dtype: str, index: int, ps_id: str, params: dict[str, Any], reps: int
    ) -> EvaluationTask:
        seeds = render_seeds(
            self.config.seed, iteration, dtype, index, reps, self.config.common_random_numbers
        )
        return EvaluationTask(iteration, dtype, index, ps_id, self.space.validate(params), seeds)

    # ---- private: evaluation ------------------------------------------------------------------

    def _evaluate_targets(self) -> _Evaluated | None:
        """Embed the images of ``target_image_dir`` (``None`` when the targets are simulated)."""
        cfg = self.config
        if cfg.target_image_dir is None:
            return None
        images, ids = self._targets or self._load_targets()
        t0 = time.perf_counter()
        emb = self._evaluator().embedder.embed(images, progress=self.progress)
        self.timings["embed"] += time.perf_counter() - t0
        if not np.all(np.isfinite(emb)):
            bad = sorted({ids[i] for i in np.flatnonzero(~np.isfinite(emb).all(axis=1))})
            raise BoVoidsError(
                f"the embedder returned non-finite (NaN/inf) values for real target image(s) "
                f"{bad} in {cfg.target_image_dir}"
            )
        return list(images), [None] * len(images), emb, target_records(cfg.target_image_dir, ids)

    def _check_warm_start(self) -> ExperimentRun:
        """Load the ``warm_start`` experiment; refuse one embedded or rendered differently."""
        cfg = self.config
        assert cfg.warm_start is not None
        old = load_experiment(cfg.warm_start)
        theirs, ours = old.manifest.get("embedder", {}), self.embedder_info
        if theirs.get("fingerprint") != ours.get("fingerprint"):
            raise ResumeMismatchError(
                f"warm_start: {cfg.warm_start} was embedded with {theirs.get('name')!r} "
                f"({theirs.get('fingerprint')}), this run uses {ours.get('name')!r} "
                f"({ours.get('fingerprint')}); scores from different embedders must not be mixed"
            )
        a, b = old.config.to_dict(), cfg.to_dict()
        differ = [key for key in WARM_START_KEYS if a.get(key) != b.get(key)]
        if differ:
            detail = "; ".join(f"{key}: {a.get(key)!r} vs {b.get(key)!r}" for key in differ)
            raise ResumeMismatchError(
                f"warm_start: {cfg.warm_start} rendered its images differently ({detail})"
            )
        return old

    def _warm_start_sets(self) -> _Evaluated | None:
        """Every evaluated set of the ``warm_start`` experiment, to seed iteration 0.

        Its images and embeddings are reused as they are (nothing is rendered); its targets are
        not: this run's own targets are used. Refused (exit 2) when the earlier experiment was
        embedded or rendered differently.
        """
        cfg = self.config
        if cfg.warm_start is None:
            return None
        from PIL import Image

        def load_png(path: Path) -> np.ndarray:
            with Image.open(path) as im:  # 8-bit grey, written by save_png: round-trips exactly
                return np.asarray(im.convert("L"))

        old = self._warm_run or self._check_warm_start()
        images: list[np.ndarray] = []
        masks: list[np.ndarray | None] = []
        rows: list[np.ndarray] = []
        meta: list[dict[str, Any]] = []
        for it in old.iterations:
            for i, m in enumerate(it.metadata):
                if m["dataset_type"] in TARGET_TYPES or m.get("params") is None:
                    continue
                images.append(load_png(it.image_path(i)))
                mask = m.get("mask_file")
                assert it.folder is not None
                masks.append(load_png(it.folder / "images" / mask) > 127 if mask else None)
                rows.append(it.embeddings[i])
                meta.append(
                    {
                        **m,
                        "iteration": 0,
                        "param_set_id": f"warm_{m['param_set_id']}",
                        "warm_start_from": {"experiment": str(old.root), "iteration": it.iteration},
                    }
                )
        if not meta:
            raise ResumeMismatchError(f"warm_start: {cfg.warm_start} has no evaluated sets")
        self.log(f"warm start: {len({m['param_set_id'] for m in meta})} sets from {old.root}")
        return images, masks, np.stack(rows), meta

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

    def _collect(
        self,
        k: int,
        results: Sequence[EvaluationResult],
        prefix: Sequence[_Evaluated] = (),
    ) -> tuple[list[np.ndarray], list[np.ndarray | None], np.ndarray, list[dict[str, Any]]]:
        """Images, masks, embeddings and metadata of one iteration, with the design's ids.

        ``prefix`` holds what iteration 0 did not render: target-folder images and the sets of
        a warm-start experiment, as ``(images, masks, embeddings, metadata)``.
        """
        images: list[np.ndarray] = []
        masks: list[np.ndarray | None] = []
        metadata: list[dict[str, Any]] = []
        parts: list[np.ndarray] = []
        for p_images, p_masks, p_emb, p_meta in prefix:
            images.extend(p_images)
            masks.extend(p_masks)
            metadata.extend(dict(m) for m in p_meta)
            parts.append(p_emb)
        for res in results:
            images.extend(res.images)
            masks.extend(res.masks)
            parts.append(res.embeddings)
            metadata.extend(dict(m) for m in res.records)
        counters: dict[str, int] = {}
        for m in metadata:  # sample ids per (iteration, dataset_type), as in the design
            n = counters.get(m["dataset_type"], 0)
            counters[m["dataset_type"]] = n + 1
            m["sample_id"] = f"iter{k}_{m['dataset_type']}_{n:03d}"
            m["image_file"] = f"{m['sample_id']}.png"
            m["mask_file"] = None
        embeddings = np.concatenate(parts, axis=0).astype(np.float32)
        return images, masks, embeddings, metadata

    # ---- private: scoring ---------------------------------------------------------------------

    def _start_scoring(
        self, embeddings: np.ndarray, metadata: Sequence[Mapping[str, Any]], n_failed: int
    ) -> None:
        """Fix the targets, the kernel, the noise floor and the PCA from iteration 0."""
        is_target = np.array([m["dataset_type"] in TARGET_TYPES for m in metadata], dtype=bool)
        n_real, n_obs = (
            int(is_target.sum()),
            len({m["param_set_id"] for m in metadata})
            - (len({m["param_set_id"] for m in metadata if m["dataset_type"] in TARGET_TYPES})),
        )
        if n_real < 2 or n_obs < 1:
            raise FailureBudgetError(
                f"iteration 0 is unusable after {n_failed} failed evaluation(s): "
                f"{n_real} real image(s) (MMD needs 2) and {n_obs} observed parameter set(s) "
                "(needs 1) remain"
            )
        if len(embeddings) and float(np.ptp(embeddings, axis=0).max()) == 0.0:
            raise BoVoidsError(
                f"the {self.embedder_info.get('name')} embedder returned the same embedding for "
                f"all {len(embeddings)} images of iteration 0: every score would be 0 and the run "
                "would 'converge' at once. Check the embedder (weights, device) and the images"
            )
        self.book = ScoreBook(
            self.space,
            embeddings[is_target],
            target_groups=target_clusters(metadata),
            bandwidth=self.config.metric.bandwidth,
            top_k=self.config.bo.top_k,
        )
        if not self.projector.fitted:
            self.projector.fit(embeddings)
        if not self.noise_floor:
            self.noise_floor = self._noise_floor()

    def _noise_floor(self) -> dict[str, Any]:
        """The null band of the recommendation's fresh score: one real set × ``fresh_images``.

        The recommendation's fresh MMD² (one parameter set, ``metric.fresh_images`` new images)
        is judged against what *one parameter set drawn from the targets' own population*
        scores: inside the band, the recommendation is as close to the targets as a real set is.
        (The pooled similarity of the best sets is selected to be low, so no fresh-sample band
        applies to it.) With simulated targets the band is the exact null by simulation,
        ``metric.null_draws`` fresh sets from the targets' parameter distribution (independent
        seeds), each scored against the targets; with a target folder, pseudo-samples are split
        off the targets (whole clusters, or images for an iid folder). A band that cannot be
        computed (too few targets, ``fresh_images`` < 2) has NaN values and a ``reason``; the
        stop rule then ignores it.
        """
        assert self.book is not None
        cfg = self.config
        n_sets, n_reps = 1, max(cfg.metric.fresh_images, 2)
        t0 = time.perf_counter()
        if cfg.target_image_dir is None:
            band = self._simulated_null_band(n_sets, n_reps)
        else:
            groups = self.book.target_groups
            band = split_null_band(
                self.book.targets,
                None if len(set(groups.tolist())) == len(groups) else groups,
                n_sets,
                n_reps,
                scorer=self.book.scorer,
                n_splits=cfg.metric.noise_floor_splits,
                random_state=rng(cfg.seed, "split"),
            )
        self.timings["null_band"] = time.perf_counter() - t0
        if not band.available:
            logger.warning("no noise floor: %s", band.reason)
        return band.to_dict()

    def _simulated_null_band(self, n_sets: int, n_reps: int) -> NullBand:
        assert self.book is not None
        cfg = self.config
        tasks, owner = [], {}
        for d in range(cfg.metric.null_draws):
            draw = self.space.sample("real", n_sets, rng(cfg.seed, "null", d))
            for i, params in enumerate(draw):
                seeds = tuple(derive_seed(cfg.seed, "null", d, i, r) for r in range(n_reps))
                tasks.append(EvaluationTask(0, "real", i, f"null_{d}_{i:03d}", params, seeds))
                owner[tasks[-1].param_set_id] = d
        results, _ = self._evaluate(tasks) if tasks else ([], [])
        by_draw: dict[int, list[np.ndarray]] = {}
        for res in results:
            by_draw.setdefault(owner[res.task.param_set_id], []).append(res.embeddings)
        stats = [
            float(self.book.scorer.score(np.concatenate(parts)))
            for d, parts in sorted(by_draw.items())
            if len(parts) == n_sets
        ]
        return null_band_from_statistics(
            stats, n_sets=n_sets, n_reps=n_reps, n_reference=len(self.book.targets)
        )

    # ---- private: derived files, plots, the end ----------------------------------------------

    def _write_derived(self, k: int) -> None:
        """``history.csv`` and the manifest, both derived from the iterations."""
        self.store.write_history(self._history_rows())
        latest = {
            key: v
            for key, v in self.scores[-1].to_dict().items()
            if key not in {"scorer", "per_set"}
        }
        self.store.update_manifest(
            iterations_completed=k,
            failed_evaluations=sum(len(r.failures) for r in self.records),
            noise_floor=self.noise_floor,
            latest_scores=latest,
        )

    def _history_rows(self) -> list[dict[str, Any]]:
        """One row per observation (replications merged), then the simulated target sets."""
        assert self.book is not None
        rows: list[dict[str, Any]] = []
        for obs in self.book.all_sets():
            rec = obs.to_record()
            rows.append(
                {
                    "iteration": rec["iteration"],
                    "param_set_id": rec["uid"],
                    "dataset_type": rec["dataset_type"],
                    **{name: rec["params"].get(name) for name in PARAMETER_NAMES},
                    "mmd2": rec["mmd2"],
                    "n_images": rec["n_images"],
                    "mean_nearest_real": rec["mean_nearest_real"],
                    "void_area_pct": rec["void_area_pct"],
                    "iterations": " ".join(str(i) for i in rec["iterations"]),
                }
            )
        real_sets: dict[str, dict[str, Any]] = {}
        counts: dict[str, int] = {}
        for m in self.records[0].metadata:
            if m["dataset_type"] in TARGET_TYPES and m["params"] is not None:
                real_sets.setdefault(m["param_set_id"], m)
                counts[m["param_set_id"]] = counts.get(m["param_set_id"], 0) + 1
        for ps_id, m in real_sets.items():
            rows.append(
                {
                    "iteration": 0,
                    "param_set_id": ps_id,
                    "dataset_type": m["dataset_type"],
                    **{name: m["params"][name] for name in PARAMETER_NAMES},
                    "mmd2": math.nan,
                    "n_images": counts[ps_id],
                    "mean_nearest_real": math.nan,
                    "void_area_pct": math.nan,
                    "iterations": "0",
                }
            )
        return rows

    def _plot(self) -> None:
        t0 = time.perf_counter()
        try:
            from bo_voids.plots import write_all_plots

            write_all_plots(self.store.root, run=self._run_view())
        except Exception as exc:  # a plot must never lose a run
            logger.warning("plotting failed: %s", exc)
        self.timings["plot"] = self.timings.get("plot", 0.0) + time.perf_counter() - t0

    def _run_view(self) -> ExperimentRun:
        """The run as it stands, from memory (only the small manifest and history are read)."""
        return ExperimentRun(
            root=self.store.root,
            manifest=self.store.read_manifest(),
            config=self.config,
            iterations=list(self.records),
            history=self.store.read_history(),
        )

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
        assert self.proposal is not None
        current_best = list(self.scores[-1].best)
        self.store.update_manifest(
            status="completed",
            stop_reason=self.stop_reason,
            current_best=current_best,
            next_params=list(self.proposal.next_params),
            timings=self.timings,
        )
        if self.config.calibrate:
            self._calibrate()
        if self.plots:
            self._plot()  # final plots show the completed status (and calibration)
        return RunSummary(
            experiment_dir=self.store.root,
            iterations_completed=len(self.records) - 1,
            stop_reason=self.stop_reason,
            current_best=current_best,
            scores=list(self.scores),
            noise_floor=self.noise_floor,
            embedder=self.embedder_info,
            timings=dict(self.timings),
        )


def _status_line(s: RunScores) -> str:
    return (
        f"best {s.best_param_set_id} (MMD² {s.best_mmd2:.4f} in sample, {s.fresh_mmd2:.4f} on "
        f"fresh images, {s.ranking} ranking), "
        f"pooled similarity {s.distribution_similarity:.4f}; one real set scores below "
        f"{s.noise_floor_q05:.4f} 5 % of the time; ε-share {s.epsilon_ball_share:.2f}"
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


def _proposal_record(proposal: Proposal) -> dict[str, Any]:
    """``proposals.json``: the proposal made after an iteration (the next batch)."""
    return {
        "next_params": [dict(p) for p in proposal.next_params],
        "replicates": list(proposal.replicates),
        "predicted_mmd2": dict(proposal.predicted_mmd2) if proposal.predicted_mmd2 else None,
        "info": proposal.info,
        "state": proposal.state,
    }
