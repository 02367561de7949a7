"""Progress a person and a program can read: a live line, plain log lines and ``events.jsonl``.

Two per-iteration callbacks (see :class:`~bo_voids.run_events.IterationEvent`) and a stage hook:

* :class:`ProgressLine` — one line per iteration: ``iteration k/N``, the recommendation's score on
  fresh images and in sample, the stage being run and an ETA. Iteration 0 renders the initial
  design and times the null band, so it is not typical: while it runs the line shows the time
  elapsed; once it is done the ETA scales its measured render + embed time to a later
  iteration's image count (without the null band); from iteration 1 on it is the mean measured
  time of the iterations after iteration 0. The stages after the last iteration
  (``calibrate``, ``final plots``) are shown too, and the bar is full when the run ends
  (``done``) or says ``interrupted``. On a terminal it is a live ``tqdm`` line updated in place;
  otherwise (a log file, ``2> log``, CI) it prints one plain, grep-able line per iteration. Every
  line also goes to the ``bo_voids.progress`` logger at debug level, with the stage timings,
  for ``--log-file``.
* :class:`EventLog` — ``events.jsonl`` in the experiment folder: one JSON object per iteration
  (scores, recommendation, next batch, per-stage seconds) that other tools can tail. Each line is
  written with one ``write`` of the whole line and its newline, then flushed and fsync'ed, so a
  crash leaves at worst a last line without its newline, which :func:`read_events` skips. On
  resume the file is first rewritten to exactly the persisted iterations (complete lines kept,
  missing ones rebuilt from ``scores.json``), so no iteration is ever listed twice.
* :func:`attach_stage_hook` — tells listeners (``ProgressLine.on_stage``) which stage of the
  loop runs (the stages of :meth:`~bo_voids.pipeline.OptimizationPipeline.add_stage_listener`:
  ``render+embed``, ``null band``, ``propose``, ``fresh score``, ``write``, ``commit``,
  ``history``, ``plot``, ``callbacks``, then ``calibrate`` and ``final plots`` after the last one).

Example:
    >>> line, events = ProgressLine(), EventLog()  # doctest: +SKIP
    >>> pipeline = OptimizationPipeline(cfg, callbacks=[events, line])  # doctest: +SKIP
    >>> attach_stage_hook(pipeline, line)  # doctest: +SKIP
    >>> with line:  # doctest: +SKIP
    ...     pipeline.run_full_experiment()
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bo_voids._io import atomic_write_text, read_jsonl, to_jsonable
from bo_voids._types import JsonObject
from bo_voids.exceptions import StateError

if TYPE_CHECKING:  # the pipeline calls this module; only its types are needed here
    from bo_voids.pipeline import OptimizationPipeline
    from bo_voids.run_events import IterationEvent
    from bo_voids.run_scores import RunScores
    from bo_voids.state import IterationRecord

__all__ = [
    "EVENTS_FILE",
    "EventLog",
    "ProgressLine",
    "StageListener",
    "TqdmLoggingHandler",
    "attach_stage_hook",
    "event_record",
    "format_duration",
    "read_events",
]

logger = logging.getLogger(__name__)

#: File name of the machine-readable event log inside the experiment folder.
EVENTS_FILE = "events.jsonl"

#: Characters of the bar in the live line.
_BAR_WIDTH = 12
#: Stages that run once after the last iteration (no ETA: the elapsed time is shown).
_FINAL_STAGES = frozenset({"calibrate", "final plots"})


@runtime_checkable
class StageListener(Protocol):
    """Anything told when a stage of the loop starts."""

    def on_stage(self, stage: str, iteration: int) -> None:
        """Stage ``stage`` of iteration ``iteration`` starts."""


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m07s``, ``2h05m`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _score(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{v:.4f}" if math.isfinite(v) else "—"


def _score_fields(scores: RunScores) -> dict[str, Any]:
    """The ``scores``, ``best`` and ``recommendation`` fields of an ``events.jsonl`` record."""
    return {
        # the scalar run-level scores (the nested per-set records and rankings left out)
        "scores": {
            k: v
            for k, v in scores.to_dict().items()
            if v is None or (isinstance(v, str | int | float) and not isinstance(v, bool))
        },
        "best": [
            {k: b.get(k) for k in ("uid", "params", "mmd2", "predicted_mmd2", "n_images")}
            for b in scores.best
        ],
        "recommendation": scores.recommendation.to_dict() if scores.recommendation else None,
    }


def _later_iteration_estimate(
    seconds0: float, timings: Mapping[str, float], event: Any
) -> float | None:
    """Seconds a later iteration should take, from iteration 0's measurements.

    Iteration 0 also times the null band, which later iterations skip, and renders the whole
    initial design; its render + embed time is scaled per image to a later iteration's images
    (the batch's replications plus the recommendation's fresh images).

    Args:
        seconds0: Wall time of iteration 0.
        timings: Cumulative seconds per stage after iteration 0.
        event: Iteration 0's event (its config and record give the image counts).

    Returns:
        The estimate, or ``None`` when the pipeline does not say enough.
    """
    try:
        cfg = event.config
        images0 = len(event.records[0].metadata)
        fresh = int(cfg.metric.fresh_images)
        later = int(cfg.iteration_batch_size) * int(cfg.replications_per_iteration) + fresh
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    render_embed = float(timings.get("render", 0.0)) + float(timings.get("embed", 0.0))
    fixed = max(seconds0 - render_embed - float(timings.get("null_band", 0.0)), 0.0)
    return fixed + render_embed * later / max(images0 + fresh, 1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# events.jsonl
# ---------------------------------------------------------------------------------------------


def event_record(
    event: IterationEvent,
    *,
    wall_seconds: float | None = None,
    stage_seconds: Mapping[str, float] | None = None,
) -> JsonObject:
    """The ``events.jsonl`` record of one :class:`~bo_voids.run_events.IterationEvent`.

    Args:
        event: The event.
        wall_seconds: Wall time of the iteration, when measured.
        stage_seconds: Seconds spent per stage in this iteration, when measured.

    Returns:
        ``{"event": "iteration", "iteration", "max_iterations", "time", "wall_seconds",
        "timings" (cumulative seconds per stage), "stage_seconds", "scores" (the scalar
        run-level scores), "best" (the ranked best sets), "recommendation" (its fresh and
        in-sample score), "next_params"}``.
    """
    return {
        "event": "iteration",
        "iteration": int(event.iteration),
        "max_iterations": int(event.max_iterations),
        "time": _now(),
        "wall_seconds": wall_seconds,
        "timings": dict(event.timings),
        "stage_seconds": dict(stage_seconds) if stage_seconds is not None else None,
        **_score_fields(event.scores),
        "next_params": [dict(p) for p in event.proposal.next_params],
    }


def _rebuilt_record(record: IterationRecord) -> dict[str, Any]:
    """A record for a persisted iteration whose line was never written (a crash in between)."""
    proposals = record.proposals or {}
    return {
        "event": "iteration",
        "iteration": record.iteration,
        "max_iterations": None,
        "time": None,
        "wall_seconds": None,
        "timings": None,
        "stage_seconds": None,
        **_score_fields(record.scores),
        "next_params": list(proposals.get("next_params") or []),
        "rebuilt": True,
    }


def _dumps(record: Mapping[str, Any]) -> str:
    """One JSON line (NaN and inf stored as ``null``, as in every JSON file of a run)."""
    return json.dumps(to_jsonable(record), allow_nan=False, separators=(",", ":")) + "\n"


def read_events(path: str | Path) -> list[JsonObject]:
    """The records of an ``events.jsonl`` (a running experiment's too).

    A last line without its newline (being written, or cut by a crash) and any line that is not a
    UTF-8 JSON object are skipped (:func:`bo_voids._io.read_jsonl`; a resume rewrites the file).

    Args:
        path: The ``events.jsonl`` file, or the experiment folder holding it.

    Returns:
        The records, in file order (``[]`` when the file does not exist).
    """
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    return read_jsonl(path).records


def _append_line(path: Path, line: str) -> None:
    """Append one line with a single ``write`` (then fsync) so readers never see it half-done."""
    data = line.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (full disk, signal): finish the line
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot append to {path}: {exc.strerror or exc}") from exc


class EventLog:
    """Callback writing ``events.jsonl`` (see the module docstring).

    Args:
        path: The file (default: ``events.jsonl`` in the event's experiment folder).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._t_last: float | None = None
        self._last_timings: dict[str, float] = {}
        self._reconciled = False

    def start(self) -> None:
        """Start the clock of the first iteration (call just before the run)."""
        self._t_last = time.perf_counter()

    def __call__(self, event: IterationEvent) -> None:
        """Append the record of a persisted iteration."""
        path = self.path or Path(event.experiment_dir) / EVENTS_FILE
        if not self._reconciled:
            self._reconcile(path, event)
            self._reconciled = True
        now = time.perf_counter()
        wall = now - self._t_last if self._t_last is not None else None
        self._t_last = now
        timings = {k: float(v) for k, v in event.timings.items()}
        stage = {k: v - self._last_timings.get(k, 0.0) for k, v in timings.items()}
        self._last_timings = timings
        _append_line(path, _dumps(event_record(event, wall_seconds=wall, stage_seconds=stage)))

    def _reconcile(self, path: Path, event: IterationEvent) -> None:
        """Make the file list exactly the iterations before ``event.iteration``, once per run.

        A fresh run finds no file. A resumed run keeps the complete lines of iterations it has
        persisted, drops a cut last line and lines of iterations it no longer has, and rebuilds
        the lines of persisted iterations that were never logged (a crash between the iteration
        and its line).
        """
        existing = read_events(path)
        first = int(event.iteration)
        kept: dict[int, JsonObject] = {}
        for rec in existing:
            it = rec.get("iteration")
            if isinstance(it, int) and 0 <= it < first and it not in kept:
                kept[it] = rec
        for record in event.records:
            it = record.iteration
            if it < first and it not in kept:
                kept[it] = _rebuilt_record(record)
        text = "".join(_dumps(kept[it]) for it in sorted(kept))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if raw != text.encode("utf-8"):  # damaged lines dropped, missing ones rebuilt
            atomic_write_text(path, text)


# ---------------------------------------------------------------------------------------------
# The live / plain line
# ---------------------------------------------------------------------------------------------


class ProgressLine:
    """Callback showing one line per iteration, live on a terminal, plain otherwise.

    Args:
        max_iterations: The budget shown as ``N`` until the first event says it.
        live: ``True`` for a live ``tqdm`` line, ``False`` for plain lines; default: whether
            ``stream`` is a terminal.
        stream: Where the line goes (default: ``sys.stderr`` at construction); ``None`` shows
            nothing (the lines still go to the ``bo_voids.progress`` logger, at debug level).
    """

    def __init__(
        self,
        max_iterations: int | None = None,
        *,
        live: bool | None = None,
        stream: IO[str] | Literal["stderr"] | None = "stderr",
    ) -> None:
        self.max_iterations = max_iterations
        # sys.stderr is looked up now, not at import: it may have been redirected since
        stream = sys.stderr if stream == "stderr" else stream
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.live = bool(live if live is not None else (stream is not None and isatty and isatty()))
        self.stage = "starting"
        self._iteration = -1
        self._t0: float | None = None
        self._t_last: float | None = None
        self._durations: dict[int, float] = {}
        self._timings: dict[str, float] = {}
        self._scores: RunScores | None = None
        self._bar: Any = None
        #: Estimated seconds of an iteration after iteration 0, before one is measured.
        self._estimate: float | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock (and the live line); called by ``with`` or before the run."""
        self._t0 = self._t_last = time.perf_counter()
        if self.live and self._bar is None:
            from tqdm.auto import tqdm

            # the whole line is drawn here (desc); tqdm only redraws it in place
            self._bar = tqdm(file=self.stream, bar_format="{desc}", dynamic_ncols=True, leave=True)
            self._refresh()

    def close(self, status: str = "done") -> None:
        """Finish the live line.

        Args:
            status: ``done`` (the run ended: the bar is drawn full, even when the stop rule ended
                it before the budget), ``interrupted`` (Ctrl-C / ``SIGTERM``: the bar stays where
                the run was) or ``failed``. A line that never saw an iteration (a run that was
                already complete, or stopped before iteration 0 ended) is removed instead.
        """
        if self._bar is not None:
            self.stage = status
            if status != "done" and self.stream is not None:
                # the terminal echoed "^C" after the line: erase the whole line before the last
                # redraw, which only pads over its own previous text
                self.stream.write("\r\x1b[K")
            if self._iteration < 0 and status == "done":
                self._bar.leave = False  # nothing to show: clear the line
            else:
                self._refresh()
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- hooks -------------------------------------------------------------------------------

    def on_stage(self, stage: str, iteration: int) -> None:
        """A stage of the loop starts (see :func:`attach_stage_hook`)."""
        if stage != self.stage:
            logger.debug("iteration %d: %s", iteration, stage)
        self.stage = stage
        if self._bar is not None:
            self._refresh()

    def __call__(self, event: IterationEvent) -> None:
        """Show the line of a persisted iteration."""
        if self._t0 is None:
            self.start()
        now = time.perf_counter()
        assert self._t_last is not None
        self._durations[int(event.iteration)] = now - self._t_last
        self._t_last = now
        self._iteration = int(event.iteration)
        self.max_iterations = int(event.max_iterations)
        self._scores = event.scores
        timings = {k: float(v) for k, v in event.timings.items()}
        if self._iteration == 0:
            self._estimate = _later_iteration_estimate(self._durations[0], timings, event)
        spent = ", ".join(f"{k} {v - self._timings.get(k, 0.0):.2f}s" for k, v in timings.items())
        self._timings = timings
        line = self.line()
        logger.debug(line)  # for a log file: the console gets the line from here, not twice
        logger.debug(
            "iteration %d took %.2fs: %s", self._iteration, self._durations[self._iteration], spent
        )
        if self._bar is not None:
            self.stage = "callbacks"
            self._refresh()
        elif self.stream is not None:
            print(line, file=self.stream, flush=True)

    # ---- text --------------------------------------------------------------------------------

    def eta_seconds(self) -> float | None:
        """Seconds left to the budget (``None`` while iteration 0 runs).

        The mean measured time of iterations ≥ 1, or before one is measured the estimate made
        from iteration 0 (see the module docstring).
        """
        later = [d for k, d in self._durations.items() if k >= 1]
        per_iteration = sum(later) / len(later) if later else self._estimate
        if per_iteration is None or self.max_iterations is None:
            return None
        return max(self.max_iterations - self._iteration, 0) * per_iteration

    def _eta_text(self) -> str:
        eta = self.eta_seconds()
        if eta is not None:
            return f"ETA {format_duration(eta)}"
        if self._t0 is None:
            return "ETA ?"
        elapsed = format_duration(time.perf_counter() - self._t0)
        return f"{elapsed} elapsed, ETA after iteration 0"

    def _head(self) -> str:
        n = "?" if self.max_iterations is None else str(self.max_iterations)
        return f"iteration {max(self._iteration, 0)}/{n}"

    def _scores_text(self) -> str:
        s = self._scores
        if s is None:
            return "no score yet"
        rec = s.recommendation
        if rec is not None:
            return (
                f"recommendation {rec.uid}: fresh MMD² {_score(rec.fresh_mmd2)} "
                f"(in sample {_score(rec.mmd2_in_sample)})"
            )
        return f"best {s.best_param_set_id}: MMD² {_score(s.best_mmd2)} in sample"

    def line(self) -> str:
        """The plain line of the last iteration."""
        s = self._scores
        later = [d for k, d in self._durations.items() if k >= 1]
        per_iter = f"{sum(later) / len(later):.1f}s/iteration" if later else None
        parts = [
            self._head(),
            self._scores_text(),
            f"distribution similarity {_score(s.distribution_similarity if s else None)}",
            *([per_iter] if per_iter else []),
            self._eta_text() if self._iteration < (self.max_iterations or 0) else "",
        ]
        return " · ".join(p for p in parts if p)

    def _refresh(self) -> None:
        if self._bar is None:
            return
        n = self.max_iterations
        done = self._iteration + 1  # iterations 0..N: N + 1 in all
        filled = round(_BAR_WIDTH * done / (n + 1)) if n is not None else 0
        if self.stage == "done":
            filled = _BAR_WIDTH  # the run ended: the stop rule may end it before the budget
        bar = "█" * filled + "░" * (_BAR_WIDTH - filled)
        if self.stage in {"done", "interrupted", "failed"}:
            tail = self.stage
        elif self.stage in _FINAL_STAGES:
            since = time.perf_counter() - (self._t_last or time.perf_counter())
            tail = f"{self.stage} · {format_duration(since)} elapsed"
        else:
            tail = f"{self.stage} · {self._eta_text()}"
        self._bar.set_description_str(
            f"{self._head()} {bar} {self._scores_text()} · {tail}", refresh=True
        )


# ---------------------------------------------------------------------------------------------
# Stage hook and logging
# ---------------------------------------------------------------------------------------------


def attach_stage_hook(
    pipeline: OptimizationPipeline, *listeners: StageListener | Callable[[str, int], None]
) -> None:
    """Tell ``listeners`` which stage of the loop a pipeline runs, as it runs.

    Args:
        pipeline: The pipeline.
        *listeners: Objects with ``on_stage(stage, iteration)``, or such callables.
    """
    for lis in listeners:
        pipeline.add_stage_listener(lis.on_stage if isinstance(lis, StageListener) else lis)


class TqdmLoggingHandler(logging.StreamHandler):
    """A console handler that prints above a live ``tqdm`` line instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record with ``tqdm.write``."""
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a broken console must not end the run
            self.handleError(record)
