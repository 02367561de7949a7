"""Base chip images: a procedural stand-in generator and a robust loader.

A *base chip* is an X-ray image of a power-semiconductor die soldered on a substrate with no
voids in its solder attach. Voids are later drawn on it by :mod:`bo_voids.generation.voids`.

The procedural generator (:func:`generate_base_chip`) imitates a transmission X-ray (darker =
more absorbing material): a bright, mottled substrate (ceramic/copper DBC) with isolation
trenches and vias, a darker solder attach area under a rounded-rectangle die with an irregular
solder fillet, faint die metallisation, bond wires running from die pads to a dark lead frame,
gentle illumination gradients / vignetting, detector blur and sensor noise. The solder area is
kept at roughly 0.45-0.7 grey so that voids (drawn by *darkening*) remain visible. Each index
gives a different, deterministic chip; the die is always centred on the image centre (within
about 1 % of the image size), which is where the void position window is centred.

The loader (:func:`load_base_images`) accepts any folder of PNG / TIFF / JPEG files (8- or
16-bit, grayscale / RGB / RGBA, any size), checks every file up front and reports all bad files
in one :class:`~bo_voids.exceptions.ImageLoadError`.

Command line::

    python -m bo_voids.generation.base_chips --out data/base_chips [--size 512] [--count 5]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.transform import resize

from bo_voids._io import atomic_open
from bo_voids.exceptions import ImageLoadError
from bo_voids.seeding import derive_seed

__all__ = [
    "IMAGE_EXTENSIONS",
    "base_chip_filename",
    "generate_base_chip",
    "load_base_images",
    "load_image",
    "main",
    "write_default_base_chips",
    "write_png_atomic",
]

#: File extensions (lower case) that :func:`load_base_images` treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".tif", ".tiff", ".jpg", ".jpeg"})


# --------------------------------------------------------------------------------------------
# Procedural generator
# --------------------------------------------------------------------------------------------


def _smooth_noise(gen: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise with features of about ``scale_px`` pixels."""
    n = max(3, round(size / max(scale_px, 1.0)) + 3)
    small = gen.standard_normal((n, n))
    field = resize(small, (size, size), order=3, mode="reflect", anti_aliasing=False)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _rounded_rect_sdf(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, hw: float, hh: float, r: float
) -> np.ndarray:
    """Signed distance (px, negative inside) to a rounded rectangle."""
    r = min(r, hw, hh)
    qx = np.abs(x - cx) - (hw - r)
    qy = np.abs(y - cy) - (hh - r)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - r


def _soft_inside(sdf: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased indicator of ``sdf < 0`` with an edge ``width`` pixels wide."""
    return np.clip(0.5 - sdf / max(width, 1e-6), 0.0, 1.0)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    """Points of a quadratic Bezier curve, shape ``(n, 2)``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def generate_base_chip(index: int, size: int = 512) -> np.ndarray:
    """Render a procedural X-ray image of a void-free soldered power-semiconductor die.

    The result is deterministic per ``(index, size)``: every random draw comes from
    ``np.random.default_rng(derive_seed("base_chip", index))``, and all geometry is expressed
    as a fraction of ``size`` so different sizes show the same chip.

    Args:
        index: Non-negative chip number; different indices give visibly different chips.
        size: Output side length in pixels (the image is square).

    Returns:
        A ``(size, size)`` ``uint8`` grayscale image.

    Raises:
        ValueError: If ``index`` is negative or ``size`` is smaller than 32.
    """
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    g = np.random.default_rng(derive_seed("base_chip", index))
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0

    # --- substrate: bright, mottled ceramic / copper with grain --------------------------
    substrate_level = g.uniform(0.80, 0.88)
    t = np.full((size, size), substrate_level)
    t *= 1.0 + 0.035 * _smooth_noise(g, size, s / 6) + 0.015 * _smooth_noise(g, size, s / 40)
    t *= 1.0 + 0.012 * _smooth_noise(g, size, 2.0)

    # --- die geometry ---------------------------------------------------------------------
    die_w = g.uniform(0.56, 0.72) * s
    die_h = die_w * g.uniform(0.78, 1.22)
    die_h = min(die_h, 0.76 * s)
    dcx = c + g.uniform(-0.01, 0.01) * s
    dcy = c + g.uniform(-0.01, 0.01) * s
    die_r = g.uniform(0.005, 0.03) * s
    margin = g.uniform(0.012, 0.03) * s  # solder fillet beyond the die edge

    # --- copper islands: isolation trenches (brighter) outside the solder area -----------
    lead_side = int(g.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    trench_w = g.uniform(0.008, 0.014) * s
    for _ in range(int(g.integers(1, 3))):
        horizontal = bool(g.integers(2))
        pos = g.uniform(0.06, 0.14) * s
        pos = pos if g.integers(2) else s - 1 - pos
        d = np.abs((yy if horizontal else xx) - pos)
        t *= 1.0 + 0.07 * _soft_inside(d - trench_w / 2, 1.5)

    # --- vias: rows of small dark dots in the substrate ----------------------------------
    via_r = g.uniform(0.006, 0.011) * s
    n_rows = int(g.integers(1, 3))
    for _ in range(n_rows):
        along_x = bool(g.integers(2))
        off = g.uniform(0.035, 0.07) * s
        off = off if g.integers(2) else s - 1 - off
        n_vias = int(g.integers(5, 11))
        pts = np.linspace(0.2 * s, 0.8 * s, n_vias)
        for p in pts:
            vx, vy = (p, off) if along_x else (off, p)
            dist = np.hypot(xx - vx, yy - vy)
            ring = _soft_inside(dist - via_r, 1.2)
            core = _soft_inside(dist - 0.45 * via_r, 1.2)
            t *= 1.0 - 0.16 * ring - 0.10 * core

    # --- lead frame: a dark bar on one side where the bond wires land --------------------
    lead_depth = g.uniform(0.05, 0.08) * s
    coord = {0: xx, 1: s - 1 - xx, 2: yy, 3: s - 1 - yy}[lead_side]
    lead = _soft_inside(coord - lead_depth, 2.0)
    t *= 1.0 - 0.45 * lead * (1.0 + 0.05 * _smooth_noise(g, size, s / 20))

    # --- solder attach: darker, mottled, with an irregular fillet edge -------------------
    solder_level = g.uniform(0.52, 0.64)
    sdf_solder = _rounded_rect_sdf(
        xx, yy, dcx, dcy, die_w / 2 + margin, die_h / 2 + margin, die_r + margin
    )
    sdf_solder += 0.22 * margin * _smooth_noise(g, size, s / 12)
    solder = _soft_inside(sdf_solder, 3.0)
    solder_tex = 1.0 + 0.04 * _smooth_noise(g, size, s / 10) + 0.02 * _smooth_noise(g, size, 4)
    t *= 1.0 - solder * (1.0 - (solder_level / substrate_level) * solder_tex)

    # --- die: slight extra absorption, a visible edge, faint metallisation ---------------
    sdf_die = _rounded_rect_sdf(xx, yy, dcx, dcy, die_w / 2, die_h / 2, die_r)
    die = _soft_inside(sdf_die, 1.5)
    t *= 1.0 - 0.04 * die
    t *= 1.0 - 0.10 * _soft_inside(np.abs(sdf_die) - 0.004 * s, 1.2)  # die edge / chamfer
    # metallisation grid (gate runners): very faint lines inside the die
    n_fingers = int(g.integers(3, 7))
    pitch = die_w / (n_fingers + 1)
    finger = np.abs(((xx - (dcx - die_w / 2)) % pitch) - pitch / 2)
    t *= 1.0 - 0.025 * die * _soft_inside(finger - 0.003 * s, 1.0)
    # gate pad: a small darker rounded square near one die corner
    gx = dcx + g.choice([-1, 1]) * (die_w / 2 - 0.08 * s)
    gy = dcy + g.choice([-1, 1]) * (die_h / 2 - 0.08 * s)
    gate = _soft_inside(_rounded_rect_sdf(xx, yy, gx, gy, 0.035 * s, 0.035 * s, 0.008 * s), 1.5)
    t *= 1.0 - 0.06 * gate

    # --- bond wires: curved round wires from die pads to the lead frame ------------------
    n_wires = int(g.integers(2, 8))
    wire_w = g.uniform(0.010, 0.016) * s
    centre_line = np.zeros((size, size), dtype=bool)
    feet: list[tuple[float, float]] = []
    half_span = (die_h if lead_side < 2 else die_w) / 2 * 0.75
    for k in range(n_wires):
        frac = (k + 0.5) / n_wires * 2 - 1
        lateral = (dcy if lead_side < 2 else dcx) + frac * half_span
        depth_in = g.uniform(0.1, 0.35) * (die_w if lead_side < 2 else die_h) / 2
        end_depth = lead_depth * g.uniform(0.35, 0.65)
        if lead_side == 0:
            p0, p2 = (dcx - depth_in, lateral), (end_depth, lateral + g.normal(0, 0.02 * s))
        elif lead_side == 1:
            p0, p2 = (dcx + depth_in, lateral), (s - 1 - end_depth, lateral + g.normal(0, 0.02 * s))
        elif lead_side == 2:
            p0, p2 = (lateral, dcy - depth_in), (lateral + g.normal(0, 0.02 * s), end_depth)
        else:
            p0, p2 = (lateral, dcy + depth_in), (lateral + g.normal(0, 0.02 * s), s - 1 - end_depth)
        a0, a2 = np.asarray(p0), np.asarray(p2)
        mid = (a0 + a2) / 2
        direction = a2 - a0
        normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9)
        p1 = mid + normal * g.normal(0, 0.04 * s)
        pts = np.rint(_bezier(a0, p1, a2, 4 * size)).astype(int)
        pts = np.clip(pts, 0, size - 1)
        centre_line[pts[:, 1], pts[:, 0]] = True
        feet += [(float(a0[0]), float(a0[1])), (float(a2[0]), float(a2[1]))]
    dist = ndimage.distance_transform_edt(~centre_line)
    rad = wire_w / 2
    thickness = np.sqrt(np.clip(1.0 - (dist / rad) ** 2, 0.0, 1.0))
    thickness = np.maximum(thickness, _soft_inside(dist - rad, 1.0) * 0.3)
    t *= 1.0 - 0.28 * thickness
    for fx, fy in feet:  # wedge-bond feet: small flattened ellipses
        foot = _soft_inside(np.hypot((xx - fx) / 1.6, yy - fy) - rad * 1.1, 1.2)
        t *= 1.0 - 0.12 * foot

    # --- illumination: linear gradient + vignetting --------------------------------------
    phi = g.uniform(0, 2 * np.pi)
    grad = g.uniform(0.06, 0.16)
    u = (xx - c) / s
    v = (yy - c) / s
    t *= 1.0 + grad * (np.cos(phi) * u + np.sin(phi) * v)
    t *= 1.0 - g.uniform(0.10, 0.22) * (u**2 + v**2) * 2.0

    # --- detector: blur (PSF), signal-dependent noise, quantisation ----------------------
    t = ndimage.gaussian_filter(t, sigma=max(0.5, 0.0012 * s))
    noise_sigma = g.uniform(0.008, 0.014)
    t = t + noise_sigma * np.sqrt(np.clip(t, 0.0, None)) * g.standard_normal(t.shape)
    return np.clip(np.rint(t * 255.0), 0, 255).astype(np.uint8)


def base_chip_filename(index: int) -> str:
    """File name of procedural chip ``index``, e.g. ``NoVoids_synth_0001_result.png``.

    Args:
        index: Zero-based chip index (the file name is one-based, like the real data).

    Returns:
        The file name.
    """
    return f"NoVoids_synth_{index + 1:04d}_result.png"


def write_png_atomic(path: Path, array: np.ndarray, compress_level: int = 6) -> None:
    """Write a 2-D ``uint8``/``uint16`` array as PNG via a temporary file and a rename.

    Args:
        path: Destination file; parent folders are created.
        array: The image (written with Pillow's default mode for its dtype).
        compress_level: zlib compression level (0-9).
    """
    with atomic_open(path) as fh:
        Image.fromarray(np.ascontiguousarray(array)).save(
            fh, format="PNG", compress_level=compress_level
        )


def write_default_base_chips(out_dir: str | Path, size: int = 512, count: int = 5) -> list[Path]:
    """Write ``count`` procedural base chips as 8-bit grayscale PNGs.

    Args:
        out_dir: Destination folder (created if missing).
        size: Side length of each image in pixels.
        count: Number of chips (indices ``0 .. count-1``).

    Returns:
        The written paths, in index order.
    """
    out = Path(out_dir)
    paths: list[Path] = []
    for i in range(count):
        path = out / base_chip_filename(i)
        write_png_atomic(path, generate_base_chip(i, size))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------


def _to_unit_float(img: Image.Image) -> np.ndarray:
    """Convert a fully loaded Pillow image to a 2-D grayscale float array in ``[0, 1]``."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return np.clip(arr / hi, 0.0, 1.0)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError("floating-point image contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr
        return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")  # drop alpha (X-ray data has none)
    if mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.float64) / 255.0


def load_image(path: str | Path, image_size: int | None = None) -> np.ndarray:
    """Load one image as grayscale ``float32`` in ``[0, 1]``, optionally resized to a square.

    Args:
        path: PNG / TIFF / JPEG file (8- or 16-bit; grayscale, palette, RGB or RGBA).
        image_size: If given, the output is resized (anti-aliased) to
            ``image_size x image_size``.

    Returns:
        A 2-D ``float32`` array.

    Raises:
        ImageLoadError: If the file cannot be opened or decoded (e.g. truncated).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()  # decode all pixels now: truncation is only detected here
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            arr = _to_unit_float(img)
    except Exception as exc:  # Pillow raises many unrelated types for bad files
        raise ImageLoadError(f"{path.name}: {type(exc).__name__}: {exc}") from exc
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ImageLoadError(f"{path.name}: unusable image shape {arr.shape}")
    if image_size is not None and arr.shape != (image_size, image_size):
        arr = resize(
            arr, (image_size, image_size), order=1, anti_aliasing=True, preserve_range=True
        )
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        ),
        key=lambda p: p.name,
    )


def load_base_images(
    folder: str | Path, image_size: int, *, label: str = "base image"
) -> tuple[list[np.ndarray], list[str]]:
    """Load every image in a folder as grayscale ``float32`` in ``[0, 1]``, resized to a square.

    Files are recognised by extension (``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg``,
    case-insensitive); hidden files, sub-folders and other extensions are ignored. Every image
    file is fully decoded before anything is returned, and all failures are reported together.

    Args:
        folder: Folder holding the base chip images.
        image_size: Side length of the (square) output images in pixels.
        label: What the folder holds, for error messages (e.g. ``"real target image"``).

    Returns:
        ``(images, ids)``: the images sorted by file name, and their file names as ids.

    Raises:
        ImageLoadError: If the folder is missing, not a folder, holds no image files, or if any
            image file cannot be read (the message lists every bad file with its reason).
        ValueError: If ``image_size`` is smaller than 2.
    """
    if image_size < 2:
        raise ValueError(f"image_size must be at least 2, got {image_size}")
    folder = Path(folder)
    if not folder.exists():
        raise ImageLoadError(f"{label} folder does not exist: {folder}")
    if not folder.is_dir():
        raise ImageLoadError(f"{label} path is not a folder: {folder}")
    files = _image_files(folder)
    if not files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ImageLoadError(f"no image files ({exts}) found in {label} folder: {folder}")
    images: list[np.ndarray] = []
    errors: list[str] = []
    for path in files:
        try:
            images.append(load_image(path, image_size))
        except ImageLoadError as exc:
            errors.append(str(exc))
    if errors:
        listing = "\n  ".join(errors)
        raise ImageLoadError(
            f"{len(errors)} of {len(files)} {label} file(s) in {folder} could not be read:\n"
            f"  {listing}"
        )
    return images, [p.name for p in files]


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.generation.base_chips"
) -> int:
    """Command-line entry point: write the default procedural base chips.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).
        prog: The program name shown in the help (``bo-voids chips`` from :mod:`bo_voids.cli`).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write procedural void-free X-ray base chip images (8-bit PNG).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/base_chips"),
        help="output folder, relative to the current directory (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=int, default=512, help="image side length in px (default: %(default)s)"
    )
    parser.add_argument(
        "--count", type=int, default=5, help="number of chips (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for path in write_default_base_chips(args.out, size=args.size, count=args.count):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from bo_voids.cli import run_module

    run_module(main)
