from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bo_voids.exceptions import ImageLoadError
from bo_voids.generation.base_chips import (
    base_chip_filename,
    generate_base_chip,
    load_base_images,
    load_image,
    main,
    write_default_base_chips,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CHIPS = REPO / "data" / "base_chips"


def test_generate_base_chip_is_deterministic_and_distinct() -> None:
    a = generate_base_chip(0, 128)
    assert a.dtype == np.uint8
    assert a.shape == (128, 128)
    np.testing.assert_array_equal(a, generate_base_chip(0, 128))
    chips = [generate_base_chip(i, 128).astype(float) for i in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert np.abs(chips[i] - chips[j]).mean() > 3.0  # visibly different


def test_solder_area_is_mid_grey() -> None:
    chip = generate_base_chip(2, 256).astype(float) / 255.0
    centre = chip[96:160, 96:160]
    assert 0.35 < centre.mean() < 0.75
    assert chip.std() > 0.05  # not a flat image


def test_generate_base_chip_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="index"):
        generate_base_chip(-1)
    with pytest.raises(ValueError, match="size"):
        generate_base_chip(0, 8)


def test_write_default_base_chips(tmp_path: Path) -> None:
    paths = write_default_base_chips(tmp_path / "chips", size=64, count=3)
    assert [p.name for p in paths] == [base_chip_filename(i) for i in range(3)]
    assert paths[0].name == "NoVoids_synth_0001_result.png"
    for p in paths:
        with Image.open(p) as img:
            assert img.mode == "L"
            assert img.size == (64, 64)
    assert not list((tmp_path / "chips").glob(".*"))  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    # the mode of a plainly created file (mkstemp alone would leave 0600: owner only)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask


def test_cli_writes_chips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--size", "48", "--count", "2"]) == 0
    assert len(list(tmp_path.glob("NoVoids_*.png"))) == 2
    assert "NoVoids_synth_0002_result.png" in capsys.readouterr().out


def test_committed_default_chips_match_the_generator() -> None:
    files = sorted(DEFAULT_CHIPS.glob("NoVoids_*.png"))
    assert len(files) == 5
    with Image.open(files[0]) as img:
        assert img.mode == "L"
        assert img.size == (512, 512)
        np.testing.assert_array_equal(np.asarray(img), generate_base_chip(0, 512))


# ------------------------------------------------------------------ loader


def _write_variety(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (40, 60), dtype=np.uint8)).save(folder / "a_gray.png")
    Image.fromarray(g.integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(folder / "b_rgb.JPG")
    Image.fromarray(g.integers(0, 256, (30, 30, 4), dtype=np.uint8)).save(folder / "c_rgba.PNG")
    Image.fromarray(np.full((70, 20), 32768, dtype=np.uint16)).save(folder / "d_16bit.png")
    Image.fromarray(np.full((64, 64), 200, dtype=np.uint8)).save(folder / "e_gray.tif")
    (folder / "notes.txt").write_text("not an image, ignored by extension")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / ".hidden.png")
    (folder / "subdir.png").mkdir()


def test_loader_accepts_and_normalises_formats(tmp_path: Path) -> None:
    _write_variety(tmp_path)
    images, ids = load_base_images(tmp_path, 32)
    assert ids == ["a_gray.png", "b_rgb.JPG", "c_rgba.PNG", "d_16bit.png", "e_gray.tif"]
    for img in images:
        assert img.shape == (32, 32)
        assert img.dtype == np.float32
        assert 0.0 <= img.min() <= img.max() <= 1.0
    np.testing.assert_allclose(images[3], 32768 / 65535, atol=1e-3)  # 16-bit scaled to [0, 1]
    np.testing.assert_allclose(images[4], 200 / 255, atol=1e-3)


def test_load_image_keeps_size_without_image_size(tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 20), 255, dtype=np.uint8)).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img.shape == (10, 20)
    assert img.max() == 1.0


def test_loader_reports_every_bad_file_at_once(tmp_path: Path) -> None:
    Image.fromarray(generate_base_chip(0, 64)).save(tmp_path / "good.png")
    full = (tmp_path / "good.png").read_bytes()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)).save(
        tmp_path / "truncated.png"
    )
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "fake.png").write_text("this is text, not a PNG")
    assert full  # the good file stays readable
    with pytest.raises(ImageLoadError) as info:
        load_base_images(tmp_path, 32)
    message = str(info.value)
    assert "truncated.png" in message
    assert "fake.png" in message
    assert "good.png" not in message
    assert "2 of 3" in message


def test_loader_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="does not exist") as info:
        load_base_images(tmp_path / "nope", 32)
    assert "nope" in str(info.value)


def test_loader_empty_folder_and_no_images(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="no image files") as info:
        load_base_images(tmp_path, 32)
    assert str(tmp_path) in str(info.value)
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(ImageLoadError, match="no image files"):
        load_base_images(tmp_path, 32)


def test_loader_rejects_a_file_path(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(f)
    with pytest.raises(ImageLoadError, match="not a folder"):
        load_base_images(f, 32)
