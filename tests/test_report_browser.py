"""The report renders in a real headless browser (opened from disk, no server, no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bo_voids.report import write_report
from bo_voids.testing.runs import build_tiny_run

pytestmark = [pytest.mark.browser, pytest.mark.plots]


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed")
def test_report_renders_in_headless_chromium(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    report = write_report(build_tiny_run(tmp_path_factory.getbasetemp()), tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        report.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1280)
    non_white = (img < 245).any(axis=2).mean()
    assert non_white > 0.05, f"screenshot nearly blank ({non_white:.1%} non-white pixels)"
    # the embedded figures render: a colourful band further down the page (plots, not just text)
    lower = img[1000:].reshape(-1, 3)
    colours = np.unique((lower // 16).astype(np.uint16) @ np.array([256, 16, 1], np.uint16))
    assert len(colours) > 150, f"only {len(colours)} colours: figures did not render"
    saturated = (lower.max(axis=1).astype(int) - lower.min(axis=1)) > 60
    assert saturated.mean() > 0.002, "no coloured plot pixels below the tables"


def _render(report: Path, profile: Path, shot: Path) -> tuple[np.ndarray, str]:
    """Screenshot the page and dump the DOM Chromium rendered (its visible text included)."""
    assert CHROMIUM is not None
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        f"--user-data-dir={profile}",
    ]
    uri = report.resolve().as_uri()
    shot_run = subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1280,1600", uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot_run.returncode == 0 and shot.is_file(), shot_run.stderr[-2000:]
    dom = subprocess.run([*base, "--dump-dom", uri], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB")), dom.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed")
def test_report_mid_run_and_at_the_end(repo_root: Path, tmp_path: Path) -> None:
    from bo_voids.pipeline import OptimizationPipeline
    from bo_voids.report import ReportCallback
    from bo_voids.testing.runs import tiny_config

    cfg = tiny_config(repo_root, tmp_path, max_iterations=2)
    report_path = Path(cfg.experiment_dir) / "report.html"
    pages: dict[str, tuple[np.ndarray, str]] = {}

    def mid_run(event) -> None:
        if event.iteration == 1:
            pages["mid"] = _render(report_path, tmp_path / "p1", tmp_path / "mid.png")

    with ReportCallback() as report:
        OptimizationPipeline(cfg, callbacks=[report, mid_run]).run_full_experiment()
    pages["end"] = _render(report_path, tmp_path / "p2", tmp_path / "end.png")
    for name, (img, _) in pages.items():
        assert img.shape[:2] == (1600, 1280), name
        assert (img < 245).any(axis=2).mean() > 0.05, f"{name}: screenshot nearly blank"
    mid_dom, end_dom = pages["mid"][1], pages["end"][1]
    assert "Running — iteration 1 of 2" in mid_dom and 'http-equiv="refresh"' in mid_dom
    assert "Completed — iteration 2 of 2" in end_dom and "refresh" not in end_dom
    assert mid_dom.count("data:image/png;base64,") == end_dom.count("data:image/png;base64,") == 4
    # the banner is drawn in the run's state colour: blue while running, green when completed
    assert not np.array_equal(pages["mid"][0][:200], pages["end"][0][:200])
