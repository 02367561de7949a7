"""Command line of a run: ``python -m bo_voids.optimize --config configs/experiment_config.yaml``.

The same command is ``bo-voids run`` (:mod:`bo_voids.cli`, which also holds the exit-code table:
0 success; 1 runtime failure, completed iterations kept: rerun with ``--resume``; 2 usage or
config error, the message names the key; 130 Ctrl-C and 143 ``SIGTERM``, both resumable).

While the run goes on it shows one line per iteration (live on a terminal, plain lines when
stderr is not one or with ``--quiet``; :mod:`bo_voids.progress`), appends ``events.jsonl`` to the
experiment folder, rewrites ``report.html`` after every iteration (:class:`ReportCallback`) and,
with ``--mlflow``, logs to MLflow (:mod:`bo_voids.tracking`). ``--log-file PATH`` keeps the same
lines plus debug detail (stage timings, warnings, tracebacks).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bo_voids.cli import ExitCode, Terminated, sigterm_as_interrupt
from bo_voids.config import (
    ACQUISITIONS,
    DEVICES,
    EMBEDDERS,
    NUISANCE_PREFIX,
    OPTIMIZERS,
    load_config,
)
from bo_voids.exceptions import BoVoidsError, BoVoidsWarning, ConfigError, UserInputError


def build_parser(prog: str = "python -m bo_voids.optimize") -> argparse.ArgumentParser:
    """The argument parser of ``python -m bo_voids.optimize`` (``bo-voids run``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Calibrate the synthetic void generator against real target images with "
        "Bayesian optimisation (BoTorch), persisting every iteration.",
    )
    p.add_argument("--config", required=True, type=Path, help="experiment YAML config")
    p.add_argument("--experiment-dir", type=Path, help="override experiment_dir")
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
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "experiment_dir": args.experiment_dir,
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


def format_summary(summary: Any) -> str:
    """A human-readable end-of-run summary."""
    lines = [
        "",
        f"Finished: {summary.iterations_completed} iteration(s); stopped because "
        f"{summary.stop_reason or 'the run ended'}.",
        f"Embedder: {summary.embedder.get('name')} ({summary.embedder.get('fingerprint')})",
    ]
    nf = summary.noise_floor
    if summary.scores:
        last = summary.scores[-1]
        lines.append(
            f"Distribution similarity (top-k pooled MMD²): {last.distribution_similarity:.4f}; "
            f"real-set noise floor {nf.get('mean', float('nan')):.4f} "
            f"± {nf.get('std', float('nan')):.4f}"
        )
    rec = summary.scores[-1].recommendation if summary.scores else None
    if rec is not None:
        first = next((s.recommendation for s in summary.scores if s.recommendation), rec)
        lines.append(
            f"Recommendation {rec.uid}: MMD² on {rec.fresh_images} fresh images "
            f"{rec.fresh_mmd2:.4f} (in sample {rec.mmd2_in_sample:.4f}; iteration 0's "
            f"recommendation scored {first.fresh_mmd2:.4f} fresh) — the number to trust"
        )
    lines.append("Best parameter sets:")
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
        pred_s = f", predicted {pred:.4f}" if isinstance(pred, float) else ""
        lines.append(
            f"  {i}. {best.get('param_set_id')}: MMD² {best.get('mmd2', float('nan')):.4f}"
            f"{pred_s} | {params}"
        )
    t = summary.timings
    lines.append(
        "Time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if isinstance(v, float))
    )
    lines.append(f"Outputs: {summary.experiment_dir} (history.csv, plots/, report.html)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.optimize") -> int:
    """Run the CLI; returns the exit code (:class:`~bo_voids.cli.ExitCode`).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in the help (``bo-voids run`` from :mod:`bo_voids.cli`).
    """
    args = build_parser(prog).parse_args(argv)
    live = not args.quiet and sys.stderr.isatty()
    log = logging.getLogger("bo_voids.optimize")
    with _logging(quiet=args.quiet, live=live, log_file=args.log_file):
        try:
            cfg = load_config(args.config, overrides=_overrides(args))
        except ConfigError as exc:
            print(f"config error: {exc}", file=sys.stderr)
            return ExitCode.USAGE
        t0 = time.perf_counter()
        with sigterm_as_interrupt():
            return _run(args, cfg, log, t0, live)


@contextlib.contextmanager
def _logging(*, quiet: bool, live: bool, log_file: Path | None) -> Iterator[None]:
    """Console (and file) logging for one run; the previous setup is restored afterwards.

    The console shows the pipeline's lines (``--quiet``: warnings and errors only); on a terminal
    they are printed above the live line, which :class:`~bo_voids.progress.ProgressLine` draws
    itself. The log file gets every line of the package at debug level, the progress lines and
    stage timings included.
    """
    from bo_voids.progress import TqdmLoggingHandler

    root = logging.getLogger()
    package = logging.getLogger("bo_voids")
    saved = (root.level, package.level, warnings.formatwarning)
    console: logging.Handler = (
        TqdmLoggingHandler(sys.stderr) if live else logging.StreamHandler(sys.stderr)
    )
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    handlers = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        file_handler.setLevel(logging.DEBUG)
        handlers.append(file_handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    package.setLevel(logging.DEBUG if log_file is not None else logging.INFO)
    warnings.simplefilter("always", BoVoidsWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}"  # type: ignore[assignment]
    logging.captureWarnings(True)  # warnings print above the live line and reach the log file
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(saved[0])
        package.setLevel(saved[1])
        warnings.formatwarning = saved[2]  # type: ignore[assignment]


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
        _start(callbacks)
        try:
            summary = pipeline.run_full_experiment()
        finally:
            _close_progress(callbacks)
        _finish(callbacks, "FINISHED")
    except KeyboardInterrupt as exc:
        _mark(pipeline, "interrupted")
        _finish(callbacks, "KILLED")
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"\n{what}: completed iterations are kept in {cfg.experiment_dir}; continue with "
            "--resume",
            file=sys.stderr,
        )
        return ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED
    except UserInputError as exc:
        _finish(callbacks, "FAILED")
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except BoVoidsError as exc:
        _mark(pipeline, "failed", str(exc))
        _finish(callbacks, "FAILED")
        print(
            f"error: {exc}\ncompleted iterations are kept in {cfg.experiment_dir}; fix the cause "
            "and continue with --resume",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    except Exception as exc:  # an unexpected failure: keep the traceback for the bug report
        _mark(pipeline, "failed", repr(exc))
        log.exception("unexpected failure")
        _finish(callbacks, "FAILED")
        print(
            f"error: {type(exc).__name__}: {exc}\ncompleted iterations are kept in "
            f"{cfg.experiment_dir}; continue with --resume",
            file=sys.stderr,
        )
        return ExitCode.FAILURE
    print(format_summary(summary))
    print(f"Wall time {time.perf_counter() - t0:.1f}s")
    return ExitCode.OK


def _start(callbacks: Sequence[Any]) -> None:
    for cb in callbacks:
        start = getattr(cb, "start", None)
        if callable(start):
            start()


def _close_progress(callbacks: Sequence[Any]) -> None:
    from bo_voids.progress import ProgressLine

    for cb in callbacks:
        if isinstance(cb, ProgressLine):
            cb.close()


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
    sys.exit(main())
