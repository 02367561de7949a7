"""The reference design: cached per fingerprint, reused, refused on a mismatch; and recovery of a
target folder imaged through a chain the generator's defaults lack."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bo_voids.config import ImagingSettings, NumericBounds, config_from_dict, load_config
from bo_voids.exceptions import ConfigError, StateError
from bo_voids.generation.voids import VoidGenerator, save_png
from bo_voids.reference_design import load, load_or_build
from bo_voids.space import SearchSpace
from bo_voids.summaries import SummaryMap

REPO = Path(__file__).resolve().parents[1]
CHIPS = REPO / "data" / "base_chips"
QUICKSTART = REPO / "configs" / "quickstart.yaml"


class _CountingEmbedder:
    """Mean, sd and a few quantiles of an image: cheap, deterministic; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, images: list[np.ndarray], **_: object) -> np.ndarray:
        self.calls += 1
        return np.stack(
            [
                np.concatenate([[im.mean(), im.std()], np.quantile(im, [0.05, 0.25, 0.5, 0.95])])
                for im in images
            ]
        )


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    cfg = load_config(QUICKSTART, check_paths=False)
    return SearchSpace(cfg.param_bounds, nuisance={"imaging_gamma": NumericBounds(0.6, 1.6)})


@pytest.fixture(scope="module")
def evaluator() -> SimpleNamespace:
    gen = VoidGenerator(
        CHIPS, image_size=48, imaging=ImagingSettings(gamma=NumericBounds(0.6, 1.6))
    )
    return SimpleNamespace(generator=gen, embedder=_CountingEmbedder())


def _build(path: Path, space: SearchSpace, evaluator: SimpleNamespace, **changes: object):
    kwargs = dict(
        n_sets=16,
        replications=2,
        seed=3,
        generator_settings={"image_size": 48, "imaging": {"gamma": [0.6, 1.6]}},
        embedder_fingerprint="counting:1",
    )
    kwargs.update(changes)
    return load_or_build(path, space, evaluator, **kwargs)


def test_rendered_once_then_reused(tmp_path: Path, space, evaluator) -> None:
    path = tmp_path / "reference_design.npz"
    calls = evaluator.embedder.calls
    first = _build(path, space, evaluator)
    assert not first.from_cache and evaluator.embedder.calls == calls + 1
    assert first.embeddings.shape == (32, 6) and len(first.param_sets) == 16
    # the Sobol design covers the nuisance parameter too
    gammas = [p["imaging_gamma"] for p in first.param_sets]
    assert min(gammas) < 0.8 and max(gammas) > 1.4
    second = _build(path, space, evaluator)
    assert second.from_cache and evaluator.embedder.calls == calls + 1  # nothing re-rendered
    assert np.array_equal(first.embeddings, second.embeddings)
    assert second.param_sets == first.param_sets and second.fingerprint == first.fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"embedder_fingerprint": "counting:2"},
        {"generator_settings": {"image_size": 64}},
        {"n_sets": 24},
        {"seed": 4},
    ],
)
def test_refused_when_the_fingerprint_differs(tmp_path: Path, space, evaluator, change) -> None:
    path = tmp_path / "reference_design.npz"
    _build(path, space, evaluator)
    before = path.read_bytes()
    with pytest.raises(StateError, match="reference design cached at"):
        _build(path, space, evaluator, **change)
    assert path.read_bytes() == before  # never overwritten


def test_refused_when_the_bounds_differ(tmp_path: Path, space, evaluator) -> None:
    path = tmp_path / "reference_design.npz"
    _build(path, space, evaluator)
    other = SearchSpace(space.bounds, nuisance={"imaging_gamma": NumericBounds(0.8, 1.6)})
    with pytest.raises(StateError, match="bounds"):
        _build(path, other, evaluator)


def test_summary_map_from_the_design_round_trips(tmp_path: Path, space, evaluator) -> None:
    design = _build(tmp_path / "r.npz", space, evaluator)
    smap = design.fit_summary_map(space, n_components=3, random_features=32, seed=0)
    assert smap.settings["reference_design"] == design.fingerprint
    assert "head_imaging_gamma" in smap.names
    again = SummaryMap.from_state_dict(smap.state_dict())
    np.testing.assert_array_equal(
        again.transform(design.embeddings), smap.transform(design.embeddings)
    )
    assert load(tmp_path / "r.npz").fingerprint == design.fingerprint


def test_reference_settings_are_validated() -> None:
    raw = load_config(QUICKSTART, check_paths=False).to_dict()
    raw["bo"]["reference_sets"] = 4
    with pytest.raises(ConfigError, match="bo.reference_sets must be 0"):
        config_from_dict(raw, check_paths=False)
    raw["bo"]["reference_sets"] = 64
    raw["bo"]["random_features"] = -1
    with pytest.raises(ConfigError, match="bo.random_features"):
        config_from_dict(raw, check_paths=False)


# ---- end to end: recovery of an imaged folder -------------------------------------------------

TRUTH = {
    "void_shape": "ellipse",
    "void_count": 6,
    "base_size": 26.0,
    "brightness_factor": 0.45,
    "size_std": 4.0,
    "position_spread": 0.45,
}
RANGES = {
    "void_count": 17,
    "base_size": 35.0,
    "brightness_factor": 0.5,
    "size_std": 15.0,
    "position_spread": 0.7,
}


def _design_error(params: dict) -> float:
    return float(np.mean([abs(float(params[k]) - TRUTH[k]) / r for k, r in RANGES.items()]))


def _run(tmp_path: Path, targets: Path, name: str, imaging: dict | None) -> dict:
    from bo_voids.pipeline import OptimizationPipeline

    raw = load_config(QUICKSTART, check_paths=False).to_dict()
    raw.update(
        experiment_name=name,
        experiment_dir=str(tmp_path / name),
        target_image_dir=str(targets),
        image_size=96,
        max_iterations=4,
        calibrate=False,
        stop_at_noise_floor=False,
        seed=11,
    )
    raw["metric"].update(fresh_images=6, noise_floor_splits=5, permutations=10)
    raw["bo"].update(reference_sets=48, reference_replications=2, random_features=128)
    if imaging:
        raw["imaging"] = imaging
    cfg = config_from_dict(raw, check_paths=False)
    summary = OptimizationPipeline(cfg, plots=False).run_full_experiment()
    return dict(summary.best["params"])


@pytest.mark.slow
def test_nuisance_imaging_recovers_an_imaged_folder_better(tmp_path: Path) -> None:
    """A folder imaged with blur 3 and gamma 1.5: nuisance on recovers the design parameters
    better than the generator without the chain (seeded; design-parameter error, mean of range)."""
    imager = VoidGenerator(CHIPS, image_size=96, imaging=ImagingSettings(psf_sigma=3.0, gamma=1.5))
    rng = np.random.default_rng(5)
    targets = tmp_path / "targets"
    for i in range(15):
        params = dict(TRUTH)
        params["void_count"] = int(np.clip(round(rng.normal(6, 1)), 3, 20))
        params["base_size"] = float(rng.normal(26, 2))
        save_png(targets / f"t_{i:02d}.png", imager.render(params, 1000 + i).image)
    off = _run(tmp_path, targets, "off", None)
    on = _run(tmp_path, targets, "on", {"psf_sigma": [0.0, 4.0], "gamma": [0.6, 1.8]})
    assert _design_error(on) < _design_error(off), (on, off)


def test_dinov2_embeddings_take_the_same_path(tmp_path: Path, space) -> None:
    """The reference design and its summaries work on DINOv2 embeddings (tiny random ViT)."""
    from bo_voids.embedding import make_embedder
    from bo_voids.testing import make_tiny_dinov2

    weights = make_tiny_dinov2(tmp_path / "tiny")
    dino = make_embedder("dinov2", dino_weights=weights, device="cpu", dtype="float32")
    gen = VoidGenerator(
        CHIPS, image_size=48, imaging=ImagingSettings(gamma=NumericBounds(0.6, 1.6))
    )
    design = load_or_build(
        tmp_path / "r.npz",
        space,
        SimpleNamespace(generator=gen, embedder=dino),
        n_sets=12,
        replications=2,
        seed=0,
        generator_settings={"image_size": 48},
        embedder_fingerprint=dino.fingerprint(),
    )
    smap = design.fit_summary_map(space, n_components=4, random_features=32, seed=0)
    assert smap.n_features == design.embeddings.shape[1] > 6
    assert np.isfinite(smap.transform(design.embeddings)).all()
