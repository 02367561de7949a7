"""A PCA projection fitted once (on iteration 0) and then only applied, persisted without pickle.

The projector wraps :class:`sklearn.decomposition.PCA` for fitting, but applies the projection
itself as ``(X - mean_) @ components_.T``, so the transform is identical before and after a
:meth:`PCAProjector.save` / :meth:`PCAProjector.load` round trip (the ``.npz`` file holds only
numeric arrays; it is read with ``allow_pickle=False``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.decomposition import PCA

from bo_voids._io import read_npz, write_npz
from bo_voids.exceptions import StateError

__all__ = ["PCAProjector"]

_FORMAT_VERSION = 1
_KEYS = (
    "mean",
    "components",
    "explained_variance",
    "explained_variance_ratio",
    "n_components",
    "n_features",
)


def _as_2d(X: ArrayLike, name: str = "X") -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array of shape (n, d): {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array of shape (n, d), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


class PCAProjector:
    """Linear PCA projection of embeddings (e.g. to 2-D for plots), fitted once.

    Args:
        n_components: Number of principal components to keep (≥ 1).

    Attributes:
        mean_: `(d,)` feature means of the fitting data.
        components_: `(n_components, d)` principal axes (rows, unit norm).
        explained_variance_: `(n_components,)` variance along each axis.
        explained_variance_ratio_: `(n_components,)` share of the total variance.
        n_features_in_: Number of input features ``d``.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(20, 5))
        >>> PCAProjector(2).fit_transform(X).shape
        (20, 2)
    """

    def __init__(self, n_components: int = 2) -> None:
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
            raise ValueError(f"n_components must be an int, got {n_components!r}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.explained_variance_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None
        self.n_features_in_: int | None = None

    @property
    def fitted(self) -> bool:
        """Whether the projection has been fitted (or loaded)."""
        return self.components_ is not None

    def fit(self, X: ArrayLike) -> PCAProjector:
        """Fit the principal axes.

        Args:
            X: `(n, d)` embeddings with ``n_components <= min(n, d)``.

        Returns:
            ``self``.

        Raises:
            ValueError: Non-finite values or too few samples / features.
        """
        Xa = _as_2d(X)
        n, d = Xa.shape
        if self.n_components > min(n, d):
            raise ValueError(
                f"n_components={self.n_components} must be <= min(n_samples, n_features) = "
                f"{min(n, d)} for X of shape {Xa.shape}"
            )
        pca = PCA(n_components=self.n_components, svd_solver="full").fit(Xa)
        self.mean_ = np.asarray(pca.mean_, dtype=np.float64)
        self.components_ = np.asarray(pca.components_, dtype=np.float64)
        self.explained_variance_ = np.asarray(pca.explained_variance_, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
        self.n_features_in_ = d
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Project embeddings on the fitted axes: ``(X - mean_) @ components_.T``.

        Args:
            X: `(n, d)` embeddings.

        Returns:
            `(n, n_components)` projected coordinates.

        Raises:
            StateError: Not fitted yet.
            ValueError: Non-finite values or a wrong number of features.
        """
        if not self.fitted:
            raise StateError(
                "PCAProjector is not fitted: fit it on the iteration-0 embeddings first "
                "(fit / fit_transform), or restore it with PCAProjector.load(path)"
            )
        assert self.mean_ is not None and self.components_ is not None
        Xa = _as_2d(X)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features but the projection was fitted on "
                f"{self.n_features_in_}"
            )
        return (Xa - self.mean_) @ self.components_.T

    def fit_transform(self, X: ArrayLike) -> np.ndarray:
        """Fit on ``X`` (iteration 0) and return its projection.

        Args:
            X: `(n, d)` embeddings.

        Returns:
            `(n, n_components)` projected coordinates (same as ``fit(X).transform(X)``).
        """
        return self.fit(X).transform(X)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted projection to an ``.npz`` file atomically, without pickle.

        Written by :func:`bo_voids._io.write_npz`: the name is used exactly as given (no
        ``.npz`` is appended) and readers never see a half-written file.

        Args:
            path: Destination file.

        Returns:
            The destination path.

        Raises:
            StateError: Not fitted, or the file cannot be written.
        """
        if not self.fitted:
            raise StateError("PCAProjector is not fitted: nothing to save")
        assert self.mean_ is not None and self.components_ is not None
        assert self.explained_variance_ is not None
        assert self.explained_variance_ratio_ is not None
        return write_npz(
            Path(path),
            {
                "mean": self.mean_,
                "components": self.components_,
                "explained_variance": self.explained_variance_,
                "explained_variance_ratio": self.explained_variance_ratio_,
                "n_components": np.int64(self.n_components),
                "n_features": np.int64(self.n_features_in_ or 0),
            },
            format_version=_FORMAT_VERSION,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PCAProjector:
        """Restore a projection written by :meth:`save` (read with ``allow_pickle=False``).

        Args:
            path: File written by :meth:`save`.

        Returns:
            A fitted projector whose :meth:`transform` matches the saved one exactly.

        Raises:
            StateError: Missing, unreadable or inconsistent file.
        """
        arrays = read_npz(Path(path), _KEYS, kind="PCAProjector", format_version=_FORMAT_VERSION)
        k, d = int(arrays["n_components"]), int(arrays["n_features"])
        comps = np.asarray(arrays["components"], dtype=np.float64)
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        if comps.shape != (k, d) or mean.shape != (d,):
            raise StateError(
                f"{path}: inconsistent shapes (components {comps.shape}, mean {mean.shape}, "
                f"expected ({k}, {d}) and ({d},))"
            )
        obj = cls(n_components=k)
        obj.mean_ = mean
        obj.components_ = comps
        obj.explained_variance_ = np.asarray(arrays["explained_variance"], dtype=np.float64)
        obj.explained_variance_ratio_ = np.asarray(
            arrays["explained_variance_ratio"], dtype=np.float64
        )
        obj.n_features_in_ = d
        return obj

    def __repr__(self) -> str:
        return f"PCAProjector(n_components={self.n_components}, fitted={self.fitted})"
