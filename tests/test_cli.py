"""The one command line (bo_voids.cli): dispatch, exit codes, the run command's output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bo_voids import cli
from bo_voids.cli import COMMANDS, ExitCode, Terminated, call_guarded, sigterm_as_interrupt
from bo_voids.exceptions import BoVoidsError, ConfigError
from bo_voids.progress import read_events
from bo_voids.testing.runs import tiny_config


@pytest.fixture
def config_file(repo_root: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(repo_root, tmp_path, max_iterations=1).to_dict()))
    return path


def test_exit_code_table() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130, 143]


def test_every_command_resolves_to_a_main() -> None:
    for name, command in COMMANDS.items():
        assert callable(command.resolve()), name
    assert set(COMMANDS) == {"run", "calibrate", "report", "retarget", "export", "chips", "gallery"}


def test_help_unknown_and_missing_command(capsys) -> None:
    assert cli.main(["--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS) and "130 Ctrl-C" in out
    assert cli.main([]) == ExitCode.USAGE
    assert cli.main(["frobnicate"]) == ExitCode.USAGE
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main(["report", "--help"]) == ExitCode.OK
    assert "usage: bo-voids report" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["chips", "gallery"])
def test_generation_commands_help_names_bo_voids_and_every_option(name: str, capsys) -> None:
    assert cli.main([name, "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"usage: bo-voids {name}" in out and "python -m" not in out
    options = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    assert options and " ".join(out.split()).count("(default:") == len(options)  # each has help


def _raises(exc: BaseException):
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (Terminated(), ExitCode.TERMINATED),
        (ConfigError("bad key"), ExitCode.USAGE),
        (BoVoidsError("renderer exploded"), ExitCode.FAILURE),
        (RuntimeError("bug"), ExitCode.FAILURE),
        (SystemExit(2), ExitCode.USAGE),
        (SystemExit(None), ExitCode.OK),
    ],
)
def test_call_guarded_maps_every_ending(exc: BaseException, code: int, capsys) -> None:
    assert call_guarded(_raises(exc), []) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_sigterm_becomes_exit_143() -> None:
    def main(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    assert call_guarded(main, []) == ExitCode.TERMINATED
    with sigterm_as_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_run_writes_events_report_and_plain_lines(
    config_file: Path, tmp_path: Path, capsys
) -> None:
    log = tmp_path / "logs" / "run.log"
    code = cli.main(["run", "--config", str(config_file), "--quiet", "--log-file", str(log)])
    captured = capsys.readouterr()
    assert code == ExitCode.OK, captured.err
    root = tmp_path / "exp"
    # --quiet (and a captured stderr): one plain progress line per iteration, no live line
    progress = [x for x in captured.err.splitlines() if x.startswith("iteration ")]
    assert [x.split(" · ")[0] for x in progress] == ["iteration 0/1", "iteration 1/1"]
    assert "\r" not in captured.err
    assert "Best parameter sets (ranked by raw MMD²):" in captured.out
    assert [r["iteration"] for r in read_events(root)] == [0, 1]
    html = (root / "report.html").read_text(encoding="utf-8")
    assert 'id="status">Completed — iteration 1 of 1' in html
    text = log.read_text(encoding="utf-8")
    assert "iteration 1/1 · recommendation" in text  # the same lines
    assert "DEBUG bo_voids.progress: iteration 1: propose" in text  # plus the stages
    assert "DEBUG bo_voids.progress: iteration 1 took " in text and "propose " in text
    assert "INFO bo_voids.optimize: iteration 1: best" in text  # and the pipeline's lines


def test_console_script_and_module(config_file: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("bo-voids")
    if not script.exists():
        pytest.skip("the package is not installed with its console script (pip install -e .)")
    ok = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "retarget" in ok.stdout
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run(
        [sys.executable, "-m", "bo_voids.cli", "run", "--config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert bad.returncode == ExitCode.USAGE and "Traceback" not in bad.stderr
