"""One command line for the package: ``bo-voids run|calibrate|report|retarget|chips|gallery``.

Each command is the ``main(argv)`` of the module that owns it, so ``bo-voids run`` and
``python -m bo_voids.optimize`` (the design's entry point) are the same code, as are
``bo-voids report`` and ``python -m bo_voids.report`` and so on::

    bo-voids run --config configs/quickstart.yaml        # = python -m bo_voids.optimize ...
    bo-voids report experiments/quickstart               # = python -m bo_voids.report ...
    bo-voids calibrate experiments/quickstart            # implied parameter distribution
    bo-voids retarget experiments/quickstart --targets my_images/ --out experiments/mine
    bo-voids chips --out data/base_chips                 # procedural base chips
    bo-voids gallery --out docs/gallery.png              # sample images of the design

Exit codes — the one table for every command (:class:`ExitCode`):

====  ==========================================================================================
0     success
1     runtime failure (a run keeps its completed iterations: continue with ``--resume``)
2     usage or config error (the message names the option, key, file or setting)
130   interrupted by Ctrl-C (resumable)
143   stopped by ``SIGTERM``, e.g. a batch scheduler ending the job (resumable)
====  ==========================================================================================

The command modules are imported by name only when their command runs, so ``bo-voids --help``
is instant and this module imports no other part of the package but its exceptions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bo_voids.exceptions import BoVoidsError, UserInputError

__all__ = [
    "COMMANDS",
    "Command",
    "ExitCode",
    "Terminated",
    "call_guarded",
    "main",
    "sigterm_as_interrupt",
]

logger = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """Exit status of every ``bo-voids`` command (see the module docstring)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` received: stop like Ctrl-C (partial iteration removed, lock released)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn ``SIGTERM`` into :class:`Terminated` while the block runs (main thread only).

    A scheduler's ``SIGTERM`` then unwinds like Ctrl-C: the experiment lock is released and the
    half-written iteration removed, so the run resumes cleanly.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Command:
    """A ``bo-voids`` command: the module whose ``main(argv)`` runs it.

    Attributes:
        module: The module whose ``main(argv)`` runs the command.
        help: One line for ``bo-voids --help``.
    """

    module: str
    help: str

    def resolve(self) -> Callable[..., int]:
        """The command's ``main`` function (its module is imported only now)."""
        main: Callable[..., int] = importlib.import_module(self.module).main
        return main


#: The commands, in the order ``bo-voids --help`` lists them.
COMMANDS: dict[str, Command] = {
    "run": Command("bo_voids.optimize", "run or resume an experiment (--config YAML)"),
    "calibrate": Command(
        "bo_voids.calibration.__main__",
        "fit the implied parameter distribution of an experiment",
    ),
    "report": Command("bo_voids.report", "(re)write an experiment's report.html"),
    "retarget": Command(
        "bo_voids.retarget",
        "score an experiment's evaluated sets against new real targets, without re-rendering",
    ),
    "chips": Command("bo_voids.generation.base_chips", "write procedural base chip images"),
    "gallery": Command(
        "bo_voids.generation.gallery",
        "render a PNG grid of real / close / far sample images",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: bo-voids COMMAND [ARGS...]   (bo-voids COMMAND --help for its options)",
        "",
        "commands:",
        *(f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()),
        "",
        "exit codes: 0 ok, 1 runtime failure, 2 usage/config error, 130 Ctrl-C, 143 SIGTERM",
    ]
    return "\n".join(lines)


def call_guarded(func: Callable[..., Any], argv: Sequence[str], **kwargs: Any) -> int:
    """Call a command's ``main`` and map whatever it ends with onto :class:`ExitCode`.

    ``SystemExit`` (argparse) keeps its code; Ctrl-C gives 130, ``SIGTERM`` 143; a
    :class:`~bo_voids.exceptions.UserInputError` 2 and any other error 1, each with a one-line
    message (the traceback of an unexpected error goes to the log for the bug report).

    Args:
        func: The command's ``main``.
        argv: Its arguments.
        **kwargs: Passed on to ``func`` (e.g. ``prog``).

    Returns:
        The exit status.
    """
    try:
        with sigterm_as_interrupt():
            code = func(list(argv), **kwargs)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return ExitCode.FAILURE
    except Terminated:
        print("\nterminated (SIGTERM)", file=sys.stderr)
        return ExitCode.TERMINATED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except UserInputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return ExitCode.USAGE
    except BoVoidsError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return ExitCode.FAILURE
    except Exception as exc:
        logger.debug("unexpected failure", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``bo-voids COMMAND [ARGS...]``: dispatch to the command's module.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (:class:`ExitCode`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), file=sys.stderr)
        return ExitCode.USAGE
    if args[0] in {"-h", "--help"}:
        print(_usage())
        return ExitCode.OK
    if args[0] == "--version":
        from bo_voids import __version__

        print(f"bo-voids {__version__}")
        return ExitCode.OK
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return ExitCode.USAGE
    func = command.resolve()
    kwargs = {"prog": f"bo-voids {name}"} if "prog" in inspect.signature(func).parameters else {}
    return call_guarded(func, rest, **kwargs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
