"""Typed exceptions and warnings raised by bo_voids."""

from __future__ import annotations


class BoVoidsError(Exception):
    """Base class of every error bo_voids raises on purpose."""


class UserInputError(BoVoidsError):
    """Marker base of errors caused by the user's input (the CLI exits with code 2)."""


class ConfigError(UserInputError, ValueError):
    """A configuration file or value is invalid (a user error; the CLI exits with code 2)."""


class ImageLoadError(UserInputError):
    """An input image (base chip or real target) cannot be read or is unusable."""


class EmbeddingError(UserInputError):
    """An embedder cannot be built or loaded (e.g. DINOv2 weights not found)."""


class OptimizerError(BoVoidsError):
    """An optimiser cannot produce proposals."""


class FailureBudgetError(BoVoidsError):
    """More evaluations failed than ``max_failure_fraction`` allows (a broken setup: exit 1)."""


class StateError(BoVoidsError):
    """An experiment folder is missing, incompatible, locked or would be overwritten."""


class DamagedFileError(StateError):
    """A file of an experiment folder cannot be trusted (cut short, bad bytes, wrong content)."""


class ExperimentExistsError(StateError, UserInputError):
    """The experiment folder exists and neither resume nor overwrite was asked for."""


class ResumeMismatchError(StateError, UserInputError):
    """Resuming with a config or embedder that differs from the stored experiment."""


class ExperimentLockedError(StateError, UserInputError):
    """Another live process holds the experiment's lock."""


class CalibrationError(UserInputError):
    """The experiment cannot be calibrated as asked (a user error; the CLI exits with code 2)."""


class ExportError(UserInputError):
    """An export cannot run as asked: missing or unfinished experiment, non-empty folder, ..."""


class TrackerUnavailableError(BoVoidsError):
    """An experiment tracker (MLflow) cannot be reached within its short timeout."""


class WorkerLostError(BoVoidsError):
    """A parameter set could not be evaluated because its workers kept dying or disappearing."""


class BoVoidsWarning(UserWarning):
    """Base class of warnings emitted when bo_voids falls back or degrades."""


class FallbackWarning(BoVoidsWarning):
    """A component fell back to a simpler behaviour (e.g. random proposals instead of the GP)."""
