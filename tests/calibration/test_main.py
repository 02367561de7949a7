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


def test_every_mixture_mmd2_says_which_sample_it_is_on(calibrated, tiny_run: Path) -> None:
    text = format_result(calibrated, tiny_run / "calibration.json")
    mixture_lines = [line for line in text.splitlines() if "mixture" in line and "MMD²" in line]
    assert len(mixture_lines) >= 2
    fit = next(line for line in mixture_lines if line.startswith("mixture fit"))
    assert "on the evaluated images it was fitted to" in fit
    comparator = next(line for line in mixture_lines if line.startswith("  mixture "))
    assert "component sets, drawn by weight" in comparator
    assert "comparators: fresh renders" in text
    if calibrated.get("population"):
        assert "implied by the mixture" in text and "p_psi (population fit)" in text


def test_calibration_plot_legend_names_its_samples(calibrated, tiny_run: Path) -> None:
    from bo_voids.calibration import calibrate_experiment

    captured = {}
    from matplotlib.figure import Figure

    original = Figure.savefig

    def keep(self, *args, **kwargs):
        captured["labels"] = [t.get_text() for t in self.axes[0].get_legend().get_texts()]
        return original(self, *args, **kwargs)

    Figure.savefig = keep
    try:
        calibrate_experiment(tiny_run, out=tiny_run / "again.json", population=False)
    finally:
        Figure.savefig = original
    labels = captured["labels"]
    best = next(label for label in labels if label.startswith("best single point"))
    assert "fresh renders, MMD²" in best
    assert any(label.startswith("implied distribution:") for label in labels)
