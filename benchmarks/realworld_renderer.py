"""An independent "real-world" void renderer: target folders the package's generator did not make.

Nothing here imports :mod:`bo_voids.generation`: the void outlines, the size law, the placement,
the darkening profile, the edge and the imaging chain are written afresh, so a calibration that
recovers these folders has not merely recovered its own renderer. Only the base chips are shared,
read as plain PNG files as a user's void-free chip images would be (a real folder has its own
background too; that difference is left to the user's chips).

Differences from the package's generator, by design:

* **sizes** follow a gamma law with mean ``base_size`` and sd ``size_std`` (the package: a clipped
  normal); **placement** is uniform in a disc of diameter ``position_spread · side`` (the package:
  a rotated square);
* **outlines**: ellipses with axis ratio in ``[0.5, 0.9]`` (the package ``[0.45, 0.8]``);
  irregular voids are star-shaped with a smoothed random radius over 64 angles (the package:
  four harmonics);
* **darkening profile**: a lens — the void is thickest at its centre, so the transmitted
  fraction rises from ``brightness_factor`` at the centre towards the edge
  (``1 − (1 − b)·(1 − ρ²)^0.35``); the package darkens uniformly;
* **edge**: a smoothstep of ``edge_px`` reference pixels (the package: a Gaussian-blurred
  coverage map);
* **imaging chain** (the detector): a two-Gaussian point spread (core + halo), shot and read
  noise, and a sigmoid response curve after a gamma, at a selectable mismatch strength
  (``none``, ``mild``, ``strong``; the package's chain, when on, has one Gaussian and a linear
  contrast).

Two kinds of folder:

* ``iid``: ``n`` images, each its own parameter set drawn from a population (a real folder: one
  chip per image);
* ``clustered``: the design's ``sets × replications`` (5 × 3) layout.

``ground_truth.json`` records the population, the strength, every image's parameter set, seed and
realised void statistics (count inside the image, mean and sd of radii), and the renderer's
settings. Run as::

    python -m benchmarks.realworld_renderer --out /tmp/folder --population far --strength mild \
        --n 15 --seed 1000 --image-size 160
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
CHIPS = ROOT / "data" / "base_chips"
REFERENCE_SIZE = 512
SHAPES = ("circle", "ellipse", "irregular")

#: Populations of held-out targets: shape probabilities and (mean, sd) of each numeric parameter,
#: clipped to ``BOUNDS``. ``mid`` sits near the config's guesses, ``far`` away from them (few,
#: large, mostly elliptic voids).
POPULATIONS: dict[str, dict[str, Any]] = {
    "mid": {
        "void_shape": {"circle": 0.3, "ellipse": 0.45, "irregular": 0.25},
        "void_count": (9.0, 2.5),
        "base_size": (17.0, 3.0),
        "brightness_factor": (0.55, 0.06),
        "size_std": (5.0, 1.5),
        "position_spread": (0.55, 0.08),
    },
    "far": {
        "void_shape": {"circle": 0.2, "ellipse": 0.65, "irregular": 0.15},
        "void_count": (5.0, 1.5),
        "base_size": (30.0, 3.0),
        "brightness_factor": (0.45, 0.05),
        "size_std": (4.0, 1.0),
        "position_spread": (0.4, 0.06),
    },
}
#: The design's bounds (configs/experiment_config.yaml); draws are clipped to them.
BOUNDS: dict[str, tuple[float, float]] = {
    "void_count": (3, 20),
    "base_size": (5.0, 40.0),
    "brightness_factor": (0.3, 0.8),
    "size_std": (0.0, 15.0),
    "position_spread": (0.1, 0.8),
}


@dataclass(frozen=True)
class Detector:
    """The independent imaging chain (pixel values in reference pixels at 512 px)."""

    edge_px: float
    psf_core: float
    psf_halo: float
    halo_weight: float
    gamma: float
    sigmoid_gain: float
    photons: float  # 0 = no shot noise
    read_noise: float


STRENGTHS: dict[str, Detector] = {
    "none": Detector(2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0),
    "mild": Detector(3.0, 1.5, 5.0, 0.2, 1.25, 2.0, 4000.0, 0.008),
    "strong": Detector(4.5, 2.5, 8.0, 0.35, 1.6, 4.0, 800.0, 0.02),
}


def draw_params(population: Mapping[str, Any], n: int, gen: np.random.Generator) -> list[dict]:
    """``n`` parameter sets from a population (numeric draws clipped to :data:`BOUNDS`)."""
    out = []
    for _ in range(n):
        probs = population["void_shape"]
        names = list(probs)
        p = np.array([probs[k] for k in names], dtype=float)
        params: dict[str, Any] = {"void_shape": names[int(gen.choice(len(names), p=p / p.sum()))]}
        for key, (lo, hi) in BOUNDS.items():
            mean, sd = population[key]
            v = float(np.clip(gen.normal(mean, sd), lo, hi))
            params[key] = round(v) if key == "void_count" else v
        out.append(params)
    return out


def _outline(shape: str, n_angles: int, gen: np.random.Generator) -> tuple[float, np.ndarray]:
    """Axis ratio (ellipses) and a relative radius per angle (irregular voids, mean 1)."""
    if shape == "ellipse":
        return float(gen.uniform(0.5, 0.9)), np.ones(n_angles)
    if shape == "irregular":
        raw = gen.normal(0.0, 1.0, n_angles)
        smooth = ndimage.gaussian_filter1d(raw, sigma=4.0, mode="wrap")
        rel = 1.0 + 0.35 * smooth / max(float(np.abs(smooth).max()), 1e-9)
        return 1.0, rel / rel.mean()
    return 1.0, np.ones(n_angles)


def render(
    chip: np.ndarray, params: Mapping[str, Any], detector: Detector, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one image: voids on ``chip``, then the detector's chain.

    Returns:
        The ``float32`` image in ``[0, 1]`` and its realised void statistics.
    """
    gen = np.random.default_rng(seed)
    h, w = chip.shape
    scale = min(h, w) / REFERENCE_SIZE
    n = int(params["void_count"])
    mean, sd = float(params["base_size"]), float(params["size_std"])
    if sd > 0:
        k = (mean / sd) ** 2
        radii = gen.gamma(k, mean / k, size=n)
    else:
        radii = np.full(n, mean)
    radii = np.maximum(radii, 1.0) * scale
    rad = 0.5 * float(params["position_spread"]) * min(h, w) * np.sqrt(gen.uniform(0, 1, n))
    phi = gen.uniform(0, 2 * np.pi, n)
    cx, cy = (w - 1) / 2 + rad * np.cos(phi), (h - 1) / 2 + rad * np.sin(phi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    thickness = np.zeros((h, w))
    edge = max(detector.edge_px * scale, 0.5)
    n_angles = 64
    for i in range(n):
        ratio, rel = _outline(str(params["void_shape"]), n_angles, gen)
        angle = gen.uniform(0, np.pi)
        dx, dy = xx - cx[i], yy - cy[i]
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        a, b = radii[i] / math.sqrt(ratio), radii[i] * math.sqrt(ratio)
        rho = np.hypot(u / a, v / b)  # 1 on the ellipse
        if str(params["void_shape"]) == "irregular":
            idx = ((np.arctan2(v, u) + np.pi) / (2 * np.pi) * n_angles).astype(int) % n_angles
            rho = rho / rel[idx]
        dist = (rho - 1.0) * radii[i]  # ≈ signed distance to the outline, in pixels
        t = np.clip(0.5 - dist / edge, 0.0, 1.0)
        inside = t * t * (3 - 2 * t)  # smoothstep edge
        lens = np.clip(1.0 - np.minimum(rho, 1.0) ** 2, 0.0, 1.0) ** 0.35
        thickness = np.maximum(thickness, inside * np.maximum(lens, 0.35))
    darkening = 1.0 - float(params["brightness_factor"])
    image = chip.astype(np.float64) * (1.0 - darkening * thickness)
    image = _detector(image, detector, scale, gen)
    inside_img = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    stats = {
        "voids_in_image": int(inside_img.sum()),
        "radius_mean_px_ref": float(np.mean(radii) / scale) if n else 0.0,
        "radius_sd_px_ref": float(np.std(radii) / scale) if n > 1 else 0.0,
        "void_area_pct": float(100.0 * np.mean(thickness > 0.5)),
    }
    return image.astype(np.float32), stats


def _detector(image: np.ndarray, d: Detector, scale: float, gen: np.random.Generator) -> np.ndarray:
    if d.psf_core > 0:
        core = ndimage.gaussian_filter(image, d.psf_core * scale, mode="reflect")
        halo = ndimage.gaussian_filter(image, d.psf_halo * scale, mode="reflect")
        image = (1 - d.halo_weight) * core + d.halo_weight * halo
    if d.photons > 0:
        image = gen.poisson(np.clip(image, 0, None) * d.photons) / d.photons
    if d.read_noise > 0:
        image = image + gen.normal(0.0, d.read_noise, image.shape)
    image = np.clip(image, 0.0, 1.0) ** d.gamma
    if d.sigmoid_gain > 0:
        s = 1 / (1 + np.exp(-d.sigmoid_gain * (image - 0.5)))
        lo, hi = 1 / (1 + math.exp(d.sigmoid_gain / 2)), 1 / (1 + math.exp(-d.sigmoid_gain / 2))
        image = (s - lo) / (hi - lo)
    return np.clip(image, 0.0, 1.0)


def load_chips(size: int) -> list[np.ndarray]:
    """The base chips as ``float`` grayscale arrays resized to ``size`` (PIL, not the package)."""
    chips = []
    for path in sorted(CHIPS.glob("*.png")):
        with Image.open(path) as im:
            sixteen = im.mode.startswith("I")
            im = im if sixteen else im.convert("L")
            arr = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float64)
        chips.append(arr / (65535.0 if sixteen else 255.0))
    return chips


def write_folder(
    out: Path,
    *,
    population: str | Mapping[str, Any],
    strength: str,
    n: int = 15,
    seed: int = 0,
    image_size: int = 160,
    layout: str = "iid",
    replications: int = 3,
) -> dict[str, Any]:
    """Render a target folder and its ``ground_truth.json``.

    Args:
        out: The folder (created; existing files of the same names are replaced).
        population: A name from :data:`POPULATIONS` or a population mapping.
        strength: ``none``, ``mild`` or ``strong`` (the detector's mismatch).
        n: Images (``iid``) or parameter sets (``clustered``).
        seed: Seed of every draw.
        image_size: Side in pixels.
        layout: ``iid`` (one parameter set per image) or ``clustered`` (``n × replications``).
        replications: Images per set in the clustered layout.

    Returns:
        The ground-truth record written.
    """
    pop = POPULATIONS[population] if isinstance(population, str) else dict(population)
    detector = STRENGTHS[strength]
    gen = np.random.default_rng([seed, 7919])
    chips = load_chips(image_size)
    out.mkdir(parents=True, exist_ok=True)
    sets = draw_params(pop, n, gen)
    reps = 1 if layout == "iid" else replications
    images = []
    for i, params in enumerate(sets):
        for r in range(reps):
            img_seed = int(gen.integers(2**31))
            chip = chips[int(gen.integers(len(chips)))]
            chip = np.rot90(chip, int(gen.integers(4)))
            image, stats = render(chip, params, detector, img_seed)
            name = f"target_{i:03d}_{r}.png"
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(out / name)
            images.append({"file": name, "set": i, "seed": img_seed, "params": params, **stats})
    numeric = {k: float(np.mean([s[k] for s in sets])) for k in BOUNDS}
    shapes = [s["void_shape"] for s in sets]
    truth = {
        "population": {k: list(v) if isinstance(v, tuple) else v for k, v in pop.items()},
        "population_name": population if isinstance(population, str) else None,
        "strength": strength,
        "detector": asdict(detector),
        "layout": layout,
        "seed": seed,
        "image_size": image_size,
        "realised_means": numeric,
        "realised_shape_share": {s: shapes.count(s) / len(shapes) for s in SHAPES},
        "images": images,
    }
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def main(argv: list[str] | None = None) -> int:
    """Command line: write one folder."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--population", choices=sorted(POPULATIONS), default="mid")
    ap.add_argument("--strength", choices=sorted(STRENGTHS), default="mild")
    ap.add_argument("--layout", choices=("iid", "clustered"), default="iid")
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--replications", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=160)
    args = ap.parse_args(argv)
    truth = write_folder(
        args.out,
        population=args.population,
        strength=args.strength,
        n=args.n,
        seed=args.seed,
        image_size=args.image_size,
        layout=args.layout,
        replications=args.replications,
    )
    print(
        f"wrote {len(truth['images'])} images to {args.out}; "
        f"realised means {truth['realised_means']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
