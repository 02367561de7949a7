"""The command line: python -m bo_voids.calibration (and python -m bo_voids.calibrate)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bo_voids.calibration import CALIBRATION_VERSION
from bo_voids.calibration.__main__ import format_result
from bo_voids.calibration.__main__ import main as calibrate_main


def test_cli_exit_codes(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.json"
    assert calibrate_main([str(tiny_run), "--out", str(out), "--no-plot", "-q"]) == 0
    assert json.loads(out.read_text())["version"] == CALIBRATION_VERSION
    assert calibrate_main([str(tmp_path / "missing")]) == 2
    assert calibrate_main([str(tiny_run), "--n-samples", "0"]) == 2
    assert calibrate_main([str(tiny_run), "--folds", "1"]) == 2
    with pytest.raises(SystemExit) as exc:
        calibrate_main([str(tiny_run), "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not an experiment folder" in err
    assert all(line.startswith("error:") for line in err.strip().splitlines())


def test_summary_names_both_figures_and_the_scheme(calibrated, tiny_run: Path) -> None:
    text = format_result(calibrated, tiny_run / "calibration.json")
    assert "in-sample" in text and "held-out" in text
    assert "cluster permutation" in text and "leave-one-cluster-out" in text
    assert "n_eff" in text and "same-seed cross pairs dropped" in text


def test_both_module_commands_run() -> None:
    import bo_voids.calibrate as shim

    assert shim.main is calibrate_main
    done = subprocess.run(
        [sys.executable, "-m", "bo_voids.calibrate", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "python -m bo_voids.calibration" in done.stdout
