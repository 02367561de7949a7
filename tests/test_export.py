"""``bo-voids export``: labelled synthetic training sets from a calibrated experiment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bo_voids.cli import main as cli_main
from bo_voids.coco import box_rle, mask_to_rle, rle_to_mask
from bo_voids.exceptions import ExportError
from bo_voids.export import COCO_FILE, EXPORT_MANIFEST, export_dataset, plan_export
from bo_voids.testing.runs import build_running_copy, build_tiny_run

PSI = {
    "void_shape": {"circle": 0.3, "ellipse": 0.4, "irregular": 0.3},
    "void_count": {"mean": 6.0, "std": 2.0},
    "base_size": {"mean": 18.0, "std": 4.0},
    "brightness_factor": {"mean": 0.55, "std": 0.1},
    "size_std": {"mean": 5.0, "std": 2.0},
    "position_spread": {"mean": 0.5, "std": 0.1},
}


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny finished run with a ``calibration.json`` holding a population fit ψ."""
    src = build_tiny_run(tmp_path_factory.getbasetemp())
    dst = tmp_path_factory.mktemp("export") / "exp"
    shutil.copytree(src, dst)
    (dst / "calibration.json").write_text(json.dumps({"population": {"psi": PSI}}))
    return dst


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _export(run: Path, out: Path, n: int = 6, **kwargs: Any):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("jobs", 1)
    return export_dataset(run, out, n, **kwargs)


def test_same_seed_same_files_and_prefix_stable(calibrated_run: Path, tmp_path: Path) -> None:
    a = _export(calibrated_run, tmp_path / "a")
    b = _export(calibrated_run, tmp_path / "b")
    files_a, files_b = _files(a.out), _files(b.out)
    assert files_a == files_b
    assert len([k for k in files_a if k.startswith("images/")]) == 6
    assert a.rendered == 6 and a.n_annotations > 0
    other = _export(calibrated_run, tmp_path / "c", seed=99)
    assert _files(other.out)["images/synth_000000.png"] != files_a["images/synth_000000.png"]
    # the first images of a longer export are those of a shorter one
    longer = _export(calibrated_run, tmp_path / "d", n=9)
    files_d = _files(longer.out)
    for i in range(6):
        for sub, ext in (("images", "png"), ("masks", "png"), ("metadata", "json")):
            key = f"{sub}/synth_{i:06d}.{ext}"
            assert files_d[key] == files_a[key]
    manifest = json.loads(files_a[EXPORT_MANIFEST])
    assert manifest["complete"] is True
    assert manifest["plan"]["source"] == "psi" and manifest["plan"]["distribution"] == PSI
    assert manifest["versions"]["bo_voids"]


def test_worker_processes_write_the_same_files(calibrated_run: Path, tmp_path: Path) -> None:
    one = _export(calibrated_run, tmp_path / "one", n=36, image_size=32)
    two = _export(calibrated_run, tmp_path / "two", n=36, image_size=32, jobs=2)
    assert _files(one.out) == _files(two.out)


def test_resume_renders_only_what_is_missing(calibrated_run: Path, tmp_path: Path) -> None:
    ref = _export(calibrated_run, tmp_path / "ref", n=8)
    out = tmp_path / "out"
    _export(calibrated_run, out, n=8)
    # an interrupted export: metadata (written last) missing, an image lost, a temporary left
    (out / "metadata" / "synth_000003.json").unlink()
    (out / "metadata" / "synth_000005.json").unlink()
    (out / "images" / "synth_000006.png").unlink()
    (out / COCO_FILE).unlink()
    (out / "images" / ".synth_000003.png.123.tmp").write_bytes(b"half")
    with pytest.raises(ExportError, match="not empty"):
        _export(calibrated_run, out, n=8)
    resumed = _export(calibrated_run, out, n=8, resume=True)
    assert resumed.rendered == 3
    assert _files(out) == _files(ref.out)
    with pytest.raises(ExportError, match="seed"):
        _export(calibrated_run, out, n=8, resume=True, seed=5)
    assert _export(calibrated_run, out, n=8, resume=True).rendered == 0


def test_refuses_a_non_empty_folder_unless_forced(calibrated_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        _export(calibrated_run, out)
    _export(calibrated_run, out, n=4, force=True)
    # a forced export over a previous one replaces it; the user's file stays
    result = _export(calibrated_run, out, n=2, force=True, source="recommendation")
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "synth_000000.png",
        "synth_000001.png",
    ]
    assert result.n == 2


def test_sources(calibrated_run: Path) -> None:
    rec = plan_export(calibrated_run, 3, source="recommendation")
    manifest = json.loads((calibrated_run / "experiment.json").read_text())
    assert rec.params == manifest["current_best"][0]["params"]
    real = plan_export(calibrated_run, 3, source="real", image_size=128)
    assert real.distribution == manifest["config"]["param_distributions"]["real"]
    assert real.generator.image_size == 128
    with pytest.raises(ExportError, match="--n"):
        plan_export(calibrated_run, 0)


def test_cli_errors_are_one_line_exit_2(
    calibrated_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = str(build_running_copy(tmp_path, "running"))
    cases = [
        ([str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "o1")], "no experiment"),
        ([running, "--n", "2", "--out", str(tmp_path / "o2")], "unfinished"),
        (
            [running, "--n", "2", "--out", str(tmp_path / "o3"), "--source", "recommendation"],
            "unfinished",
        ),
    ]
    for argv, message in cases:
        assert cli_main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    bare = tmp_path / "bare"
    shutil.copytree(calibrated_run, bare)
    (bare / "calibration.json").unlink()
    assert cli_main(["export", str(bare), "--n", "1", "--out", str(tmp_path / "o4")]) == 2
    assert "bo-voids calibrate" in capsys.readouterr().err
    out = tmp_path / "ok"
    argv = [str(calibrated_run), "--n", "3", "--out", str(out), "--quiet", "--jobs", "1"]
    assert cli_main(["export", *argv]) == 0
    assert "wrote 3 images" in capsys.readouterr().out


def test_rle_round_trip_and_the_bounding_box_encoder() -> None:
    from scipy import ndimage

    gen = np.random.default_rng(0)
    for shape in ((1, 1), (5, 7), (16, 3), (9, 12)):
        for trial in range(30):
            mask = gen.random(shape) < gen.random()
            rle = mask_to_rle(mask)
            assert sum(rle["counts"]) == mask.size
            np.testing.assert_array_equal(rle_to_mask(rle), mask)
            labels = mask * gen.integers(1, 4, shape).astype(np.uint16)
            if trial % 5 == 0:
                labels[:] = 1  # runs crossing every column boundary
            for k, box in enumerate(ndimage.find_objects(labels)):
                if box is not None:
                    assert box_rle(labels, k + 1, box) == mask_to_rle(labels == k + 1)


def _check_coco(out: Path, decode: Any) -> int:
    """Every image's annotations decode to exactly its instance map; returns annotations seen."""
    coco = json.loads((out / COCO_FILE).read_text())
    assert [c["name"] for c in coco["categories"]] == ["void"]
    ids = [a["id"] for a in coco["annotations"]]
    assert len(ids) == len(set(ids))
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    seen = 0
    for img in coco["images"]:
        labels = np.asarray(Image.open(out / img["mask_file"]))
        assert labels.shape == (img["height"], img["width"])
        assert np.asarray(Image.open(out / img["file_name"])).shape == labels.shape
        rebuilt = np.zeros_like(labels)
        for ann in by_image.get(img["id"], []):
            mask = decode(ann, img)
            assert mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert not rebuilt[mask].any()  # instances do not overlap
            rebuilt[mask] = ann["void_index"] + 1
            seen += 1
        np.testing.assert_array_equal(rebuilt, labels)
        record = json.loads((out / "metadata" / f"{Path(img['file_name']).stem}.json").read_text())
        binary = labels > 0
        assert 100.0 * binary.mean() == pytest.approx(record["void_area_pct"])
        assert {"params", "render_seed", "base_image_id", "voids"} <= set(record)
    assert seen == len(coco["annotations"])
    return seen


def test_coco_file_decodes_to_the_mask_images(calibrated_run: Path, tmp_path: Path) -> None:
    """The reference decoder of the package (always run) agrees with the mask images."""
    result = _export(calibrated_run, tmp_path / "coco", n=8, image_size=96)
    assert _check_coco(result.out, lambda ann, img: rle_to_mask(ann["segmentation"])) > 0


def test_coco_file_loads_in_pycocotools(calibrated_run: Path, tmp_path: Path) -> None:
    """pycocotools (the dev extra) reads the file and its masks equal the mask images."""
    coco_api = pytest.importorskip("pycocotools.coco")
    result = _export(calibrated_run, tmp_path / "pyc", n=8, image_size=96)
    api = coco_api.COCO(str(result.coco_path))
    assert len(api.getImgIds()) == 8 and len(api.getAnnIds()) == result.n_annotations
    assert _check_coco(result.out, lambda ann, img: api.annToMask(ann).astype(bool)) > 0


def test_export_speed_benchmark_writes_its_files(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from benchmarks import export_speed

    work = tmp_path_factory.getbasetemp()  # reuses the session's tiny run
    argv = ["--n", "4", "--image-size", "48", "--jobs", "1", "--work", str(work)]
    rows = export_speed.main([*argv, "--out", str(tmp_path)])
    assert len(rows) == 1 and rows[0]["n_images"] == 4 and rows[0]["cpu_s"] > 0
    record = json.loads((tmp_path / "export_speed.json").read_text(encoding="utf-8"))
    assert record["rows"] == rows
    assert "| source | images |" in (tmp_path / "export_speed.md").read_text(encoding="utf-8")


def test_exports_render_through_the_run_s_imaging_chain(repo_root: Path) -> None:
    """A run with an imaging block exports images through it (fixed values and nuisance)."""
    from bo_voids.config import config_from_dict, load_config
    from bo_voids.export import ExportPlan, generator_settings, parameter_draws

    cfg = load_config(repo_root / "configs" / "quickstart.yaml", check_paths=False)
    with_imaging = config_from_dict(
        {**cfg.to_dict(), "imaging": {"psf_sigma": [0.0, 3.0], "gamma": 1.5}}, check_paths=False
    )
    settings = generator_settings(with_imaging, image_size=48)
    assert settings.imaging == with_imaging.imaging
    psi = {**PSI, "imaging_psf_sigma": {"mean": 2.0, "std": 0.5}}
    plan = ExportPlan("exp", "psi", 2, 0, settings, psi, None, {})
    draws = parameter_draws(plan, with_imaging, range(2))
    assert all(0.0 <= p["imaging_psf_sigma"] <= 3.0 for _, p, _ in draws)
    _, params, seed = draws[0]
    through = settings.build().render(params, seed).image
    plain = generator_settings(cfg, image_size=48).build()
    design = {k: v for k, v in params.items() if not k.startswith("imaging_")}
    assert not np.array_equal(through, plain.render(design, seed).image)
