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

The terminal policy — one for every command and its ``python -m`` alias (:func:`call_guarded`,
:func:`report_failure`): a failure is one line on the terminal (what, where, what to do); its
traceback goes to the log file (``--log-file``) and, with ``--debug`` (or ``BO_VOIDS_DEBUG=1``),
to the terminal too.

The command modules are imported by name only when their command runs, so ``bo-voids --help``
is instant and this module imports no other part of the package but its exceptions.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bo_voids.exceptions import BoVoidsError, ConfigError, UserInputError

__all__ = [
    "COMMANDS",
    "DEBUG_FLAG",
    "Command",
    "ExitCode",
    "Terminated",
    "call_guarded",
    "debug_enabled",
    "main",
    "report_failure",
    "run_module",
    "set_debug",
    "sigterm_as_interrupt",
]

#: The option, accepted by every command, that also shows tracebacks on the terminal.
DEBUG_FLAG = "--debug"
_debug = False

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
    "export": Command(
        "bo_voids.export",
        "render a labelled synthetic training set (images, masks, COCO) from a calibration",
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
        f"{DEBUG_FLAG} (any command): also show tracebacks on the terminal (always in --log-file)",
    ]
    return "\n".join(lines)


def set_debug(on: bool = True) -> None:
    """Show tracebacks on the terminal too (``--debug``)."""
    global _debug
    _debug = bool(on)


def debug_enabled() -> bool:
    """Whether tracebacks go to the terminal: ``--debug`` was given or ``BO_VOIDS_DEBUG`` is set."""
    return _debug or os.environ.get("BO_VOIDS_DEBUG", "").strip() not in {"", "0"}


def report_failure(exc: BaseException, *, hint: str = "") -> ExitCode:
    """Report a failure by the terminal policy and return its exit code.

    One line on stderr: ``error: <what, where>`` and, when given, ``; <hint>`` (what to do). The
    traceback goes to the ``bo_voids`` log at debug level (the log file, when one is open) and
    to the terminal only when :func:`debug_enabled`.

    Args:
        exc: The failure.
        hint: What to do about it, appended to the line.

    Returns:
        :attr:`ExitCode.USAGE` for a :class:`~bo_voids.exceptions.UserInputError` (the user can fix
        the input), :attr:`ExitCode.FAILURE` otherwise.
    """
    known = isinstance(exc, BoVoidsError)
    text = str(exc) if known else f"{type(exc).__name__}: {exc}"
    line = " ".join(f"{text}; {hint}".split() if hint else text.split())
    logger.debug("%s", line, exc_info=exc)
    label = "config error" if isinstance(exc, ConfigError) else "error"
    print(f"{label}: {line}", file=sys.stderr)
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    return ExitCode.USAGE if isinstance(exc, UserInputError) else ExitCode.FAILURE


def call_guarded(func: Callable[..., int | None], argv: Sequence[str], **kwargs: object) -> int:
    """Call a command's ``main`` and map whatever it ends with onto :class:`ExitCode`.

    ``SystemExit`` (argparse) keeps its code; Ctrl-C gives 130, ``SIGTERM`` 143; any other
    failure is reported by :func:`report_failure` (2 for the user's input, else 1). ``--debug``
    is taken out of ``argv`` and turns on :func:`debug_enabled`.

    Args:
        func: The command's ``main``.
        argv: Its arguments.
        **kwargs: Passed on to ``func`` (e.g. ``prog``).

    Returns:
        The exit status.
    """
    argv = list(argv)
    if DEBUG_FLAG in argv[: argv.index("--")] if "--" in argv else DEBUG_FLAG in argv:
        argv.remove(DEBUG_FLAG)
        set_debug()
    try:
        with sigterm_as_interrupt():
            code = func(argv, **kwargs)
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
    except Exception as exc:
        return report_failure(exc)
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``bo-voids COMMAND [ARGS...]``: dispatch to the command's module.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (:class:`ExitCode`).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == DEBUG_FLAG:  # bo-voids --debug COMMAND ... as well
        args = [*args[1:2], DEBUG_FLAG, *args[2:]]
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


def run_module(func: Callable[..., int | None]) -> None:
    """The ``if __name__ == "__main__"`` of a ``python -m`` alias: the same policy as ``bo-voids``.

    Args:
        func: The command's ``main``.
    """
    sys.exit(call_guarded(func, sys.argv[1:]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
