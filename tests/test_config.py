from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bo_voids.config import (
    ACQUISITIONS,
    DEFAULT_BASE_IMAGE_DIR,
    DINO_MODELS,
    EMBEDDERS,
    OPTIMIZERS,
    SURROGATES,
    BOSettings,
    DaskSettings,
    DatasetSpec,
    ExperimentConfig,
    MetricSettings,
    config_from_dict,
    load_config,
    read_yaml,
)
from bo_voids.exceptions import ConfigError


@pytest.fixture
def raw(config_path: Path) -> dict:
    return yaml.safe_load(config_path.read_text())


def _load(raw: dict) -> ExperimentConfig:
    return config_from_dict(raw, check_paths=False)


def test_default_config_loads(config_path: Path, repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    cfg = load_config(config_path)
    assert cfg.experiment_name == "infineon_void_poc"
    assert cfg.param_bounds["void_count"].low == 3
    assert cfg.real.n_images == 15
    assert cfg.optimizer == "botorch"
    assert config_from_dict(cfg.to_dict(), check_paths=False) == cfg


def test_quickstart_loads(repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    cfg = load_config(repo_root / "configs" / "quickstart.yaml")
    assert cfg.embedder == "handcrafted"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("param_distributions", "real", "void_count", "std"),
            -1,
            "param_distributions.real.void_count.std must be >= 0, got -1",
        ),
        (
            ("param_bounds", "base_size"),
            [40.0, 5.0],
            "param_bounds.base_size bounds must satisfy low < high",
        ),
        (
            ("param_bounds", "void_count"),
            [3.5, 20],
            "param_bounds.void_count bounds must be integers",
        ),
        (
            ("param_bounds", "brightness_factor"),
            [0.3, 1.8],
            "param_bounds.brightness_factor must lie within [0, 1]",
        ),
        (
            ("param_bounds", "void_shape"),
            ["circle", "square"],
            "param_bounds.void_shape may only hold",
        ),
        (
            ("param_distributions", "far", "void_shape"),
            {"circle": 0.7, "ellipse": 0.2, "irregular": 0.2},
            "param_distributions.far.void_shape probabilities must sum to 1",
        ),
        (
            ("param_distributions", "real", "base_size", "mean"),
            80,
            "param_distributions.real.base_size.mean must lie within param_bounds.base_size",
        ),
        (("real", "param_sets"), 0, "real.param_sets must be >= 1, got 0"),
        (("replications_per_iteration",), 0, "replications_per_iteration must be >= 2, got 0"),
        (("image_size",), "big", "image_size must be an integer, got str 'big'"),
        (("optimizer",), "bayes", "optimizer must be one of ['botorch', 'random']"),
        (("acquisition_function",), "eii", "did you mean 'ei'"),
        (("experiment_name",), "../escape", "experiment_name must be a plain folder name"),
        (("experiment_name",), "a/b", "experiment_name must be a plain folder name"),
        (("experiment_name",), False, "YAML reads yes/no/on/off/true/false as booleans"),
        (("common_random_numbers",), "yes", "common_random_numbers must be true or false"),
        (("bo", "ucb_beta"), -1.0, "bo.ucb_beta must be >= 0"),
    ],
)
def test_bad_values_name_the_key(raw: dict, path: tuple, value, message: str) -> None:
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        _load(raw)
    assert message in str(err.value)


def test_unknown_key_suggests_nearest(raw: dict) -> None:
    raw["max_iteration"] = 3
    with pytest.raises(
        ConfigError, match="unknown key 'max_iteration'; did you mean 'max_iterations'"
    ):
        _load(raw)
    del raw["max_iteration"]
    raw["param_distributions"]["real"]["void_count"]["sd"] = 1
    with pytest.raises(ConfigError, match=r"param_distributions\.real\.void_count\.sd"):
        _load(raw)


def test_missing_key(raw: dict) -> None:
    del raw["param_bounds"]["size_std"]
    with pytest.raises(ConfigError, match="param_bounds.size_std is required"):
        _load(raw)


def test_missing_base_folder(raw: dict, tmp_path: Path) -> None:
    raw["base_image_dir"] = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match="base_image_dir: folder .*nope does not exist"):
        config_from_dict(raw)


def test_invalid_yaml_reports_position(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("experiment_name: x\nreal: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        read_yaml(p)


def test_duplicate_keys_rejected(tmp_path: Path) -> None:
    p = tmp_path / "dup.yaml"
    p.write_text("seed: 1\nimage_size: 64\nseed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'seed'.*line 1"):
        read_yaml(p)


def test_yaml12_floats(tmp_path: Path) -> None:
    p = tmp_path / "f.yaml"
    p.write_text("a: 1e3\nb: 2.5e-1\nc: 7\n")
    assert read_yaml(p) == {"a": 1000.0, "b": 0.25, "c": 7}


def test_replace_validates(config_path: Path, repo_root: Path, monkeypatch) -> None:
    monkeypatch.chdir(repo_root)
    cfg = load_config(config_path)
    assert cfg.replace(max_iterations=2).max_iterations == 2
    with pytest.raises(ConfigError, match="max_iterations must be >= 0"):
        cfg.replace(max_iterations=-1)


def test_dask_needs_address(raw: dict) -> None:
    raw["executor"] = "dask"
    with pytest.raises(ConfigError, match="dask.scheduler_address"):
        _load(raw)


def test_dask_resources_and_tasks_per_job(raw: dict) -> None:
    raw["executor"] = "dask"
    raw["dask"] = {"scheduler_address": "tcp://10.0.0.1:8786", "resources": {"GPU": 1}}
    cfg = _load(raw)
    assert cfg.dask.resources == {"GPU": 1.0} and cfg.dask.tasks_per_job == 1
    raw["dask"]["tasks_per_job"] = 4
    cfg = _load(raw)
    assert cfg.dask.tasks_per_job == 4
    assert config_from_dict(cfg.to_dict(), check_paths=False) == cfg
    defaults = _load({**raw, "dask": None, "executor": "local"}).dask
    assert defaults.resources is None and defaults.tasks_per_job == 1


@pytest.mark.parametrize(
    ("dask", "message"),
    [
        ({"resources": ["GPU"]}, "dask.resources must be a mapping of resource name to amount"),
        ({"resources": {"GPU": -1}}, "dask.resources.GPU must be >= 0, got -1"),
        ({"resources": {"GPU": "one"}}, "dask.resources.GPU must be a number"),
        ({"resources": {1: 1}}, "dask.resources: resource names must be non-empty strings"),
        ({"tasks_per_job": 0}, "dask.tasks_per_job must be >= 1, got 0"),
        ({"tasks_per_job": 1.5}, "dask.tasks_per_job must be an integer"),
        ({"task_per_job": 2}, "unknown key 'dask.task_per_job'; did you mean 'tasks_per_job'"),
    ],
)
def test_dask_settings_validated(raw: dict, dask: dict, message: str) -> None:
    raw["dask"] = {"local_workers": 2, **dask}
    with pytest.raises(ConfigError) as err:
        _load(raw)
    assert message in str(err.value)


def _minimal(raw: dict) -> dict:
    """Only the keys without a default: name, bounds, distributions and the dataset sizes."""
    keep = {"experiment_name", "param_bounds", "param_distributions", "real", "close", "far"}
    out = {k: v for k, v in raw.items() if k in keep}
    for name in ("real", "close", "far"):
        out[name] = {k: raw[name][k] for k in ("param_sets", "replications")}
    return out


def test_every_default_comes_from_the_dataclasses(raw: dict) -> None:
    cfg = _load(_minimal(raw))
    for cls, obj in [
        (ExperimentConfig, cfg),
        (BOSettings, cfg.bo),
        (MetricSettings, cfg.metric),
        (DaskSettings, cfg.dask),
        (DatasetSpec, cfg.real),
    ]:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                assert getattr(obj, f.name) == f.default, f"{cls.__name__}.{f.name}"
    assert cfg.experiment_dir == Path("experiments") / cfg.experiment_name
    assert cfg.base_image_dir == DEFAULT_BASE_IMAGE_DIR
    # null means "the default" too
    nulls = {**_minimal(raw), "seed": None, "bo": {"maxiter": None}, "real": {**raw["real"]}}
    nulls["real"]["total_size"] = None
    assert _load(nulls) == _load({**_minimal(raw), "real": nulls["real"]})


def test_required_keys_have_no_default(raw: dict) -> None:
    minimal = _minimal(raw)
    minimal["real"] = {"param_sets": None, "replications": 3}
    with pytest.raises(ConfigError, match="real.param_sets is required"):
        _load(minimal)


def test_allowed_values_are_those_of_the_implementations() -> None:
    import bo_voids.optimizers.botorch_gp as botorch_gp
    from bo_voids.embedding import DINOV2_VARIANTS, available_embedders
    from bo_voids.optimizers import OPTIMIZERS as REGISTRY
    from bo_voids.surrogates import ACQUISITIONS as SURROGATE_ACQUISITIONS

    assert set(DINO_MODELS) == set(DINOV2_VARIANTS)
    assert available_embedders() is EMBEDDERS
    assert botorch_gp.ACQUISITIONS is ACQUISITIONS
    assert tuple(SURROGATE_ACQUISITIONS) == ACQUISITIONS
    # `optimizer: botorch` is the GP family; `bo.surrogate` picks the registered class
    assert set(OPTIMIZERS) <= set(REGISTRY) and set(SURROGATES) >= set(botorch_gp.SURROGATES)


def test_config_defaults_are_the_optimizer_defaults(config_path: Path) -> None:
    """An empty ``bo:`` section gives the GP the options it has without a config."""
    from bo_voids.optimizers import BoTorchOptimizer, optimizer_from_config
    from bo_voids.space import SearchSpace

    cfg = load_config(config_path, check_paths=False)
    cfg = cfg.replace(optimizer="botorch", bo={"surrogate": "mixed"})
    opt = optimizer_from_config(cfg, SearchSpace.from_config(cfg))
    defaults = BoTorchOptimizer.default_options
    assert opt.options["acquisition"] == defaults["acquisition"] == cfg.acquisition_function
    for key in ("num_restarts", "raw_samples", "maxiter", "ucb_beta", "min_observations"):
        assert opt.options[key] == defaults[key], key


def test_extends_merges_sections_over_the_base(repo_root: Path, tmp_path: Path) -> None:
    base = load_config(repo_root / "configs" / "experiment_config.yaml", check_paths=False)
    child = tmp_path / "child.yaml"
    child.write_text(
        f"extends: {repo_root / 'configs' / 'experiment_config.yaml'}\n"
        "experiment_name: child\nmax_iterations: 2\nmetric:\n  null_draws: 7\n"
    )
    cfg = load_config(child, check_paths=False)
    assert cfg.max_iterations == 2 and cfg.metric.null_draws == 7
    # the rest of the metric section, and everything else, is the base's
    assert cfg.metric.fresh_images == base.metric.fresh_images
    assert cfg.param_bounds == base.param_bounds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: child.yaml\n", "leads back to itself"),
        ("extends: missing.yaml\n", "is not a file"),
        ("extends: [1]\n", "extends must be the path"),
    ],
)
def test_bad_extends_is_named(tmp_path: Path, text: str, message: str) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(child, check_paths=False)


def test_relative_folder_message_says_where_it_looked(
    repo_root: Path, tmp_path: Path, monkeypatch
) -> None:
    from bo_voids.config import load_config

    # run from another folder: the repository's relative paths do not resolve here
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config(repo_root / "configs" / "quickstart.yaml")
    message = str(exc.value)
    assert f"relative paths are resolved against the current directory {tmp_path}" in message
    assert f"it exists under {repo_root}" in message and "bo-voids chips" not in message

    # nowhere to be found: the hint creates the chips where the config will look for them
    raw = yaml.safe_load((repo_root / "configs" / "experiment_config.yaml").read_text())
    raw["base_image_dir"] = "chips_here"
    lonely = tmp_path / "cfg" / "mine.yaml"
    lonely.parent.mkdir()
    lonely.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        load_config(lonely)
    assert f"bo-voids chips --out {tmp_path / 'chips_here'}" in str(exc.value)


@pytest.mark.parametrize("name", ["experiment_config", "quickstart", "real_folder"])
def test_every_shipped_config_loads(repo_root: Path, name: str) -> None:
    cfg = load_config(repo_root / "configs" / f"{name}.yaml", check_paths=False)
    if name == "real_folder":  # the settings the folder-recovery benchmark chose for real images
        assert set(cfg.imaging.nuisance_bounds()) >= {"imaging_psf_sigma", "imaging_gamma"}
        assert cfg.bo.reference_sets == 64
    assert sorted(p.stem for p in (repo_root / "configs").glob("*.yaml")) == sorted(
        ["experiment_config", "quickstart", "real_folder"]
    )


def _folder_config(tmp_path: Path, repo_root: Path, extra: str = "") -> Path:
    folder = tmp_path / "real"
    folder.mkdir(exist_ok=True)
    path = tmp_path / "c.yaml"
    base = (repo_root / "configs" / "quickstart.yaml").resolve()
    path.write_text(f"extends: {base}\ntarget_image_dir: {folder}\n{extra}")
    return path


def test_a_folder_of_real_images_gets_the_imaging_block_and_reference_design(
    tmp_path: Path, repo_root: Path, monkeypatch
) -> None:
    from bo_voids.config import FOLDER_IMAGING, FOLDER_REFERENCE

    monkeypatch.chdir(repo_root)
    cfg = load_config(_folder_config(tmp_path, repo_root))
    assert set(cfg.imaging.nuisance_bounds()) == {f"imaging_{k}" for k in FOLDER_IMAGING}
    assert cfg.bo.reference_sets == FOLDER_REFERENCE["reference_sets"]
    assert cfg.bo.random_features == FOLDER_REFERENCE["random_features"]
    # what was filled in is recorded: the stored config reloads to the same run
    assert config_from_dict(cfg.to_dict(), check_paths=False) == cfg
    # simulated targets keep today's behaviour
    plain = load_config(repo_root / "configs" / "quickstart.yaml")
    assert plain.imaging.is_identity and plain.bo.reference_sets == 0


def test_a_folder_config_can_turn_the_defaults_off(
    tmp_path: Path, repo_root: Path, monkeypatch
) -> None:
    monkeypatch.chdir(repo_root)
    extra = "imaging: {}\nbo:\n  reference_sets: 0\n"
    cfg = load_config(_folder_config(tmp_path, repo_root, extra))
    assert cfg.imaging.is_identity
    assert cfg.bo.reference_sets == 0 and cfg.bo.random_features == 0
    # a stored folder experiment is never given defaults it did not run with
    assert config_from_dict(cfg.to_dict(), check_paths=False) == cfg
    partial = load_config(_folder_config(tmp_path, repo_root, "imaging:\n  gamma: [0.8, 1.2]\n"))
    assert set(partial.imaging.nuisance_bounds()) == {"imaging_gamma"}
