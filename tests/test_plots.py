"""Tests of bo_voids.plots on tiny experiments run by the real pipeline.

The runs come from :mod:`bo_voids.testing.runs` (shared with ``test_report.py``,
``test_notebook.py`` and ``test_report_browser.py``): each is built once per test session (cached
under pytest's session temp folder) with the real pipeline, the random optimiser and the offline
embedder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from bo_voids import plots
from bo_voids.exceptions import StateError
from bo_voids.state import load_experiment
from bo_voids.testing.runs import REPO_ROOT as REPO
from bo_voids.testing.runs import (
    assert_valid_png,
    build_iteration0_run,
    build_running_copy,
    build_target_run,
    build_tiny_run,
)

EXPECTED_FILES = ("latent_pca.png", "convergence.png", "image_grid.png", "parameters.png")


pytestmark = pytest.mark.plots


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def iteration0_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_iteration0_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def target_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_target_run(tmp_path_factory.getbasetemp())


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


def test_pipeline_wrote_plots_every_iteration(tiny_run: Path) -> None:
    written = sorted(p.name for p in (tiny_run / "plots").glob("*.png"))
    assert written == sorted(EXPECTED_FILES)


def test_write_all_plots_writes_valid_pngs(tiny_run: Path) -> None:
    paths = plots.write_all_plots(tiny_run)
    assert [p.name for p in paths] == list(EXPECTED_FILES)
    for p in paths:
        assert p.parent == tiny_run / "plots"
        assert_valid_png(p.read_bytes())
    assert not list((tiny_run / "plots").glob(".*.tmp")), "temporary files left behind"


def test_iteration0_alone(iteration0_run: Path) -> None:
    run = load_experiment(iteration0_run)
    assert len(run.iterations) == 1
    for p in plots.write_all_plots(iteration0_run):
        assert_valid_png(p.read_bytes())


def test_target_folder_run(target_run: Path) -> None:
    run = load_experiment(target_run)
    real = [m for m in run.iterations[0].metadata if m["dataset_type"] == "real"]
    assert real and all(m["params"] is None for m in real)
    for p in plots.write_all_plots(target_run):
        assert_valid_png(p.read_bytes())
    fig = plots.plot_image_grid(run, n=4)
    texts = [t.get_text() for t in fig.texts]
    # every target shown (up to two rows), titled with its file name, in file-name order
    names = sorted(Path(m["source_file"]).name for m in real)
    assert [t for t in texts if t.endswith(".png")] == names[:8]
    assert f"real targets ({min(len(real), 8)} of {len(real)})" in fig.get_suptitle()
    fig = plots.plot_parameter_trajectories(run)
    # no real-distribution band when the targets are real images
    assert all("real distribution" not in t.get_text() for t in fig.legends[0].get_texts())


def test_running_run_falls_back_to_last_top_k(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_running_copy(tmp_path_factory.getbasetemp())
    run = load_experiment(folder)
    assert run.current_best == []
    best = plots.best_sets(run)
    assert [b["param_set_id"] for b in best] == [b["uid"] for b in run.scores[-1].best][: len(best)]
    assert all(np.isfinite(b["mmd2"]) for b in best)
    for p in plots.write_all_plots(folder):
        assert_valid_png(p.read_bytes())


def test_latent_figure_content(tiny_run: Path) -> None:
    run = load_experiment(tiny_run)
    fig = plots.plot_latent(run)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "PC1" in ax.get_xlabel() and "% of variance" in ax.get_xlabel()
    assert "PC2" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("real targets") for label in labels)
    assert any("close" in label for label in labels) and any("far" in label for label in labels)
    assert any("current best" in label for label in labels)
    assert len(fig.axes) == 2, "expected the axes and the iteration colorbar"
    assert "iteration" in fig.axes[1].get_ylabel()


def test_convergence_figure_content(tiny_run: Path) -> None:
    run = load_experiment(tiny_run)
    fig = plots.plot_convergence(run)
    assert len(fig.axes) == 4
    ax_a, ax_b = fig.axes[:2]
    legend_a, legend_b = fig.legends
    labels = [t.get_text() for t in legend_b.get_texts()]
    assert any("noise floor" in t and "one real set" in t for t in labels)
    assert any("q05" in t for t in labels) and any("threshold" in t for t in labels)
    assert "noise floor median" in labels  # the band's middle line is explained
    labels_a = [t.get_text() for t in legend_a.get_texts()]
    assert any("close seed" in t for t in labels_a) and any("far seed" in t for t in labels_a)
    assert "a proposed set" in labels_a  # the grey markers of panel (a) are explained
    # no legend covers a panel, the other legend, or leaves the figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [lg.get_window_extent(renderer) for lg in (legend_a, legend_b)]
    assert not boxes[0].overlaps(boxes[1])
    for box in boxes:
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
    fresh = next(x for x in ax_b.get_lines() if x.get_label() == "recommendation, fresh images")
    expected = [s.fresh_mmd2 for s in run.scores]
    np.testing.assert_allclose(np.asarray(fresh.get_ydata(), dtype=float), expected)
    rec = next(x for x in ax_a.get_lines() if x.get_label() == "recommendation (in sample)")
    y = np.asarray(rec.get_ydata(), dtype=float)
    np.testing.assert_allclose(y, [s.best_mmd2 for s in run.scores])


def test_parameter_figure_content(tiny_run: Path) -> None:
    run = load_experiment(tiny_run)
    fig = plots.plot_parameter_trajectories(run)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6
    shape = next(ax for ax in panels if ax.get_title() == "void shape")
    ticks = [t.get_text().split("\n")[0] for t in shape.get_yticklabels()]
    assert ticks == ["circle", "ellipse", "irregular"]
    # the black line follows each iteration's recommendation; the legend names its ranking
    count = next(ax for ax in panels if ax.get_title() == "void count")
    line = next(ln for ln in count.get_lines() if ln.get_color() == "black")
    assert list(line.get_ydata()) == [s.best_params["void_count"] for s in run.scores]
    rankings = {s.ranking for s in run.scores}
    label = fig.legends[0].get_texts()[0].get_text()
    assert label.startswith("recommendation")
    assert ("model" in label) == ("model" in rankings) and ("raw" in label) == ("raw" in rankings)
    assert fig.get_suptitle().startswith("Parameter trajectories")


def test_image_grid_shows_targets_and_best_sets(tiny_run: Path) -> None:
    run = load_experiment(tiny_run)
    fig = plots.plot_image_grid(run, n=4)
    texts = [t.get_text() for t in fig.texts]
    n_real = sum(m["dataset_type"] == "real" for m in run.iterations[0].metadata)
    assert sum(t.startswith("real") for t in texts) == min(n_real, 8)
    assert f"({min(n_real, 8)} of {n_real})" in fig.get_suptitle()
    best_id = run.current_best[0]["param_set_id"]
    assert any(t.startswith(f"#1 {best_id}") and "MMD²" in t for t in texts)
    assert len(fig.images) == 1  # one mosaic, drawn pixel for pixel
    # regular rows: every best set gets the same number of cells, whole sets per row
    per_set = [sum(t.startswith(f"#{r} ") for t in texts) for r in range(1, 5)]
    assert len(set(per_set)) == 1 and per_set[0] >= 1
    fig = plots.plot_image_grid(run, n=4, max_target_rows=1)
    assert sum(t.get_text().startswith("real") for t in fig.texts) == 4


def test_set_summaries_cover_every_set(tiny_run: Path) -> None:
    run = load_experiment(tiny_run)
    sets = plots.set_summaries(run)
    observed = [s for s in sets if s.dataset_type != "real"]
    assert len(observed) == 3 + 3 + 2 * 3
    assert all(np.isfinite(s.mmd2) and len(s.images) == 2 for s in observed)
    history = {r["param_set_id"]: float(r["mmd2"]) for r in run.history if r["mmd2"]}
    for s in observed:
        assert s.mmd2 == pytest.approx(history[s.param_set_id])


def test_not_an_experiment(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        plots.write_all_plots(tmp_path)


def test_library_does_not_touch_pyplot(tiny_run: Path) -> None:
    code = (
        "import sys; from bo_voids.plots import write_all_plots; "
        f"write_all_plots({str(tiny_run)!r}); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_explained_variance_read_from_model(tiny_run: Path) -> None:
    data = np.load(tiny_run / "iteration_0" / "pca_model.npz", allow_pickle=False)
    ratios = plots._explained_variance(load_experiment(tiny_run))
    assert ratios is not None
    np.testing.assert_allclose(ratios, data["explained_variance_ratio"])
    assert json.loads((tiny_run / "experiment.json").read_text())["status"] == "completed"
