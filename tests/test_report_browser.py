"""The report renders in a real headless browser (opened from disk, no server, no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bo_voids.report import write_report
from tests.test_plots import build_tiny_run

pytestmark = pytest.mark.browser


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
