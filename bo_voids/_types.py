"""Type aliases shared across the package: JSON values and per-row labels.

Only aliases live here (no logic), so every layer may import this module.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = ["JsonObject", "JsonScalar", "JsonValue", "Labels"]

JsonScalar = str | int | float | bool | None
"""A JSON scalar (``null`` is ``None``)."""

JsonValue = JsonScalar | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
"""Any JSON value; read-only containers, so that ``list[float]`` and ``dict[str, int]`` fit."""

JsonObject = dict[str, JsonValue]
"""A JSON object as a writer builds it (e.g. a record's ``to_dict()``)."""

Labels = Sequence[Hashable] | np.ndarray
"""One hashable label per row (a cluster, a parameter-set id)."""
