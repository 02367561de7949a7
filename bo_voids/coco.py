"""COCO instance annotations of void masks: run-length encoding, one annotation per void.

COCO (the format ``pycocotools`` and detection libraries read) stores a mask as run-length
encoding over the **column-major** flattened image, starting with a run of zeros:
``{"size": [h, w], "counts": [zeros, ones, zeros, ...]}`` (the uncompressed form that
``pycocotools.mask.frPyObjects`` reads). :func:`mask_to_rle` writes it, :func:`rle_to_mask` reads
it back (the reference decoder, used where ``pycocotools`` is not installed), :func:`box_rle`
gives the same counts from a bounding box only, and :func:`void_annotations` turns a generator
instance map into annotations; :func:`coco_document` assembles the file's content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
from scipy import ndimage

__all__ = [
    "VOID_CATEGORY",
    "Rle",
    "box_rle",
    "coco_document",
    "mask_to_rle",
    "rle_to_mask",
    "void_annotations",
]

#: The COCO category of every annotation.
VOID_CATEGORY: dict[str, int | str] = {"id": 1, "name": "void", "supercategory": "defect"}


class Rle(TypedDict):
    """COCO uncompressed run-length encoding of a binary mask."""

    size: list[int]
    counts: list[int]


def mask_to_rle(mask: np.ndarray) -> Rle:
    """A binary mask as COCO uncompressed RLE (column-major run lengths, zeros first).

    Args:
        mask: 2-D boolean mask.

    Returns:
        ``{"size": [h, w], "counts": [...]}``, readable by ``pycocotools.mask.frPyObjects``.
    """
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def box_rle(labels: np.ndarray, label: int, box: tuple[slice, slice]) -> Rle:
    """:func:`mask_to_rle` of ``labels == label``, computed inside its bounding box only.

    Equal to ``mask_to_rle(labels == label)`` when ``box`` holds every pixel of the label (the
    full-image flattening is the slow part of an export of many voids).
    """
    h, w = labels.shape
    ys, xs = box
    crop = labels[box] == label
    padded = np.zeros((crop.shape[0] + 2, crop.shape[1]), dtype=np.int8)
    padded[1:-1] = crop
    # column-major transitions: +1 where a run starts, -1 one past its end
    cols, rows = np.nonzero(np.diff(padded, axis=0).T)
    bounds = (xs.start + cols) * h + (ys.start + rows)
    starts, ends = bounds[0::2], bounds[1::2]
    joined = ends[:-1] == starts[1:]  # a run going on at the top of the next column
    starts = starts[np.concatenate(([True], ~joined))]
    ends = ends[np.concatenate((~joined, [True]))]
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0], edges[-1] = 0, h * w
    edges[1:-1:2], edges[2:-1:2] = starts, ends
    counts = np.diff(edges).tolist()
    if counts and counts[-1] == 0:
        counts.pop()
    return {"size": [int(h), int(w)], "counts": counts}


def rle_to_mask(rle: Rle) -> np.ndarray:
    """Decode :func:`mask_to_rle`'s form back to a boolean mask (the reference decoder)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    if flat.size != h * w:
        raise ValueError(f"RLE covers {flat.size} pixels, expected {h * w}")
    return flat.reshape((h, w), order="F")


def void_annotations(labels: np.ndarray, voids: list[dict[str, object]]) -> list[dict[str, object]]:
    """One COCO annotation per visible void of an instance map; adds area and bbox to ``voids``.

    Args:
        labels: Instance map (``0`` background, ``k`` void ``k - 1`` of ``voids``).
        voids: The per-void geometry records, updated in place with ``instance_label``,
            ``mask_area_px`` and ``bbox`` (``None`` for a void with no pixel left).

    Returns:
        Annotations without ``id`` / ``image_id`` (given when the file is assembled):
        ``category_id``, ``segmentation`` (uncompressed RLE), ``area``, ``bbox``, ``iscrowd``,
        ``void_index``.
    """
    anns: list[dict[str, object]] = []
    objects = _find_objects(labels, len(voids))
    for k, void in enumerate(voids):
        sl = objects[k]
        void["instance_label"] = k + 1
        if sl is None:
            void["mask_area_px"], void["bbox"] = 0, None
            continue
        ys, xs = sl
        bbox = [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]
        area = int(np.count_nonzero(labels[sl] == k + 1))
        void["mask_area_px"], void["bbox"] = area, bbox
        anns.append(
            {
                "category_id": VOID_CATEGORY["id"],
                "segmentation": box_rle(labels, k + 1, sl),
                "area": area,
                "bbox": [float(v) for v in bbox],
                "iscrowd": 0,
                "void_index": k,
            }
        )
    return anns


def _find_objects(labels: np.ndarray, n: int) -> list[Any]:
    found = ndimage.find_objects(labels, max_label=n) if n else []
    return list(found) + [None] * (n - len(found))


def coco_document(
    images: Sequence[Mapping[str, object]],
    annotations: Sequence[Mapping[str, object]],
    *,
    description: str,
    version: str,
) -> dict[str, object]:
    """The content of a COCO instances file with the one ``void`` category.

    Args:
        images: ``{"id", "file_name", "width", "height", ...}`` per image.
        annotations: Complete annotations (with ``id`` and ``image_id``).
        description: ``info.description``.
        version: ``info.version``.

    Returns:
        ``{"info", "licenses", "images", "annotations", "categories"}``.
    """
    return {
        "info": {"description": description, "version": version},
        "licenses": [],
        "images": list(images),
        "annotations": list(annotations),
        "categories": [VOID_CATEGORY],
    }
