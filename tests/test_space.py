from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bo_voids.config import config_from_dict, read_yaml
from bo_voids.exceptions import ConfigError
from bo_voids.space import SearchSpace


@pytest.fixture(scope="module")
def space(config_path) -> SearchSpace:
    return SearchSpace.from_config(config_from_dict(read_yaml(config_path), check_paths=False))


params_strategy = st.fixed_dictionaries(
    {
        "void_shape": st.sampled_from(["circle", "ellipse", "irregular"]),
        "void_count": st.integers(3, 20),
        "base_size": st.floats(5.0, 40.0),
        "brightness_factor": st.floats(0.3, 0.8),
        "size_std": st.floats(0.0, 15.0),
        "position_spread": st.floats(0.1, 0.8),
    }
)


@given(p=params_strategy)
@settings(max_examples=300, deadline=None)
def test_round_trip(space: SearchSpace, p: dict) -> None:
    u = space.encode(p)
    assert u.shape == (6,)
    assert np.all((u >= 0) & (u <= 1))
    back = space.decode(u)
    assert back["void_shape"] == p["void_shape"] and back["void_count"] == p["void_count"]
    assert space.same(back, p)
    raw_back = space.from_raw(space.to_raw(p))
    assert raw_back == p  # raw encoding is exact


def test_decode_rounds_and_clips(space: SearchSpace) -> None:
    p = space.from_raw([1.4, 7.6, 100.0, -3.0, 5.0, 0.5])
    assert p == {
        "void_shape": "ellipse",
        "void_count": 8,
        "base_size": 40.0,
        "brightness_factor": 0.3,
        "size_std": 5.0,
        "position_spread": 0.5,
    }
    assert space.decode([1.2, -0.5, 0.5, 0.5, 0.5, 0.5])["void_shape"] == "irregular"


def test_encode_uses_cell_centres(space: SearchSpace) -> None:
    p = {**space.distribution_means("real"), "void_shape": "circle", "void_count": 20}
    u = space.encode(p)
    shape, count = (
        space.parameter_names.index("void_shape"),
        space.parameter_names.index("void_count"),
    )
    assert u[shape] == pytest.approx(1 / 6)  # centre of [0, 1/3)
    assert u[count] == pytest.approx(17.5 / 18)  # 18 integers 3..20: the last cell's centre
    assert space.decode(u) == space.validate(p)


def test_uniform_unit_cube_gives_equal_mass_to_categories_and_integers(space: SearchSpace) -> None:
    """A uniform (Sobol-like) draw on the cube decodes to uniform categories and integers."""
    n = 36_000
    u = np.random.default_rng(0).uniform(size=(n, space.dim))
    draws = space.decode_many(u)
    shapes = [d["void_shape"] for d in draws]
    for shape in ("circle", "ellipse", "irregular"):
        # binomial sd at n = 36,000 and p = 1/3 is 0.0025
        assert abs(shapes.count(shape) / n - 1 / 3) < 0.01, shape
    counts = np.bincount([d["void_count"] for d in draws], minlength=21)[3:]
    assert counts.size == 18
    # every value, the end values 3 and 20 included, gets 1/18 (sd 0.0012 at this n)
    np.testing.assert_allclose(counts / n, 1 / 18, atol=0.006)
    # the cube's corners belong to the end values
    lo, hi = space.decode(np.zeros(space.dim)), space.decode(np.ones(space.dim))
    assert (lo["void_shape"], lo["void_count"]) == ("circle", 3)
    assert (hi["void_shape"], hi["void_count"]) == ("irregular", 20)


def test_validate_names_parameter(space: SearchSpace) -> None:
    p = space.distribution_means("real")
    with pytest.raises(ConfigError, match="void_count must lie within"):
        space.validate({**p, "void_count": 50})
    with pytest.raises(ConfigError, match="missing 'size_std'"):
        space.validate({k: v for k, v in p.items() if k != "size_std"})


@pytest.mark.parametrize("name", ["real", "close", "far"])
def test_distribution_statistics(space: SearchSpace, name: str) -> None:
    draws = space.sample(name, 2000, random_state=1)
    dist = space.distributions[name]
    for key in ("base_size", "brightness_factor", "void_count"):
        vals = np.array([d[key] for d in draws], dtype=float)
        b = space.bounds[key]
        mean, std = dist[key].mean, dist[key].std
        # clipping at the bounds shifts the mean only when the bounds cut the normal
        if mean - 3 * std > b.low and mean + 3 * std < b.high:
            assert abs(vals.mean() - mean) < 4 * std / np.sqrt(2000) + 0.02 * std
            assert abs(vals.std() - std) < 0.1 * std + (0.3 if key == "void_count" else 0)
        assert vals.min() >= b.low and vals.max() <= b.high
    shapes = [d["void_shape"] for d in draws]
    for shape, prob in dist["void_shape"].probabilities.items():
        assert abs(shapes.count(shape) / 2000 - prob) < 0.04


def test_sampling_is_seeded(space: SearchSpace) -> None:
    assert space.sample("real", 5, 3) == space.sample("real", 5, 3)
    assert space.sample("real", 5, 3) != space.sample("real", 5, 4)
    assert space.sample_uniform(5, 3) == space.sample_uniform(5, 3)


def test_uniform_sampling_covers_bounds(space: SearchSpace) -> None:
    draws = space.sample_uniform(500, 0)
    counts = np.array([d["void_count"] for d in draws])
    assert counts.min() == 3 and counts.max() == 20
    assert {d["void_shape"] for d in draws} == {"circle", "ellipse", "irregular"}


def test_normalized_distance(space: SearchSpace) -> None:
    m = space.distribution_means("real")
    assert space.normalized_distance(m, m) == 0
    other = {**m, "void_shape": "circle"}
    assert space.normalized_distance(m, other) == pytest.approx(1.0)
