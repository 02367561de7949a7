"""Fault injection for crash tests: stop a run at a named phase of a named iteration.

The loop itself holds no fault code. A :class:`FaultInjector` is installed on one pipeline from
outside (:meth:`FaultInjector.install`): it listens to the stages the pipeline announces
(:meth:`~bo_voids.pipeline.OptimizationPipeline.add_stage_listener`), watches the generator and
the embedder of the pipeline's own evaluator, and calls its action (by default: ``SIGKILL`` this
process) at each point the run reaches.

A point is ``phase:iteration``; the phases, and where each one stops the run:

=========== ==================================================================================
``render``  while iteration ``k`` renders, after its first image
``embed``   as the embedder is called in iteration ``k`` (before it embeds)
``propose`` after the optimiser has answered; nothing of iteration ``k`` is on disk yet
``write``   every file of iteration ``k`` is in ``iteration_k.partial/``, not yet renamed
``commit``  ``iteration_k/`` is renamed into place; ``history.csv`` and the manifest are behind
=========== ==================================================================================

``render`` and ``embed`` watch the driver's evaluator, which the ``local`` executor runs; worker
processes of the other executors build evaluators of their own, out of the injector's reach.

A test in the same process installs the injector on its pipeline; a crash test that runs the
real CLI in a child process runs :func:`main` instead (``python -m bo_voids.testing.faults``),
which reads the points from the environment variable :data:`KILL_AT_ENV` and installs them on
every pipeline the CLI runs::

    BO_VOIDS_TEST_KILL_AT=write:2 python -m bo_voids.testing.faults --config tiny.yaml
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bo_voids.pipeline import OptimizationPipeline

__all__ = [
    "KILL_AT_ENV",
    "PHASES",
    "FaultInjector",
    "inject_into_pipelines",
    "kill_process",
    "main",
    "parse_points",
]

#: The environment variable :func:`main` reads: ``"phase:iteration[,phase:iteration...]"``.
KILL_AT_ENV = "BO_VOIDS_TEST_KILL_AT"
#: The pipeline-side phases and the stage whose start marks each one's end.
_AT_STAGE: Mapping[str, str] = {"propose": "fresh score", "write": "commit", "commit": "history"}
#: Every phase a point may name, in the order an iteration reaches them.
PHASES: tuple[str, ...] = ("render", "embed", *_AT_STAGE)

#: What an injector does at a matching point: ``action(phase, iteration)``.
Action = Callable[[str, int], None]


def kill_process(phase: str, iteration: int) -> None:
    """Kill this process with ``SIGKILL`` (``SIGTERM`` where there is none), as a crash would."""
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def parse_points(spec: str) -> list[tuple[str, int]]:
    """The points of ``"phase:iteration[,phase:iteration...]"``.

    Args:
        spec: E.g. ``"render:0,commit:3"``; blank items are skipped.

    Returns:
        ``[(phase, iteration), ...]``.

    Raises:
        ValueError: An item without an integer iteration, or an unknown phase.
    """
    points = []
    for item in spec.split(","):
        if not item.strip():
            continue
        phase, _, iteration = item.strip().partition(":")
        try:
            points.append((phase.strip(), int(iteration)))
        except ValueError:
            raise ValueError(f"fault point {item.strip()!r} is not 'phase:iteration'") from None
    return points


class FaultInjector:
    """Calls ``action`` once at each of ``points`` of the run it is installed on.

    Args:
        points: ``(phase, iteration)`` pairs; phases from :data:`PHASES`.
        action: Called as ``action(phase, iteration)`` at each point the run reaches (default
            :func:`kill_process`); a point fires once, so an action that returns lets the run go
            on.

    Raises:
        ValueError: An unknown phase.
    """

    def __init__(self, points: Iterable[tuple[str, int]], action: Action = kill_process) -> None:
        self.pending = {(str(phase), int(k)) for phase, k in points}
        unknown = sorted({phase for phase, _ in self.pending} - set(PHASES))
        if unknown:
            raise ValueError(f"unknown fault phase(s) {unknown}; expected one of {list(PHASES)}")
        self.action = action
        self._iteration: int | None = None
        self._rendered = 0  # images rendered so far in the current iteration

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, action: Action = kill_process
    ) -> FaultInjector | None:
        """The injector of :data:`KILL_AT_ENV`, or ``None`` when it is unset or empty."""
        spec = (os.environ if environ is None else environ).get(KILL_AT_ENV, "")
        points = parse_points(spec)
        return cls(points, action) if points else None

    def install(self, pipeline: OptimizationPipeline) -> None:
        """Hook into ``pipeline`` before it runs: its stages and its evaluator.

        Builds the pipeline's evaluator now when it has none yet (the pipeline would build the
        same one at the start of the run) and wraps its generator and embedder in place.
        """
        if pipeline.evaluator is None:
            pipeline.evaluator = pipeline.spec.build()
        evaluator = pipeline.evaluator
        # stand-ins that forward everything: typed Any, as they are no VoidGenerator / Embedder
        generator: Any = _Watched(evaluator.generator, "render", self._before_render)
        embedder: Any = _Watched(evaluator.embedder, "embed", self._before_embed)
        evaluator.generator, evaluator.embedder = generator, embedder
        pipeline.add_stage_listener(self.on_stage)

    def on_stage(self, stage: str, iteration: int) -> None:
        """The pipeline's stage listener: tracks the iteration, fires the pipeline-side phases."""
        if iteration != self._iteration:
            self._iteration, self._rendered = iteration, 0
        for phase, at_stage in _AT_STAGE.items():
            if stage == at_stage:
                self._reach(phase)

    def _before_render(self) -> None:
        if self._rendered >= 1:
            self._reach("render")
        self._rendered += 1

    def _before_embed(self) -> None:
        self._reach("embed")

    def _reach(self, phase: str) -> None:
        if self._iteration is None or (phase, self._iteration) not in self.pending:
            return
        self.pending.discard((phase, self._iteration))
        self.action(phase, self._iteration)


class _Watched:
    """``target`` with ``before()`` called ahead of every call of its method ``method``."""

    def __init__(self, target: Any, method: str, before: Callable[[], None]) -> None:
        self._target, self._method, self._before = target, method, before

    def __getattr__(self, name: str) -> Any:
        if name in {"_target", "_method", "_before"}:  # not set yet (copy, unpickling)
            raise AttributeError(name)
        attr = getattr(self._target, name)
        if name != self._method:
            return attr

        def watched(*args: Any, **kwargs: Any) -> Any:
            self._before()
            return attr(*args, **kwargs)

        return watched


@contextlib.contextmanager
def inject_into_pipelines(injector: FaultInjector) -> Iterator[None]:
    """Install ``injector`` on every pipeline that starts a run inside the ``with`` block.

    For code that builds its pipeline itself (the CLI): each run installs the injector first,
    so the evaluator is built at the start of the run, before the target images are checked.
    """
    from bo_voids.pipeline import OptimizationPipeline

    original = OptimizationPipeline.run_full_experiment

    def run_full_experiment(self: OptimizationPipeline, *args: Any, **kwargs: Any) -> Any:
        injector.install(self)
        return original(self, *args, **kwargs)

    OptimizationPipeline.run_full_experiment = run_full_experiment  # type: ignore[method-assign]
    try:
        yield
    finally:
        OptimizationPipeline.run_full_experiment = original  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``bo-voids-optimize`` CLI with the fault points of :data:`KILL_AT_ENV` installed.

    Args:
        argv: The CLI's arguments (default: ``sys.argv[1:]``).

    Returns:
        The CLI's exit code (the process is killed first when a point is reached).
    """
    from bo_voids.optimize import main as optimize_main

    args = list(sys.argv[1:] if argv is None else argv)
    injector = FaultInjector.from_env()
    if injector is None:
        return optimize_main(args)
    with inject_into_pipelines(injector):
        return optimize_main(args)


if __name__ == "__main__":
    sys.exit(main())
