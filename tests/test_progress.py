"""Progress line, stage hook and events.jsonl (bo_voids.progress)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bo_voids.optimizers import Proposal
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.progress import (
    EVENTS_FILE,
    EventLog,
    ProgressLine,
    attach_stage_hook,
    format_duration,
    read_events,
)
from bo_voids.run_scores import RunScores
from bo_voids.state import load_experiment
from bo_voids.testing.runs import tiny_config


class _Stages:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def on_stage(self, stage: str, iteration: int) -> None:
        self.seen.append((stage, iteration))


@pytest.fixture(scope="module")
def logged_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("progress")
    cfg = tiny_config(repo_root, tmp, max_iterations=2)
    out = io.StringIO()
    line, events, stages = ProgressLine(live=False, stream=out), EventLog(), _Stages()
    pipeline = OptimizationPipeline(cfg, callbacks=[events, line], plots=False)
    attach_stage_hook(pipeline, line, stages)
    with line:
        events.start()
        pipeline.run_full_experiment()
    return SimpleNamespace(
        cfg=cfg, root=Path(cfg.experiment_dir), out=out.getvalue(), stages=stages
    )


def test_events_jsonl_one_line_per_iteration(logged_run) -> None:
    path = logged_run.root / EVENTS_FILE
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 3
    records = read_events(logged_run.root)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    run = load_experiment(logged_run.root)
    for rec, it in zip(records, run.iterations, strict=True):
        assert rec["event"] == "iteration" and rec["max_iterations"] == 2
        assert rec["scores"]["distribution_similarity"] == pytest.approx(
            it.scores.distribution_similarity
        )
        assert rec["recommendation"]["uid"] == it.scores.recommendation.uid
        assert rec["next_params"] == it.proposals["next_params"]
        assert set(rec["stage_seconds"]) >= {"render", "embed", "propose", "write"}
        assert all(v >= 0 for v in rec["stage_seconds"].values())
        assert rec["wall_seconds"] > 0
        assert "per_set" not in rec["scores"]  # scalars only: the line stays short


def test_plain_lines_one_per_iteration(logged_run) -> None:
    lines = logged_run.out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("iteration 0/2 · recommendation ")
    assert "fresh MMD² " in lines[1] and "in sample " in lines[1]
    assert "ETA " in lines[1] and "s/iteration" in lines[1]
    assert lines[2].startswith("iteration 2/2") and "ETA" not in lines[2]  # nothing left
    assert "\r" not in logged_run.out  # no terminal control characters in a log


def test_stage_hook_reports_the_loop_stages(logged_run) -> None:
    stages = logged_run.stages.seen
    for k in (0, 1, 2):
        names = [s for s, i in stages if i == k]
        assert names[0] == "render+embed", names
        assert "propose" in names and "write" in names
        assert any(s.startswith("fresh score") for s in names)
        # the stages of one iteration come in the loop's order
        assert names.index("propose") < names.index("write")
    assert ("null band", 0) in stages and all(s != "null band" for s, i in stages if i > 0)


def test_resume_rewrites_events_without_duplicates(logged_run, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "exp"
    shutil.copytree(logged_run.root, root)
    path = root / EVENTS_FILE
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # a crash after iteration 2 was persisted but before its line, and a cut line
    path.write_text("".join(lines[:2]) + '{"event": "iteration", "itera', encoding="utf-8")
    cfg = logged_run.cfg.replace(experiment_dir=str(root), max_iterations=3)
    OptimizationPipeline(
        cfg, resume=True, callbacks=[EventLog()], plots=False
    ).run_full_experiment()
    records = read_events(root)
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert records[2].get("rebuilt") is True and records[3].get("rebuilt") is None
    assert records[:2] == [json.loads(x) for x in lines[:2]]  # complete lines are kept as they are
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_read_events_skips_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    path.write_text('{"iteration": 0}\nnot json\n[1]\n{"iteration": 1}\n{"iter', encoding="utf-8")
    assert read_events(path) == [{"iteration": 0}, {"iteration": 1}]
    assert read_events(tmp_path / "missing.jsonl") == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _event(k: int, n: int) -> SimpleNamespace:
    best = {"uid": "close_ps_000", "params": {}, "mmd2": 0.1, "predicted_mmd2": 0.1}
    scores = RunScores.from_dict(
        {
            "iteration": k,
            "distribution_similarity": 0.5 / (k + 1),
            "best": [best],
            "recommendation": {"uid": "close_ps_000", "fresh_mmd2": 0.2, "mmd2_in_sample": 0.1},
        }
    )
    return SimpleNamespace(
        iteration=k,
        max_iterations=n,
        scores=scores,
        proposal=Proposal(next_params=()),
        timings={"render": 1.0},
        experiment_dir=Path("."),
        records=(),
    )


def test_live_line_on_a_terminal() -> None:
    term = _Terminal()
    line = ProgressLine(3, stream=term)
    assert line.live
    with line:
        line.on_stage("render+embed", 0)
        line(_event(0, 3))
        line.on_stage("propose", 1)
        line(_event(1, 3))
    out = term.getvalue()
    assert "\r" in out  # redrawn in place
    assert "iteration 1/3" in out and "propose" in out and "fresh MMD² 0.2000" in out
    assert "ETA" in out
    assert out.count("\n") <= 1  # one line, not one per update


def test_eta_uses_iterations_after_the_first() -> None:
    line = ProgressLine(10, live=False, stream=None)
    line.start()
    line._durations = {0: 100.0, 1: 2.0, 2: 4.0}
    line._iteration = 2
    assert line.eta_seconds() == pytest.approx(8 * 3.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (float("nan"), "?"), (4.4, "4s"), (65, "1m05s"), (7380, "2h03m")],
)
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text


def _last_frame(term: _Terminal) -> str:
    """What a terminal shows last: the text after the last carriage return."""
    return term.getvalue().replace("\n", "\r").rstrip("\r").split("\r")[-1]


def test_live_line_ends_full_or_interrupted() -> None:
    term = _Terminal()
    line = ProgressLine(3, stream=term)
    with line:
        line(_event(0, 3))
        line(_event(1, 3))  # the stop rule ends the run after iteration 1 of 3
        line.on_stage("calibrate", 1)
        assert "calibrate · " in _last_frame(term) and "elapsed" in _last_frame(term)
    assert "████████████ " in _last_frame(term) and _last_frame(term).endswith("done")

    term = _Terminal()
    line = ProgressLine(3, stream=term)
    line.start()
    line(_event(0, 3))
    line.close("interrupted")
    last = _last_frame(term)
    assert last.endswith("interrupted") and "done" not in last and "░" in last
    assert "\x1b[K" in term.getvalue()  # the terminal's "^C" echo is erased, not left behind

    term = _Terminal()  # a line that never saw an iteration (e.g. a run already complete)
    line = ProgressLine(3, stream=term)
    line.start()
    line.close()
    assert "iteration" not in _last_frame(term)


def test_eta_during_and_right_after_iteration_0() -> None:
    line = ProgressLine(4, live=False, stream=None)
    line.start()
    line.on_stage("render+embed", 0)
    assert line.eta_seconds() is None
    assert "elapsed, ETA after iteration 0" in line._eta_text()
    cfg = SimpleNamespace(
        metric=SimpleNamespace(fresh_images=10),
        iteration_batch_size=5,
        replications_per_iteration=2,
    )
    event = _event(0, 4)
    event.config, event.records = cfg, [SimpleNamespace(metadata=[{}] * 30)]
    event.timings = {"render": 4.0, "embed": 16.0, "null_band": 12.0}
    line._t_last -= 40.0  # iteration 0 took 40 s: 20 render+embed, 12 null band, 8 the rest
    line(event)
    # later iterations: 8 s + 20 s x (5 x 2 + 10) / (30 + 10) images = 18 s; 4 left
    assert line.eta_seconds() == pytest.approx(4 * 18.0, rel=0.02)
    assert line._eta_text().startswith("ETA 1m1")


def test_final_stages_and_timings_include_the_calibration(
    repo_root: Path, tmp_path: Path, monkeypatch
) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0, calibrate=True)

    def fake_calibrate(self) -> None:
        self.timings["calibrate"] = 1.5

    monkeypatch.setattr(OptimizationPipeline, "_calibrate", fake_calibrate)
    stages = _Stages()
    pipeline = OptimizationPipeline(cfg)
    attach_stage_hook(pipeline, stages)
    pipeline.run_full_experiment()
    assert stages.seen[-2:] == [("calibrate", 0), ("final plots", 0)]
    run = load_experiment(cfg.experiment_dir)
    assert run.manifest["timings"]["calibrate"] == 1.5 and run.manifest["timings"]["plot"] > 0

    from bo_voids.report import build_report_html

    timings = build_report_html(run, figures="reuse").split("<h2>Timings</h2>", 1)[1]
    assert '<td>calibrate</td><td class="num">1.50</td>' in timings.split("</table>")[0]
