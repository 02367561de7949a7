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
6. **check** — :func:`~bo_voids.statistics.stop_rule.stop_reason` decides whether to stop (a
   candidate stop is confirmed on a second fresh sample first).

The optimiser is stateless (proposals derive from the observations, the seed of the iteration
and the persisted warm-start state), so a resumed experiment proposes exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bo_voids import reference_design
from bo_voids._types import JsonObject
from bo_voids.config import ExperimentConfig
from bo_voids.evaluation import (
    EvaluationResult,
    EvaluationTask,
    Evaluator,
    EvaluatorSpec,
    IterationImages,
    assemble_iteration,
    batch_tasks,
    describe_tasks,
    initial_tasks,
)
from bo_voids.exceptions import ExperimentExistsError
from bo_voids.executors import EvaluationExecutor, make_executor
from bo_voids.failure_policy import (
    FailureRecord,
    check_failure_budget,
    evaluate_isolating_failures,
)
from bo_voids.generation.voids import ImageRecord
from bo_voids.noise_floor import measure_noise_floor, stop_threshold
from bo_voids.optimizers import BaseOptimizer, Proposal, optimizer_from_config
from bo_voids.ownership import check_run_paths
from bo_voids.projection import PCAProjector
from bo_voids.run_events import Callback, IterationEvent, RunSummary, finish_callbacks, status_line
from bo_voids.run_scores import RunScores, json_float
from bo_voids.scoring import ScoreBook, fresh_pool_similarity, recommendation_fresh_score
from bo_voids.seeding import derive_seed
from bo_voids.space import SearchSpace
from bo_voids.state import ExperimentLock, ExperimentRun, ExperimentStore, IterationRecord
from bo_voids.statistics.stop_rule import (
    StopThreshold,
    convergence_candidate,
    is_candidate,
    stop_reason,
)
from bo_voids.targets import TargetImages, embed_targets, load_targets
from bo_voids.warm_start import check_warm_start, warm_start_images

__all__ = [
    "Callback",
    "IterationEvent",
    "OptimizationPipeline",
    "RunSummary",
    "stop_reason",
]

logger = logging.getLogger(__name__)


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
        self.scores: list[RunScores] = []
        self.book: ScoreBook | None = None
        self.proposal: Proposal | None = None
        self.noise_floor: dict[str, Any] = {}
        self.timings: dict[str, float] = {"render": 0.0, "embed": 0.0, "propose": 0.0, "write": 0.0}
        self.stop_reason = ""
        self.calibration: dict[str, Any] | None = None
        self.evaluator: Evaluator | None = None
        self._executor = executor
        self._owns_executor = executor is None
        self._embedder_info: dict[str, Any] | None = None
        self._lock = ExperimentLock(self.store.root)
        self._targets: TargetImages | None = None
        self._max_iterations = config.max_iterations
        self._warm_run: ExperimentRun | None = None
        self._stage_listeners: list[Callable[[str, int], None]] = []
        self._reference_attached = False
        #: Whether this pipeline created or resumed the experiment folder (and may mark it).
        self.store_opened = False
        #: Whether ``--resume`` found the experiment already complete (nothing was run).
        self.already_complete = False

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
        check_run_paths(self.config)  # no input inside what the run writes, clears or replaces
        if self.config.target_image_dir is not None and not (
            self.resume and self.store.iteration_dir(0).is_dir()
        ):
            self._targets = load_targets(self.config)  # bad target images stop before any work
        _ = self.embedder_info  # bad base chips or weights stop before anything is written
        if self.config.warm_start is not None and not self.store.iteration_dir(0).is_dir():
            # refused before anything is written
            self._warm_run = check_warm_start(self.config, self.embedder_info)
        with self._lock, self._executor_ctx() as executor:
            self._executor = executor
            self._open_store()
            if self.already_complete:
                return self._summary()
            try:
                if not self.records:
                    tasks = initial_tasks(self.config, self.space)
                    self.log(f"iteration 0: {describe_tasks(tasks)}")
                    self.step(0, tasks)
                while (reason := stop_reason(self.scores, self.config, n_iter)) is None:
                    k = len(self.records)
                    assert self.proposal is not None
                    self.step(k, batch_tasks(self.config, self.space, k, self.proposal.next_params))
                self.stop_reason = reason
                summary = self._finish()
            except KeyboardInterrupt:
                self._restore_replaced()
                finish_callbacks(self.callbacks, "KILLED")
                raise
            except BaseException:
                self._restore_replaced()
                finish_callbacks(self.callbacks, "FAILED")
                raise
            finish_callbacks(self.callbacks, "FINISHED")
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
        check_failure_budget(
            k,
            len(tasks),
            failures,
            evaluated_before=sum(r.n_evaluated for r in self.records),
            failed_before=sum(len(r.failures) for r in self.records),
            budget=self.config.max_failure_fraction,
        )
        batch = assemble_iteration(k, results, self._iteration0_prefix() if k == 0 else ())
        if k == 0:
            self._stage("null band", k)
            self._start_scoring(batch.embeddings, batch.metadata, len(failures))
        assert self.book is not None
        self.book.add(batch.embeddings, batch.metadata, iteration=k)
        self._stage("propose", k)
        proposal = self._ask(k)
        scores = self._run_scores(k, self.book.scores(k, proposal.predicted_mmd2))
        self._stage("fresh score", k)
        scores = self._fresh_scores(k, scores)
        self._stage("write", k)
        record = self._persist(k, batch, scores, proposal, failures)
        self._after_iteration(k, scores, proposal)
        self.log(f"iteration {k}: {status_line(scores)}")
        return record

    def add_stage_listener(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(stage, iteration)`` as each stage of an iteration starts.

        Stages, in order: ``render+embed``, ``null band`` (iteration 0), ``propose``,
        ``fresh score``, ``write`` (the files go to ``iteration_k.partial/``), ``commit`` (every
        file written; the folder is renamed to ``iteration_k/``), ``history`` (``history.csv``
        and the manifest are rebuilt), ``plot``, ``callbacks``; after the last iteration,
        ``calibrate`` (when on) and ``final plots``. ``commit`` and ``history`` start
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

    def _fresh_scores(self, k: int, scores: RunScores) -> RunScores:
        """Fresh re-scores: the recommendation, and the pool below ``convergence_threshold``."""
        if not scores.best or not getattr(self._executor, "renders", True):
            return scores
        assert self.book is not None
        cfg, threshold, scorer = self.config, self.stop_threshold, self.book.scorer

        def evaluate(tasks: Sequence[EvaluationTask]) -> list[EvaluationResult]:
            return self._evaluate(tasks)[0]

        rec = None
        if cfg.metric.fresh_images >= 2:
            rec = recommendation_fresh_score(
                evaluate,
                scorer,
                scores.best[0],
                seed=cfg.seed,
                iteration=k,
                n_images=cfg.metric.fresh_images,
                confirm_if=lambda fresh: cfg.stop_at_noise_floor and is_candidate(threshold, fresh),
            )
        pool = None
        if k >= 1 and convergence_candidate(scores.distribution_similarity, cfg):
            pool = fresh_pool_similarity(evaluate, scorer, scores.best, seed=cfg.seed, iteration=k)
        return replace(scores, recommendation=rec, confirm_similarity=pool)

    def _run_scores(self, k: int, scores: RunScores) -> RunScores:
        assert self.book is not None
        return replace(
            scores,
            noise_floor_q05=json_float(self.noise_floor.get("q05")),
            noise_floor_q95=json_float(self.noise_floor.get("q95")),
            noise_floor=dict(self.noise_floor) if k == 0 else None,
            scorer=self.book.scorer.to_dict() if k == 0 else None,
            stop_threshold=self.stop_threshold.to_dict(),
        )

    def _persist(
        self,
        k: int,
        batch: IterationImages,
        scores: RunScores,
        proposal: Proposal,
        failures: Sequence[FailureRecord],
    ) -> IterationRecord:
        t0 = time.perf_counter()
        record = IterationRecord(
            k,
            batch.embeddings,
            batch.metadata,
            self.projector.transform(batch.embeddings),
            scores=scores,
            proposals=proposal.to_dict(),
            failures=[dict(f) for f in failures],
        )
        self.store.write_iteration(
            record,
            batch.images,
            batch.masks,
            pca_model=self.projector.save if k == 0 else None,
            before_commit=lambda: self._stage("commit", k),
        )
        self.records.append(record)
        self.scores.append(scores)
        self._stage("history", k)
        self._write_derived()
        self.timings["write"] += time.perf_counter() - t0
        return record

    def _after_iteration(self, k: int, scores: RunScores, proposal: Proposal) -> None:
        assert self.book is not None
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
    def embedder_info(self) -> JsonObject:
        """Identity of the embedder (name, dim, fingerprint, settings); builds it on first use."""
        if self._embedder_info is None:
            self._embedder_info = self._evaluator().embedder.identity()
        return self._embedder_info

    def _evaluator(self) -> Evaluator:
        if self.evaluator is None:
            self.evaluator = self.spec.build()
        return self.evaluator

    def _restore_replaced(self) -> None:
        """An --overwrite that stopped before its iteration 0 gives the old experiment back."""
        if self.store.restore_replaced():
            self.store_opened = False  # the folder is the old experiment again: leave it be
            logger.warning("the run stopped before iteration 0: %s is restored", self.store.root)

    def _executor_ctx(self) -> contextlib.AbstractContextManager[EvaluationExecutor]:
        if self._executor is not None and not self._owns_executor:
            return contextlib.nullcontext(self._executor)
        return make_executor(self.config, self.spec, self._evaluator())

    def _open_store(self) -> None:
        store = self.store
        if store.exists() and self.resume:
            previous = store.check_resumable(self.config, self.embedder_info)
            if removed := store.clean_partial():
                self.log(f"resume: removed {len(removed)} partial leftover(s) of a write")
            records = store.load_all()
            scores = [r.scores for r in records]
            reason = stop_reason(scores, self.config, self._max_iterations)
            if previous.get("status") == "completed" and records and reason is not None:
                # a finished run resumed with the same budget: nothing to render, fit or draw
                self.records, self.scores = records, scores
                self.noise_floor = records[0].scores.noise_floor or self.noise_floor
                self.already_complete = True
                self.stop_reason = str(previous.get("stop_reason") or reason)
                self.timings = dict(previous.get("timings") or self.timings)
                more = reason.startswith("reached max_iterations")
                self.log(
                    f"{store.root} is already complete after iteration {len(records) - 1} "
                    f"({self.stop_reason}); nothing to do."
                    + (" Raise --max-iterations to continue it." if more else "")
                )
                return
            self._restore(records)
            if records:
                # a crash between renaming an iteration into place and updating history.csv /
                # the manifest leaves them one iteration behind: both are derived, rebuild them
                self._write_derived()
            store.update_manifest(status="running")
            self.store_opened = True
            self.log(
                f"resuming {store.root} after iteration {len(records) - 1}"
                if records
                else f"resuming {store.root}: no iteration was completed; starting iteration 0"
            )
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
        self.proposal = Proposal.from_dict(records[-1].proposals or {})

    # ---- private: evaluation ------------------------------------------------------------------

    def _evaluate(
        self, tasks: Sequence[EvaluationTask]
    ) -> tuple[list[EvaluationResult], list[FailureRecord]]:
        assert self._executor is not None
        return evaluate_isolating_failures(
            self._executor, tasks, progress=self.progress, timings=self.timings
        )

    def _iteration0_prefix(self) -> list[IterationImages]:
        """What iteration 0 does not render: a target folder's images, a warm start's sets."""
        cfg, prefix = self.config, []
        if cfg.target_image_dir is not None:
            t0 = time.perf_counter()
            targets = self._targets or load_targets(cfg)
            embedder = self._evaluator().embedder
            prefix.append(embed_targets(cfg, targets, embedder, progress=self.progress))
            self.timings["embed"] += time.perf_counter() - t0
        if cfg.warm_start is not None:
            old = self._warm_run or check_warm_start(cfg, self.embedder_info)
            prefix.append(warm_start_images(old, self.log))
        return prefix

    # ---- private: scoring ---------------------------------------------------------------------

    def _start_scoring(
        self, embeddings: np.ndarray, metadata: Sequence[ImageRecord], n_failed: int
    ) -> None:
        """Fix the targets, the kernel, the noise floor and the PCA from iteration 0."""
        self.book = ScoreBook.from_iteration0(
            self.space,
            embeddings,
            metadata,
            n_failed=n_failed,
            bandwidth=self.config.metric.bandwidth,
            top_k=self.config.bo.top_k,
            embedder_name=str(self.embedder_info.get("name")),
        )
        if not self.projector.fitted:
            self.projector.fit(embeddings)
        if not self.noise_floor:
            t0 = time.perf_counter()
            self.noise_floor = measure_noise_floor(
                self.config,
                self.space,
                self.book.scorer,
                len(self.book.targets),
                lambda tasks: self._evaluate(tasks)[0],
            )
            self.timings["null_band"] = time.perf_counter() - t0

    @property
    def stop_threshold(self) -> StopThreshold:
        """The stop rule's threshold: the user's margin, else from the null band's draws."""
        return stop_threshold(self.config, self.noise_floor)

    # ---- private: derived files, plots, the end ----------------------------------------------

    def _write_derived(self) -> None:
        assert self.book is not None
        sets = [o.to_record() for o in self.book.all_sets()]
        self.store.write_derived(sets, self.records, self.noise_floor)

    def _plot(self) -> None:
        t0 = time.perf_counter()
        try:
            from bo_voids.plots import write_all_plots

            write_all_plots(self.store.root, run=self.store.view(self.config, self.records))
        except Exception as exc:  # a plot must never lose a run
            logger.warning("plotting failed: %s", exc)
        self.timings["plot"] = self.timings.get("plot", 0.0) + time.perf_counter() - t0

    def _calibrate(self) -> None:
        """Fit the implied parameter distribution (``calibration.json``); never loses a run."""
        t0 = time.perf_counter()
        try:
            from bo_voids.answer import calibration_line
            from bo_voids.calibration import calibrate_experiment

            result = calibrate_experiment(self.store.root, evaluator=self.evaluator, book=self.book)
            self.calibration = result
            if line := calibration_line(result):
                self.log(line)
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
        k = len(self.records) - 1
        if self.config.calibrate:
            self._stage("calibrate", k)
            self._calibrate()
            # the timings with the calibration, written before the final plots so that they
            # are newer than the manifest (the report reuses them instead of drawing again)
            self.store.update_manifest(timings=self.timings)
        if self.plots:
            self._stage("final plots", k)
            self._plot()  # final plots show the completed status (and calibration)
        return self._summary()

    def _summary(self) -> RunSummary:
        """The :class:`RunSummary` of the run as it stands in memory."""
        return RunSummary(
            experiment_dir=self.store.root,
            iterations_completed=len(self.records) - 1,
            stop_reason=self.stop_reason,
            current_best=list(self.scores[-1].best) if self.scores else [],
            scores=list(self.scores),
            noise_floor=self.noise_floor,
            embedder=self.embedder_info,
            timings=dict(self.timings),
            calibration=self.calibration,
        )
