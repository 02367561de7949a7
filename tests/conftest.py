"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def config_path() -> Path:
    return REPO / "configs" / "experiment_config.yaml"


@pytest.fixture(autouse=True)
def _offline_hf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach for a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_live_plots(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs inside a test skip drawing the live plots, unless the test is marked ``plots``.

    Drawing the four figures after every iteration is two thirds of a tiny run's time, and
    most tests look at other things; the tests of the plots, the report and the end-to-end run
    are marked ``plots`` and draw them. The stub keeps the real function as ``real``: the
    shared tiny runs (:mod:`bo_voids.testing.runs`) draw their figures with it whichever test
    happens to build them first.
    """
    if request.node.get_closest_marker("plots") is None:
        import bo_voids.plots

        def skip_plots(*args: object, **kwargs: object) -> list[object]:
            return []

        skip_plots.real = bo_voids.plots.write_all_plots  # type: ignore[attr-defined]
        monkeypatch.setattr(bo_voids.plots, "write_all_plots", skip_plots)
