"""The imaging chain: config validation, the generator's determinism with nuisance parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bo_voids.config import ImagingSettings, NumericBounds, config_from_dict, load_config
from bo_voids.exceptions import ConfigError
from bo_voids.generation.imaging import ImagingChain, ImagingValues
from bo_voids.generation.voids import VoidGenerator
from bo_voids.space import SearchSpace
from bo_voids.testing.synthetic import DEFAULT_OPTIMUM

REPO = Path(__file__).resolve().parents[2]
CHIPS = REPO / "data" / "base_chips"
QUICKSTART = REPO / "configs" / "quickstart.yaml"
PARAMS = dict(DEFAULT_OPTIMUM)  # the design's example parameter set
NUISANCE = ImagingSettings(
    psf_sigma=NumericBounds(0.0, 3.0),
    gamma=NumericBounds(0.6, 1.6),
    gaussian_noise=0.02,
    poisson_noise=0.05,
)


def _with_imaging(imaging: object) -> dict:
    raw = load_config(QUICKSTART, check_paths=False).to_dict()
    raw["imaging"] = imaging
    return raw


# ---- config ----------------------------------------------------------------------------------


def test_default_is_the_identity_and_not_written() -> None:
    cfg = load_config(QUICKSTART, check_paths=False)
    assert cfg.imaging.is_identity and cfg.imaging.nuisance_bounds() == {}
    assert "imaging" not in cfg.to_dict()  # experiments stored before the section resume
    assert SearchSpace.from_config(cfg).nuisance_names == ()


def test_fixed_and_nuisance_values_round_trip() -> None:
    cfg = config_from_dict(
        _with_imaging({"psf_sigma": [0.0, 3.0], "gamma": 1.4, "gaussian_noise": 0.01}),
        check_paths=False,
    )
    assert cfg.imaging.psf_sigma == NumericBounds(0.0, 3.0) and cfg.imaging.gamma == 1.4
    assert config_from_dict(cfg.to_dict(), check_paths=False) == cfg
    space = SearchSpace.from_config(cfg)
    assert space.nuisance_names == ("imaging_psf_sigma",)
    assert space.design_names == space.parameter_names[:6] and space.dim == 7


@pytest.mark.parametrize(
    ("imaging", "message"),
    [
        ({"gamma": [1.6, 0.6]}, r"imaging\.gamma bounds must satisfy low < high"),
        ({"gamma": [0.6, 1.6, 2.0]}, r"imaging\.gamma must be a number or bounds"),
        ({"psf_sigma": [0.0, 30.0]}, r"imaging\.psf_sigma must lie within \[0, 20\]"),
        ({"gaussian_noise": -0.1}, r"imaging\.gaussian_noise must be >= 0"),
        ({"contrast": "high"}, r"imaging\.contrast must be a number"),
        ({"gama": 1.2}, r"unknown key 'imaging\.gama'; did you mean 'gamma'"),
    ],
)
def test_bad_imaging_values_name_the_key(imaging: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_with_imaging(imaging), check_paths=False)


def test_bad_bounds_exit_2_naming_the_key(tmp_path: Path) -> None:
    raw = _with_imaging({"psf_sigma": [3.0, 1.0]})
    raw["experiment_dir"] = str(tmp_path / "exp")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        [sys.executable, "-m", "bo_voids.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 2
    assert "imaging.psf_sigma" in out.stderr and "Traceback" not in out.stderr


# ---- the chain and the generator -------------------------------------------------------------


@pytest.fixture(scope="module")
def plain() -> VoidGenerator:
    return VoidGenerator(CHIPS, image_size=96)


@pytest.fixture(scope="module")
def imaged() -> VoidGenerator:
    return VoidGenerator(CHIPS, image_size=96, imaging=NUISANCE)


def test_identity_chain_changes_nothing(plain: VoidGenerator) -> None:
    same = VoidGenerator(CHIPS, image_size=96, imaging=ImagingSettings())
    a, b = plain.render(PARAMS, 3), same.render(PARAMS, 3)
    assert np.array_equal(a.image, b.image) and a.uncontrolled_params == b.uncontrolled_params


def test_nuisance_render_is_deterministic_and_recorded(imaged: VoidGenerator) -> None:
    p = {**PARAMS, "imaging_psf_sigma": 1.5, "imaging_gamma": 1.3}
    a, b, c = imaged.render(p, 4), imaged.render(p, 4), imaged.render(p, 5)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert a.uncontrolled_params["imaging_gamma"] == 1.3
    assert a.uncontrolled_params["imaging_gaussian_noise"] == 0.02
    assert a.image.dtype == np.float32 and 0.0 <= a.image.min() and a.image.max() <= 1.0


def test_chain_keeps_the_void_geometry(plain: VoidGenerator, imaged: VoidGenerator) -> None:
    """The noise stream is derived from the seed: voids are the same with the chain on or off."""
    p = {**PARAMS, "imaging_psf_sigma": 2.0, "imaging_gamma": 0.7}
    a, b = plain.render(PARAMS, 11), imaged.render(p, 11)
    assert a.voids == b.voids and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, b.image)


def test_each_step_acts_in_its_direction() -> None:
    img = np.linspace(0.1, 0.9, 64 * 64, dtype=np.float32).reshape(64, 64)
    img[20:40, 20:40] = 0.2  # a sharp dark square
    chain = ImagingChain(ImagingSettings())
    blurred = chain.apply(img, ImagingValues(psf_sigma=2.0), seed=0)
    assert np.abs(np.diff(blurred, axis=1)).max() < np.abs(np.diff(img, axis=1)).max()
    darker = chain.apply(img, ImagingValues(gamma=2.0), seed=0)
    assert darker.mean() < img.mean()
    flat = chain.apply(img, ImagingValues(contrast=0.5), seed=0)
    assert flat.std() < img.std()
    noisy = chain.apply(img, ImagingValues(gaussian_noise=0.05, poisson_noise=0.05), seed=0)
    assert 0.03 < float(np.std(noisy - img)) < 0.15


def test_missing_or_unknown_nuisance_is_refused(imaged: VoidGenerator) -> None:
    with pytest.raises(ConfigError, match="imaging_gamma"):
        imaged.render({**PARAMS, "imaging_psf_sigma": 1.0}, 0)
    with pytest.raises(ConfigError, match="imaging_gamma must lie within"):
        imaged.render({**PARAMS, "imaging_psf_sigma": 1.0, "imaging_gamma": 9.0}, 0)
    plain = VoidGenerator(CHIPS, image_size=64)
    with pytest.raises(ConfigError, match="unknown imaging parameter"):
        plain.render({**PARAMS, "imaging_gamma": 1.0}, 0)


def test_space_samples_nuisance_uniformly_beside_the_named_distributions() -> None:
    cfg = config_from_dict(_with_imaging({"gamma": [0.6, 1.6]}), check_paths=False)
    space = SearchSpace.from_config(cfg)
    draws = space.sample("real", 200, 0)
    gammas = np.array([d["imaging_gamma"] for d in draws])
    assert 0.6 <= gammas.min() and gammas.max() <= 1.6 and abs(gammas.mean() - 1.1) < 0.06
    assert space.distribution_means("close")["imaging_gamma"] == pytest.approx(1.1)
    # the design parameters keep their stream when no nuisance is configured
    plain = SearchSpace.from_config(load_config(QUICKSTART, check_paths=False))
    assert plain.sample("real", 3, 0)[0]["void_shape"] in ("circle", "ellipse", "irregular")
    assert space.nuisance_part(draws[0]) == {"imaging_gamma": draws[0]["imaging_gamma"]}
