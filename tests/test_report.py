"""Tests of the self-contained HTML report and its command line."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bo_voids.report import build_report_html, main, write_report
from bo_voids.state import ExperimentStore, load_experiment
from bo_voids.testing.runs import (
    PNG_SIGNATURE,
    assert_valid_png,
    build_iteration0_run,
    build_running_copy,
    build_target_run,
    build_tiny_run,
)
from bo_voids.testing.runs import REPO_ROOT as REPO


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_report(tiny_run: Path) -> str:
    return write_report(tiny_run).read_text(encoding="utf-8")


class _Collector(HTMLParser):
    """Collects tags and attributes; checks that non-void elements are balanced."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()


def _parse(text: str) -> _Collector:
    parser = _Collector()
    parser.feed(text)
    parser.close()
    return parser


def test_report_has_every_section(tiny_run: Path, tiny_report: str) -> None:
    html = tiny_report
    for heading in (
        "Best parameter sets",
        "Convergence",
        "Figures",
        "Latent space",
        "Parameter trajectories",
        "Real targets and best synthetic images",
        "All evaluated parameter sets",
        "Timings",
        "Run settings",
    ):
        assert f">{heading}<" in html, heading
    run = load_experiment(tiny_run)
    manifest = run.manifest
    assert manifest["embedder"]["fingerprint"] in html
    assert manifest["stop_reason"] in html
    assert "real distribution (mean / mode)" in html  # simulated targets: reference row
    assert run.current_best[0]["param_set_id"] in html
    assert html.count("<details") >= 2
    # one convergence row per iteration
    conv = html.split(">Convergence<", 1)[1].split("</table>", 1)[0]
    assert conv.count("<tr>") == 1 + len(run.iterations)


def test_report_embeds_the_four_figures(tiny_report: str) -> None:
    parser = _parse(tiny_report)
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert len(images) == 4
    for src in images:
        assert src is not None and src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data[:8] == PNG_SIGNATURE
        assert_valid_png(data)


def test_report_is_self_contained_and_well_formed(tiny_report: str) -> None:
    html = tiny_report
    parser = _parse(html)
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed elements: {parser.stack}"
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//|file:)""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html and "url(" not in html
    assert "<script" not in html.lower() and "<link" not in html.lower()


def test_report_escapes_everything(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp(), "report_escape")
    store = ExperimentStore(folder)
    store.update_manifest(stop_reason="<script>alert('x')</script> & <b>bold</b>")
    (folder / "calibration.json").write_text(
        json.dumps({"<img src=x onerror=alert(1)>": {"a<b": "c&d"}}), encoding="utf-8"
    )
    html = write_report(folder).read_text(encoding="utf-8")
    assert "<script>" not in html and "<img src=x" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "c&amp;d" in html


def test_running_run_uses_last_top_k(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp(), "report_running")
    html = write_report(folder).read_text(encoding="utf-8")
    assert "the last iteration" in html and "running" in html
    assert ">Timings<" not in html  # no timings before the run finishes


def test_calibration_section_renders_any_json(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp(), "report_calibration")
    calibration = {
        "method": "kernel-weighted posterior",
        "n_sets": 12,
        "parameters": {
            "void_count": {"mean": 8.25, "std": 2.9, "q05": 4, "q95": 13},
            "base_size": {"mean": 19.5, "std": 4.25},
        },
        "void_shape": {"circle": 0.2, "ellipse": 0.5, "irregular": 0.3},
        "samples": [{"void_count": 8, "base_size": 20.5}, {"void_count": 9}],
        "notes": ["first", "second"],
        "nested": {"a": 1, "b": {"c": [1, 2, 3]}},
    }
    (folder / "calibration.json").write_text(json.dumps(calibration), encoding="utf-8")
    html = write_report(folder).read_text(encoding="utf-8")
    section = html.split(">Implied parameter distribution<", 1)[1].split("<h2>", 1)[0]
    for text in ("kernel-weighted posterior", "void_count", "19.50", "ellipse", "irregular"):
        assert text in section, text
    assert section.count("<table>") >= 4
    assert not _parse(html).errors


def test_calibration_section_absent_without_file(tiny_report: str) -> None:
    assert "Implied parameter distribution" not in tiny_report


def test_iteration0_and_target_folder_reports(tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp()
    pages = [build_report_html(load_experiment(build_iteration0_run(base)))]
    pages.append(build_report_html(load_experiment(build_target_run(base))))
    for html in pages:
        assert html.count('src="data:image/png;base64,') == 4
        assert not _parse(html).errors
    target_html = pages[1]
    assert "images from" in target_html
    assert "real distribution (mean / mode)" not in target_html


def test_main_writes_report_and_out(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "r.html"
    assert main([str(tiny_run), "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out


def test_main_exit_2_when_not_an_experiment(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not an experiment" in err and "\n" not in err


def test_module_cli(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "exp"
    shutil.copytree(tiny_run, copy)
    ok = subprocess.run(
        [sys.executable, "-m", "bo_voids.report", str(copy)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr
    assert (copy / "report.html").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "bo_voids.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def _banner(html: str) -> str:
    return html.split('id="status">', 1)[1].split("</p>", 1)[0]


def test_report_is_written_after_every_iteration(repo_root: Path, tmp_path: Path) -> None:
    from bo_voids.pipeline import OptimizationPipeline
    from bo_voids.report import ReportCallback
    from bo_voids.testing.runs import tiny_config

    cfg = tiny_config(repo_root, tmp_path, max_iterations=2)
    root = Path(cfg.experiment_dir)
    seen: list[tuple[str, bool, bool]] = []

    def read_back(event) -> None:
        html = (root / "report.html").read_text(encoding="utf-8")
        pngs = [base64.b64encode(p.read_bytes()).decode() for p in sorted(root.glob("plots/*.png"))]
        seen.append((_banner(html), 'http-equiv="refresh"' in html, all(p in html for p in pngs)))

    with ReportCallback() as report:
        OptimizationPipeline(cfg, callbacks=[report, read_back]).run_full_experiment()
    assert [s[0].split(" <span")[0] for s in seen] == [
        f"Running — iteration {k} of 2" for k in range(3)
    ]
    assert all(reloads for _, reloads, _ in seen)  # a browser can simply leave it open
    assert all(embedded for _, _, embedded in seen)  # the PNGs just drawn, embedded as they are
    final = (root / "report.html").read_text(encoding="utf-8")
    assert _banner(final).startswith("Completed — iteration 2 of 2")
    assert 'http-equiv="refresh"' not in final
    assert final.count('src="data:image/png;base64,') == 4


def test_up_to_date_figures_are_reused_not_redrawn(tiny_run: Path, monkeypatch) -> None:
    from bo_voids import plots

    def no_drawing(run):
        raise AssertionError("a figure was drawn again")

    for name in (
        "plot_latent",
        "plot_convergence",
        "plot_image_grid",
        "plot_parameter_trajectories",
    ):
        monkeypatch.setattr(plots, name, no_drawing)
    for mode in ("auto", "reuse"):
        html = build_report_html(load_experiment(tiny_run), figures=mode)
        assert html.count('src="data:image/png;base64,') == 4, mode
        assert "Figure unavailable" not in html


def test_stale_or_missing_figures(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp(), "report_stale")
    (folder / "plots" / "parameters.png").unlink()
    run = load_experiment(folder)
    reused = build_report_html(run, figures="reuse")
    assert reused.count('src="data:image/png;base64,') == 3
    assert "Figure not drawn yet" in reused
    assert build_report_html(run, figures="auto").count('src="data:image/png;base64,') == 4
    with pytest.raises(ValueError, match="figures must be one of"):
        build_report_html(run, figures="sometimes")


def test_stopped_run_banner(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp(), "report_stopped")
    ExperimentStore(folder).update_manifest(status="interrupted")
    html = write_report(folder, figures="reuse").read_text(encoding="utf-8")
    assert _banner(html).startswith("Interrupted after iteration 2 of 2")
    assert "--resume" in _banner(html)


def _best_table_rows(html: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the best-sets table (``<table id="best-sets">``)."""
    table = html.split('<table id="best-sets">', 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", table)
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table)
    ]
    return head, [r for r in rows if r]


def test_best_table_is_the_runs_current_best(tiny_run: Path, tiny_report: str) -> None:
    from bo_voids.report import _fmt

    run = load_experiment(tiny_run)
    head, rows = _best_table_rows(tiny_report)
    ranked = [r for r in rows if r[0] != "—"]  # the italic reference row has no rank
    expected = run.current_best[: run.config.bo.top_k]
    assert [r[1] for r in ranked] == [b["param_set_id"] for b in expected]
    mmd = head.index("raw MMD²")
    assert [r[mmd] for r in ranked] == [_fmt(b["mmd2"]) for b in expected]
    # the random optimiser ranks by the raw MMD²: no model column pretending to be MMD²
    assert not any("predicted" in h for h in head)
    assert "Ranked by the raw MMD²" in tiny_report


def test_model_ranking_score_is_named_for_what_it_is(tiny_run: Path) -> None:
    import dataclasses

    run = load_experiment(tiny_run)
    iterations = [
        dataclasses.replace(it, scores=dataclasses.replace(it.scores, ranking="model"))
        for it in run.iterations
    ]
    composite = dataclasses.replace(
        run, config=run.config.replace(optimizer="botorch"), iterations=iterations
    )
    assert composite.config.bo.surrogate == "composite"
    head, _ = _best_table_rows(build_report_html(composite, figures="reuse"))
    assert "predicted MMD²" not in " ".join(head)
    assert any("summary distance" in h and "not MMD²" in h for h in head)
    scalar = dataclasses.replace(
        composite,
        config=composite.config.replace(bo={**composite.config.bo.__dict__, "surrogate": "mixed"}),
    )
    head, _ = _best_table_rows(build_report_html(scalar, figures="reuse"))
    assert "model&#x27;s predicted MMD²" in head


def test_report_reads_the_runs_scores_and_never_rescores(tiny_run: Path, monkeypatch) -> None:
    import bo_voids.scoring as scoring

    def refuse(*args, **kwargs):
        raise AssertionError("the report re-scored the run")

    import bo_voids.metrics as metrics

    monkeypatch.setattr(scoring, "score_book_from_iterations", refuse)
    monkeypatch.setattr(scoring.ScoreBook, "__init__", refuse)
    monkeypatch.setattr(metrics, "mmd2", refuse)
    monkeypatch.setattr(metrics.MMDScorer, "__init__", refuse)
    html = build_report_html(load_experiment(tiny_run), figures="draw")
    assert "Figure unavailable" not in html
    run = load_experiment(tiny_run)
    per_set = {r["uid"]: r for s in run.scores for r in s.per_set}
    sets_table = html.split("All evaluated parameter sets", 1)[1].split("</table>", 1)[0]
    for uid, rec in per_set.items():
        from bo_voids.report import _fmt

        row = sets_table.split(f"<td>{uid}</td>", 1)[1].split("</tr>", 1)[0]
        assert f">{_fmt(rec['mmd2'])}<" in row
