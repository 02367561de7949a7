"""What a run may write, clear and replace, checked once before it touches anything.

The rule: **the experiment folder is the run's; everything else is the user's.** A run writes,
clears (``--overwrite``) and repairs (``--resume``) only inside ``experiment_dir``, so every path
the run reads from — the real targets, the warm-start experiment, the base chips, the DINOv2
weights, the config file — and the log file it appends to must lie outside that folder; the
experiment folder must not lie inside a folder the run reads wholesale (it would write its images
into the user's input); and the log file must not be an input or lie inside one.
:func:`check_run_paths` enforces this before any work, together with the shape of every path (a
folder that is a file, a log file below a regular file), so a bad path is one line and exit 2,
never a half-done run or a deleted input.

The check is called by the pipeline (every API run) and by the command line, which adds the
config file and ``--log-file``; it only reads the file system.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bo_voids.config import ExperimentConfig
from bo_voids.exceptions import ConfigError

__all__ = ["RunInput", "check_log_file", "check_output_file", "check_run_paths", "run_inputs"]


@dataclass(frozen=True)
class RunInput:
    """One path a run reads (or, for the log file, appends to) and must never clear.

    Attributes:
        name: How the user gave it (a config key or a command-line option).
        path: The path as given.
        folder: Whether the run reads it as a whole folder (targets, base chips, warm start): the
            experiment folder must then not lie inside it either.
    """

    name: str
    path: Path
    folder: bool


def run_inputs(
    config: ExperimentConfig,
    *,
    config_path: str | Path | None = None,
    log_file: str | Path | None = None,
    extra: Mapping[str, str | Path] | None = None,
) -> list[RunInput]:
    """Every path of a run that is not the experiment folder's own.

    Args:
        config: The run's config.
        config_path: The config file, when the run was started from one.
        log_file: ``--log-file``, when given.
        extra: Further input folders by name (e.g. a re-targeted source experiment).

    Returns:
        The inputs, in a fixed order.
    """
    out = [RunInput("base_image_dir", Path(config.base_image_dir), True)]
    for key in ("target_image_dir", "warm_start"):
        value = getattr(config, key)
        if value is not None:
            out.append(RunInput(key, Path(value), True))
    if config.dino_weights is not None:
        out.append(RunInput("dino_weights", Path(config.dino_weights), False))
    if config_path is not None:
        out.append(RunInput("--config", Path(config_path), False))
    if log_file is not None:
        out.append(RunInput("--log-file", Path(log_file), False))
    out.extend(RunInput(name, Path(path), True) for name, path in (extra or {}).items())
    return out


def check_log_file(log_file: str | Path) -> None:
    """Refuse a log file path that cannot be a file: a folder, or below a regular file.

    Raises:
        ConfigError: Naming the path and what is in the way (exit 2).
    """
    path = Path(log_file)
    if path.is_dir():
        raise ConfigError(f"--log-file {path} is a folder; give a file path")
    if path.exists() and not path.is_file():  # appending to a FIFO would block the run
        raise ConfigError(f"--log-file {path} is not a regular file (a FIFO or a device)")
    _check_creatable("--log-file", path.parent)


def check_run_paths(
    config: ExperimentConfig,
    *,
    config_path: str | Path | None = None,
    log_file: str | Path | None = None,
    extra: Mapping[str, str | Path] | None = None,
) -> None:
    """Check the experiment folder and every input path before any work (see the module doc).

    Args:
        config: The run's config (``experiment_dir`` and its input paths).
        config_path: The config file, when the run was started from one.
        log_file: ``--log-file``, when given.
        extra: Further input folders by name.

    Raises:
        ConfigError: A path of the wrong kind, or an input inside the experiment folder (or the
            experiment folder inside an input folder); the message names both paths (exit 2).
    """
    root = Path(config.experiment_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"experiment_dir: {root} is a file, not a folder; choose a folder path "
            "(a new one, or an existing experiment)"
        )
    _check_creatable("experiment_dir", root)
    if log_file is not None:
        check_log_file(log_file)
    experiment = _resolved("experiment_dir", root)
    for item in run_inputs(config, config_path=config_path, log_file=log_file, extra=extra):
        if not item.folder and item.path.exists() and not item.path.is_file():
            if not (item.name == "dino_weights" and item.path.is_dir()):  # a HF weights folder
                raise ConfigError(
                    f"{item.name}: {item.path} is not a regular file (a folder, a FIFO or a "
                    "device); give a file"
                )
        where = _resolved(item.name, item.path)
        if where == experiment or experiment in where.parents:
            raise ConfigError(
                f"{item.name} {item.path} is inside the experiment folder {root}, which the run "
                "writes and --overwrite replaces; keep inputs and the log file outside it (move "
                "it, or choose another experiment_dir)"
            )
        if item.folder and where in experiment.parents:
            raise ConfigError(
                f"experiment_dir {root} is inside {item.name} {item.path}: the run would write "
                "into its own input; choose an experiment_dir outside it"
            )
    if log_file is not None:  # the log is appended to: never to an input, nor inside one
        log = _resolved("--log-file", Path(log_file))
        for item in run_inputs(config, config_path=config_path, extra=extra):
            where = _resolved(item.name, item.path)
            if log == where or (item.folder and where in log.parents):
                raise ConfigError(
                    f"--log-file {log_file} would write into {item.name} {item.path}; give a "
                    "log file outside the run's inputs"
                )


def check_output_file(
    out: str | Path, *, experiment_dir: str | Path, own_name: str, option: str = "--out"
) -> None:
    """Refuse an output file that would overwrite an experiment's own files or cannot be a file.

    A command that derives a file from an experiment (``calibrate --out``) may write anywhere the
    user names, except over a file of the experiment other than its own output ``own_name``
    (``experiment.json``, ``history.csv``, an iteration's files: the run would be destroyed).

    Args:
        out: The output path.
        experiment_dir: The experiment it is derived from.
        own_name: The name the command writes inside the experiment by default.
        option: The option that gave ``out``, for the message.

    Raises:
        ConfigError: Naming the path (exit 2).
    """
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{option} {path} is not a regular file (a FIFO or a device)")
    _check_creatable(option, path.parent)
    where, root = _resolved(option, path), _resolved("experiment", Path(experiment_dir))
    if root in where.parents and not (where.parent == root and where.name == own_name):
        raise ConfigError(
            f"{option} {path} would overwrite a file of the experiment {experiment_dir}; write "
            f"outside it, or to {Path(experiment_dir) / own_name}"
        )


def _check_creatable(name: str, folder: Path) -> None:
    """Refuse a folder that cannot be created because a part of its path is a regular file."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{name}: cannot create {folder}: {part} is a file, not a folder")
            return


def _resolved(name: str, path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder on the way
        raise ConfigError(f"{name}: cannot resolve {path}: {exc}") from exc
