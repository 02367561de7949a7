r"""A PNG gallery of synthetic void images from the design's real / close / far distributions.

Each row holds six images, each from its own parameter set sampled from one of the config's
``param_distributions`` (through :class:`~bo_voids.space.SearchSpace`), titled with its
parameters; a seventh column repeats the row's first image with its ground-truth void mask
overlaid in red.

Command line::

    python -m bo_voids.generation.gallery --out docs/gallery.png \
        [--config configs/experiment_config.yaml] [--base-chips data/base_chips] \
        [--image-size 256] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bo_voids.config import DATASET_TYPES, load_config
from bo_voids.generation.voids import VoidGenerator
from bo_voids.seeding import derive_seed, rng
from bo_voids.space import SearchSpace

__all__ = ["main", "render_gallery"]

_SHAPE_ABBREV = {"circle": "circ", "ellipse": "ell", "irregular": "irr"}


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
    rows: Sequence[str] = DATASET_TYPES,
    config: str | Path = "configs/experiment_config.yaml",
) -> Path:
    """Render the gallery PNG.

    Args:
        out: Output PNG path (parent folders are created).
        base_chips: Folder of base chip images.
        image_size: Side length of each rendered tile in pixels.
        seed: Seed for parameter sampling and rendering.
        columns: Images per row (one extra column shows a mask overlay).
        rows: Distribution names, one row each (keys of the config's ``param_distributions``).
        config: Experiment config whose bounds and distributions are sampled.

    Returns:
        The written path.
    """
    cfg = load_config(config, check_paths=False)
    space = SearchSpace.from_config(cfg)
    generator = VoidGenerator(base_chips, image_size=image_size, imaging=cfg.imaging)
    fig = Figure(figsize=(2.1 * (columns + 1), 2.75 * len(rows)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), columns + 1, squeeze=False)
    for i, name in enumerate(rows):
        params = space.sample(name, columns, rng(seed, "gallery", name))
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


def main(
    argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.generation.gallery"
) -> int:
    """Write the gallery named by the command line (``bo-voids gallery``); exit code 0.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).
        prog: The program name shown in the help (``bo-voids gallery`` from :mod:`bo_voids.cli`).
    """
    args = _parser(prog).parse_args(argv)
    print(render_gallery(args.out, args.base_chips, args.image_size, args.seed, config=args.config))
    return 0


def _parser(prog: str = "python -m bo_voids.generation.gallery") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Render a PNG grid of real / close / far synthetic void images. Paths are "
        "relative to the current directory.",
    )
    for flag, kind, default, text in (
        ("--out", Path, Path("docs/gallery.png"), "PNG file to write"),
        (
            "--config",
            Path,
            Path("configs/experiment_config.yaml"),
            "experiment YAML whose real / close / far distributions are drawn",
        ),
        ("--base-chips", Path, Path("data/base_chips"), "folder of void-free base chip images"),
        ("--image-size", int, 256, "side of each rendered image in px"),
        ("--seed", int, 0, "seed of the parameter draws and renders"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    return parser


if __name__ == "__main__":  # pragma: no cover
    from bo_voids.cli import run_module

    run_module(main)
