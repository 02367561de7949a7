"""Void metrics: one detector on real and synthetic images, its accuracy on synthetic ones."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from bo_voids.config import load_config
from bo_voids.generation import VoidGenerator
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace
from bo_voids.testing.runs import REPO_ROOT, build_tiny_run
from bo_voids.void_metrics import (
    DIAMETER_BINS,
    compare_void_metrics,
    detect_voids,
    detector_accuracy,
    image_void_metrics,
    measure_voids,
    summarize_metrics,
)

CHIPS = REPO_ROOT / "data" / "base_chips"


def test_measure_voids_on_known_discs() -> None:
    yy, xx = np.mgrid[:200, :200]
    mask = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2) | ((yy - 150) ** 2 + (xx - 140) ** 2 <= 8**2)
    m = measure_voids(mask, reference_size=200)
    assert m["void_count"] == 2
    assert m["void_area_pct"] == pytest.approx(100 * mask.mean())
    assert m["largest_void_pct"] == pytest.approx(100 * math.pi * 20**2 / 200**2, rel=0.02)
    assert m["diameters"][0] == pytest.approx(40, abs=0.5)
    assert m["diameters"][1] == pytest.approx(16, abs=0.5)
    assert sum(m["size_classes"]) == 2 and len(m["size_classes"]) == len(DIAMETER_BINS) - 1
    empty = measure_voids(np.zeros((10, 10), bool))
    assert empty["void_count"] == 0 and empty["largest_void_pct"] == 0.0


@pytest.mark.parametrize("size", [96, 256])
def test_detector_error_on_synthetic_images_is_small(size: int) -> None:
    """Fresh seeds of the quickstart's real distribution: the detector's error stays bounded."""
    cfg = load_config(REPO_ROOT / "configs" / "quickstart.yaml", check_paths=False)
    sets = SearchSpace.from_config(cfg).sample("real", 12, rng(31337, "void_metrics_test"))
    gen = VoidGenerator(CHIPS, image_size=size)
    renders = [gen.render(p, derive_seed(31337, i)) for i, p in enumerate(sets)]
    acc = detector_accuracy([r.image for r in renders], [r.mask for r in renders])
    assert acc["n_images"] == 12
    assert acc["area_pct"]["true_mean"] > 1.0
    assert abs(acc["area_pct"]["bias"]) < 1.5 and acc["area_pct"]["mae"] < 2.0
    assert acc["count"]["mae"] < 4.0
    assert acc["iou"] > 0.55


def test_void_free_chips_show_almost_no_voids() -> None:
    gen = VoidGenerator(CHIPS, image_size=160)
    for chip in gen.base_images:
        assert image_void_metrics(chip)["void_area_pct"] < 1.0
        assert detect_voids(chip).dtype == np.int32


def test_detector_reads_8_bit_images_like_floats() -> None:
    gen = VoidGenerator(CHIPS, image_size=128)
    params = {
        "void_shape": "circle",
        "void_count": 6,
        "base_size": 25.0,
        "brightness_factor": 0.4,
        "size_std": 3.0,
        "position_spread": 0.4,
    }
    image = gen.render(params, 3).image
    as_uint8 = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    a, b = image_void_metrics(image), image_void_metrics(as_uint8)
    assert a["void_count"] >= 3 and abs(a["void_count"] - b["void_count"]) <= 1
    assert a["void_area_pct"] == pytest.approx(b["void_area_pct"], abs=0.3)
    with pytest.raises(ValueError, match="2-D"):
        detect_voids(np.zeros((4, 4, 3)))


def test_summary_quartiles_and_pooled_classes() -> None:
    metrics = [measure_voids(np.eye(20, dtype=bool) | np.eye(20, k=1, dtype=bool))] * 3
    summary = summarize_metrics(metrics)
    assert summary["n_images"] == 3
    assert summary["void_count"]["median"] == metrics[0]["void_count"]
    assert summary["size_classes"] == [3 * c for c in metrics[0]["size_classes"]]


def test_compare_targets_recommendation_and_psi(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = build_tiny_run(tmp_path_factory.getbasetemp())
    bare = compare_void_metrics(run, n_images=3)
    assert set(bare["groups"]) == {"targets", "recommendation"}
    assert "psi" in bare["missing"]
    manifest = json.loads((run / "experiment.json").read_text())
    psi = manifest["config"]["param_distributions"]["real"]
    result = compare_void_metrics(run, calibration={"population": {"psi": psi}}, n_images=3)
    assert set(result["groups"]) == {"targets", "recommendation", "psi"}
    n_real = sum(
        m["dataset_type"] == "real"
        for m in json.loads((run / "iteration_0" / "metadata.json").read_text())
    )
    assert result["groups"]["targets"]["summary"]["n_images"] == n_real
    for group in result["groups"].values():
        assert len(group["per_image"]) == group["summary"]["n_images"]
        assert set(result["figures"]) <= set(group["summary"])
    assert result["detector_accuracy"]["n_images"] == 6
    # the same seed renders the same synthetic images; the result is JSON-ready
    again = compare_void_metrics(run, calibration={"population": {"psi": psi}}, n_images=3)
    assert again["groups"]["psi"]["per_image"] == result["groups"]["psi"]["per_image"]
    json.dumps(result, allow_nan=False)
    # ψ read from calibration.json when it is there
    copy = tmp_path_factory.mktemp("vm") / "exp"
    shutil.copytree(run, copy)
    (copy / "calibration.json").write_text(json.dumps({"population": {"psi": psi}}))
    assert "psi" in compare_void_metrics(copy, n_images=2)["groups"]


def test_report_section_and_figure(tmp_path_factory: pytest.TempPathFactory) -> None:
    from bo_voids.report import write_report
    from bo_voids.void_metrics_report import void_metrics_section, write_void_metrics_plot

    run = build_tiny_run(tmp_path_factory.getbasetemp())
    copy = tmp_path_factory.mktemp("vm_report") / "exp"
    shutil.copytree(run, copy)
    comparison = compare_void_metrics(copy, n_images=2)
    assert void_metrics_section(None) == "" and void_metrics_section({"groups": {}}) == ""
    png = write_void_metrics_plot(copy, comparison)
    assert png.read_bytes()[:4] == b"\x89PNG"
    (copy / "calibration.json").write_text(json.dumps({"void_metrics": comparison}))
    html = write_report(copy).read_text(encoding="utf-8")
    assert "id='void-metrics'" in html and "Detector error on the 2 synthetic images" in html
    assert "real targets" in html and "fig-void-metrics" in html
