"""Typed experiment configuration, loaded from YAML and validated up front.

Every key of ``configs/experiment_config.yaml`` maps onto a frozen dataclass below. Loading goes
through :func:`load_config`, which rejects, with one :class:`~bo_voids.exceptions.ConfigError`
naming the key path and the allowed values:

* invalid YAML (with ``file:line:col``), duplicate keys, unknown or misspelt keys (with the nearest
  valid key suggested);
* wrong types (including YAML 1.1 traps: ``no`` read as a boolean is refused for a string field;
  ``1e3`` is read as the number 1000, not the string ``"1e3"``);
* reversed or out-of-range bounds, values outside their bounds, probabilities that do not sum to 1,
  negative standard deviations, zero counts, unsafe experiment names, missing folders.

Example:
    >>> from bo_voids.config import load_config
    >>> cfg = load_config("configs/quickstart.yaml")  # doctest: +SKIP
    >>> cfg.param_bounds["void_count"].high  # doctest: +SKIP
    20
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bo_voids._io import read_regular_file
from bo_voids._types import JsonObject
from bo_voids.exceptions import ConfigError
from bo_voids.schema import IMAGING_IDENTITY as IMAGING_IDENTITY
from bo_voids.schema import IMAGING_LIMITS as IMAGING_LIMITS
from bo_voids.schema import NUISANCE_PREFIX as NUISANCE_PREFIX
from bo_voids.schema import CategoricalBounds as CategoricalBounds
from bo_voids.schema import CategoricalDistribution as CategoricalDistribution
from bo_voids.schema import ImagingSettings as ImagingSettings
from bo_voids.schema import ImagingValue as ImagingValue
from bo_voids.schema import NormalDistribution as NormalDistribution
from bo_voids.schema import NumericBounds as NumericBounds
from bo_voids.schema import ParameterBounds as ParameterBounds
from bo_voids.schema import ParameterDistribution as ParameterDistribution

# ---------------------------------------------------------------------------------------------
# Constants: the parameter schema of the design (names, kinds and the range the generator supports)
# ---------------------------------------------------------------------------------------------

PARAMETER_NAMES: tuple[str, ...] = (
    "void_shape",
    "void_count",
    "base_size",
    "brightness_factor",
    "size_std",
    "position_spread",
)
VOID_SHAPES: tuple[str, ...] = ("circle", "ellipse", "irregular")
#: Kind of each parameter: ``categorical``, ``integer`` or ``continuous``.
PARAMETER_KINDS: dict[str, str] = {
    "void_shape": "categorical",
    "void_count": "integer",
    "base_size": "continuous",
    "brightness_factor": "continuous",
    "size_std": "continuous",
    "position_spread": "continuous",
}
#: The widest range the generator can render for each numeric parameter (inclusive).
GENERATOR_LIMITS: dict[str, tuple[float, float]] = {
    "void_count": (1, 200),
    "base_size": (0.5, 250.0),
    "brightness_factor": (0.0, 1.0),
    "size_std": (0.0, 100.0),
    "position_spread": (0.01, 1.0),
}
# The allowed values of the config's choice keys, defined here once: implementations import them,
# and tests/test_config.py checks that they agree with the registries they name.
#: The iteration-0 datasets (config sections); later iterations evaluate ``synthetic`` sets.
DATASET_TYPES: tuple[str, ...] = ("real", "close", "far")
#: Values of ``optimizer:``; the GP's surrogate (hence its registered class) is ``bo.surrogate``.
OPTIMIZERS: tuple[str, ...] = ("botorch", "random")
ACQUISITIONS: tuple[str, ...] = ("ucb", "ei", "nei", "pi")
EMBEDDERS: tuple[str, ...] = ("auto", "dinov2", "handcrafted")
DINO_MODELS: tuple[str, ...] = ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
EXECUTORS: tuple[str, ...] = ("local", "processes", "dask")
SURROGATES: tuple[str, ...] = ("composite", "mixed", "onehot")
BANDWIDTHS: tuple[str, ...] = ("multi", "median")
#: Where base chips are looked for when ``base_image_dir`` is not given.
DEFAULT_BASE_IMAGE_DIR = Path("data/base_chips")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------
# Typed config objects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """Size of one iteration-0 dataset (real / close / far)."""

    param_sets: int
    replications: int
    total_size: int | None = None

    @property
    def n_images(self) -> int:
        """Number of images actually rendered: ``param_sets * replications``."""
        return self.param_sets * self.replications


@dataclass(frozen=True)
class BOSettings:
    """Settings of the BoTorch optimiser (``bo:`` section)."""

    ucb_beta: float = 2.0
    surrogate: str = "composite"
    num_restarts: int = 8
    raw_samples: int = 256
    maxiter: int = 100
    min_observations: int = 12
    top_k: int = 5
    #: Slots of each batch that re-evaluate the best-ranked sets with new seeds.
    replicate_slots: int = 1
    #: Slots of each batch drawn from the current population fit p_ψ (composite surrogate; off by
    #: default: measured no better ψ and a slightly worse point recommendation at the standard
    #: budget, see benchmarks/results/calibration_recovery).
    population_slots: int = 0
    #: Sobol sets the composite's summaries are fitted on (0: iteration 0's sets instead).
    reference_sets: int = 0
    #: Renders of each reference set.
    reference_replications: int = 2
    #: Random Fourier features offered to the summaries' parameter head (0: linear ridge only).
    random_features: int = 0


@dataclass(frozen=True)
class MetricSettings:
    """Settings of the MMD score (``metric:`` section)."""

    bandwidth: str = "multi"
    #: Splits of a target folder's split null band (benchmarks only: a run no longer splits a folder
    #: for its stop rule, which cannot judge one parameter set against an i.i.d. folder).
    noise_floor_splits: int = 50
    permutations: int = 500
    #: Fresh, independently seeded images the final recommendation is re-scored on (0: off).
    fresh_images: int = 12
    #: Simulated real parameter sets rendered at iteration 0 for the noise floor (simulated
    #: targets); the stop rule takes its threshold from them only when there are >= 200.
    null_draws: int = 200


@dataclass(frozen=True)
class DaskSettings:
    """Where the ``dask`` executor finds its workers (``dask:`` section)."""

    scheduler_address: str | None = None
    local_workers: int | None = None
    #: Abstract worker resources every task needs (e.g. ``{"GPU": 1}``); workers must be started
    #: with matching ``--resources`` or the tasks never run.
    resources: dict[str, float] | None = None
    #: Parameter sets sent to a worker in one Dask task (fewer round trips for fast evaluations).
    tasks_per_job: int = 1


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment, validated. Build with :func:`load_config` or :func:`config_from_dict`."""

    experiment_name: str
    experiment_dir: Path
    base_image_dir: Path
    param_bounds: dict[str, ParameterBounds]
    param_distributions: dict[str, dict[str, ParameterDistribution]]
    real: DatasetSpec
    close: DatasetSpec
    far: DatasetSpec
    target_image_dir: Path | None = None
    #: An earlier experiment whose evaluated sets seed this one instead of a fresh iteration 0.
    warm_start: Path | None = None
    seed: int = 0
    image_size: int = 512
    edge_blur: float = 2.0
    dino_model: str = "dinov2_vitb14"
    dino_weights: Path | None = None
    embedder: str = "auto"
    device: str = "auto"
    pca_components: int = 2
    iteration_batch_size: int = 8
    replications_per_iteration: int = 3
    max_iterations: int = 10
    convergence_threshold: float = 0.05
    early_stop_patience: int = 3
    stop_at_noise_floor: bool = True
    #: An equivalence margin on the recommendation's fresh MMD²: a stop needs two independent
    #: fresh samples at or below it (``None``: the threshold comes from the null draws).
    stop_margin: float | None = None
    calibrate: bool = True
    optimizer: str = "botorch"
    acquisition_function: str = "ei"
    common_random_numbers: bool = True
    max_failure_fraction: float = 0.25
    executor: str = "local"
    bo: BOSettings = field(default_factory=BOSettings)
    metric: MetricSettings = field(default_factory=MetricSettings)
    dask: DaskSettings = field(default_factory=DaskSettings)
    imaging: ImagingSettings = field(default_factory=ImagingSettings)

    def dataset(self, name: str) -> DatasetSpec:
        """Return the iteration-0 dataset spec ``real``, ``close`` or ``far``."""
        if name not in DATASET_TYPES:
            raise KeyError(f"unknown dataset {name!r}; expected one of {DATASET_TYPES}")
        return getattr(self, name)

    def to_dict(self) -> JsonObject:
        """Return the plain YAML/JSON form; ``config_from_dict(cfg.to_dict())`` gives ``cfg``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "param_bounds":
                value = {k: b.to_yaml() for k, b in value.items()}
            elif f.name == "param_distributions":
                value = {d: {k: p.to_yaml() for k, p in dist.items()} for d, dist in value.items()}
            elif f.name == "imaging":
                # Written only when set, so experiments stored before the section resume.
                if value.is_identity:
                    continue
                value = value.to_yaml()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)  # type: ignore[arg-type]
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    def replace(self, **changes: object) -> ExperimentConfig:
        """Return a validated copy with top-level keys changed (e.g. CLI overrides).

        Raises:
            ConfigError: If a changed value is invalid.
        """
        raw: dict[str, object] = dict(self.to_dict())
        for key, value in changes.items():
            raw[key] = str(value) if isinstance(value, Path) else value
        return config_from_dict(raw, check_paths=False)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys and reads ``1e3`` as a float."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"{mark.name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r} "
                f"(first defined on line {seen[key].start_mark.line + 1}); YAML would silently "
                "keep only the last one"
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) needs a dot in floats: "1e3" would be a string. Accept YAML 1.2 floats.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


#: Largest config file read (a config is a few kilobytes; anything larger is not one).
MAX_CONFIG_BYTES = 1 << 20


def read_yaml(path: str | Path) -> dict[str, object]:
    """Read a YAML mapping strictly (duplicate keys rejected, errors with ``file:line:col``).

    Args:
        path: The YAML file.

    Returns:
        The top-level mapping.

    Raises:
        ConfigError: If the file is missing, unreadable, not valid YAML or not a mapping.
    """
    path = Path(path)
    try:  # a FIFO or a device (/dev/zero) is refused, never read: it could hang or flood
        text = read_regular_file(path, limit=MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_make_loader(str(path)))  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {_tname(data)}")
    return data


def _make_loader(name: str) -> type[_StrictLoader]:
    class _Named(_StrictLoader):
        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self.name = name

    return _Named


def load_config(
    path: str | Path, *, overrides: Mapping[str, object] | None = None, check_paths: bool = True
) -> ExperimentConfig:
    """Load and validate an experiment config.

    Relative paths in the file are resolved against the current working directory.

    Args:
        path: YAML file.
        overrides: Top-level keys to replace before validation (e.g. from the CLI).
        check_paths: Check that input folders (``base_image_dir``, ``target_image_dir``) exist.

    Returns:
        The validated :class:`ExperimentConfig`.

    Raises:
        ConfigError: With the key path and the allowed values, for any invalid entry.
    """
    raw = _read_with_base(Path(path), ())
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return config_from_dict(folder_defaults(raw), check_paths=check_paths, source=str(path))


#: The imaging nuisance block a folder of real images gets when its config has no ``imaging:``
#: section (what the folder-recovery benchmark chose for images taken through a detector).
FOLDER_IMAGING: dict[str, list[float]] = {
    "psf_sigma": [0.0, 4.0],
    "gamma": [0.6, 1.8],
    "contrast": [0.7, 1.4],
    "gaussian_noise": [0.0, 0.03],
}
#: The reference design a folder of real images gets when ``bo.reference_sets`` is not set.
FOLDER_REFERENCE: dict[str, int] = {
    "reference_sets": 64,
    "reference_replications": 2,
    "random_features": 256,
}


def folder_defaults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A user's config with the real-images defaults filled in where it is silent.

    Real images always come through a detector, and the summaries must hold far from the
    config's guesses, so a config with ``target_image_dir`` and no ``imaging:`` section gets
    :data:`FOLDER_IMAGING` as nuisance parameters, and one without ``bo.reference_sets`` gets
    :data:`FOLDER_REFERENCE`. ``imaging: {}`` or ``bo: {reference_sets: 0}`` turns either off.
    Applied to configs a user loads (:func:`load_config`), never to a stored experiment's,
    which already say what they ran with.

    Args:
        raw: The merged YAML mapping (after ``extends`` and overrides).

    Returns:
        A copy with the defaults added.
    """
    out = dict(raw)
    if not out.get("target_image_dir"):
        return out
    if "imaging" not in out:
        out["imaging"] = {k: list(v) for k, v in FOLDER_IMAGING.items()}
    bo = out.get("bo")
    # a user who set reference_sets decided about the reference design: keep it as written
    if (bo is None or isinstance(bo, Mapping)) and "reference_sets" not in (bo or {}):
        out["bo"] = {**FOLDER_REFERENCE, **(bo or {})}
    return out


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """Read a YAML config; an ``extends: FILE`` key merges it over that base config.

    ``FILE`` is relative to the config that names it. Sections (mappings) merge key by key, so a
    config states only what differs from its base; any other value replaces the base's.
    """
    raw = read_yaml(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: extends must be the path of a base config, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: extends {base_name!r} leads back to itself")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {base_name!r}, but {base_path} is not a file")
    return _merged(_read_with_base(base_path, (*seen, path.resolve())), raw)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _merged(old, value)
        else:
            out[key] = value
    return out


def config_from_dict(
    raw: Mapping[str, object], *, check_paths: bool = True, source: str = "config"
) -> ExperimentConfig:
    """Validate a plain mapping (as read from YAML) into an :class:`ExperimentConfig`.

    Args:
        raw: The mapping.
        check_paths: Check that input folders exist.
        source: Name used in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: For any invalid entry.
    """
    r = _Reader(copy.deepcopy(dict(raw)), "", source, ExperimentConfig)
    name = r.string("experiment_name")
    if not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"experiment_name must be a plain folder name (letters, digits, '_', '-', '.'; no "
            f"path separators or '..'), got {name!r}"
        )
    kwargs: dict[str, Any] = dict(
        experiment_name=name,
        experiment_dir=r.path("experiment_dir", default=Path("experiments") / name),
        base_image_dir=r.path("base_image_dir", default=DEFAULT_BASE_IMAGE_DIR),
        target_image_dir=r.path("target_image_dir"),
        warm_start=r.path("warm_start"),
    )
    bounds = _read_bounds(r.section("param_bounds"))
    kwargs["param_bounds"] = bounds
    kwargs["param_distributions"] = {
        d: _read_distribution(r.section("param_distributions").section(d), bounds)
        for d in DATASET_TYPES
    }
    r.section("param_distributions").finish()
    kwargs.update(
        real=_read_dataset(r.section("real", schema=DatasetSpec)),
        close=_read_dataset(r.section("close", schema=DatasetSpec)),
        far=_read_dataset(r.section("far", schema=DatasetSpec)),
        seed=r.integer("seed", low=0, high=2**63 - 1),
        image_size=r.integer("image_size", low=32, high=4096),
        edge_blur=r.number("edge_blur", low=0.0, high=50.0),
        dino_model=r.choice("dino_model", DINO_MODELS),
        dino_weights=r.path("dino_weights"),
        embedder=r.choice("embedder", EMBEDDERS),
        device=r.choice("device", DEVICES),
        pca_components=r.integer("pca_components", low=2, high=64),
        iteration_batch_size=r.integer("iteration_batch_size", low=1, high=1024),
        replications_per_iteration=r.integer("replications_per_iteration", low=2, high=1000),
        max_iterations=r.integer("max_iterations", low=0, high=100_000),
        convergence_threshold=r.number("convergence_threshold", low=-1e9),
        early_stop_patience=r.integer("early_stop_patience", low=1, high=100_000),
        stop_at_noise_floor=r.boolean("stop_at_noise_floor"),
        stop_margin=r.number("stop_margin", low=-2.0, high=2.0),
        calibrate=r.boolean("calibrate"),
        optimizer=r.choice("optimizer", OPTIMIZERS),
        acquisition_function=r.choice("acquisition_function", ACQUISITIONS),
        common_random_numbers=r.boolean("common_random_numbers"),
        max_failure_fraction=r.number("max_failure_fraction", low=0.0, high=1.0),
        executor=r.choice("executor", EXECUTORS),
    )
    bo = r.section("bo", required=False, schema=BOSettings)
    kwargs["bo"] = BOSettings(
        ucb_beta=bo.number("ucb_beta", low=0.0, high=1e4),
        surrogate=bo.choice("surrogate", SURROGATES),
        num_restarts=bo.integer("num_restarts", low=1, high=1000),
        raw_samples=bo.integer("raw_samples", low=8, high=1_000_000),
        maxiter=bo.integer("maxiter", low=1, high=100_000),
        min_observations=bo.integer("min_observations", low=2, high=100_000),
        top_k=bo.integer("top_k", low=1, high=1000),
        replicate_slots=bo.integer("replicate_slots", low=0, high=1023),
        population_slots=bo.integer("population_slots", low=0, high=1023),
        reference_sets=bo.integer("reference_sets", low=0, high=100_000),
        reference_replications=bo.integer("reference_replications", low=1, high=100),
        random_features=bo.integer("random_features", low=0, high=8192),
    )
    if 0 < kwargs["bo"].reference_sets < 8:
        raise ConfigError(
            f"bo.reference_sets must be 0 (off) or at least 8, got {kwargs['bo'].reference_sets}"
        )
    bo.finish()
    metric = r.section("metric", required=False, schema=MetricSettings)
    kwargs["metric"] = MetricSettings(
        bandwidth=metric.choice("bandwidth", BANDWIDTHS),
        noise_floor_splits=metric.integer("noise_floor_splits", low=1, high=100_000),
        permutations=metric.integer("permutations", low=10, high=1_000_000),
        fresh_images=metric.integer("fresh_images", low=0, high=100_000),
        null_draws=metric.integer("null_draws", low=0, high=100_000),
    )
    metric.finish()
    dask = r.section("dask", required=False, schema=DaskSettings)
    address = dask.optional_string("scheduler_address")
    workers = dask.integer("local_workers", low=1, high=10_000)
    resources = _read_resources(dask)
    tasks_per_job = dask.integer("tasks_per_job", low=1, high=100_000)
    dask.finish()
    kwargs["dask"] = DaskSettings(
        scheduler_address=address,
        local_workers=workers,
        resources=resources,
        tasks_per_job=tasks_per_job,
    )
    kwargs["imaging"] = _read_imaging(r.section("imaging", required=False))
    if kwargs["executor"] == "dask" and address is None and workers is None:
        raise ConfigError(
            "executor: dask needs dask.scheduler_address (an existing cluster, e.g. "
            "'tcp://10.0.0.1:8786') or dask.local_workers (start a LocalCluster), got neither"
        )
    r.finish()
    for d in DATASET_TYPES:
        spec: DatasetSpec = kwargs[d]
        if spec.n_images < 2:
            raise ConfigError(
                f"{d}: param_sets x replications must give at least 2 images (MMD needs 2), "
                f"got {spec.param_sets} x {spec.replications}"
            )
    if check_paths:
        _check_folder("base_image_dir", kwargs["base_image_dir"], source)
        if kwargs["target_image_dir"] is not None:
            _check_folder("target_image_dir", kwargs["target_image_dir"], source)
        if kwargs["warm_start"] is not None:
            _check_folder("warm_start", kwargs["warm_start"], source)
        if kwargs["dino_weights"] is not None and not Path(kwargs["dino_weights"]).exists():
            raise ConfigError(f"dino_weights: {kwargs['dino_weights']} does not exist")
    return ExperimentConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------


def _tname(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {value}"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def _check_folder(key: str, folder: Path, source: str = "config") -> None:
    """Refuse a missing input folder with a message that says where it was looked for.

    A relative path is resolved against the current directory; when it is missing there but
    exists beside the config file (or one folder above it, the usual repository layout), the
    message says to run from there instead of offering to create a second copy here.
    """
    if not folder.exists():
        where = ""
        hint = ""
        if not folder.is_absolute():
            where = f" (relative paths are resolved against the current directory {Path.cwd()})"
            config_dir = Path(source).resolve().parent if source != "config" else None
            near = [
                base
                for base in ((config_dir, config_dir.parent) if config_dir else ())
                if (base / folder).is_dir()
            ]
            if near:
                hint = (
                    f"; it exists under {near[0]}: run from that folder, or give the absolute "
                    f"path {near[0] / folder}"
                )
        if not hint and key == "base_image_dir":
            hint = f"; create default chips with: bo-voids chips --out {folder.absolute()}"
        raise ConfigError(f"{key}: folder {folder} does not exist{where}{hint}")
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is not a folder")


class _FromSchema:
    """Sentinel: take the default of a reader method from the dataclass field of the same name."""


_FROM_SCHEMA = _FromSchema()


class _Missing:
    pass


_MISSING = _Missing()


def _field_defaults(schema: type | None) -> dict[str, Any]:
    """Scalar defaults of a config dataclass's fields (fields without a default are left out)."""
    if schema is None:
        return {}
    return {
        f.name: f.default
        for f in dataclasses.fields(schema)
        if f.default is not dataclasses.MISSING
    }


class _Reader:
    """Pops keys from a mapping with typed checks; :meth:`finish` rejects what is left.

    A key that is absent or ``null`` takes the default of the field of the same name of
    ``schema`` (the dataclass the section becomes), so every default is written once, on the
    dataclass; a reader method's explicit ``default`` is for the values computed at load time.
    """

    def __init__(self, data: Any, prefix: str, source: str, schema: type | None = None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or source} must be a mapping, got {_tname(data)}")
        self.data = data
        self.prefix = prefix
        self.source = source
        self.known: list[str] = []
        self._sections: dict[str, _Reader] = {}
        self._defaults = _field_defaults(schema)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _pop(self, name: str, required: bool) -> Any:
        self.known.append(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)} is required but missing")
            return _MISSING
        return self.data.pop(name)

    def _value(self, name: str, default: Any, required: bool = False) -> tuple[bool, Any]:
        """``(True, value)`` when the key holds a value, else ``(False, its default)``."""
        value = self._pop(name, required)
        if value is not _MISSING and value is not None:
            return True, value
        if default is not _FROM_SCHEMA:
            return False, default
        if name not in self._defaults:
            raise ConfigError(f"{self.key(name)} is required but missing")
        return False, self._defaults[name]

    def section(self, name: str, required: bool = True, schema: type | None = None) -> _Reader:
        if name in self._sections:
            return self._sections[name]
        value = self._pop(name, required)
        if value is _MISSING or value is None:
            value = {}
        reader = _Reader(value, self.key(name), self.source, schema)
        self._sections[name] = reader
        return reader

    def finish(self) -> None:
        for key in self.data:
            valid = sorted(set(self.known))
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {valid}"
            raise ConfigError(f"unknown key {self.key(str(key))!r}{hint}")

    def string(self, name: str) -> str:
        value = self._pop(name, required=True)
        if not isinstance(value, str) or not value:
            extra = " (YAML reads yes/no/on/off/true/false as booleans: quote it)" * isinstance(
                value, bool
            )
            raise ConfigError(
                f"{self.key(name)} must be a non-empty string, got {_tname(value)}{extra}"
            )
        return value

    def optional_string(self, name: str) -> str | None:
        found, value = self._value(name, _FROM_SCHEMA)
        if found and (not isinstance(value, str) or not value):
            raise ConfigError(f"{self.key(name)} must be a string or null, got {_tname(value)}")
        return value

    def path(self, name: str, default: Any = _FROM_SCHEMA) -> Path | None:
        found, value = self._value(name, default)
        if not found:
            return value
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.key(name)} must be a path (string), got {_tname(value)}")
        return Path(value).expanduser()

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        found, value = self._value(name, _FROM_SCHEMA)
        if found and (not isinstance(value, str) or value not in choices):
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{self.key(name)} must be one of {list(choices)}, got {_tname(value)}{hint}"
            )
        return value

    def boolean(self, name: str) -> bool:
        found, value = self._value(name, _FROM_SCHEMA)
        if found and not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)} must be true or false, got {_tname(value)}")
        return value

    def integer(
        self, name: str, low: int | None = None, high: int | None = None, required: bool = False
    ) -> Any:
        found, value = self._value(name, _FROM_SCHEMA, required)
        if not found:
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(name)} must be an integer, got {_tname(value)}")
        _check_range(self.key(name), value, low, high)
        return value

    def number(
        self,
        name: str,
        low: float | None = None,
        high: float | None = None,
        required: bool = False,
    ) -> Any:
        found, value = self._value(name, _FROM_SCHEMA, required)
        return _as_number(self.key(name), value, low, high) if found else value


def _as_number(key: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {_tname(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    _check_range(key, value, low, high)
    return value


def _check_range(key: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ConfigError(f"{key} must be >= {_fmt(low)}, got {_fmt(value)}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {_fmt(high)}, got {_fmt(value)}")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _read_resources(r: _Reader) -> dict[str, float] | None:
    """``dask.resources``: a mapping of resource name to a non-negative amount, or null."""
    key = r.key("resources")
    value = r._pop("resources", required=False)
    if value is _MISSING or value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(
            f"{key} must be a mapping of resource name to amount (e.g. {{GPU: 1}}), "
            f"got {_tname(value)}"
        )
    out: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: resource names must be non-empty strings, got {name!r}")
        out[name] = _as_number(f"{key}.{name}", amount, low=0.0)
    return out or None


def _check_bounds(key: str, low: float, high: float, limit_low: float, limit_high: float) -> None:
    if not low < high:
        raise ConfigError(f"{key} bounds must satisfy low < high, got [{low}, {high}] (reversed?)")
    if low < limit_low or high > limit_high:
        raise ConfigError(
            f"{key} must lie within [{_fmt(limit_low)}, {_fmt(limit_high)}], got [{low}, {high}]"
        )


def _read_imaging(r: _Reader) -> ImagingSettings:
    """``imaging:``: per key a fixed number or ``[low, high]`` bounds (a nuisance parameter)."""
    values: dict[str, ImagingValue] = {}
    for name, (limit_low, limit_high) in IMAGING_LIMITS.items():
        key = r.key(name)
        value = r._pop(name, required=False)
        if value is _MISSING or value is None:
            continue
        if isinstance(value, list):
            if len(value) != 2:
                raise ConfigError(
                    f"{key} must be a number or bounds [low, high], got {_tname(value)}"
                )
            low, high = (_as_number(key, v) for v in value)
            _check_bounds(key, low, high, limit_low, limit_high)
            values[name] = NumericBounds(low, high)
        else:
            values[name] = _as_number(key, value, limit_low, limit_high)
    r.finish()
    return ImagingSettings(**values)


def _read_dataset(r: _Reader) -> DatasetSpec:
    spec = DatasetSpec(
        param_sets=r.integer("param_sets", low=1, high=100_000, required=True),
        replications=r.integer("replications", low=1, high=1000, required=True),
        total_size=r.integer("total_size", low=1),
    )
    r.finish()
    return spec


def _read_bounds(r: _Reader) -> dict[str, ParameterBounds]:
    bounds: dict[str, ParameterBounds] = {}
    for name in PARAMETER_NAMES:
        key = r.key(name)
        value = r._pop(name, required=True)
        if PARAMETER_KINDS[name] == "categorical":
            if not isinstance(value, list) or not value:
                raise ConfigError(
                    f"{key} must be a non-empty list of shapes from {list(VOID_SHAPES)}, "
                    f"got {_tname(value)}"
                )
            bad = [v for v in value if v not in VOID_SHAPES]
            if bad:
                raise ConfigError(f"{key} may only hold {list(VOID_SHAPES)}, got {bad}")
            if len(set(value)) != len(value):
                raise ConfigError(f"{key} lists a shape twice: {value}")
            bounds[name] = CategoricalBounds(tuple(value))
            continue
        if not isinstance(value, list) or len(value) != 2:
            raise ConfigError(f"{key} must be a list [low, high], got {_tname(value)}")
        limit_low, limit_high = GENERATOR_LIMITS[name]
        lo_hi: list[float] = []
        if PARAMETER_KINDS[name] == "integer":
            for v in value:
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ConfigError(f"{key} bounds must be integers with low < high, got {value}")
                lo_hi.append(v)
        else:
            lo_hi = [_as_number(key, v) for v in value]
        low, high = lo_hi
        _check_bounds(key, low, high, limit_low, limit_high)
        bounds[name] = NumericBounds(low, high, integer=PARAMETER_KINDS[name] == "integer")
    r.finish()
    return bounds


def _read_distribution(
    r: _Reader, bounds: Mapping[str, ParameterBounds]
) -> dict[str, ParameterDistribution]:
    out: dict[str, ParameterDistribution] = {}
    for name in PARAMETER_NAMES:
        b = bounds[name]
        sub = r.section(name)
        if isinstance(b, CategoricalBounds):
            probs: dict[str, float] = {}
            for shape in list(sub.data):
                if shape not in b.choices:
                    raise ConfigError(
                        f"{sub.key(str(shape))}: shape not in param_bounds.void_shape "
                        f"{list(b.choices)}"
                    )
                probs[shape] = sub.number(shape, low=0.0, high=1.0, required=True)
            if not probs:
                raise ConfigError(f"{sub.prefix} must give at least one shape probability")
            total = sum(probs.values())
            if abs(total - 1.0) > 1e-6:
                raise ConfigError(
                    f"{sub.prefix} probabilities must sum to 1 (within 1e-6), got {total:.6g}"
                )
            out[name] = CategoricalDistribution(probs)
        else:
            mean = sub.number("mean", required=True)
            std = sub.number("std", low=0.0, required=True)
            if not b.low <= mean <= b.high:
                raise ConfigError(
                    f"{sub.key('mean')} must lie within param_bounds.{name} "
                    f"[{_fmt(b.low)}, {_fmt(b.high)}], got {_fmt(mean)}"
                )
            out[name] = NormalDistribution(mean, std)
        sub.finish()
    r.finish()
    return out
