"""Command line: ``python -m bo_voids.optimize --config configs/experiment_config.yaml``.

Exit codes: 0 success; 1 runtime failure (completed iterations are kept: rerun with ``--resume``);
2 usage or config error (the message names the key); 130 interrupted by Ctrl-C and 143 stopped by
``SIGTERM`` (e.g. a batch scheduler ending the job), both resumable.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bo_voids.config import ACQUISITIONS, DEVICES, EMBEDDERS, OPTIMIZERS, load_config
from bo_voids.exceptions import BoVoidsError, BoVoidsWarning, ConfigError, UserInputError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` received: stop like Ctrl-C (partial iteration removed, lock released)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn ``SIGTERM`` into :class:`Terminated` while the run lasts (main thread only)."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m bo_voids.optimize``."""
    p = argparse.ArgumentParser(
        prog="python -m bo_voids.optimize",
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
    p.add_argument("--quiet", action="store_true", help="only errors and the final summary")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
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
            f"Distribution similarity (top-k pooled MMD²): {last['distribution_similarity']:.4f}; "
            f"real-set noise floor {nf.get('mean', float('nan')):.4f} "
            f"± {nf.get('std', float('nan')):.4f}"
        )
    rec = (summary.scores[-1].get("recommendation") or {}) if summary.scores else {}
    if rec:
        first = next((s["recommendation"] for s in summary.scores if s.get("recommendation")), rec)
        lines.append(
            f"Recommendation {rec['uid']}: MMD² on {rec['fresh_images']} fresh images "
            f"{rec['fresh_mmd2']:.4f} (in sample {rec['mmd2_in_sample']:.4f}; iteration 0's "
            f"recommendation scored {first['fresh_mmd2']:.4f} fresh) — the number to trust"
        )
    lines.append("Best parameter sets:")
    for i, best in enumerate(summary.current_best[:5], 1):
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in best.get("params", {}).items()
        )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    warnings.simplefilter("always", BoVoidsWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"  # type: ignore[assignment]
    log = logging.getLogger("bo_voids.optimize")
    try:
        cfg = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    t0 = time.perf_counter()
    with _sigterm_as_interrupt():
        return _run(args, cfg, log, t0)


def _run(args: argparse.Namespace, cfg: Any, log: logging.Logger, t0: float) -> int:
    from bo_voids.pipeline import OptimizationPipeline

    pipeline = None
    try:
        pipeline = OptimizationPipeline(
            cfg,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.quiet and sys.stderr.isatty(),
            log=log.info,
        )
        summary = pipeline.run_full_experiment()
        if not args.no_report:
            from bo_voids.report import write_report

            try:
                write_report(summary.experiment_dir)
            except Exception as exc:  # the run is complete and saved: a report never fails it
                print(
                    f"warning: the HTML report could not be written ({type(exc).__name__}: "
                    f"{exc}); rebuild it later with python -m bo_voids.report",
                    file=sys.stderr,
                )
    except KeyboardInterrupt as exc:
        _mark(pipeline, "interrupted")
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"\n{what}: completed iterations are kept in {cfg.experiment_dir}; continue with "
            "--resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BoVoidsError as exc:
        _mark(pipeline, "failed", str(exc))
        print(
            f"error: {exc}\ncompleted iterations are kept in {cfg.experiment_dir}; fix the cause "
            "and continue with --resume",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except Exception as exc:  # an unexpected failure: keep the traceback for the bug report
        _mark(pipeline, "failed", repr(exc))
        log.exception("unexpected failure")
        print(
            f"error: {type(exc).__name__}: {exc}\ncompleted iterations are kept in "
            f"{cfg.experiment_dir}; continue with --resume",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(format_summary(summary))
    print(f"Wall time {time.perf_counter() - t0:.1f}s")
    return EXIT_OK


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
