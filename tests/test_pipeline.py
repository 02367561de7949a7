from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bo_voids.config import ExperimentConfig, load_config
from bo_voids.exceptions import ExperimentExistsError, ExperimentLockedError, ResumeMismatchError
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import ExperimentLock, ExperimentStore, load_experiment
from bo_voids.testing import REAL_MEANS


def tiny_config(repo_root: Path, tmp_path: Path, **changes) -> ExperimentConfig:
    cfg = load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)
    base = dict(
        experiment_dir=str(tmp_path / "exp"),
        base_image_dir=str(repo_root / "data" / "base_chips"),
        image_size=64,
        max_iterations=2,
        optimizer="random",
        embedder="handcrafted",
        iteration_batch_size=4,
        real={"param_sets": 3, "replications": 2},
        close={"param_sets": 3, "replications": 2},
        far={"param_sets": 3, "replications": 2},
        replications_per_iteration=2,
        stop_at_noise_floor=False,
        convergence_threshold=-1.0,
        early_stop_patience=50,
        calibrate=False,
    )
    base.update(changes)
    return cfg.replace(**base)


def test_end_to_end_writes_every_file(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, calibrate=True)
    summary = OptimizationPipeline(cfg).run_full_experiment()
    root = Path(cfg.experiment_dir)
    assert (root / "calibration.json").is_file()
    assert {p.name for p in (root / "plots").glob("*.png")} >= {"convergence.png", "latent_pca.png"}
    assert summary.iterations_completed == 2
    assert "max_iterations" in summary.stop_reason
    for k in range(3):
        folder = root / f"iteration_{k}"
        for name in ("embeddings.npy", "pca_2d.npy", "metadata.json", "scores.json"):
            assert (folder / name).is_file(), name
        meta = json.loads((folder / "metadata.json").read_text())
        assert all((folder / "images" / m["image_file"]).is_file() for m in meta)
        assert all((folder / "images" / m["mask_file"]).is_file() for m in meta)
        if k > 0:
            assert (folder / "proposals.json").is_file()
            assert len(meta) == 4 * 2
    assert (root / "iteration_0" / "pca_model.npz").is_file()
    run = load_experiment(root)
    assert run.manifest["status"] == "completed"
    assert run.manifest["embedder"]["name"] == "handcrafted"
    assert len(run.history) == 6 + 2 * 4 + 3  # close/far + synthetic + real rows
    header = set(run.history[0])
    assert {"iteration", "param_set_id", "dataset_type", "void_shape", "mmd2"} <= header
    assert run.current_best and "params" in run.current_best[0]
    assert not list(root.glob("*.partial")) and not (root / ".lock").exists()


def test_same_seed_same_results(repo_root: Path, tmp_path: Path) -> None:
    a = tiny_config(repo_root, tmp_path / "a", max_iterations=1)
    b = tiny_config(repo_root, tmp_path / "b", max_iterations=1)
    OptimizationPipeline(a).run_full_experiment()
    OptimizationPipeline(b).run_full_experiment()
    ra, rb = load_experiment(a.experiment_dir), load_experiment(b.experiment_dir)
    for ia, ib in zip(ra.iterations, rb.iterations, strict=True):
        np.testing.assert_array_equal(ia.embeddings, ib.embeddings)
        assert [m["params"] for m in ia.metadata] == [m["params"] for m in ib.metadata]


def test_existing_folder_refused_then_overwritten(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    OptimizationPipeline(cfg).run_full_experiment()
    with pytest.raises(ExperimentExistsError, match="--resume"):
        OptimizationPipeline(cfg).run_full_experiment()
    OptimizationPipeline(cfg, overwrite=True).run_full_experiment()


def test_resume_with_changed_config_refused(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    OptimizationPipeline(cfg).run_full_experiment()
    with pytest.raises(ResumeMismatchError, match="image_size"):
        OptimizationPipeline(cfg.replace(image_size=80), resume=True).run_full_experiment()


def test_resume_after_interruption_matches_uninterrupted(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = tiny_config(repo_root, tmp_path / "full", max_iterations=3)
    OptimizationPipeline(full).run_full_experiment()

    cut = tiny_config(repo_root, tmp_path / "cut", max_iterations=3)
    pipe = OptimizationPipeline(cut)
    original = pipe.step

    def crash(k, *args, **kwargs):
        if k == 2:
            raise KeyboardInterrupt  # interrupted while evaluating iteration 2
        return original(k, *args, **kwargs)

    monkeypatch.setattr(pipe, "step", crash)
    with pytest.raises(KeyboardInterrupt):
        pipe.run_full_experiment()
    assert ExperimentStore(cut.experiment_dir).completed_iterations() == [0, 1]
    assert not (Path(cut.experiment_dir) / ".lock").exists()
    OptimizationPipeline(cut, resume=True).run_full_experiment()

    rf, rc = load_experiment(full.experiment_dir), load_experiment(cut.experiment_dir)
    assert len(rf.iterations) == len(rc.iterations) == 4
    for a, b in zip(rf.iterations, rc.iterations, strict=True):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert [m["params"] for m in a.metadata] == [m["params"] for m in b.metadata]
    assert rf.current_best == rc.current_best


def test_partial_iteration_cleaned_on_resume(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=1)
    OptimizationPipeline(cfg).run_full_experiment()
    root = Path(cfg.experiment_dir)
    (root / "iteration_2.partial" / "images").mkdir(parents=True)
    OptimizationPipeline(cfg.replace(max_iterations=2), resume=True).run_full_experiment()
    assert not (root / "iteration_2.partial").exists()
    assert (root / "iteration_2").is_dir()


def test_lock_refuses_second_process(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    root = Path(cfg.experiment_dir)
    root.mkdir(parents=True)
    (root / ".lock").write_text(json.dumps({"pid": 1, "host": __import__("socket").gethostname()}))
    with pytest.raises(ExperimentLockedError, match="in use by process 1"):
        OptimizationPipeline(cfg).run_full_experiment()
    # a stale lock of a dead process is taken over
    (root / ".lock").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()})
    )
    with ExperimentLock(root):
        pass


def test_target_image_folder(repo_root: Path, tmp_path: Path) -> None:
    from bo_voids.generation.voids import VoidGenerator, save_png

    gen = VoidGenerator(repo_root / "data" / "base_chips", image_size=64)
    targets = tmp_path / "targets"
    params = REAL_MEANS
    for i in range(5):
        save_png(targets / f"real_{i}.png", gen.render(params, 1000 + i).image)
    cfg = tiny_config(repo_root, tmp_path, target_image_dir=str(targets), max_iterations=1)
    OptimizationPipeline(cfg).run_full_experiment()
    run = load_experiment(cfg.experiment_dir)
    real = [m for m in run.iterations[0].metadata if m["dataset_type"] == "real"]
    assert len(real) == 5 and all(m["params"] is None for m in real)
    assert run.iterations[0].pca_2d.shape[0] == 5 + 12
