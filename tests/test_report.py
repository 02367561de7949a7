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
from tests.test_plots import (
    PNG_SIGNATURE,
    REPO,
    assert_valid_png,
    build_iteration0_run,
    build_running_copy,
    build_target_run,
    build_tiny_run,
)


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
