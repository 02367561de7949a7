"""Re-targeting an experiment against new real images without rendering (bo_voids.retarget)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from bo_voids import cli
from bo_voids.embedding import make_embedder
from bo_voids.generation.base_chips import load_base_images
from bo_voids.generation.voids import VoidGenerator
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.retarget import RETARGET_FILE, retarget_experiment
from bo_voids.scoring import ScoreBook
from bo_voids.space import SearchSpace
from bo_voids.state import load_experiment
from bo_voids.testing.runs import tiny_config


@pytest.fixture(scope="module")
def source(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A finished tiny experiment and a folder of new "real" images (its far renders)."""
    tmp = tmp_path_factory.mktemp("retarget")
    cfg = tiny_config(repo_root, tmp, max_iterations=2)
    OptimizationPipeline(cfg, plots=False).run_full_experiment()
    root = Path(cfg.experiment_dir)
    targets = tmp / "new_targets"
    targets.mkdir()
    for png in sorted((root / "iteration_0" / "images").glob("iter0_far_*.png")):
        if not png.name.endswith("_mask.png"):
            shutil.copy(png, targets / png.name.replace("iter0_far", "xray"))
    return SimpleNamespace(cfg=cfg, root=root, targets=targets, tmp=tmp)


@pytest.fixture(scope="module")
def retargeted(source: SimpleNamespace, monkeypatch_module) -> SimpleNamespace:
    def no_rendering(self, params, seed):
        raise AssertionError("re-targeting rendered an image")

    monkeypatch_module.setattr(VoidGenerator, "render", no_rendering)
    out = source.tmp / "retargeted"
    result = retarget_experiment(source.root, source.targets, out)
    monkeypatch_module.undo()
    return SimpleNamespace(result=result, out=out)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _history_mmd2(folder: Path) -> dict[str, float]:
    with (folder / "history.csv").open(newline="", encoding="utf-8") as fh:
        return {r["param_set_id"]: float(r["mmd2"]) for r in csv.DictReader(fh) if r["mmd2"]}


def test_scores_equal_a_fresh_score_book(source, retargeted) -> None:
    """Every evaluated set, scored from scratch against the new targets, gives the same MMD²."""
    cfg = source.cfg
    images, _ = load_base_images(source.targets, cfg.image_size, label="target")
    targets = make_embedder("handcrafted").embed(images)
    book = ScoreBook(
        SearchSpace.from_config(cfg),
        targets,
        bandwidth=cfg.metric.bandwidth,
        top_k=cfg.bo.top_k,
    )
    for it in load_experiment(source.root).iterations:
        book.add(it.embeddings, it.metadata, iteration=it.iteration)
    fresh = {o.uid: o.mmd2 for o in book.all_sets()}
    got = {r["uid"]: r["mmd2"] for r in retargeted.result.per_set}
    assert got.keys() == fresh.keys() and len(got) >= 6 + 4  # iteration 0 and the batches
    for uid, value in fresh.items():
        assert got[uid] == pytest.approx(value, rel=1e-9, abs=1e-12), uid
    history = _history_mmd2(retargeted.out)
    for uid, value in fresh.items():
        assert history[uid] == pytest.approx(value, rel=1e-9, abs=1e-12), uid
    # the new targets really are other targets: the scores moved
    assert any(abs(r["mmd2"] - r["source_mmd2"]) > 1e-3 for r in retargeted.result.per_set)


def test_scores_equal_a_fresh_run_against_the_new_targets(source, retargeted) -> None:
    """A fresh run with target_image_dir renders the same iteration-0 sets: same scores."""
    cfg = source.cfg.replace(
        experiment_dir=str(source.tmp / "fresh"),
        target_image_dir=str(source.targets),
        max_iterations=0,
    )
    OptimizationPipeline(cfg, plots=False).run_full_experiment()
    fresh = load_experiment(cfg.experiment_dir)
    again = load_experiment(retargeted.out)
    np.testing.assert_allclose(
        again.iterations[0].embeddings, fresh.iterations[0].embeddings, rtol=1e-6, atol=1e-7
    )
    want = {r["uid"]: r["mmd2"] for r in fresh.iterations[0].scores.per_set}
    got = {r["uid"]: r["mmd2"] for r in again.iterations[0].scores.per_set}
    assert want.keys() == got.keys() and len(want) == 6
    for uid in want:
        assert got[uid] == pytest.approx(want[uid], rel=1e-9, abs=1e-12), uid
    assert again.noise_floor["q95"] == pytest.approx(fresh.noise_floor["q95"])


def test_folder_is_an_experiment_the_report_reads(source, retargeted) -> None:
    out = retargeted.out
    run = load_experiment(out)
    assert len(run.iterations) == 3
    assert run.manifest["retargeted_from"]["experiment_dir"] == str(source.root)
    assert (
        run.manifest["embedder"]["fingerprint"]
        == (load_experiment(source.root).manifest["embedder"]["fingerprint"])
    )
    assert run.config.target_image_dir == source.targets
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Re-targeted from" in html and html.count('src="data:image/png;base64,') == 4
    info = json.loads((out / RETARGET_FILE).read_text(encoding="utf-8"))
    assert info["n_targets"] == 6 and len(info["per_set"]) == len(retargeted.result.per_set)
    assert info["seconds"]["total"] > 0


def _write_config(cfg, path: Path, **changes) -> Path:
    raw = cfg.replace(**changes).to_dict()
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_refuses_other_render_settings(source, tmp_path: Path, capsys) -> None:
    config = _write_config(source.cfg, tmp_path / "other.yaml", image_size=96, edge_blur=1.0)
    args = ["retarget", str(source.root), "--targets", str(source.targets)]
    code = cli.main([*args, "--out", str(tmp_path / "out"), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == cli.ExitCode.USAGE
    assert "image_size: 64 -> 96" in err and "edge_blur: 2.0 -> 1.0" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_refuses_another_embedder(source, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "exp"
    shutil.copytree(source.root, copy)
    manifest = json.loads((copy / "experiment.json").read_text(encoding="utf-8"))
    manifest["embedder"]["fingerprint"] = "dinov2-vitb14-0123456789ab"
    (copy / "experiment.json").write_text(json.dumps(manifest), encoding="utf-8")
    code = cli.main(
        ["retarget", str(copy), "--targets", str(source.targets), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == cli.ExitCode.USAGE
    assert "dinov2-vitb14-0123456789ab" in err and "different embedders" in err


def test_cli_retarget_and_existing_out(source, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli_out"
    args = ["retarget", str(source.root), "--targets", str(source.targets), "--out", str(out)]
    assert cli.main([*args, "--no-plots"]) == cli.ExitCode.OK
    text = capsys.readouterr().out
    assert "evaluated sets of" in text and "nothing rendered" in text
    assert (out / RETARGET_FILE).is_file() and not (out / "report.html").exists()
    assert cli.main([*args, "--no-plots"]) == cli.ExitCode.USAGE  # exists: --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--no-plots", "--overwrite", "--quiet"]) == cli.ExitCode.OK
    assert cli.main(["retarget", str(source.root), "--targets", str(tmp_path)]) == 2  # no --out
