from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.measure import label

from bo_voids.exceptions import ConfigError
from bo_voids.generation.voids import (
    PARAM_KEYS,
    RenderedImage,
    VoidGenerator,
    image_record,
    save_png,
    validate_params,
)
from bo_voids.seeding import derive_seed
from bo_voids.testing.synthetic import DEFAULT_OPTIMUM

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CHIPS = REPO / "data" / "base_chips"

PARAMS = dict(DEFAULT_OPTIMUM)  # the design's example parameter set


@pytest.fixture(scope="module")
def gen() -> VoidGenerator:
    return VoidGenerator(DEFAULT_CHIPS, image_size=128)


@pytest.fixture(scope="module")
def gen_raw_px() -> VoidGenerator:
    """Generator whose pixel parameters are raw pixels of the 128 px image."""
    return VoidGenerator(DEFAULT_CHIPS, image_size=128, reference_size=128)


def _params(**changes: Any) -> dict[str, Any]:
    return {**PARAMS, **changes}


def _chip_for(gen: VoidGenerator, result: RenderedImage) -> np.ndarray:
    return gen.base_images[gen.base_image_ids.index(result.base_image_id)]


def test_loads_base_chips(gen: VoidGenerator) -> None:
    assert len(gen.base_images) == 5
    assert gen.base_image_ids == sorted(gen.base_image_ids)
    assert all(img.shape == (128, 128) for img in gen.base_images)


@pytest.mark.parametrize("shape", ["circle", "ellipse", "irregular"])
def test_same_seed_is_bit_identical(gen: VoidGenerator, shape: str) -> None:
    a = gen.render(_params(void_shape=shape), 123)
    b = gen.render(_params(void_shape=shape), 123)
    assert a.image.tobytes() == b.image.tobytes()
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.voids == b.voids
    assert a.uncontrolled_params == b.uncontrolled_params
    assert a.base_image_id == b.base_image_id


def test_different_seeds_differ(gen: VoidGenerator) -> None:
    images = [gen.render(PARAMS, s).image for s in range(4)]
    for a, b in itertools.combinations(images, 2):
        assert not np.array_equal(a, b)
    rotations = {gen.render(PARAMS, s).uncontrolled_params["rotation"] for s in range(4)}
    assert len(rotations) == 4


def test_base_chip_choice_covers_all_chips(gen: VoidGenerator) -> None:
    ids = {gen.render(_params(void_count=3), s).base_image_id for s in range(60)}
    assert ids == set(gen.base_image_ids)


@pytest.mark.parametrize("shape", ["circle", "ellipse", "irregular"])
def test_image_shape_dtype_range(gen: VoidGenerator, shape: str) -> None:
    r = gen.render(_params(void_shape=shape, brightness_factor=0.3, void_count=20), 5)
    assert r.image.shape == (128, 128)
    assert r.image.dtype == np.float32
    assert r.mask.shape == (128, 128)
    assert r.mask.dtype == np.bool_
    assert 0.0 <= r.image.min() and r.image.max() <= 1.0
    assert math.isclose(r.void_area_pct, 100.0 * r.mask.mean())
    assert r.mask.any()
    assert r.uncontrolled_params["edge_blur"] == 2.0
    assert 0.0 <= r.uncontrolled_params["rotation"] < 360.0


@pytest.mark.parametrize(
    ("shape", "count"), [("circle", 3), ("ellipse", 11), ("irregular", 20), ("circle", 0)]
)
def test_exact_void_count_from_geometry(gen: VoidGenerator, shape: str, count: int) -> None:
    r = gen.render(_params(void_shape=shape, void_count=count), 9)
    assert len(r.voids) == count
    for v in r.voids:
        assert v["shape"] == shape
        assert v["radius"] >= 1.0
        assert v["semi_major"] >= v["semi_minor"] > 0
        assert 0 <= v["center_x"] <= 127 and 0 <= v["center_y"] <= 127
        assert v["area_px"] > 0


@pytest.mark.parametrize("shape", ["circle", "ellipse", "irregular"])
def test_void_count_by_connected_components(gen_raw_px: VoidGenerator, shape: str) -> None:
    """Where the geometry guarantees no overlap, the mask has exactly void_count regions."""
    params = _params(
        void_shape=shape, void_count=4, base_size=5.0, size_std=0.0, position_spread=0.8
    )
    margin = 4 * gen_raw_px.edge_blur + 2
    checked = 0
    for seed in range(40):
        r = gen_raw_px.render(params, seed)
        centres = [(v["center_x"], v["center_y"], v["semi_major"]) for v in r.voids]
        separated = all(
            math.hypot(x1 - x2, y1 - y2) > a1 + a2 + margin
            for (x1, y1, a1), (x2, y2, a2) in itertools.combinations(centres, 2)
        )
        inside = all(margin < x < 127 - margin and margin < y < 127 - margin for x, y, _ in centres)
        if not (separated and inside):
            continue
        _, n_regions = label(r.mask, return_num=True, connectivity=2)
        assert n_regions == 4, f"seed {seed}"
        checked += 1
    assert checked >= 3  # the construction really exercised the count


@pytest.mark.parametrize("brightness", [0.3, 0.55, 0.8])
@pytest.mark.parametrize("shape", ["circle", "ellipse", "irregular"])
def test_mask_core_is_darkened_by_brightness_factor(
    gen_raw_px: VoidGenerator, shape: str, brightness: float
) -> None:
    sigma = gen_raw_px.edge_blur
    threshold = 1 - 0.5 * (1 - brightness)  # the mask is where the darkening is at least half
    # A single void: its core is darkened by exactly brightness_factor.
    single = _params(
        void_shape=shape, void_count=1, brightness_factor=brightness, base_size=13.0, size_std=2.0
    )
    for seed in range(3):
        r = gen_raw_px.render(single, seed)
        chip = _chip_for(gen_raw_px, r)
        core = ndimage.distance_transform_edt(r.mask) > 3 * sigma + 1
        assert core.sum() > 20
        np.testing.assert_allclose(r.image[core] / chip[core], brightness, atol=0.01)
    # Many overlapping voids: the blur fills narrow gaps between voids, so only on average.
    params = _params(void_shape=shape, brightness_factor=brightness, base_size=13.0, size_std=2.0)
    r = gen_raw_px.render(params, 17)
    chip = _chip_for(gen_raw_px, r)
    core = ndimage.distance_transform_edt(r.mask) > 3 * sigma + 1
    assert abs(float(np.median(r.image[core] / chip[core])) - brightness) < 0.005
    # far from any void the chip is untouched, bit for bit
    far = ndimage.distance_transform_edt(~r.mask) > 4 * sigma + 2
    np.testing.assert_array_equal(r.image[far], chip[far])
    # on the mask the darkening is at least half, off the mask less than half
    assert np.all(r.image[r.mask] <= chip[r.mask] * threshold + 1e-6)
    assert np.all(r.image[~r.mask] >= chip[~r.mask] * threshold - 1e-6)


def test_brightness_controls_darkness(gen: VoidGenerator) -> None:
    means = []
    for bf in (0.3, 0.5, 0.8):
        r = gen.render(_params(brightness_factor=bf), 3)
        chip = _chip_for(gen, r)
        means.append(float((r.image[r.mask] / chip[r.mask]).mean()))
    assert means[0] < means[1] < means[2]


def test_size_and_spread_act_as_expected(gen: VoidGenerator) -> None:
    small = np.mean([gen.render(_params(base_size=8.0), s).void_area_pct for s in range(5)])
    large = np.mean([gen.render(_params(base_size=30.0), s).void_area_pct for s in range(5)])
    assert large > 3 * small

    def spread(ps: float) -> float:
        pts = [
            (v["center_x"], v["center_y"])
            for s in range(5)
            for v in gen.render(_params(position_spread=ps), s).voids
        ]
        return float(np.std(np.asarray(pts) - 63.5))

    assert spread(0.8) > 3 * spread(0.15)


def test_resolution_independent_sizes() -> None:
    """base_size is in 512-px reference pixels: the void-area share barely depends on size."""
    small = VoidGenerator(DEFAULT_CHIPS, image_size=128)
    large = VoidGenerator(DEFAULT_CHIPS, image_size=256)
    p = _params(void_shape="circle", brightness_factor=0.5)
    a, b = small.render(p, 4), large.render(p, 4)
    assert a.base_image_id == b.base_image_id
    assert b.voids[0]["radius"] == pytest.approx(2 * a.voids[0]["radius"])
    assert a.void_area_pct == pytest.approx(b.void_area_pct, rel=0.15)


def test_generate_single_matches_render(gen: VoidGenerator) -> None:
    r = gen.render(PARAMS, 42)
    chip = _chip_for(gen, r)
    np.testing.assert_array_equal(gen.generate_single(chip, PARAMS, 42), r.image)
    as_uint8 = gen.generate_single(np.rint(chip * 255).astype(np.uint8), PARAMS, 42)
    assert as_uint8.dtype == np.float32
    np.testing.assert_allclose(as_uint8, r.image, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="2-D"):
        gen.generate_single(np.zeros((4, 4, 3)), PARAMS, 0)


def test_render_many(gen: VoidGenerator) -> None:
    items = [(PARAMS, 1), (_params(void_shape="circle"), 2)]
    results = gen.render_many(items, progress=True)
    assert len(results) == 2
    np.testing.assert_array_equal(results[1].image, gen.render(items[1][0], 2).image)


def test_image_record_is_the_one_schema(gen: VoidGenerator) -> None:
    rec = image_record(
        iteration=2,
        dataset_type="synthetic",
        param_set_id="ps_001",
        replication_seed=0,
        render_seed=3,
        params=PARAMS,
        rendered=gen.render(PARAMS, 3),
    )
    assert list(rec) == [
        "sample_id",
        "iteration",
        "dataset_type",
        "param_set_id",
        "replication_seed",
        "render_seed",
        "base_image_id",
        "params",
        "uncontrolled_params",
        "timestamp",
        "voids",
        "void_area_pct",
        "image_file",
        "mask_file",
    ]
    _, (batch,) = gen.generate_batch(
        [PARAMS], 1, seeds=[[3]], param_set_ids=["ps_001"], iteration=2, sample_prefix="s"
    )
    volatile = {"timestamp", "sample_id"}
    assert {k: v for k, v in batch.items() if k not in volatile} == {
        k: v for k, v in rec.items() if k not in volatile
    }
    loaded = image_record(
        iteration=0,
        dataset_type="real",
        param_set_id="target",
        replication_seed=None,
        source_file="t/a.png",
    )
    assert loaded["params"] is None and loaded["base_image_id"] is None and "voids" not in loaded
    assert list(loaded)[-1] == "source_file" and loaded["timestamp"]


def test_generate_batch_metadata_and_files(gen: VoidGenerator, tmp_path: Path) -> None:
    sets = [PARAMS, _params(void_shape="irregular", void_count=np.int64(4))]
    images, meta = gen.generate_batch(sets, replications=2, save_dir=tmp_path, dataset_type="real")
    assert len(images) == len(meta) == 4
    design_keys = {
        "sample_id",
        "iteration",
        "dataset_type",
        "param_set_id",
        "replication_seed",
        "base_image_id",
        "params",
        "uncontrolled_params",
        "timestamp",
    }
    extra = {"render_seed", "voids", "void_area_pct", "image_file", "mask_file"}
    for k, m in enumerate(meta):
        assert set(m) == design_keys | extra
        assert m["sample_id"] == f"iter0_real_{k:03d}"
        assert m["iteration"] == 0
        assert m["dataset_type"] == "real"
        assert m["param_set_id"] == f"ps_{k // 2:03d}"
        assert m["replication_seed"] == k % 2
        assert m["render_seed"] == derive_seed(k // 2, k % 2)
        assert m["base_image_id"] in gen.base_image_ids
        assert list(m["params"]) == list(PARAM_KEYS)
        assert type(m["params"]["void_count"]) is int
        assert set(m["uncontrolled_params"]) == {"rotation", "edge_blur"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["timestamp"])
        assert len(m["voids"]) == m["params"]["void_count"]
        json.dumps(m)  # plain Python types only
        with Image.open(tmp_path / m["image_file"]) as img:
            saved = np.asarray(img)
        assert saved.dtype == np.uint8 and saved.shape == (128, 128)
        np.testing.assert_array_equal(saved, np.rint(images[k] * 255).astype(np.uint8))
        with Image.open(tmp_path / m["mask_file"]) as img:
            mask = np.asarray(img)
        assert set(np.unique(mask)) <= {0, 255}
        assert m["mask_file"] == f"{m['sample_id']}_mask.png"
        assert m["void_area_pct"] == pytest.approx(100 * (mask > 0).mean())
    # identical to a direct render with the recorded seed
    np.testing.assert_array_equal(images[3], gen.render(sets[1], meta[3]["render_seed"]).image)


def test_generate_batch_explicit_seeds_ids_prefix(gen: VoidGenerator) -> None:
    images, meta = gen.generate_batch(
        [PARAMS],
        replications=3,
        seeds=[[11, 12, 13]],
        param_set_ids=["abc"],
        iteration=4,
        sample_prefix="custom",
    )
    assert [m["sample_id"] for m in meta] == ["custom_000", "custom_001", "custom_002"]
    assert [m["render_seed"] for m in meta] == [11, 12, 13]
    assert {m["param_set_id"] for m in meta} == {"abc"}
    assert meta[0]["iteration"] == 4 and meta[0]["dataset_type"] == "synthetic"
    assert meta[0]["image_file"] is None and meta[0]["mask_file"] is None
    np.testing.assert_array_equal(images[1], gen.render(PARAMS, 12).image)
    _, meta2 = gen.generate_batch([PARAMS], replications=1, iteration=2, dataset_type="close")
    assert meta2[0]["sample_id"] == "iter2_close_000"


def test_generate_batch_argument_errors(gen: VoidGenerator) -> None:
    with pytest.raises(ValueError, match="seeds"):
        gen.generate_batch([PARAMS], replications=2, seeds=[[1]])
    with pytest.raises(ValueError, match="param_set_ids"):
        gen.generate_batch([PARAMS], replications=1, param_set_ids=["a", "b"])
    with pytest.raises(ValueError, match="replications"):
        gen.generate_batch([PARAMS], replications=0)
    with pytest.raises(ConfigError, match="void_shape"):
        gen.generate_batch([_params(void_shape="square")])


@pytest.mark.parametrize("key", PARAM_KEYS)
def test_missing_key_is_named(gen: VoidGenerator, key: str) -> None:
    params = {k: v for k, v in PARAMS.items() if k != key}
    with pytest.raises(ConfigError, match=key):
        gen.render(params, 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("void_shape", "square"),
        ("void_count", 2.5),
        ("void_count", True),
        ("void_count", -1),
        ("base_size", 0.0),
        ("brightness_factor", 1.5),
        ("size_std", -1.0),
        ("position_spread", float("nan")),
        ("base_size", "big"),
    ],
)
def test_invalid_values_are_named(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        validate_params(_params(**{key: value}))


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="colour"):
        validate_params({**PARAMS, "colour": 1})
    with pytest.raises(ConfigError, match="mapping"):
        validate_params([1, 2])  # type: ignore[arg-type]


def test_validate_params_returns_plain_types() -> None:
    p = validate_params(_params(void_count=np.int32(5), base_size=np.float32(10.0)))
    assert type(p["void_count"]) is int and type(p["base_size"]) is float
    assert list(p) == list(PARAM_KEYS)


def test_generator_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="edge_blur"):
        VoidGenerator(DEFAULT_CHIPS, image_size=64, edge_blur=-1.0)
    with pytest.raises(ConfigError, match="image_size"):
        VoidGenerator(DEFAULT_CHIPS, image_size=4)


def test_hard_edges_without_blur() -> None:
    g = VoidGenerator(DEFAULT_CHIPS, image_size=64, edge_blur=0.0)
    r = g.render(_params(void_shape="circle"), 0)
    assert r.mask.any()


def test_save_png_types(tmp_path: Path) -> None:
    save_png(tmp_path / "f.png", np.array([[0.0, 1.0]], dtype=np.float32))
    save_png(tmp_path / "sub" / "b.png", np.array([[True, False]]))
    with Image.open(tmp_path / "f.png") as img:
        assert np.asarray(img).tolist() == [[0, 255]]
    with Image.open(tmp_path / "sub" / "b.png") as img:
        assert np.asarray(img).tolist() == [[255, 0]]
    with pytest.raises(ValueError, match="2-D"):
        save_png(tmp_path / "x.png", np.zeros((2, 2, 3)))


def test_gallery_smoke(tmp_path: Path) -> None:
    from bo_voids.generation.gallery import render_gallery

    config = Path(__file__).resolve().parents[2] / "configs" / "experiment_config.yaml"
    out = render_gallery(
        tmp_path / "g" / "gallery.png", DEFAULT_CHIPS, image_size=48, columns=2, config=config
    )
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 200


def test_rendered_image_saves_as_8_bit_png_with_its_mask(
    gen: VoidGenerator, tmp_path: Path
) -> None:
    out = gen.render(_params(void_shape="ellipse"), seed=3)
    path = out.save(tmp_path / "new" / "best.png")
    assert path == tmp_path / "new" / "best.png"
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == out.image.shape[::-1]
        written = np.asarray(im)
    np.testing.assert_array_equal(written, np.round(out.image * 255).astype(np.uint8))
    with Image.open(tmp_path / "new" / "best_mask.png") as im:
        np.testing.assert_array_equal(np.asarray(im) > 0, out.mask)
    out.save(tmp_path / "only.png", mask=False)
    assert not (tmp_path / "only_mask.png").exists()


def test_instance_labels_partition_the_mask_and_leave_the_image_unchanged() -> None:
    from bo_voids.testing.runs import REPO_ROOT

    gen = VoidGenerator(REPO_ROOT / "data" / "base_chips", image_size=128)
    for shape in ("circle", "ellipse", "irregular"):
        params = {
            "void_shape": shape,
            "void_count": 12,
            "base_size": 25.0,
            "brightness_factor": 0.5,
            "size_std": 8.0,
            "position_spread": 0.3,
        }
        for seed in range(5):
            plain = gen.render(params, seed)
            labelled = gen.render(params, seed, instances=True)
            assert plain.instance_labels is None
            np.testing.assert_array_equal(plain.image, labelled.image)
            np.testing.assert_array_equal(plain.mask, labelled.mask)
            labels = labelled.instance_labels
            assert labels is not None and labels.dtype == np.uint16
            np.testing.assert_array_equal(labels > 0, labelled.mask)
            assert labels.max() <= len(labelled.voids)
