"""Crash tests on a real process: SIGKILL at every phase, Ctrl-C, a second process, a full disk.

Each killed run is resumed and compared with an uninterrupted run of the same config: identical
``history.csv`` rows, identical embeddings and parameters per iteration, no partial iteration
counted, the dead process's lock taken over.

The phase is hit deterministically by the test hook :class:`bo_voids.testing.faults.FaultInjector`
(points named in ``BO_VOIDS_TEST_KILL_AT``), which makes the process ``SIGKILL`` itself; one more
test kills the process from outside at a random moment. The child process runs the real CLI
(``bo_voids.optimize.main``, through :func:`bo_voids.testing.faults.main`, which installs the
hook) with plotting switched off to keep the tests fast.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bo_voids import optimize
from bo_voids._io import to_jsonable
from bo_voids.config import ExperimentConfig
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import ExperimentStore, load_experiment
from bo_voids.testing.faults import KILL_AT_ENV, PHASES
from bo_voids.testing.runs import run_config_file, tiny_config

MAX_ITER = 3
#: The real CLI with the fault points of the environment installed, and plots off (they are
#: not under test and cost ~2 s per iteration). Ctrl-C is given back its default handler and
#: unblocked first: a child inherits an ignored or blocked SIGINT from whichever test-worker
#: thread or earlier test left it so (a shell does the same to background jobs), and would then
#: never see the Ctrl-C this module sends.
RUNNER = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "import sys, bo_voids.pipeline as p; p.OptimizationPipeline._plot = lambda self: None; "
    "from bo_voids.testing.faults import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OptimizationPipeline, "_plot", lambda self: None)


def make_config(repo_root: Path, folder: Path, **changes) -> tuple[ExperimentConfig, Path]:
    small = dict(
        real={"param_sets": 2, "replications": 2},
        close={"param_sets": 2, "replications": 2},
        far={"param_sets": 2, "replications": 2},
        iteration_batch_size=3,
    )
    cfg = tiny_config(repo_root, folder, max_iterations=MAX_ITER, **{**small, **changes})
    path = folder / "tiny.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return cfg, path


@pytest.fixture(scope="module")
def reference(repo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted run of the tiny config (in-process)."""
    folder = tmp_path_factory.mktemp("reference")
    cfg, _ = make_config(repo_root, folder)
    run_config_file(cfg, folder)
    return load_experiment(cfg.experiment_dir)


def spawn(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, "--config", str(config), "--quiet", "--no-report", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def resume(config: Path, *extra: str) -> int:
    return optimize.main(["--config", str(config), "--quiet", "--no-report", "--resume", *extra])


def assert_same_as_reference(
    root: Path, reference, n_iterations: int | None = None, history: bool = True
) -> None:
    run = load_experiment(root)
    n = len(reference.iterations) if n_iterations is None else n_iterations
    assert [it.iteration for it in run.iterations[:n]] == list(range(n))
    if n_iterations is None:
        assert len(run.iterations) == n
    for a, b in zip(reference.iterations[:n], run.iterations[:n], strict=True):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.pca_2d, b.pca_2d)
        assert [m["params"] for m in a.metadata] == [m["params"] for m in b.metadata]
        assert [m["render_seed"] for m in a.metadata] == [m["render_seed"] for m in b.metadata]
        assert to_jsonable(a.scores.to_dict()) == to_jsonable(b.scores.to_dict())
    if history:  # identical rows: params, mmd2 and every other column
        ref_rows = [r for r in reference.history if int(r["iteration"]) < n]
        assert [r for r in run.history if int(r["iteration"]) < n] == ref_rows
    if n_iterations is None:
        assert run.current_best == reference.current_best
        assert run.manifest["status"] == "completed"
        assert run.manifest["iterations_completed"] == n - 1
    assert not list(root.glob("*.partial")) and not list(root.glob(".*.tmp"))
    assert not (root / ".lock").exists()


# (kill point, iterations complete after the kill, extra check of the dead run's folder)
KILL_POINTS = [
    ("render:0", [], "no iteration"),
    ("embed:1", [0], "no iteration 1"),
    ("propose:2", [0, 1], "proposed, not evaluated"),
    ("write:2", [0, 1], "partial folder left"),
    # the last iteration renamed into place, history.csv and manifest not yet updated: the
    # resume must rebuild both although no iteration is left to run
    ("commit:3", [0, 1, 2, 3], "last iteration committed, history and manifest behind"),
]


def test_every_phase_has_a_kill_point() -> None:
    assert [point.split(":")[0] for point, _, _ in KILL_POINTS] == list(PHASES)


@pytest.mark.parametrize(
    ("point", "complete", "state"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS]
)
def test_sigkill_at_each_phase_resumes_to_the_same_result(
    repo_root: Path, tmp_path: Path, reference, point: str, complete: list[int], state: str
) -> None:
    cfg, path = make_config(repo_root, tmp_path)
    root = Path(cfg.experiment_dir)
    proc = spawn(path, env={KILL_AT_ENV: point})
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == -signal.SIGKILL, err
    # the dead run: a stale lock naming the dead pid, only whole iterations
    assert json.loads((root / ".lock").read_text())["pid"] == proc.pid
    store = ExperimentStore(root)
    assert store.exists()
    assert store.completed_iterations() == complete
    manifest = store.read_manifest()
    assert manifest["status"] == "running"
    if point.startswith("write"):
        assert (root / "iteration_2.partial").is_dir()  # cleaned on resume
    if point.startswith("commit"):
        k = int(point.split(":")[1])
        assert manifest["iterations_completed"] == k - 1  # not yet updated
        assert str(k) not in {r["iteration"] for r in store.read_history()}
    # a rerun without --resume is refused; --resume takes the stale lock over and finishes
    assert optimize.main(["--config", str(path), "--quiet", "--no-report"]) == 2
    assert resume(path) == 0
    assert_same_as_reference(root, reference)


def test_sigkill_at_a_random_moment(repo_root: Path, tmp_path: Path, reference) -> None:
    cfg, path = make_config(repo_root, tmp_path)
    root = Path(cfg.experiment_dir)
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 1.5)
    proc = spawn(path)
    deadline = time.monotonic() + 120
    while not (root / "iteration_0").is_dir() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never reached iteration 0"
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert resume(path) == 0, f"seed {seed}, delay {delay:.2f}s"
    assert_same_as_reference(root, reference)


def test_ctrl_c_second_process_and_resume(
    repo_root: Path, tmp_path: Path, reference, capsys: pytest.CaptureFixture[str]
) -> None:
    # no early stop: the tiny run would otherwise end by itself after ~50 idle iterations
    # (about 20 s), and a SIGINT sent later by a slow parent would find it finished
    cfg, path = make_config(repo_root, tmp_path, early_stop_patience=10_000)
    root = Path(cfg.experiment_dir)
    proc = spawn(path, "--max-iterations", "500")  # long enough to be interrupted
    try:
        deadline = time.monotonic() + 120
        while not (root / "iteration_1").is_dir():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never reached iteration 1"
            time.sleep(0.05)
        # a second process on the same folder is refused (exit 2), naming the holder
        capsys.readouterr()
        assert resume(path) == 2
        err = capsys.readouterr().err
        assert f"in use by process {proc.pid}" in err and "Traceback" not in err
        assert json.loads((root / ".lock").read_text())["pid"] == proc.pid  # lock untouched
        # Ctrl-C: exit 130, folder resumable, manifest "interrupted", lock released
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    store = ExperimentStore(root)
    assert store.read_manifest()["status"] == "interrupted"
    assert not (root / ".lock").exists() and not list(root.glob("*.partial"))
    done = store.completed_iterations()
    assert len(done) >= 2
    # resumed (max_iterations may change on resume): one more iteration, same as the reference
    assert resume(path, "--max-iterations", str(len(done))) == 0
    run = load_experiment(root)
    assert run.manifest["status"] == "completed" and len(run.iterations) == len(done) + 1
    assert_same_as_reference(root, reference, n_iterations=min(len(run.iterations), MAX_ITER + 1))


@pytest.mark.parametrize("what", ["iteration_rename", "every_write"])
def test_disk_full_keeps_completed_iterations(
    repo_root: Path,
    tmp_path: Path,
    reference,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    what: str,
) -> None:
    """ENOSPC once iterations 0 and 1 are on disk (chmod does not stop root: os.replace fails)."""
    cfg, path = make_config(repo_root, tmp_path)
    root = Path(cfg.experiment_dir)
    real_replace = os.replace

    def full(src, dst, *a, **k):
        hit = Path(dst).name == "iteration_2" if what == "iteration_rename" else True
        if hit and (root / "iteration_1").is_dir() and Path(dst).parent.is_relative_to(root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full)
    code = optimize.main(["--config", str(path), "--quiet", "--no-report"])
    err = capsys.readouterr().err
    monkeypatch.setattr(os, "replace", real_replace)
    assert code == 1, err
    assert "No space left on device" in err and "--resume" in err
    assert "Traceback" not in err
    store = ExperimentStore(root)
    assert store.completed_iterations() == [0, 1]
    assert not list(root.glob("*.partial")) and not list(root.glob(".*.tmp"))
    assert not (root / ".lock").exists()
    manifest = store.read_manifest()
    if what == "iteration_rename":  # the manifest itself could still be written
        assert manifest["status"] == "failed" and "No space left" in manifest["error"]
    # history.csv is derived data and may be one iteration behind until the resume rebuilds it
    assert_same_as_reference(root, reference, n_iterations=2, history=False)
    assert resume(path) == 0
    assert_same_as_reference(root, reference)
