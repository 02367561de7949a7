r"""A PNG gallery of synthetic void images from the design's real / close / far distributions.

Each row holds six images, each from its own parameter set sampled from one distribution of
``infrastructure_design.md`` (a local copy of the design's defaults, so the gallery does not
depend on a config file), titled with its parameters; a seventh column repeats the row's first
image with its ground-truth void mask overlaid in red.

Command line::

    python -m bo_voids.generation.gallery --out docs/gallery.png \
        [--base-chips data/base_chips] [--image-size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bo_voids.generation.voids import VoidGenerator
from bo_voids.seeding import derive_seed, rng

__all__ = ["DESIGN_DISTRIBUTIONS", "PARAM_BOUNDS", "main", "render_gallery", "sample_params"]

#: Search bounds of the numeric parameters (design, "Parameter Schema").
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "void_count": (3, 20),
    "base_size": (5.0, 40.0),
    "brightness_factor": (0.3, 0.8),
    "size_std": (0.0, 15.0),
    "position_spread": (0.1, 0.8),
}

#: The design's parameter distributions ("Parameter Distributions").
DESIGN_DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "real": {
        "void_shape": {"circle": 0.2, "ellipse": 0.5, "irregular": 0.3},
        "void_count": (8, 3),
        "base_size": (20, 5),
        "brightness_factor": (0.6, 0.1),
        "size_std": (7, 2),
        "position_spread": (0.5, 0.15),
    },
    "close": {
        "void_shape": {"circle": 0.25, "ellipse": 0.45, "irregular": 0.3},
        "void_count": (10, 3),
        "base_size": (18, 5),
        "brightness_factor": (0.55, 0.1),
        "size_std": (8, 2),
        "position_spread": (0.55, 0.15),
    },
    "far": {
        "void_shape": {"circle": 0.7, "ellipse": 0.2, "irregular": 0.1},
        "void_count": (15, 3),
        "base_size": (10, 5),
        "brightness_factor": (0.4, 0.1),
        "size_std": (3, 1),
        "position_spread": (0.8, 0.1),
    },
}

_SHAPE_ABBREV = {"circle": "circ", "ellipse": "ell", "irregular": "irr"}


def sample_params(
    distribution: Mapping[str, Any], n: int, gen: np.random.Generator
) -> list[dict[str, Any]]:
    """Sample parameter sets: categorical shape, normals clipped to the bounds, count rounded.

    Args:
        distribution: One entry of :data:`DESIGN_DISTRIBUTIONS`.
        n: Number of parameter sets.
        gen: Random generator.

    Returns:
        ``n`` parameter dicts with plain Python values.
    """
    shapes = list(distribution["void_shape"])
    probs = np.asarray([distribution["void_shape"][s] for s in shapes], dtype=float)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        p: dict[str, Any] = {
            "void_shape": shapes[int(gen.choice(len(shapes), p=probs / probs.sum()))]
        }
        for key, (lo, hi) in PARAM_BOUNDS.items():
            mean, std = distribution[key]
            value = float(np.clip(gen.normal(mean, std), lo, hi))
            p[key] = round(value) if key == "void_count" else round(value, 3)
        out.append(p)
    return out


def _title(p: Mapping[str, Any]) -> str:
    return (
        f"{_SHAPE_ABBREV[p['void_shape']]} n={p['void_count']} r={p['base_size']:.0f}\n"
        f"bf={p['brightness_factor']:.2f} sd={p['size_std']:.1f} sp={p['position_spread']:.2f}"
    )


def render_gallery(
    out: str | Path,
    base_chips: str | Path = "data/base_chips",
    image_size: int = 256,
    seed: int = 0,
    columns: int = 6,
    rows: Sequence[str] = ("real", "close", "far"),
) -> Path:
    """Render the gallery PNG.

    Args:
        out: Output PNG path (parent folders are created).
        base_chips: Folder of base chip images.
        image_size: Side length of each rendered tile in pixels.
        seed: Seed for parameter sampling and rendering.
        columns: Images per row (one extra column shows a mask overlay).
        rows: Distribution names, one row each (keys of :data:`DESIGN_DISTRIBUTIONS`).

    Returns:
        The written path.
    """
    generator = VoidGenerator(base_chips, image_size=image_size)
    fig = Figure(figsize=(2.1 * (columns + 1), 2.75 * len(rows)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), columns + 1, squeeze=False)
    for i, name in enumerate(rows):
        params = sample_params(DESIGN_DISTRIBUTIONS[name], columns, rng(seed, "gallery", name))
        results = [
            generator.render(p, derive_seed(seed, "gallery", name, j)) for j, p in enumerate(params)
        ]
        for j, (p, result) in enumerate(zip(params, results, strict=True)):
            ax = axes[i, j]
            ax.imshow(result.image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="lanczos")
            ax.set_title(_title(p), fontsize=7, family="monospace")
        first = results[0]
        ax = axes[i, columns]
        overlay = np.dstack([first.image] * 3)
        overlay[first.mask] = 0.45 * overlay[first.mask] + 0.55 * np.array([1.0, 0.1, 0.1])
        ax.imshow(overlay, vmin=0.0, vmax=1.0, interpolation="lanczos")
        ax.set_title(f"mask of #1\nvoids {first.void_area_pct:.1f}% of image", fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=12, fontweight="bold")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "Synthetic X-ray void images: rows sampled from the design's real / close / far "
        "distributions (last column: ground-truth mask)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bo_voids.generation.gallery",
        description="Render a PNG grid of real / close / far synthetic void images.",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/gallery.png"))
    parser.add_argument("--base-chips", type=Path, default=Path("data/base_chips"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(render_gallery(args.out, args.base_chips, args.image_size, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
