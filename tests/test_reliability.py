"""Reliability catalogue: bad inputs and faults, each with its expected outcome.

Every case checks the user-facing contract: a clear message naming what is wrong, exit code 2 for
user errors (1 for runtime failures), nothing half-written, nothing lost. Crash tests that kill a
real process (``SIGKILL`` / ``SIGINT``) and resume it live in ``test_reliability_kill.py``; the
experiment folder's building blocks (atomic writes, the lock) are unit-tested in ``test_state.py``.

Numerical faults in the optimiser are covered by ``tests/optimizers/test_optimizer_contract.py``
(NaN embeddings excluded with a warning naming the set, a single observation, no observation,
all-equal scores, duplicates of the history) and ``tests/optimizers/test_botorch_gp.py`` (fit
failures, non-finite candidates, duplicate candidates fall back); the cases below add what those
do not: infinite embeddings, a non-finite score, duplicate points inside the history, and the
pipeline-level failure budget.
"""

from __future__ import annotations

import ast
import errno
import io
import json
import math
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bo_voids import optimize
from bo_voids.config import ExperimentConfig, config_from_dict, load_config, read_yaml
from bo_voids.evaluation import Evaluator
from bo_voids.exceptions import (
    BoVoidsError,
    ConfigError,
    FallbackWarning,
    ImageLoadError,
    StateError,
    UserInputError,
)
from bo_voids.generation.base_chips import load_base_images
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import ExperimentLock, ExperimentStore, load_experiment
from bo_voids.testing.faults import PHASES, FaultInjector, parse_points
from bo_voids.testing.runs import tiny_config

PACKAGE = Path(__file__).resolve().parents[1] / "bo_voids"


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plots are not under test here and cost ~2 s per iteration."""
    monkeypatch.setattr(OptimizationPipeline, "_plot", lambda self: None)


def write_config(cfg: ExperimentConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


@pytest.fixture
def cfg(repo_root: Path, tmp_path: Path) -> ExperimentConfig:
    return tiny_config(repo_root, tmp_path, max_iterations=1)


@pytest.fixture
def config_file(cfg: ExperimentConfig, tmp_path: Path) -> Path:
    return write_config(cfg, tmp_path / "tiny.yaml")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = optimize.main([*args, "--quiet", "--no-report"])
    return code, capsys.readouterr().err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


# =============================================================================================
# config
# =============================================================================================


def _set(raw: dict, path: str, value) -> None:
    keys = path.split(".")
    node = raw
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


# (dotted key, value, expected message) — through the CLI: exit 2, the key named, no traceback.
BAD_VALUES = [
    ("image_size", "64", "image_size must be an integer, got str '64'"),
    ("max_iterations", [1], "max_iterations must be an integer, got list"),
    ("convergence_threshold", "low", "convergence_threshold must be a number"),
    ("edge_blur", float("inf"), "edge_blur must be a finite number"),
    (
        "param_bounds.base_size",
        [40.0, 5.0],
        "param_bounds.base_size bounds must satisfy low < high",
    ),
    ("param_bounds.void_count", [20, 3], "param_bounds.void_count bounds must satisfy low < high"),
    ("param_bounds.position_spread", [0.0, 0.5], "param_bounds.position_spread must lie within"),
    ("param_bounds.void_count", [1, 500], "param_bounds.void_count must lie within [1, 200]"),
    (
        "param_distributions.close.brightness_factor.mean",
        0.95,
        "param_distributions.close.brightness_factor.mean must lie within",
    ),
    (
        "param_distributions.real.void_shape",
        {"circle": 0.5, "ellipse": 0.1, "irregular": 0.1},
        "param_distributions.real.void_shape probabilities must sum to 1",
    ),
    (
        "param_distributions.far.void_shape",
        {"circle": 1.2, "ellipse": -0.2},
        "param_distributions.far.void_shape.circle must be <= 1",
    ),
    (
        "param_distributions.close.size_std.std",
        -0.5,
        "param_distributions.close.size_std.std must be >= 0, got -0.5",
    ),
    ("close.param_sets", -2, "close.param_sets must be >= 1, got -2"),
    ("far.replications", 0, "far.replications must be >= 1, got 0"),
    ("real.total_size", -1, "real.total_size must be >= 1"),
    ("replications_per_iteration", 0, "replications_per_iteration must be >= 2, got 0"),
    ("iteration_batch_size", 0, "iteration_batch_size must be >= 1, got 0"),
    ("max_failure_fraction", 1.5, "max_failure_fraction must be <= 1"),
    ("real", {"param_sets": 1, "replications": 1}, "real: param_sets x replications"),
    ("experiment_name", "a/b", "experiment_name must be a plain folder name"),
    ("experiment_name", "a\\b", "experiment_name must be a plain folder name"),
    ("experiment_name", "..", "experiment_name must be a plain folder name"),
    ("experiment_name", "x..y", "experiment_name must be a plain folder name"),
    ("experiment_name", "/abs", "experiment_name must be a plain folder name"),
    ("experiment_name", "", "experiment_name must be a non-empty string"),
    ("dask.tasks_per_job", 0, "dask.tasks_per_job must be >= 1, got 0"),
    ("dask.resources", ["GPU"], "dask.resources must be a mapping"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_config_values_exit_2(
    config_file: Path, capsys: pytest.CaptureFixture[str], key: str, value, message: str
) -> None:
    raw = yaml.safe_load(config_file.read_text())
    _set(raw, key, value)
    config_file.write_text(yaml.safe_dump(raw))
    code, err = run_cli(capsys, "--config", str(config_file))
    assert_user_error(code, err, "config error:", message)


# YAML text edits (the traps live in the text, not in the parsed values).
BAD_TEXT = [
    ("invalid_yaml", "seed: [1, 2\n", "invalid YAML"),
    ("duplicate_key", "seed: 4\n", "duplicate key 'seed'"),
    (
        "misspelt_key",
        "max_iteratons: 3\n",
        "unknown key 'max_iteratons'; did you mean 'max_iterations'",
    ),
    ("misspelt_nested", "metric2: {}\n", "unknown key 'metric2'; did you mean 'metric'"),
    ("yaml11_no", "dino_model: no\n", "dino_model must be one of"),
    ("tab_indent", "bo:\n\tucb_beta: 2\n", "invalid YAML"),
]


@pytest.mark.parametrize(("case", "extra", "message"), BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_bad_config_text_exit_2(
    config_file: Path, capsys: pytest.CaptureFixture[str], case: str, extra: str, message: str
) -> None:
    text = config_file.read_text()
    if case in {"duplicate_key", "yaml11_no"}:
        key = extra.split(":")[0]
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}:"))
        text = text + "\n" + extra if case == "yaml11_no" else text + "\n" + extra + "seed: 5\n"
    else:
        text = text + extra
    config_file.write_text(text)
    code, err = run_cli(capsys, "--config", str(config_file))
    assert_user_error(code, err, "config error:", message)
    if "YAML" in message or "duplicate" in message:
        assert re.search(r"tiny\.yaml:\d+:\d+: ", err), err  # file:line:col


def test_invalid_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("experiment_name: x\nseed: 1\nbo:\n  ucb_beta: [1,\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(p)
    assert str(err.value).startswith(f"{p}:5:1: invalid YAML")


def test_yaml11_traps(config_file: Path) -> None:
    text = config_file.read_text()
    drop = ("convergence_threshold:", "calibrate:", "stop_at_noise_floor:", "experiment_name:")
    base = "\n".join(line for line in text.splitlines() if not line.startswith(drop)) + "\n"
    # 1e3 is a float (YAML 1.2), not the string "1e3"; on/off are fine for booleans
    config_file.write_text(
        base + "experiment_name: ok\nconvergence_threshold: 1e3\ncalibrate: on\n"
        "stop_at_noise_floor: off\n"
    )
    cfg = load_config(config_file, check_paths=False)
    assert cfg.convergence_threshold == 1000.0 and isinstance(cfg.convergence_threshold, float)
    assert cfg.calibrate is True and cfg.stop_at_noise_floor is False
    assert read_yaml(config_file)["convergence_threshold"] == 1000.0
    # `no` / `yes` for a string field is refused with the hint to quote it
    for word in ("no", "yes", "off"):
        config_file.write_text(base + f"experiment_name: {word}\n")
        with pytest.raises(ConfigError, match=r"experiment_name must be a non-empty string.*quote"):
            load_config(config_file, check_paths=False)
    config_file.write_text(base + 'experiment_name: "no"\n')
    assert load_config(config_file, check_paths=False).experiment_name == "no"


def test_experiment_name_stays_inside_the_experiments_root(cfg: ExperimentConfig) -> None:
    raw = cfg.to_dict()
    del raw["experiment_dir"]
    for name in ("run-1", "run_2.b", "A9"):
        c = config_from_dict({**raw, "experiment_name": name}, check_paths=False)
        root = Path("experiments").resolve()
        assert c.experiment_dir.resolve().parent == root
    for name in ("../x", "x/../../y", "~root", ".hidden", "a\\..\\b", "x/y", "."):
        with pytest.raises(ConfigError, match="experiment_name"):
            config_from_dict({**raw, "experiment_name": name}, check_paths=False)


def test_config_file_problems_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "--config", str(tmp_path / "missing.yaml"))
    assert_user_error(code, err, "missing.yaml does not exist")
    code, err = run_cli(capsys, "--config", str(tmp_path))
    assert_user_error(code, err, "cannot be read")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    code, err = run_cli(capsys, "--config", str(tmp_path / "list.yaml"))
    assert_user_error(code, err, "must hold a mapping")
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    code, err = run_cli(capsys, "--config", str(tmp_path / "empty.yaml"))
    assert_user_error(code, err, "is empty")


# =============================================================================================
# images
# =============================================================================================


def _good_png(path: Path, size: int = 64, value: int = 140) -> Path:
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def test_missing_base_folder_exit_2(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write_config(cfg.replace(base_image_dir=tmp_path / "nope"), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    assert_user_error(
        code, err, "base_image_dir: folder", "nope does not exist", "base_chips --out"
    )


def test_empty_base_folder_exit_2(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "chips"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    f = write_config(cfg.replace(base_image_dir=empty), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    assert_user_error(code, err, "no image files", str(empty))
    assert not Path(cfg.experiment_dir).exists(), "nothing may be written for a bad input"


def test_bad_base_images_all_listed_before_iteration_0(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chips = tmp_path / "chips"
    chips.mkdir()
    _good_png(chips / "a_good.png")
    _truncated_png(chips / "b_truncated.png")
    (chips / "c_not_an_image.png").write_text("hello, I am text")
    (chips / "d_empty.tif").write_bytes(b"")
    f = write_config(cfg.replace(base_image_dir=chips), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    assert_user_error(code, err, "3 of 4 base image file(s)")
    for name in ("b_truncated.png", "c_not_an_image.png", "d_empty.tif"):
        assert name in err
    assert "a_good.png" not in err
    assert not Path(cfg.experiment_dir).exists(), "nothing may be written before the check"


def test_rgba_16bit_and_odd_sizes_are_normalised(tmp_path: Path) -> None:
    chips = tmp_path / "chips"
    chips.mkdir()
    rgba = np.zeros((60, 90, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 10  # nearly transparent: alpha is dropped, not composited
    Image.fromarray(rgba, mode="RGBA").save(chips / "rgba.png")
    Image.fromarray(np.full((100, 70), 32768, dtype=np.uint16)).save(chips / "grey16.png")
    Image.fromarray(np.full((40, 40, 3), 51, dtype=np.uint8)).save(chips / "rgb.jpg")
    Image.fromarray(np.full((300, 300), 255, dtype=np.uint8)).save(chips / "big.tif")
    Image.fromarray(np.full((32, 32), 0.25, dtype=np.float32), mode="F").save(chips / "float.tiff")
    images, ids = load_base_images(chips, 64)
    assert ids == ["big.tif", "float.tiff", "grey16.png", "rgb.jpg", "rgba.png"]
    for img in images:
        assert img.shape == (64, 64) and img.dtype == np.float32
        assert 0.0 <= img.min() <= img.max() <= 1.0
    means = dict(zip(ids, (float(i.mean()) for i in images), strict=True))
    assert means["grey16.png"] == pytest.approx(0.5, abs=0.01)  # 16-bit scaled by 65535
    assert means["rgba.png"] == pytest.approx(200 / 255, abs=0.01)
    assert means["rgb.jpg"] == pytest.approx(0.2, abs=0.02)
    assert means["big.tif"] == pytest.approx(1.0)
    assert means["float.tiff"] == pytest.approx(0.25)
    # the generator renders on such a folder
    from bo_voids.generation.voids import VoidGenerator

    out = VoidGenerator(chips, image_size=64).render(
        {
            "void_shape": "circle",
            "void_count": 4,
            "base_size": 20.0,
            "brightness_factor": 0.5,
            "size_std": 2.0,
            "position_spread": 0.5,
        },
        seed=1,
    )
    assert out.image.shape == (64, 64) and np.all(np.isfinite(out.image))


@pytest.mark.parametrize("n_images", [0, 1])
def test_target_folder_with_fewer_than_2_images_exit_2(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str], n_images: int
) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    for i in range(n_images):
        _good_png(targets / f"real_{i}.png")
    f = write_config(cfg.replace(target_image_dir=targets), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    needle = "needs at least 2 real target images" if n_images else "real target image folder"
    assert_user_error(code, err, needle, str(targets))
    assert not Path(cfg.experiment_dir).exists(), "checked before anything is written"


def test_bad_target_images_are_a_user_error(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    _good_png(targets / "real_0.png")
    _good_png(targets / "real_1.png")
    _truncated_png(targets / "real_2.png")
    f = write_config(cfg.replace(target_image_dir=targets), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    assert_user_error(code, err, "1 of 3 real target image file(s)", "real_2.png")
    with pytest.raises(ImageLoadError) as info:  # the class the CLI maps to exit 2
        OptimizationPipeline(cfg.replace(target_image_dir=targets)).run_full_experiment()
    assert isinstance(info.value, UserInputError)


# =============================================================================================
# state
# =============================================================================================


def test_refused_runs_leave_the_existing_experiment_untouched(
    cfg: ExperimentConfig, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(capsys, "--config", str(config_file))[0] == 0
    store = ExperimentStore(cfg.experiment_dir)
    before = store.manifest_path.read_bytes()
    # existing experiment, neither --resume nor --overwrite
    code, err = run_cli(capsys, "--config", str(config_file))
    assert_user_error(code, err, "already exists", "--resume", "--overwrite")
    # --resume with a changed config: the difference is named
    changed = write_config(cfg.replace(image_size=80, edge_blur=1.0), config_file.parent / "x.yaml")
    code, err = run_cli(capsys, "--config", str(changed), "--resume")
    assert_user_error(code, err, "cannot resume", "image_size: 64 -> 80", "edge_blur: 2.0 -> 1.0")
    # --resume with a different embedder (same config): refused, naming both
    manifest = json.loads(before)
    manifest["embedder"]["fingerprint"] = "handcrafted:hc-0:0000000000000000"
    store.manifest_path.write_text(json.dumps(manifest))
    before = store.manifest_path.read_bytes()
    code, err = run_cli(capsys, "--config", str(config_file), "--resume")
    assert_user_error(code, err, "different embedders must not be mixed", "hc-0:0000")
    assert store.manifest_path.read_bytes() == before, "a refused run must not touch the manifest"
    assert not (store.root / ".lock").exists()


def test_lock_held_by_live_process_is_refused(
    cfg: ExperimentConfig, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(cfg.experiment_dir)
    with ExperimentLock(root) as held:
        holder = json.loads(held.path.read_text())
        code, err = run_cli(capsys, "--config", str(config_file))
        assert_user_error(code, err, f"in use by process {os.getpid()}", holder["since"])
        assert json.loads(held.path.read_text()) == holder, "someone else's lock is kept"
    assert not (root / "experiment.json").exists()


def test_experiment_folder_below_a_file_exit_2(
    cfg: ExperimentConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a folder should be: refused up front, even as root
    f = write_config(cfg.replace(experiment_dir=blocker / "exp"), tmp_path / "c.yaml")
    code, err = run_cli(capsys, "--config", str(f))
    assert_user_error(code, err, "experiment_dir", str(blocker), "is a file")
    assert "--resume" not in err  # resuming cannot help
    assert blocker.read_text() == "x"


def test_overwrite_refuses_a_folder_that_is_not_an_experiment(
    cfg: ExperimentConfig, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(cfg.experiment_dir)
    root.mkdir(parents=True)
    (root / "thesis.tex").write_text("precious")
    code, err = run_cli(capsys, "--config", str(config_file), "--overwrite")
    assert_user_error(code, err, "holds no experiment", "thesis.tex")
    assert (root / "thesis.tex").read_text() == "precious"
    # leftovers of an interrupted start (no manifest): refused without --overwrite, then cleared
    (root / "thesis.tex").unlink()
    (root / "iteration_0.partial").mkdir()
    (root / ".history.csv.abc.tmp").write_text("")
    code, err = run_cli(capsys, "--config", str(config_file))
    assert_user_error(code, err, "leftovers", "--overwrite")
    assert run_cli(capsys, "--config", str(config_file), "--overwrite")[0] == 0
    assert not (root / "iteration_0.partial").exists()


# =============================================================================================
# failure budget
# =============================================================================================


def _breaking_render(monkeypatch: pytest.MonkeyPatch, should_fail) -> None:
    """Make ``Evaluator.render`` raise for the tasks ``should_fail(task)`` selects."""
    original = Evaluator.render

    def render(self, task):
        if should_fail(task):
            raise RuntimeError(f"renderer exploded on {task.param_set_id}")
        return original(self, task)

    monkeypatch.setattr(Evaluator, "render", render)


def _nan_embeddings(monkeypatch: pytest.MonkeyPatch, should_fail) -> None:
    """Make the embeddings of the tasks ``should_fail(task)`` selects NaN."""
    original = Evaluator.evaluate_many

    def evaluate_many(self, tasks, *, progress=False):
        out = original(self, tasks, progress=progress)
        for r in out:
            if should_fail(r.task):
                r.embeddings = np.full_like(r.embeddings, np.nan)
        return out

    monkeypatch.setattr(Evaluator, "evaluate_many", evaluate_many)


def test_the_fault_hook_stops_once_at_each_phase_with_its_state_on_disk(
    cfg: ExperimentConfig,
) -> None:
    """What the crash tests of ``test_reliability_kill.py`` kill at, seen in-process."""
    store = ExperimentStore(cfg.experiment_dir)
    seen: list[tuple[str, int, list[int], bool, int]] = []

    def look(phase: str, k: int) -> None:
        partial = (store.root / f"iteration_{k}.partial").is_dir()
        done = store.read_manifest()["iterations_completed"]
        seen.append((phase, k, store.completed_iterations(), partial, done))

    pipeline = OptimizationPipeline(cfg)
    FaultInjector([(phase, 1) for phase in PHASES], action=look).install(pipeline)
    pipeline.run_full_experiment()
    assert seen == [
        ("render", 1, [0], False, 0),
        ("embed", 1, [0], False, 0),
        ("propose", 1, [0], False, 0),
        ("write", 1, [0], True, 0),  # every file in the partial folder, not yet renamed
        ("commit", 1, [0, 1], False, 0),  # renamed; the manifest (and history.csv) behind
    ]
    assert load_experiment(cfg.experiment_dir).manifest["status"] == "completed"


def test_fault_points_are_checked() -> None:
    assert parse_points(" render:0, ,commit:3") == [("render", 0), ("commit", 3)]
    with pytest.raises(ValueError, match="phase:iteration"):
        parse_points("write")
    with pytest.raises(ValueError, match="unknown fault phase"):
        FaultInjector([("plot", 1)])
    assert FaultInjector.from_env({}) is None
    injector = FaultInjector.from_env({"BO_VOIDS_TEST_KILL_AT": "embed:2"})
    assert injector is not None and injector.pending == {("embed", 2)}


def test_sigterm_stops_like_ctrl_c(
    config_file: Path,
    cfg: ExperimentConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch scheduler's SIGTERM: exit 143, status "interrupted", resumable, handler restored."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    original = OptimizationPipeline.step

    def terminate(self, k, *args, **kwargs):
        if k >= 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this sleep
        return original(self, k, *args, **kwargs)

    monkeypatch.setattr(OptimizationPipeline, "step", terminate)
    code, err = run_cli(capsys, "--config", str(config_file))
    assert code == 143 and "terminated (SIGTERM)" in err and "--resume" in err
    assert signal.getsignal(signal.SIGTERM) == before
    store = ExperimentStore(cfg.experiment_dir)
    assert store.read_manifest()["status"] == "interrupted"
    assert store.completed_iterations() == [0] and not (store.root / ".lock").exists()
    monkeypatch.setattr(OptimizationPipeline, "step", original)
    assert run_cli(capsys, "--config", str(config_file), "--resume")[0] == 0


def test_failures_within_budget_are_excluded_and_recorded(
    cfg: ExperimentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = cfg.replace(max_iterations=2)
    _nan_embeddings(monkeypatch, lambda t: t.iteration >= 1 and t.index == 1)
    with pytest.warns(FallbackWarning) as caught:
        OptimizationPipeline(cfg).run_full_experiment()
    messages = [str(w.message) for w in caught if "failed" in str(w.message)]
    assert any("iter1_ps_001" in m and "non-finite" in m and "void_count" in m for m in messages)
    run = load_experiment(cfg.experiment_dir)
    assert run.manifest["status"] == "completed"
    assert run.manifest["failed_evaluations"] == 2
    ids = {row["param_set_id"] for row in run.history}
    assert "iter1_ps_001" not in ids and "iter2_ps_001" not in ids and "iter1_ps_000" in ids
    for k in (1, 2):
        it = run.iterations[k]
        assert [f["param_set_id"] for f in it.failures] == [f"iter{k}_ps_001"]
        assert len(it.metadata) == 3 * cfg.replications_per_iteration
        assert np.all(np.isfinite(it.embeddings))
    assert not (Path(cfg.experiment_dir) / "iteration_0" / "failures.json").exists()


def test_failure_budget_exceeded_stops_with_exit_1(
    cfg: ExperimentConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 2 of 4 sets per iteration raise: 2/13 and 4/17 are within 25 %, 6/21 is not
    f = write_config(cfg.replace(max_iterations=6, max_failure_fraction=0.25), tmp_path / "c.yaml")
    _breaking_render(monkeypatch, lambda t: t.iteration >= 1 and t.index in (0, 3))
    code, err = run_cli(capsys, "--config", str(f))
    # the CLI routes warnings through logging: each failed set is named on stderr
    assert "iter1_ps_003" in err and "excluded from the history" in err
    assert code == 1, err
    assert "6 of 21 evaluations failed" in err and "max_failure_fraction 0.25" in err
    assert "iter3_ps_000" in err and "renderer exploded" in err and "--resume" in err
    assert ExperimentStore(cfg.experiment_dir).completed_iterations() == [0, 1, 2]
    manifest = load_experiment(cfg.experiment_dir).manifest
    assert manifest["status"] == "failed" and "max_failure_fraction" in manifest["error"]
    assert not list(Path(cfg.experiment_dir).glob("*.partial"))


def test_every_set_failing_stops_even_with_a_full_budget(
    cfg: ExperimentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bo_voids.exceptions import FailureBudgetError

    cfg = cfg.replace(max_iterations=3, max_failure_fraction=1.0)
    _nan_embeddings(monkeypatch, lambda t: t.iteration == 1)
    with pytest.warns(FallbackWarning), pytest.raises(FailureBudgetError, match="every parameter"):
        OptimizationPipeline(cfg).run_full_experiment()
    assert ExperimentStore(cfg.experiment_dir).completed_iterations() == [0]


def test_broken_embedder_stops_at_iteration_0(
    cfg: ExperimentConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = write_config(cfg, tmp_path / "c.yaml")
    _nan_embeddings(monkeypatch, lambda t: True)
    code, err = run_cli(capsys, "--config", str(f))
    assert "real_ps_000" in err  # named in the warning, routed to stderr by the CLI
    assert code == 1 and "9 of 9 evaluations failed" in err and "non-finite" in err
    assert ExperimentStore(cfg.experiment_dir).completed_iterations() == []


def test_constant_embedder_is_refused_at_iteration_0(
    cfg: ExperimentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collapsed embedder would score every set 0 and 'converge' at once: stop instead."""
    original = Evaluator.evaluate_many

    def constant(self, tasks, *, progress=False):
        out = original(self, tasks, progress=progress)
        for r in out:
            r.embeddings = np.ones_like(r.embeddings)
        return out

    monkeypatch.setattr(Evaluator, "evaluate_many", constant)
    with pytest.raises(BoVoidsError, match="same embedding for all 18 images"):
        OptimizationPipeline(cfg).run_full_experiment()
    assert ExperimentStore(cfg.experiment_dir).completed_iterations() == []


# =============================================================================================
# numerics (through the optimiser interface; see the module docstring for what is elsewhere)
# =============================================================================================


@pytest.fixture(scope="module")
def problem():
    from bo_voids.testing.synthetic import SyntheticProblem

    return SyntheticProblem(seed=0)


FAST = {
    "random": {},
    "botorch": {"num_restarts": 2, "raw_samples": 32, "maxiter": 30, "min_observations": 4},
}


def _history(problem, sets, iteration: int = 1):
    emb, meta = problem.evaluate(sets, iteration, "synthetic")
    return np.asarray(emb, dtype=np.float64), meta


@pytest.mark.parametrize("name", sorted(FAST))
def test_infinite_embeddings_and_scores_are_excluded(problem, name, monkeypatch) -> None:
    from bo_voids.optimizers import make_optimizer

    sets = problem.space.sample_uniform(8, 5)
    emb, meta = _history(problem, sets)
    emb[0, 0] = np.inf
    uid = meta[0]["param_set_id"]
    opt = make_optimizer(name, problem.space, seed=0, **FAST[name])
    with pytest.warns(FallbackWarning, match=uid):
        out = opt.recommend_next_batch(emb, meta, problem.targets, 4)
    assert out["info"]["n_excluded"] == 1 and len(out["next_params"]) == 4
    # a non-finite score (not embedding) is excluded the same way, naming the set
    import bo_voids.scoring as base

    real_score = base.MMDScorer.score
    last = meta[-1]["param_set_id"]
    first_row = emb[next(i for i, m in enumerate(meta) if m["param_set_id"] == last)]

    def score(self, X, *a, **k):
        if len(X) and np.array_equal(np.asarray(X)[0], first_row):
            return math.nan
        return real_score(self, X, *a, **k)

    monkeypatch.setattr(base.MMDScorer, "score", score)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = opt.recommend_next_batch(emb, meta, problem.targets, 4)
    assert any("non-finite MMD" in str(w.message) for w in caught)
    assert out["info"]["n_excluded"] >= 2 and len(out["next_params"]) == 4
    assert all(math.isfinite(b["mmd2"]) for b in out["current_best"])


@pytest.mark.parametrize("name", sorted(FAST))
def test_duplicate_points_in_the_history(problem, name) -> None:
    from bo_voids.optimizers import make_optimizer

    sets = problem.space.sample_uniform(4, 6)
    emb_a, meta_a = _history(problem, sets + sets, iteration=1)  # every point evaluated twice
    opt = make_optimizer(name, problem.space, seed=0, **FAST[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        out = opt.recommend_next_batch(emb_a, meta_a, problem.targets, 4)
    keys = {problem.space.key(p) for p in sets}
    assert len(out["next_params"]) == 4
    assert not keys & {problem.space.key(p) for p in out["next_params"]}


# =============================================================================================
# security
# =============================================================================================


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value
    return None


def test_no_unsafe_deserialisation_anywhere_in_the_package() -> None:
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                mod = getattr(node, "module", None) or ""
                if {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve"} & {
                    *names,
                    mod.split(".")[0],
                }:
                    problems.append(f"{path.name}:{node.lineno}: imports {names or mod}")
        for node, func in _calls(tree):
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}: {func}"
            if func.split(".")[-1] in {"load", "loads"} and func.split(".")[0] in {
                "pickle",
                "joblib",
                "dill",
                "cloudpickle",
            }:
                problems.append(where)
            if func in {"yaml.unsafe_load", "yaml.full_load", "yaml.load_all"}:
                problems.append(where)
            if func == "yaml.load":
                loader = _kw(node, "Loader")
                text = ast.unparse(loader) if loader is not None else ""
                if loader is None or text.split(".")[-1] in {
                    "Loader",
                    "FullLoader",
                    "UnsafeLoader",
                }:
                    problems.append(f"{where} without a safe Loader")
            if func in {"torch.load"}:
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where} without weights_only=True")
            if func.endswith("np.load") or func.endswith("numpy.load"):
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where} with allow_pickle")
            if func.endswith("from_pretrained"):
                trc = _kw(node, "trust_remote_code")
                if trc is not None and not (isinstance(trc, ast.Constant) and trc.value is False):
                    problems.append(f"{where} with trust_remote_code")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    problems.append(f"{where} allow_pickle={ast.unparse(kw.value)}")
    assert not problems, "\n".join(problems)


def test_the_yaml_loader_is_a_safe_loader(tmp_path: Path) -> None:
    import yaml as _yaml

    from bo_voids import config

    assert issubclass(config._StrictLoader, _yaml.SafeLoader)
    p = tmp_path / "evil.yaml"
    p.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(p)


def test_state_errors_keep_completed_iterations(
    cfg: ExperimentConfig,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Disk full while writing history.csv after iteration 1 was committed."""
    import bo_voids.state as state

    real = state.atomic_write_text

    def full(path, text):
        if Path(path).name == "history.csv" and (Path(path).parent / "iteration_1").is_dir():
            raise StateError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
        return real(path, text)

    monkeypatch.setattr(state, "atomic_write_text", full)
    code, err = run_cli(capsys, "--config", str(config_file))
    assert code == 1 and "No space left on device" in err and "--resume" in err
    monkeypatch.setattr(state, "atomic_write_text", real)
    store = ExperimentStore(cfg.experiment_dir)
    assert store.completed_iterations() == [0, 1]
    assert {r["iteration"] for r in store.read_history()} == {"0"}  # stale, derived data
    assert run_cli(capsys, "--config", str(config_file), "--resume")[0] == 0
    assert {r["iteration"] for r in store.read_history()} == {"0", "1"}  # rebuilt on resume
