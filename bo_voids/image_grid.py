"""The image grid of a run: real targets beside the images of the best parameter sets.

The figure :func:`bo_voids.plots.write_all_plots` writes as ``plots/image_grid.png``. Images are
downsampled and assembled into one mosaic drawn pixel for pixel, which keeps the figure quick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bo_voids.run_sets import SetSummary, best_sets, set_summaries
from bo_voids.state import ExperimentRun

__all__ = ["plot_image_grid"]

#: Frame colours of the best sets in the image grid (rank 1, 2, ...).
_RANK_COLORS = ("#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
_REAL_TITLE = "#333333"
#: Side of one image tile in the grid (pixels of the PNG).
_TILE = 150


def plot_image_grid(
    run: ExperimentRun,
    n: int = 6,
    max_sets: int = 4,
    summaries: list[SetSummary] | None = None,
    max_target_rows: int = 2,
    dpi: float = 110,
) -> Figure:
    """Real target images (top rows) beside the images of the best parameter sets.

    The targets fill up to ``max_target_rows`` full rows of ``n``, taken round-robin over the
    real parameter sets (so they show the spread of the real distribution) or, for a folder of
    real images, in file-name order and titled with their file names; the subtitle says how many
    of how many are shown. Below, the best sets in rank order, each framed in its set's colour
    and titled with its rank, set id and MMD². Every set gets the same number of cells (the
    smallest image count among them), so the rows are regular; a set with more images (one
    that was replicated) shows its first ones. Images are downsampled and assembled into one
    mosaic, which keeps the figure quick to render.

    Args:
        run: The loaded run.
        n: Images per row.
        max_sets: At most this many best sets.
        summaries: :func:`set_summaries` of ``run`` when the caller already has them.
        max_target_rows: At most this many rows of targets.
        dpi: Resolution of the figure; save it at the same resolution so the mosaic is drawn
            pixel for pixel (:func:`bo_voids.plots.plot_image_grid` does).

    Returns:
        The figure.
    """
    n = max(1, int(n))
    by_iter = {it.iteration: it for it in run.iterations}
    real, n_real = _round_robin_targets(run, n * max(1, int(max_target_rows)))
    by_id = {s.param_set_id: s for s in (set_summaries(run) if summaries is None else summaries)}
    Cell = tuple[tuple[int, int] | None, str, str | None]  # (image, title, frame colour)
    rows: list[list[Cell]] = [
        [(img, label, None) for img, label in real[i : i + n]] for i in range(0, len(real), n)
    ]
    n_target_rows = len(rows)
    best = [
        (rank, rec, by_id[rec["param_set_id"]])
        for rank, rec in enumerate(best_sets(run, max_sets))
        if rec["param_set_id"] in by_id and by_id[rec["param_set_id"]].images
    ]
    per_set = min([n, *(len(ps.images) for _, _, ps in best)])
    groups: list[list[Cell]] = []
    for rank, rec, ps in best:
        color: str | None = _RANK_COLORS[rank % len(_RANK_COLORS)]
        of = f" of {len(ps.images)}" if len(ps.images) > per_set else ""
        groups.append(
            [
                (
                    img,
                    f"#{rank + 1} {ps.param_set_id}\nMMD² {rec['mmd2']:.4f} · rep {rep}{of}",
                    color,
                )
                for rep, img in enumerate(ps.images[:per_set])
            ]
        )
    per_row = max(1, n // per_set)
    for i in range(0, len(groups), per_row):
        rows.append([cell for group in groups[i : i + per_row] for cell in group])

    tile, gap, band, sep, frame = _TILE, 10, 34, 18, 4
    width = n * tile + (n - 1) * gap
    height = len(rows) * (tile + band) + (sep if len(rows) > n_target_rows else 0)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    texts: list[tuple[float, float, str, str]] = []
    y = 0
    for r, row in enumerate(rows):
        if r == n_target_rows and r > 0:
            y += sep
        for c, (img_ref, title, color) in enumerate(row):
            x = c * (tile + gap)
            top = y + band
            texts.append((x + tile / 2, top - 4, title, color or _REAL_TITLE))
            img = None
            if img_ref is not None:
                k, i = img_ref
                img = _load_gray(by_iter[k].image_path(i), tile)
            if img is None:
                canvas[top : top + tile, x : x + tile] = 235
                texts.append((x + tile / 2, top + tile / 2, "image missing", "#777777"))
                continue
            th, tw = img.shape
            canvas[top : top + th, x : x + tw] = img[..., None]
            if color is not None:
                rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
                canvas[top : top + frame, x : x + tw] = rgb
                canvas[top + th - frame : top + th, x : x + tw] = rgb
                canvas[top : top + th, x : x + frame] = rgb
                canvas[top : top + th, x + tw - frame : x + tw] = rgb
        y += tile + band
    head, margin = 52, 12  # px above the mosaic for the title; px around it
    fig_w, fig_h = width + 2 * margin, height + head + margin
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    # figimage draws the mosaic pixel for pixel (no resampling) when saved at DPI
    fig.figimage(canvas, xo=margin, yo=margin, origin="upper")
    for tx, ty, text, color in texts:
        fig.text(
            (margin + tx) / fig_w,
            1 - (head + ty) / fig_h,
            text,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color=color,
        )
    shown = f"real targets ({len(real)} of {n_real})"
    if not best:
        subtitle = f"{shown} · no scored parameter set yet"
    else:
        subtitle = f"{shown} · below: best parameter sets (rank, id, MMD², replication)"
    fig.suptitle(f"Real targets vs best synthetic images\n{subtitle}", fontsize=10, y=0.995)
    return fig


def _round_robin_targets(
    run: ExperimentRun, n: int
) -> tuple[list[tuple[tuple[int, int], str]], int]:
    """Up to ``n`` real images, one per real parameter set in turn, and how many there are.

    Simulated targets are titled with their set id; images loaded from a folder (one group)
    with their file names, in file-name order.
    """
    if not run.iterations:
        return [], 0
    it = run.iterations[0]
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(it.metadata):
        if m.get("dataset_type") == "real":
            groups.setdefault(str(m.get("param_set_id")), []).append(i)
    for rows in groups.values():
        rows.sort(key=lambda i: str(it.metadata[i].get("source_file") or ""))
    out: list[tuple[tuple[int, int], str]] = []
    depth = 0
    while len(out) < n and any(depth < len(g) for g in groups.values()):
        for ps_id, rows in groups.items():
            if depth < len(rows) and len(out) < n:
                meta = it.metadata[rows[depth]]
                source = meta.get("source_file")
                label = _short(Path(str(source)).name) if source else f"real · {ps_id}"
                out.append(((it.iteration, rows[depth]), label))
        depth += 1
    return out, sum(len(g) for g in groups.values())


def _short(name: str, width: int = 24) -> str:
    """A file name cut to fit a tile's title (its start and its extension kept)."""
    if len(name) <= width:
        return name
    stem, dot, ext = name.rpartition(".")
    keep = width - len(ext) - 2 if dot else width - 1
    return f"{(stem if dot else name)[:keep]}…{dot}{ext if dot else ''}"


def _load_gray(path: Path, size: int) -> np.ndarray | None:
    """A grayscale image resized to fit ``size`` x ``size`` (``None`` if unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            im = opened.convert("L")
            factor = max(1, min(im.size) // (2 * size))
            if factor > 1:
                im = im.reduce(factor)  # fast integer downsampling first
            scale = size / max(im.size)
            new = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            if new != im.size:  # fit the tile, upscaling small images too
                im = im.resize(new, Image.Resampling.LANCZOS)
            return np.asarray(im)
    except (OSError, ValueError):
        return None
