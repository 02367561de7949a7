"""Re-targeting: score an experiment's evaluated sets against new real targets, without rendering.

::

    bo-voids retarget experiments/quickstart --targets my_real_images/ --out experiments/mine
    python -m bo_voids.retarget experiments/quickstart --targets my_real_images/ --out ...

The new experiment folder is what a fresh run with ``target_image_dir: my_real_images/`` would
have written for the same parameter sets: the pipeline runs unchanged through its public seams,
with an executor that serves every set's stored images and embeddings instead of rendering them
(:class:`StoredEvaluations`) and an optimiser that proposes exactly the batches the experiment
evaluated (:class:`ReplayOptimizer`). So the new targets are embedded with the experiment's own
embedder, and the per-set MMD², the null band, the run-level scores, ``history.csv``, the plots
and the report all come from the code a fresh run uses; only the rendering and the model fits
are skipped. ``retarget.json`` beside them records the source, the per-set scores against the
old and the new targets, and the timings.

Refused (exit code 2), with a message naming the difference:

* an embedder whose fingerprint differs from the experiment's (other model, weights, precision or
  feature settings: embeddings from different embedders must not be mixed);
* with ``--config NEW.yaml`` (the config of the experiment you would run instead), any setting
  that changes what a parameter set renders to (:data:`RENDER_KEYS`: image size, base chips,
  edge blur, seed, common random numbers, replications, the iteration-0 designs, the bounds) —
  and, through the fingerprint, any other embedder.

What a re-targeted folder does not have: the optimiser's model ranking (the best sets are ranked
by their raw MMD² against the new targets) and the recommendation's score on fresh images (that
needs rendering: ``fresh_mmd2`` is NaN). To continue optimising against the new targets, start a
new run from it (``warm_start``).

Example:
    >>> from bo_voids.retarget import retarget_experiment
    >>> result = retarget_experiment("experiments/quickstart", "my_images", "experiments/mine")
    ... # doctest: +SKIP
    >>> result.per_set[0]["mmd2"], result.per_set[0]["source_mmd2"]  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from bo_voids._types import JsonValue
from bo_voids.cli import ExitCode, call_guarded
from bo_voids.config import ExperimentConfig, load_config
from bo_voids.evaluation import EvaluationResult, EvaluationTask
from bo_voids.exceptions import FallbackWarning, StateError, UserInputError
from bo_voids.executors import EvaluationExecutor
from bo_voids.optimizers import BaseOptimizer, Proposal, ProposalRequest
from bo_voids.ownership import check_run_paths
from bo_voids.run_scores import json_float
from bo_voids.scoring import ObservationSet
from bo_voids.space import SearchSpace
from bo_voids.state import ExperimentRun, atomic_write_json, load_experiment

__all__ = [
    "NOT_RENDERED",
    "RENDER_KEYS",
    "REPLAY_SETTINGS",
    "RETARGET_FILE",
    "ReplayOptimizer",
    "RetargetResult",
    "StoredEvaluations",
    "main",
    "retarget_config",
    "retarget_experiment",
]

logger = logging.getLogger(__name__)

#: Provenance and per-set comparison of a re-targeted experiment, in its folder.
RETARGET_FILE = "retarget.json"
#: Config keys that decide what a parameter set renders to (and so its stored embeddings).
RENDER_KEYS: tuple[str, ...] = (
    "base_image_dir",
    "image_size",
    "edge_blur",
    "seed",
    "common_random_numbers",
    "replications_per_iteration",
    "close",
    "far",
    "param_bounds",
)
#: Why the recommendation has no fresh-image score in a re-targeted experiment.
NOT_RENDERED = "not rendered: re-targeting re-scores the stored images only"
#: ``param_set_id`` prefix of the pipeline's fresh re-score of the recommendation.
_FRESH_PREFIX = "fresh_"
#: Settings of the replay that a fresh run would not use: every stored iteration is replayed
#: (no early stop) and nothing is rendered (no calibration; the fresh re-score of the
#: recommendation is answered "not rendered", so its ``fresh_mmd2`` is NaN).
REPLAY_SETTINGS: dict[str, Any] = {
    "calibrate": False,
    "stop_at_noise_floor": False,
    "convergence_threshold": -1e9,
    "early_stop_patience": 100_000,
}


@dataclass(frozen=True)
class RetargetResult:
    """What :func:`retarget_experiment` produced.

    Attributes:
        experiment_dir: The new, re-targeted experiment folder.
        source_dir: The experiment whose sets were re-scored.
        targets: The folder of the new real target images.
        n_targets: Target images.
        per_set: One record per evaluated set (``uid``, ``iteration``, ``dataset_type``,
            ``params``, ``n_images``, ``mmd2`` against the new targets, ``source_mmd2`` against
            the old ones), best first.
        best: The best sets against the new targets (raw ranking).
        distribution_similarity: The pooled top-k MMD² against the new targets.
        noise_floor: The null band of the new targets.
        seconds: Wall time per step (``total``, ``embed`` of the targets, ``score_and_write``,
            ``plots_and_report``).
    """

    experiment_dir: Path
    source_dir: Path
    targets: Path
    n_targets: int
    per_set: list[dict[str, Any]]
    best: list[dict[str, Any]]
    distribution_similarity: float
    noise_floor: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The two seams: stored evaluations in place of rendering, the stored batches in place of a model
# ---------------------------------------------------------------------------------------------


class StoredEvaluations(EvaluationExecutor):
    """An executor that answers with an experiment's stored images and embeddings.

    A task is matched by ``(iteration, param_set_id)`` and must ask for the same parameters and
    render seeds the stored set was rendered with; a set whose evaluation failed in the source
    fails again with the same error. Nothing is rendered or embedded.

    Args:
        run: The source experiment.
        space: Its search space (parameter identity).

    Raises:
        UserInputError: From :meth:`evaluate`, for a task the source never rendered the same way.
    """

    name = "stored"

    def __init__(self, run: ExperimentRun, space: SearchSpace) -> None:
        self.run = run
        self.space = space
        self._rows: dict[tuple[int, str], list[int]] = {}
        self._failed: dict[tuple[int, str], str] = {}
        for it in run.iterations:
            for i, m in enumerate(it.metadata):
                self._rows.setdefault((it.iteration, str(m["param_set_id"])), []).append(i)
            for f in it.failures:
                self._failed[(it.iteration, str(f["param_set_id"]))] = str(f.get("error"))

    def evaluate(
        self, tasks: Sequence[EvaluationTask], *, progress: bool = False
    ) -> list[EvaluationResult]:
        """The stored result of each task, in task order."""
        return [self._one(task) for task in tasks]

    def _one(self, task: EvaluationTask) -> EvaluationResult:
        key = (task.iteration, task.param_set_id)
        if key not in self._rows and task.param_set_id.startswith(_FRESH_PREFIX):
            return _failed(task, NOT_RENDERED)
        if key in self._failed:
            return _failed(task, f"failed in the source experiment: {self._failed[key]}")
        rows = self._rows.get(key)
        where = f"{self.run.root} iteration {task.iteration} set {task.param_set_id}"
        if rows is None:
            raise UserInputError(
                f"cannot re-target: {where} does not exist; the replay asked for a set the "
                "experiment never evaluated (its config or history differs from its folder)"
            )
        it = self.run.iterations[task.iteration]
        meta = [it.metadata[i] for i in rows]
        seeds = tuple(-1 if (s := m.get("render_seed")) is None else int(s) for m in meta)
        first = meta[0]["params"]
        if first is None or not self.space.same(first, task.params) or seeds != tuple(task.seeds):
            raise UserInputError(
                f"cannot re-target: {where} was rendered with params {meta[0]['params']} and "
                f"seeds {seeds}, a fresh run would render {dict(task.params)} with seeds "
                f"{tuple(task.seeds)}: the settings that decide the renders differ"
            )
        folder = it.folder or self.run.root / f"iteration_{task.iteration}"
        images = np.stack([_read_png(folder / "images" / str(m["image_file"])) for m in meta])
        masks = [
            _read_png(folder / "images" / mask_file) > 0
            if (mask_file := m.get("mask_file"))
            else None
            for m in meta
        ]
        return EvaluationResult(
            task,
            images,
            masks,  # type: ignore[arg-type]  # the pipeline reads it as a sequence
            np.asarray(it.embeddings[rows], dtype=np.float32),
            [m.copy() for m in meta],
        )


class ReplayOptimizer(BaseOptimizer):
    """Proposes, call after call, exactly the batches a stored experiment proposed.

    The ``k``-th call returns the proposal stored after iteration ``k`` (its sets and its
    deliberate replicates, unchanged: the base class's de-duplication would alter replicates),
    without the model's predictions, which were made against the old targets.

    Args:
        space: The search space.
        proposals: ``proposals.json`` of each stored iteration, in order (``None`` for none).
        source: The source folder, recorded in each proposal's ``info``.
    """

    name: ClassVar[str] = "replay"

    def __init__(
        self, space: SearchSpace, proposals: Sequence[Mapping[str, Any] | None], source: str
    ) -> None:
        super().__init__(space)
        self.proposals = list(proposals)
        self.source = source
        self.calls = 0

    def propose(
        self,
        observations: ObservationSet,
        batch_size: int = 8,
        seed: int | None = None,
        warm_state: Mapping[str, JsonValue] | None = None,
    ) -> Proposal:
        """The next stored batch (the observations and every other argument are ignored)."""
        k = self.calls
        self.calls += 1
        stored = self.proposals[k] if k < len(self.proposals) else None
        stored = stored or {}
        return Proposal(
            next_params=tuple(dict(p) for p in stored.get("next_params") or []),
            predicted_mmd2=None,
            replicates=tuple(stored.get("replicates") or []),
            info={"optimizer": self.name, "replayed_from": self.source, "iteration": k},
            state=None,
        )

    def _propose(self, request: ProposalRequest) -> Proposal:  # pragma: no cover
        raise NotImplementedError  # propose() is overridden whole


def _read_png(path: Path) -> np.ndarray:
    """A stored PNG's pixels as written (8/16-bit), so re-saving it reproduces the file."""
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc


def _failed(task: EvaluationTask, reason: str) -> EvaluationResult:
    empty = np.zeros((0, 0, 0), dtype=np.float32)
    return EvaluationResult(
        task, empty, empty.astype(bool), np.zeros((0, 0), np.float32), [], error=reason
    )


# ---------------------------------------------------------------------------------------------
# The library call
# ---------------------------------------------------------------------------------------------


def retarget_config(
    source: ExperimentConfig,
    targets: str | Path,
    out: str | Path,
    *,
    config: ExperimentConfig | None = None,
    device: str | None = None,
    dino_weights: str | Path | None = None,
) -> ExperimentConfig:
    """The config of a fresh run against ``targets`` over the stored experiment's sets.

    Args:
        source: The stored experiment's config.
        targets: The new target folder.
        out: The new experiment folder.
        config: The config of the experiment that would be run instead (default: ``source``);
            its scoring settings (``metric``, ``bo.top_k``, ``pca_components``, the name) are
            used, and its render settings (:data:`RENDER_KEYS`) must equal the source's.
        device: Overrides the device the targets are embedded on.
        dino_weights: Overrides where the DINOv2 weights are (they must be the same weights).

    Returns:
        The validated config; the replay runs it with :data:`REPLAY_SETTINGS` on top, and the new
        folder's manifest keeps this one (so its report shows the run's real stop rules).

    Raises:
        UserInputError: ``config`` renders the parameter sets differently.
    """
    base = config or source
    old, new = source.to_dict(), base.to_dict()
    for d in (old, new):  # one folder spelled two ways is the same chips
        d["base_image_dir"] = str(Path(str(d["base_image_dir"])).resolve())
    diffs = [k for k in RENDER_KEYS if old.get(k) != new.get(k)]
    old_named, new_named = old["param_distributions"], new["param_distributions"]
    assert isinstance(old_named, Mapping) and isinstance(new_named, Mapping)  # as to_dict writes
    for dtype in ("close", "far"):
        if old_named.get(dtype) != new_named.get(dtype):
            diffs.append(f"param_distributions.{dtype}")
    if diffs:
        detail = "; ".join(f"{k}: {_get(old, k)!r} -> {_get(new, k)!r}" for k in diffs[:6]) + (
            "; ..." if len(diffs) > 6 else ""
        )
        raise UserInputError(
            f"cannot re-target {source.experiment_dir} with this config: the settings that "
            f"decide what a parameter set renders to differ ({detail}). Its stored images were "
            "rendered with the experiment's settings; re-targeting changes only the targets and "
            "the scoring. Run a fresh experiment for the new settings"
        )
    last = int(base.max_iterations)
    changes: dict[str, Any] = {
        "experiment_dir": str(out),
        "target_image_dir": str(targets),
        "max_iterations": last,
    }
    if device is not None:
        changes["device"] = device
    if dino_weights is not None:
        changes["dino_weights"] = str(dino_weights)
    return base.replace(**changes)


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part, {}) if isinstance(d, Mapping) else {}
    return d


def retarget_experiment(
    experiment_dir: str | Path,
    targets: str | Path,
    out: str | Path,
    *,
    config: ExperimentConfig | None = None,
    device: str | None = None,
    dino_weights: str | Path | None = None,
    overwrite: bool = False,
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> RetargetResult:
    """Score every evaluated set of an experiment against new real targets (no rendering).

    Args:
        experiment_dir: The experiment to re-target (finished or not: its complete iterations).
        targets: Folder of the new real target images (at least 2).
        out: The new experiment folder.
        config: The config of the experiment that would be run instead (see
            :func:`retarget_config`); default: the experiment's own.
        device: Device to embed the targets on (the fingerprint must stay the same).
        dino_weights: Where the experiment's DINOv2 weights are now, if they moved.
        overwrite: Replace ``out`` if it holds an experiment.
        plots: Draw the plots and write ``report.html`` in ``out``.
        log: Called with one line per step (default: the module logger).

    Returns:
        The :class:`RetargetResult`; ``out`` holds the experiment folder and ``retarget.json``.

    Raises:
        UserInputError: A different embedder or render settings, ``out`` exists (without
            ``overwrite``) or is the experiment itself, unreadable target images.
        StateError: ``experiment_dir`` is not a readable experiment.
    """
    from bo_voids.pipeline import OptimizationPipeline

    say = log or logger.info
    t0 = time.perf_counter()
    src = load_experiment(experiment_dir)
    if not src.iterations:
        raise UserInputError(f"cannot re-target {src.root}: it has no complete iteration yet")
    out = Path(out)
    if out.resolve() == src.root.resolve():
        raise UserInputError(f"--out {out} is the experiment itself; choose a new folder")
    source_cfg = src.config.replace(max_iterations=len(src.iterations) - 1)
    fresh_cfg = retarget_config(
        source_cfg,
        targets,
        out,
        config=config.replace(max_iterations=source_cfg.max_iterations) if config else None,
        device=device,
        dino_weights=dino_weights,
    )
    cfg = fresh_cfg.replace(**REPLAY_SETTINGS)
    # the stored images are read from the source while --out is written (and maybe replaced)
    check_run_paths(cfg, extra={"the re-targeted experiment": src.root})
    space = SearchSpace.from_config(cfg)
    optimizer = ReplayOptimizer(space, [it.proposals for it in src.iterations], str(src.root))
    executor = StoredEvaluations(src, space)
    pipeline = OptimizationPipeline(
        cfg,
        overwrite=overwrite,
        log=logger.debug,
        optimizer=optimizer,
        executor=executor,
        plots=False,
    )
    stored = src.manifest.get("embedder") or {}
    now = pipeline.embedder_info
    if now.get("fingerprint") != stored.get("fingerprint"):
        raise UserInputError(
            f"cannot re-target {src.root}: its images were embedded with {stored.get('name')!r} "
            f"(fingerprint {stored.get('fingerprint')}), the embedder now resolves to "
            f"{now.get('name')!r} ({now.get('fingerprint')}); scores from different embedders "
            "must not be mixed. Give the experiment's embedder settings (--dino-weights, "
            "--device) or run a fresh experiment"
        )
    say(f"re-targeting {src.root} ({len(src.iterations)} iterations) against {targets}")
    t_setup = time.perf_counter()
    with warnings.catch_warnings():
        # the fresh re-score is declined on purpose every iteration: not a failure to report
        warnings.filterwarnings(
            "ignore",
            message=f".*{_FRESH_PREFIX}\\d+.*{re.escape(NOT_RENDERED)}",
            category=FallbackWarning,
        )
        pipeline.run_full_experiment()
    t_scored = time.perf_counter()
    assert pipeline.book is not None
    book = pipeline.book
    source_scores = _source_per_set(src)
    per_set = [
        {
            "uid": o.uid,
            "iteration": o.first_iteration,
            "dataset_type": o.dataset_type,
            "params": dict(o.params),
            "n_images": o.n_images,
            "mmd2": float(o.mmd2),
            "source_mmd2": source_scores.get(o.uid, math.nan),
        }
        for o in sorted(book.all_sets(), key=lambda o: (not math.isfinite(o.mmd2), o.mmd2))
    ]
    last = pipeline.scores[-1]
    n_targets = len(book.targets)
    pipeline.store.update_manifest(
        config=fresh_cfg.to_dict(),
        stop_reason=f"re-targeted: the {len(per_set)} evaluated sets of {src.root} scored "
        f"against {n_targets} images of {targets}",
        retargeted_from={
            "experiment_dir": str(src.root),
            "targets": str(targets),
            "embedder_fingerprint": stored.get("fingerprint"),
            "iterations": len(src.iterations),
        },
    )
    seconds = {
        "setup": t_setup - t0,
        "embed": float(pipeline.timings.get("embed", 0.0)),
        "score_and_write": t_scored - t_setup,
    }
    if plots:
        from bo_voids.plots import write_all_plots
        from bo_voids.report import write_report

        write_all_plots(out)
        write_report(out)
    seconds["plots_and_report"] = time.perf_counter() - t_scored if plots else 0.0
    seconds["total"] = time.perf_counter() - t0
    result = RetargetResult(
        experiment_dir=out,
        source_dir=src.root,
        targets=Path(targets),
        n_targets=n_targets,
        per_set=per_set,
        best=[dict(b) for b in last.best],
        distribution_similarity=last.distribution_similarity,
        noise_floor=dict(pipeline.noise_floor),
        seconds=seconds,
    )
    atomic_write_json(
        out / RETARGET_FILE,
        {
            "source": {
                "experiment_dir": str(src.root),
                "embedder": stored,
                "iterations": len(src.iterations),
                "status": src.manifest.get("status"),
            },
            "targets": str(targets),
            "n_targets": n_targets,
            "distribution_similarity": result.distribution_similarity,
            "noise_floor": result.noise_floor,
            "ranking": "raw MMD² against the new targets (no model was fitted)",
            "replay_settings": dict(REPLAY_SETTINGS),
            "best": result.best,
            "per_set": per_set,
            "seconds": seconds,
        },
    )
    say(
        f"re-targeted {len(per_set)} sets in {seconds['total']:.1f}s "
        f"(embedding {n_targets} targets {seconds['embed']:.1f}s) -> {out}"
    )
    return result


def _source_per_set(run: ExperimentRun) -> dict[str, float]:
    """Each set's final MMD² against the source's own targets (``per_set`` of ``scores.json``)."""
    out: dict[str, float] = {}
    for scores in run.scores:
        for rec in scores.per_set:
            value = rec.get("mmd2")
            out[str(rec.get("uid"))] = float(value) if value is not None else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser(prog: str = "python -m bo_voids.retarget") -> argparse.ArgumentParser:
    """The parser of ``bo-voids retarget``."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Score an experiment's evaluated parameter sets against new real target "
        "images without re-rendering them; writes a new experiment folder (report, plots, "
        "history.csv, retarget.json).",
    )
    p.add_argument("experiment_dir", type=Path, help="the experiment to re-target")
    p.add_argument("--targets", required=True, type=Path, help="folder of new real target images")
    p.add_argument("--out", required=True, type=Path, help="the new experiment folder")
    p.add_argument(
        "--config",
        type=Path,
        help="config of the experiment you would run instead (its scoring settings are used; "
        "its render settings must match the experiment's)",
    )
    p.add_argument("--device", help="device to embed the targets on (default: the experiment's)")
    p.add_argument("--dino-weights", type=Path, help="where the experiment's DINOv2 weights are")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-plots", action="store_true", help="skip plots/ and report.html")
    p.add_argument("--quiet", action="store_true", help="print only the new folder")
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.retarget") -> int:
    """Command line (see the module docstring); returns the exit code.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in the help.
    """
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    # user errors propagate to call_guarded (the one exit-code table of bo_voids.cli)
    config = load_config(args.config) if args.config else None
    result = retarget_experiment(
        args.experiment_dir,
        args.targets,
        args.out,
        config=config,
        device=args.device,
        dino_weights=args.dino_weights,
        overwrite=args.overwrite,
        plots=not args.no_plots,
    )
    if args.quiet:
        print(result.experiment_dir)
        return ExitCode.OK
    print(_summary(result))
    return ExitCode.OK


def _summary(result: RetargetResult) -> str:
    lines = [
        f"Re-targeted {len(result.per_set)} evaluated sets of {result.source_dir} against "
        f"{result.n_targets} images of {result.targets} in {result.seconds['total']:.1f}s "
        f"(embedding the targets {result.seconds['embed']:.1f}s; nothing rendered).",
        f"Distribution similarity (top-k pooled MMD²): {result.distribution_similarity:.4f}; "
        f"noise floor q95 {json_float(result.noise_floor.get('q95')):.4f}",
        "Best parameter sets against the new targets (MMD² new / old targets):",
    ]
    by_uid = {r["uid"]: r for r in result.per_set}
    for i, best in enumerate(result.best[:5], 1):
        rec = by_uid.get(best["uid"], {})
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best.get("params", {}).items()
        )
        lines.append(
            f"  {i}. {best['uid']}: {best['mmd2']:.4f} / "
            f"{float(rec.get('source_mmd2', math.nan)):.4f} | {params}"
        )
    lines.append(f"Outputs: {result.experiment_dir} (report.html, history.csv, retarget.json)")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(call_guarded(main, sys.argv[1:]))
