"""The composite surrogate's feature space and its geometry.

One-hot categories and numbers in [0, 1], with the rounding, neighbours and valid samples the
acquisition optimiser needs. The forward encoding is :func:`bo_voids.space.raw_to_features`, the
package's one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from bo_voids.space import SearchSpace, raw_to_features

__all__ = ["FeatureEncoder"]

_DTYPE = torch.float64


# ---------------------------------------------------------------------------------------------
# Input encoding
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    kind: str  # "categorical" | "integer" | "continuous"
    start: int  # first feature column
    width: int  # feature columns (levels of a categorical, else 1)
    low: float
    high: float


class FeatureEncoder:
    """Raw encoding ↔ model features: one-hot categories, numeric columns scaled to ``[0, 1]``.

    Args:
        space: A :class:`~bo_voids.space.SearchSpace` (only ``parameters`` with ``kind``,
            ``low`` and ``high`` are used).
    """

    def __init__(self, space: SearchSpace) -> None:
        cols: list[_Column] = []
        start = 0
        for p in space.parameters:
            width = round(p.high) + 1 if p.kind == "categorical" else 1
            cols.append(_Column(p.kind, start, width, float(p.low), float(p.high)))
            start += width
        self._cols = tuple(cols)
        self._parameters = tuple(space.parameters)
        self.d_raw = len(cols)
        self.d_features = start

    @property
    def discrete_features(self) -> list[int]:
        """Feature columns of categorical (one-hot) and integer parameters."""
        return [c.start + j for c in self._cols if c.kind != "continuous" for j in range(c.width)]

    @property
    def categorical_features(self) -> list[int]:
        """Feature columns of the one-hot categories."""
        return [c.start + j for c in self._cols if c.kind == "categorical" for j in range(c.width)]

    @property
    def continuous_features(self) -> list[int]:
        """Feature columns of continuous parameters."""
        return [c.start for c in self._cols if c.kind == "continuous"]

    def to_features(self, X_raw: ArrayLike) -> np.ndarray:
        """Encode raw points.

        Args:
            X_raw: `(n, d)` raw encodings (category index, integer, values).

        Returns:
            `(n, d_f)` features in ``[0, 1]``.
        """
        return raw_to_features(self._parameters, X_raw)

    def round_features(self, Z: Tensor) -> Tensor:
        """Snap relaxed features to valid points: argmax one-hot, nearest integer, clip.

        Args:
            Z: `(..., d_f)` relaxed features.

        Returns:
            Tensor of the same shape holding valid feature vectors.
        """
        out = Z.detach().clone().clamp(0.0, 1.0)
        for c in self._cols:
            if c.kind == "categorical":
                block = out[..., c.start : c.start + c.width]
                hot = torch.nn.functional.one_hot(block.argmax(-1), c.width).to(out)
                out[..., c.start : c.start + c.width] = hot
            elif c.kind == "integer" and c.high > c.low:
                span = c.high - c.low
                v = (c.low + out[..., c.start] * span).round()
                out[..., c.start] = (v - c.low) / span
        return out

    def to_raw(self, Z: ArrayLike) -> np.ndarray:
        """Decode features to raw points (rounding and clipping like ``round_features``).

        Args:
            Z: `(n, d_f)` features.

        Returns:
            `(n, d)` raw encodings with exact category indices and integers.
        """
        Zt = torch.as_tensor(np.atleast_2d(np.asarray(Z, dtype=np.float64)))
        Zr = self.round_features(Zt).numpy()
        X = np.zeros((Zr.shape[0], self.d_raw))
        for i, c in enumerate(self._cols):
            if c.kind == "categorical":
                X[:, i] = np.argmax(Zr[:, c.start : c.start + c.width], axis=1)
            else:
                X[:, i] = c.low + Zr[:, c.start] * (c.high - c.low)
                if c.kind == "integer":
                    X[:, i] = np.rint(X[:, i])
        return X

    def neighbours(self, z: Tensor, integer_steps: int = 2) -> Tensor:
        """Valid points differing from ``z`` in one discrete column.

        Args:
            z: `(d_f,)` valid features.
            integer_steps: Integer moves tried each way (``±1 .. ±integer_steps``).

        Returns:
            `(m, d_f)` neighbours: every other category of each categorical column and the
            integers within ``integer_steps`` of each integer column (inside the bounds).
        """
        out: list[Tensor] = []
        for c in self._cols:
            if c.kind == "categorical":
                current = int(z[c.start : c.start + c.width].argmax())
                for level in range(c.width):
                    if level != current:
                        w = z.clone()
                        w[c.start : c.start + c.width] = 0.0
                        w[c.start + level] = 1.0
                        out.append(w)
            elif c.kind == "integer" and c.high > c.low:
                span = c.high - c.low
                v = round(c.low + float(z[c.start]) * span)
                for step in range(-integer_steps, integer_steps + 1):
                    if step != 0 and c.low <= v + step <= c.high:
                        w = z.clone()
                        w[c.start] = (v + step - c.low) / span
                        out.append(w)
        return torch.stack(out) if out else z.new_zeros(0, z.shape[-1])

    def sample_valid(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw `(n, d_f)` valid feature vectors uniformly (random category, integer, value)."""
        Z = torch.zeros(n, self.d_features, dtype=_DTYPE)
        for c in self._cols:
            if c.kind == "categorical":
                idx = torch.randint(c.width, (n,), generator=generator)
                Z[torch.arange(n), c.start + idx] = 1.0
            elif c.kind == "integer" and c.high > c.low:
                span = round(c.high - c.low)
                v = torch.randint(span + 1, (n,), generator=generator).to(_DTYPE)
                Z[:, c.start] = v / span
            else:
                Z[:, c.start] = torch.rand(n, generator=generator, dtype=_DTYPE)
        return Z
