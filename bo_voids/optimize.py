"""Command line of a run: ``python -m bo_voids.optimize --config configs/experiment_config.yaml``.

The same command is ``bo-voids run`` (:mod:`bo_voids.cli`, which also holds the exit-code table:
0 success; 1 runtime failure, completed iterations kept: rerun with ``--resume``; 2 usage or
config error, the message names the key; 130 Ctrl-C and 143 ``SIGTERM``, both resumable).

While the run goes on it shows one line per iteration (live on a terminal, plain lines when
stderr is not one or with ``--quiet``; :mod:`bo_voids.progress`), appends ``events.jsonl`` to the
experiment folder, rewrites ``report.html`` after every iteration (:class:`ReportCallback`) and,
with ``--mlflow``, logs to MLflow (:mod:`bo_voids.tracking`). ``--log-file PATH`` keeps the same
lines plus debug detail (stage timings, warnings, tracebacks).

Before any work every path is checked (:mod:`bo_voids.ownership`: no input or log file inside
the experiment folder, no folder that is a file) and the tracker is validated and probed with a
short timeout (an unreachable one is a warning, or exit 2 with ``--strict-tracking``). A failure
is one line on the terminal (:func:`bo_voids.cli.report_failure`); ``--debug`` adds its
traceback, which the log file always gets.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bo_voids.cli import (
    ExitCode,
    Terminated,
    report_failure,
    run_module,
    set_debug,
    sigterm_as_interrupt,
)
from bo_voids.config import (
    ACQUISITIONS,
    DEVICES,
    EMBEDDERS,
    NUISANCE_PREFIX,
    OPTIMIZERS,
    ExperimentConfig,
    load_config,
)
from bo_voids.exceptions import (
    BoVoidsError,
    BoVoidsWarning,
    ConfigError,
    DamagedFileError,
    TrackerUnavailableError,
    UserInputError,
)
from bo_voids.ownership import check_log_file, check_run_paths
from bo_voids.run_events import RunSummary


def build_parser(prog: str = "python -m bo_voids.optimize") -> argparse.ArgumentParser:
    """The argument parser of ``python -m bo_voids.optimize`` (``bo-voids run``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Calibrate the synthetic void generator against real target images with "
        "Bayesian optimisation (BoTorch), persisting every iteration.",
    )
    p.add_argument("--config", required=True, type=Path, help="experiment YAML config")
    p.add_argument("--experiment-dir", type=Path, help="override experiment_dir")
    p.add_argument(
        "--targets",
        type=Path,
        metavar="DIR",
        help="a folder of real target images (overrides target_image_dir; relative to the "
        "current directory)",
    )
    p.add_argument("--max-iterations", type=int, help="override max_iterations")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="override optimizer")
    p.add_argument("--acquisition", choices=ACQUISITIONS, help="override acquisition_function")
    p.add_argument("--embedder", choices=EMBEDDERS, help="override embedder")
    p.add_argument("--dino-weights", type=Path, help="local DINOv2 weights (HF folder or .pth)")
    p.add_argument("--device", choices=DEVICES, help="override device")
    p.add_argument("--seed", type=int, help="override seed")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an interrupted experiment")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing experiment")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no live line: one plain progress line per iteration, warnings, errors and the "
        "final summary",
    )
    p.add_argument(
        "--log-file", type=Path, help="also write every line, plus debug detail, to this file"
    )
    p.add_argument(
        "--no-report", action="store_true", help="do not write report.html (during or after)"
    )
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="TRACKING_URI",
        help="log params, metrics and artefacts to MLflow (default store: ./mlruns; needs "
        "pip install -e '.[mlflow]')",
    )
    p.add_argument("--mlflow-experiment", help="MLflow experiment name (default: experiment_name)")
    p.add_argument(
        "--strict-tracking",
        action="store_true",
        help="stop with exit 2 before any work when the tracker cannot be reached (default: a "
        "warning, and the run goes on untracked)",
    )
    p.add_argument(
        "--debug", action="store_true", help="also show tracebacks on the terminal (see --log-file)"
    )
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "experiment_dir": args.experiment_dir,
        "target_image_dir": args.targets,
        "max_iterations": args.max_iterations,
        "optimizer": args.optimizer,
        "acquisition_function": args.acquisition,
        "embedder": args.embedder,
        "dino_weights": args.dino_weights,
        "device": args.device,
        "seed": args.seed,
    }
    return {k: str(v) if isinstance(v, Path) else v for k, v in pairs.items() if v is not None}


def _fmt_param(name: str, value: Any) -> str:
    return f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"


def format_summary(summary: RunSummary, config: ExperimentConfig | None = None) -> str:
    """A human-readable end-of-run summary: the answer (verdict, ψ) first, then the details.

    Args:
        summary: The run's :class:`~bo_voids.pipeline.RunSummary`.
        config: Its config (names the model's ranking score; default: the composite GP's).
    """
    from bo_voids.answer import answer_lines, verdict_warning

    lines = [
        "",
        f"Finished: {summary.iterations_completed} iteration(s); stopped because "
        f"{summary.stop_reason or 'the run ended'}.",
        f"Embedder: {summary.embedder.get('name')} ({summary.embedder.get('fingerprint')})",
    ]
    calibration = getattr(summary, "calibration", None)
    if calibration:
        lines += answer_lines(calibration)
    if summary.scores:
        last = summary.scores[-1]
        lines.append(
            f"Distribution similarity (top-k pooled MMD²): {last.distribution_similarity:.4f}"
        )
        threshold = last.stop_threshold or summary.noise_floor.get("stop_threshold")
        if threshold and isinstance(threshold, Mapping):
            lines.append(f"Stop rule: {threshold.get('description')}")
    rec = summary.scores[-1].recommendation if summary.scores else None
    if rec is not None:
        first = next((s.recommendation for s in summary.scores if s.recommendation), rec)
        lines.append(
            f"Recommendation {rec.uid}: MMD² on {rec.fresh_images} fresh images "
            f"{rec.fresh_mmd2:.4f} (in sample {rec.mmd2_in_sample:.4f}; iteration 0's "
            f"recommendation scored {first.fresh_mmd2:.4f} fresh) — the number to trust"
        )
    ranking = summary.scores[-1].ranking if summary.scores else "raw"
    score_name = _ranking_score_name(ranking, config)
    lines.append(
        "Best parameter sets (ranked by the model):"
        if ranking == "model"
        else "Best parameter sets (ranked by raw MMD²):"
    )
    for i, best in enumerate(summary.current_best[:5], 1):
        items = best.get("params", {}).items()
        params = ", ".join(_fmt_param(k, v) for k, v in items if not k.startswith(NUISANCE_PREFIX))
        imaging = [
            _fmt_param(k[len(NUISANCE_PREFIX) :], v)
            for k, v in items
            if k.startswith(NUISANCE_PREFIX)
        ]
        if imaging:  # the detector's nuisance values, reported apart from the design's answer
            params += " || imaging: " + ", ".join(imaging)
        pred = best.get("predicted_mmd2")
        pred_s = f", {score_name} {pred:.4f}" if score_name and isinstance(pred, float) else ""
        lines.append(
            f"  {i}. {best.get('param_set_id')}: raw MMD² {best.get('mmd2', float('nan')):.4f}"
            f"{pred_s} | {params}"
        )
    t = summary.timings
    lines.append(
        "Time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if isinstance(v, float))
    )
    lines.append(f"Outputs: {summary.experiment_dir} (history.csv, plots/, report.html)")
    warning = verdict_warning(calibration) if calibration else None
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def _ranking_score_name(ranking: str, config: Any) -> str | None:
    """The summary's name for a best set's ``predicted_mmd2`` (``None``: raw ranking)."""
    if ranking != "model":
        return None
    surrogate = getattr(getattr(config, "bo", None), "surrogate", "composite")
    return "model distance (not MMD²)" if surrogate == "composite" else "predicted MMD²"


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.optimize") -> int:
    """Run the CLI; returns the exit code (:class:`~bo_voids.cli.ExitCode`).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in the help (``bo-voids run`` from :mod:`bo_voids.cli`).
    """
    args = build_parser(prog).parse_args(argv)
    if args.debug:
        set_debug()
    live = not args.quiet and sys.stderr.isatty()
    log = logging.getLogger("bo_voids.optimize")
    with _logging(quiet=args.quiet, live=live) as attach_log_file:
        try:
            if args.log_file is not None:
                check_log_file(args.log_file)
            cfg = load_config(args.config, overrides=_overrides(args))
            store = None
            if args.mlflow is not None:  # a malformed URI stops here, before any import
                from bo_voids.tracking import local_store

                store = local_store(args.mlflow)
            # every path checked before the log file is opened or anything else is written
            check_run_paths(
                cfg,
                config_path=args.config,
                log_file=args.log_file,
                extra={"the MLflow store": store} if store is not None else None,
            )
            if args.log_file is not None:
                attach_log_file(args.log_file)
        except ConfigError as exc:
            return report_failure(exc)
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            return _run(args, cfg, log, t0, live)


class _ConsoleFilter(logging.Filter):
    """The terminal shows bo_voids' lines and warnings; other libraries' go to the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return name == "py.warnings" or name == "bo_voids" or name.startswith("bo_voids.")


@contextlib.contextmanager
def _logging(*, quiet: bool, live: bool) -> Iterator[Any]:
    """Console (and file) logging for one run; the previous setup is restored afterwards.

    The console shows the pipeline's lines (``--quiet``: warnings and errors only); on a terminal
    they are printed above the live line, which :class:`~bo_voids.progress.ProgressLine` draws
    itself. Other libraries' log lines (an HTTP client's retries, ...) stay off the terminal.

    Yields:
        ``attach(path)``, which adds the log file: every line of the package at debug level, the
        progress lines, stage timings and tracebacks included, and other libraries' lines.

    Raises:
        ConfigError: From ``attach``, when the log file cannot be opened.
    """
    from bo_voids.progress import TqdmLoggingHandler

    root = logging.getLogger()
    package = logging.getLogger("bo_voids")
    py_warnings = logging.getLogger("py.warnings")
    saved = (root.level, package.level, warnings.showwarning, py_warnings.level)
    console: logging.Handler = (
        TqdmLoggingHandler(sys.stderr) if live else logging.StreamHandler(sys.stderr)
    )
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.addFilter(_ConsoleFilter())
    handlers: list[logging.Handler] = [console]

    def attach(log_file: Path) -> None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--log-file: cannot open {log_file}: {exc.strerror or exc}") from exc
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
        root.addHandler(file_handler)
        package.setLevel(logging.DEBUG)
        py_warnings.setLevel(logging.DEBUG)  # routine numerical notes reach the file only

    root.addHandler(console)
    root.setLevel(logging.INFO)
    package.setLevel(logging.INFO)
    warnings.simplefilter("always", BoVoidsWarning)
    # warnings print above the live line and reach the log file; routine numerical notes of the
    # GP libraries go to the log file only
    warnings.showwarning = _log_warning
    try:
        yield attach
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[0])
        package.setLevel(saved[1])
        warnings.showwarning = saved[2]
        py_warnings.setLevel(saved[3])


#: Warning classes that are routine numerical notes (GPyTorch adding jitter to a Cholesky
#: factorisation): logged at debug level, so they reach ``--log-file`` but not the terminal.
_ROUTINE_WARNINGS: tuple[tuple[str, str], ...] = (
    ("linear_operator", "NumericalWarning"),
    ("gpytorch", "NumericalWarning"),
)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for a run: every warning becomes a ``py.warnings`` log record."""
    routine = any(
        category.__module__.startswith(module) and category.__name__ == name
        for module, name in _ROUTINE_WARNINGS
    )
    logging.getLogger("py.warnings").log(
        logging.DEBUG if routine else logging.WARNING, "warning: %s", message
    )


def _callbacks(args: argparse.Namespace, cfg: Any, live: bool) -> list[Any]:
    """Events log, progress line, per-iteration report and the optional MLflow logger."""
    from bo_voids.progress import EventLog, ProgressLine

    callbacks: list[Any] = [EventLog(), ProgressLine(cfg.max_iterations, live=live)]
    if not args.no_report:
        from bo_voids.report import ReportCallback

        callbacks.append(ReportCallback())
    if args.mlflow is not None:
        from bo_voids.tracking import MLflowCallback

        callbacks.append(
            MLflowCallback(
                tracking_uri=args.mlflow or None,
                experiment_name=args.mlflow_experiment or cfg.experiment_name,
            )
        )
    return callbacks


def _run(
    args: argparse.Namespace, cfg: Any, log: logging.Logger, t0: float, live: bool = False
) -> int:
    from bo_voids.pipeline import OptimizationPipeline
    from bo_voids.progress import attach_stage_hook

    pipeline = None
    callbacks: list[Any] = []
    try:
        callbacks = _callbacks(args, cfg, live)
        pipeline = OptimizationPipeline(
            cfg,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=False,  # the progress line shows the stage; no nested per-image bars
            log=log.info,
            callbacks=callbacks,
        )
        attach_stage_hook(pipeline, *(cb for cb in callbacks if hasattr(cb, "on_stage")))
        callbacks = _start(callbacks, strict=args.strict_tracking)
        pipeline.callbacks = list(callbacks)  # an unreachable tracker is left out
        ending = "failed"
        try:
            summary = pipeline.run_full_experiment()
            ending = "done"
        except KeyboardInterrupt:
            ending = "interrupted"
            raise
        finally:
            _close_progress(callbacks, ending)
        _finish(callbacks, "FINISHED")
    except KeyboardInterrupt as exc:
        _mark(pipeline, "interrupted")
        _finish(callbacks, "KILLED")
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        if _opened(pipeline):
            print(f"\n{what}: {_kept(pipeline, cfg)}", file=sys.stderr)
        else:
            print(f"\n{what} before the experiment was opened; nothing was kept", file=sys.stderr)
        return ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
    except Exception as exc:  # one line on the terminal; the traceback to the log file
        user_error = isinstance(exc, UserInputError)
        if not user_error:
            _mark(pipeline, "failed", str(exc) if isinstance(exc, BoVoidsError) else repr(exc))
        _finish(callbacks, "FAILED")
        hint = ""
        if isinstance(exc, DamagedFileError):  # resuming as it is cannot help
            hint = (
                "the experiment cannot be continued as it is: restore that file, or move the "
                "iteration folder holding it (and later ones) out to resume from the one before, "
                "or start again with --overwrite"
            )
        elif _opened(pipeline) and not user_error:
            hint = _kept(pipeline, cfg, "fix the cause and ")
        return report_failure(exc, hint=hint)
    if not getattr(pipeline, "already_complete", False):
        print(format_summary(summary, cfg))
    print(f"Wall time {time.perf_counter() - t0:.1f}s")
    return ExitCode.OK


def _kept(pipeline: Any, cfg: Any, before: str = "") -> str:
    """What a run this process opened left behind, and how to go on (only what is true)."""
    done = len(getattr(pipeline, "records", []) or [])
    if done == 0:
        return (
            f"no iteration was completed (iteration 0 was under way); {before}run again with "
            "--resume to start iteration 0 again"
        )
    return (
        f"iterations 0-{done - 1} are kept in {cfg.experiment_dir}; {before}continue with --resume"
    )


def _start(callbacks: Sequence[Any], *, strict: bool = False) -> list[Any]:
    """Start the callbacks; returns those to keep.

    A tracker that cannot be reached is left out with one warning line, so the run goes on
    untracked; with ``strict`` it stops the run before any work instead (exit 2).
    """
    kept = []
    for cb in callbacks:
        start = getattr(cb, "start", None)
        if callable(start):
            try:
                start()
            except TrackerUnavailableError as exc:
                if strict:
                    raise ConfigError(f"{exc} (--strict-tracking: nothing was run)") from exc
                logging.getLogger("bo_voids.optimize").warning(
                    "warning: %s; the run goes on without tracking (--strict-tracking stops "
                    "instead)",
                    exc,
                )
                continue
        kept.append(cb)
    return kept


def _opened(pipeline: Any) -> bool:
    """Whether this run created or resumed the experiment (so that --resume can continue it)."""
    return bool(getattr(pipeline, "store_opened", False))


def _close_progress(callbacks: Sequence[Any], ending: str = "done") -> None:
    from bo_voids.progress import ProgressLine

    for cb in callbacks:
        if isinstance(cb, ProgressLine):
            cb.close(ending)


def _finish(callbacks: Sequence[Any], status: str) -> None:
    """End what the callbacks keep open: the final report, then the tracker runs.

    The report of a stopped run says how it stopped instead of "running"; a failing report or
    tracker is a warning, never another exit code (the run itself is saved).
    """
    for cb in callbacks:
        finish = getattr(cb, "finish", None)
        if not callable(finish):
            continue
        try:
            finish(status=status)
        except Exception as exc:
            print(
                f"warning: {type(cb).__name__} could not finish ({type(exc).__name__}: {exc})",
                file=sys.stderr,
            )


def _mark(pipeline: Any, status: str, error: str | None = None) -> None:
    """Record a failed / interrupted status in the manifest of the experiment this run opened.

    An experiment this process never opened (refused, locked by another process, or failing
    before it was opened) is left untouched.
    """
    if pipeline is None or not getattr(pipeline, "store_opened", False):
        return
    if not pipeline.store.exists():
        return
    try:
        fields: dict[str, Any] = {"status": status}
        if error:
            fields["error"] = error
        pipeline.store.update_manifest(**fields)
    except BoVoidsError:
        pass


if __name__ == "__main__":  # pragma: no cover
    run_module(main)
