from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bo_voids.exceptions import ExperimentExistsError, ExperimentLockedError, ResumeMismatchError
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import ExperimentLock, ExperimentStore, load_experiment
from bo_voids.testing import REAL_MEANS
from bo_voids.testing.runs import tiny_config


@pytest.mark.plots
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


@pytest.mark.parametrize("targets", ["simulated", "folder"])
def test_resume_after_interruption_matches_uninterrupted(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, targets: str
) -> None:
    """Same config and seed: the same images, proposals and recommendation, resumed or not.

    The run cut at iteration 2 ran iterations 0 and 1 uninterrupted, so it is also the check
    that two runs of the same config and seed agree; a partial folder left by the interrupted
    write is cleared on resume. With a folder of real images the stored noise floor has no
    quantiles (JSON null), which the resumed run must read as NaN.
    """
    extra: dict[str, str] = {}
    if targets == "folder":
        folder = tmp_path / "targets"
        folder.mkdir()
        for src in sorted((repo_root / "data" / "base_chips").glob("*.png"))[:5]:
            (folder / src.name).write_bytes(src.read_bytes())
        extra["target_image_dir"] = str(folder)
    full = tiny_config(repo_root, tmp_path / "full", max_iterations=3, **extra)
    OptimizationPipeline(full).run_full_experiment()

    cut = tiny_config(repo_root, tmp_path / "cut", max_iterations=3, **extra)
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
    partial = Path(cut.experiment_dir) / "iteration_2.partial" / "images"
    partial.mkdir(parents=True)  # what a write interrupted by SIGKILL leaves
    OptimizationPipeline(cut, resume=True).run_full_experiment()
    assert not partial.parent.exists() and (Path(cut.experiment_dir) / "iteration_2").is_dir()

    rf, rc = load_experiment(full.experiment_dir), load_experiment(cut.experiment_dir)
    assert len(rf.iterations) == len(rc.iterations) == 4
    for a, b in zip(rf.iterations, rc.iterations, strict=True):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert [m["params"] for m in a.metadata] == [m["params"] for m in b.metadata]
    assert rf.current_best == rc.current_best


def test_lock_refuses_second_process(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    root = Path(cfg.experiment_dir)
    with ExperimentLock(root):  # held by another run (here: this process, another lock object)
        with pytest.raises(ExperimentLockedError, match=f"in use by process {os.getpid()}"):
            OptimizationPipeline(cfg).run_full_experiment()
    # the holder file a dead process left behind is replaced
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


def test_a_replicated_set_merges_into_one_observation(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        repo_root,
        tmp_path,
        optimizer="botorch",
        bo={"surrogate": "composite", "replicate_slots": 1, "min_observations": 4},
        max_iterations=2,
    )
    OptimizationPipeline(cfg).run_full_experiment()
    run = load_experiment(cfg.experiment_dir)
    proposals = run.iterations[0].proposals
    assert proposals is not None and len(proposals["replicates"]) == 1
    replicated = proposals["replicates"][0]
    rows = [r for r in run.history if r["param_set_id"] == replicated]
    assert len(rows) == 1, "a set evaluated twice is one row of history.csv"
    assert int(rows[0]["n_images"]) >= 2 * cfg.replications_per_iteration
    assert len(rows[0]["iterations"].split()) >= 2
    # its evaluations were rendered with different seeds (a new block per iteration)
    by_iter: dict = {}
    for it in run.iterations:
        for m in it.metadata:
            if m.get("params") is not None and m["dataset_type"] != "real":
                key = tuple(sorted(m["params"].items()))
                by_iter.setdefault(key, {}).setdefault(it.iteration, set()).add(m["render_seed"])
    multi = [v for v in by_iter.values() if len(v) >= 2]
    assert multi, "the replicate was rendered in two iterations"
    for per_iter in multi:
        blocks = list(per_iter.values())
        assert not set.intersection(*blocks), "a replicate reuses no seed of its first evaluation"


@pytest.mark.parametrize("n_images", [1, 2, 3, 4, 5])
def test_small_target_folders_run_or_stop_with_a_clear_message(
    repo_root: Path, tmp_path: Path, n_images: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from bo_voids import optimize

    folder = tmp_path / "targets"
    folder.mkdir()
    chips = sorted((repo_root / "data" / "base_chips").glob("*.png"))
    for i in range(n_images):
        Image.open(chips[i % len(chips)]).convert("L").save(folder / f"real_{i}.png")
    cfg = tiny_config(repo_root, tmp_path, target_image_dir=str(folder), max_iterations=1)
    import yaml

    path = tmp_path / "c.yaml"
    raw = cfg.to_dict()
    path.write_text(yaml.safe_dump(json.loads(json.dumps(raw, default=str))))
    code = optimize.main(["--config", str(path), "--quiet", "--no-report"])
    if n_images < 2:
        assert code == 2
        err = capsys.readouterr().err
        assert "target_image_dir" in err and "at least 2" in err
        assert not Path(cfg.experiment_dir).exists()
    else:
        assert code == 0
        run = load_experiment(cfg.experiment_dir)
        assert run.manifest["status"] == "completed"


def test_warm_start_reuses_an_earlier_experiment_without_rendering_it(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny_config(repo_root, tmp_path / "a", max_iterations=1)
    OptimizationPipeline(first).run_full_experiment()
    old = load_experiment(first.experiment_dir)
    n_old = sum(1 for it in old.iterations for m in it.metadata if m["dataset_type"] != "real")
    from bo_voids.evaluation import Evaluator

    rendered: list[str] = []
    original = Evaluator.render

    def counting(self, task):
        rendered.append(task.dataset_type)
        return original(self, task)

    monkeypatch.setattr(Evaluator, "render", counting)
    warm = tiny_config(
        repo_root, tmp_path / "b", max_iterations=1, warm_start=str(first.experiment_dir)
    )
    OptimizationPipeline(warm).run_full_experiment()
    assert "close" not in rendered and "far" not in rendered  # iteration 0 rendered targets only
    run = load_experiment(warm.experiment_dir)
    reused = [m for m in run.iterations[0].metadata if m["dataset_type"] != "real"]
    assert len(reused) == n_old
    assert all(m["param_set_id"].startswith("warm_") for m in reused)
    # the reused embeddings are the earlier experiment's, bit for bit
    old_rows = np.concatenate(
        [it.embeddings[[m["dataset_type"] != "real" for m in it.metadata]] for it in old.iterations]
    )
    new0 = run.iterations[0]
    np.testing.assert_array_equal(
        new0.embeddings[[m["dataset_type"] != "real" for m in new0.metadata]], old_rows
    )
    bad = tiny_config(
        repo_root,
        tmp_path / "c",
        max_iterations=1,
        image_size=48,
        warm_start=str(first.experiment_dir),
    )
    from bo_voids.exceptions import ResumeMismatchError

    with pytest.raises(ResumeMismatchError, match="image_size"):
        OptimizationPipeline(bad).run_full_experiment()
    assert not Path(bad.experiment_dir).exists(), "refused before anything is written"
