"""Low-dimensional summary statistics of image embeddings, fitted once and persisted without pickle.

A :class:`SummaryMap` turns an embedding ``e`` (any embedder, ``D`` features) into a short vector
``s = A e - c`` of ``k`` summaries. Every kind is affine in the embedding (in the lifted
embedding with the non-linear head), so the map is stored as one ``(k, D)`` matrix and one offset
(plus the lift's seed); callers average the summaries of single images.

Kinds (concatenated in the order given):

* ``"pca"`` (*pca-whitened*): the top ``n_components`` principal axes of the embeddings,
  whitened by the pooled **within-set** covariance of the projections (sets = groups of replicate
  renders of one parameter set), so that replicate noise has identity covariance and a squared
  Euclidean distance between summaries is a Mahalanobis distance in noise units. With too few
  replicates to estimate a ``k x k`` covariance (within-set degrees of freedom below
  ``2 * n_components``) it falls back to the total covariance plus a ridge (ordinary PCA
  whitening).
* ``"head"`` (*param-head*): a ridge regression of the known generator parameters on the
  embeddings of synthetic images — the semi-automatic ABC summaries ``E[θ | e]`` of Fearnhead &
  Prangle (2012, JRSS-B) — with one penalty per parameter chosen by cross-validation over whole
  sets (replicates of a set never straddle folds, or the penalty would be chosen too small). Each
  output is divided by its pooled within-set standard deviation, measured on out-of-fold
  predictions (in-sample ones understate it); by the total one without replicates.
  With ``random_features > 0`` the head may also be non-linear: a ridge on the embeddings *and*
  ``m`` random Fourier features of them (scikit-learn's ``RBFSampler``, an RBF-kernel ridge
  approximation, bandwidth by the median heuristic), kept per parameter only where its
  cross-validated R² over whole held-out sets beats the linear ridge's. The map stays affine in
  the lifted features ``[e, φ(e)]``; ``φ`` is rebuilt from its seed (no weights are stored) and
  checked against a hash.

Persistence: :meth:`SummaryMap.save` / :meth:`SummaryMap.load` (``.npz``) or
:meth:`SummaryMap.state_dict` / :meth:`SummaryMap.from_state_dict` (strict JSON), both exact.

Helpers :func:`head_targets` (regression targets from a :class:`~bo_voids.space.SearchSpace`),
:func:`set_means` and :func:`set_statistics` (per-set means and the variance of each mean,
shrunk towards the pooled within-set variance) complete the module.

Example:
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.uniform(size=(30, 2)).repeat(3, axis=0)
    >>> emb = theta @ rng.normal(size=(2, 12)) + 0.05 * rng.normal(size=(90, 12))
    >>> groups = np.arange(30).repeat(3)
    >>> smap = SummaryMap.fit(emb, groups, theta, kinds=("pca", "head"), n_components=2)
    >>> smap.transform(emb).shape
    (90, 4)
    >>> smap.names
    ('pca_1', 'pca_2', 'head_0', 'head_1')
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from bo_voids._io import read_npz, write_npz
from bo_voids._types import JsonObject, Labels
from bo_voids.exceptions import StateError
from bo_voids.space import ParamMapping, SearchSpace

__all__ = [
    "KINDS",
    "SetStatistics",
    "SummaryMap",
    "head_targets",
    "set_means",
    "set_statistics",
]

#: Summary kinds, with their accepted aliases.
KINDS: tuple[str, ...] = ("pca", "head")
_ALIASES = {"pca-whitened": "pca", "param-head": "head"}
_FORMAT_VERSION = 1
#: Ridge penalties tried by the head, relative to the mean squared singular value of the design.
_ALPHA_GRID = tuple(float(a) for a in np.logspace(-7, 2, 28))
#: Ridge added to a whitening covariance, relative to its mean eigenvalue.
_WHITEN_RIDGE = 1e-6
_FALLBACK_RIDGE = 1e-3


def _as_2d(X: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _group_index(groups: Labels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (sorted unique) and the `(n,)` index of each row's label."""
    g = np.asarray(groups).reshape(-1)
    if g.shape[0] != n:
        raise ValueError(f"groups has {g.shape[0]} entries for {n} rows")
    labels, inverse = np.unique(g, return_inverse=True)
    return labels, inverse.reshape(-1)


def _within(X: np.ndarray, inverse: np.ndarray, n_groups: int) -> tuple[np.ndarray, int]:
    """Pooled within-group covariance `(p, p)` of ``X`` and its degrees of freedom."""
    counts = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    sums = np.zeros((n_groups, X.shape[1]))
    np.add.at(sums, inverse, X)
    resid = X - (sums / counts[:, None])[inverse]
    df = int(X.shape[0] - n_groups)
    if df <= 0:
        return np.zeros((X.shape[1], X.shape[1])), 0
    return resid.T @ resid / df, df


def within_covariance(X: ArrayLike, groups: Labels) -> tuple[np.ndarray, int]:
    """Pooled within-group covariance `(p, p)` of the rows of ``X`` and its degrees of freedom.

    Args:
        X: `(N, p)` rows (e.g. single-image summaries).
        groups: `(N,)` group label of each row (e.g. its parameter set).

    Returns:
        ``(cov, df)``; ``df = N - groups`` is 0 (and ``cov`` zero) when no group has two rows.
    """
    A = _as_2d(X, "X")
    labels, inverse = _group_index(groups, A.shape[0])
    return _within(A, inverse, labels.shape[0])


def _inv_sqrt(C: np.ndarray, ridge: float) -> np.ndarray:
    """Symmetric inverse square root of ``C + ridge * mean(eig) * I`` (unique, sign-free)."""
    C = 0.5 * (C + C.T)
    vals, vecs = np.linalg.eigh(C)
    scale = max(float(np.mean(np.abs(vals))), 1e-300)
    vals = np.maximum(vals, 0.0) + ridge * scale
    return (vecs / np.sqrt(vals)) @ vecs.T


def _sign_fix(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of each axis positive (deterministic signs)."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def _fold_of_groups(n_groups: int, n_folds: int, seed: int) -> np.ndarray:
    perm = np.random.default_rng(seed).permutation(n_groups)
    fold = np.empty(n_groups, dtype=np.int64)
    fold[perm] = np.arange(n_groups) % n_folds
    return fold


def _fit_head(
    E: np.ndarray,
    T: np.ndarray,
    inverse: np.ndarray,
    n_groups: int,
    n_folds: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Ridge regression of ``T`` on ``E`` with a per-target penalty chosen by grouped CV.

    Returns:
        ``coef`` `(D, p)`, ``intercept`` `(p,)`, the chosen relative penalties `(p,)`, the
        cross-validated R² per target `(p,)` and the out-of-fold predictions `(N, p)` at the
        chosen penalties (``None`` without cross-validation).
    """
    mu = E.mean(axis=0)
    sd = E.std(axis=0)
    sd = np.where(sd > 1e-12 * max(1.0, float(np.abs(E).max())), sd, 1.0)
    Z = (E - mu) / sd
    t_mu = T.mean(axis=0)
    Tc = T - t_mu
    _, s_all, _ = np.linalg.svd(Z, full_matrices=False)
    base = float(np.mean(s_all**2)) if s_all.size else 1.0
    alphas = np.asarray(_ALPHA_GRID) * max(base, 1e-300)
    n_folds = int(min(n_folds, n_groups))
    sse = np.zeros((alphas.size, T.shape[1]))
    oof = np.zeros((alphas.size, *T.shape))
    if n_folds >= 2:
        fold = _fold_of_groups(n_groups, n_folds, seed)[inverse]
        for f in range(n_folds):
            tr, te = fold != f, fold == f
            z_mu, y_mu = Z[tr].mean(axis=0), Tc[tr].mean(axis=0)
            U, s, Vt = np.linalg.svd(Z[tr] - z_mu, full_matrices=False)
            UtY = U.T @ (Tc[tr] - y_mu)  # (r, p)
            proj = (Z[te] - z_mu) @ Vt.T  # (n_te, r)
            for a_i, a in enumerate(alphas):
                pred = proj @ ((s / (s**2 + a))[:, None] * UtY) + y_mu
                sse[a_i] += ((Tc[te] - pred) ** 2).sum(axis=0)
                oof[a_i, te] = pred + t_mu
        best = np.argmin(sse, axis=0)
    else:
        # One set only: no cross-validation possible; a middling penalty.
        best = np.full(T.shape[1], alphas.size // 2)
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    UtY = U.T @ Tc
    coef_z = np.stack(
        [Vt.T @ ((s / (s**2 + alphas[b])) * UtY[:, j]) for j, b in enumerate(best)], axis=1
    )
    coef = coef_z / sd[:, None]
    intercept = t_mu - mu @ coef
    sst = (Tc**2).sum(axis=0)
    r2 = np.where(
        sst > 0, 1.0 - sse[best, np.arange(T.shape[1])] / np.where(sst > 0, sst, 1.0), np.nan
    )
    if n_folds < 2:
        r2 = np.full(T.shape[1], np.nan)
        oof_best = None
    else:
        oof_best = oof[best, :, np.arange(T.shape[1])].T
    return coef, intercept, alphas[best] / max(base, 1e-300), r2, oof_best


def _check_kinds(kinds: str | Sequence[str]) -> tuple[str, ...]:
    seq = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    out = tuple(_ALIASES.get(k, k) for k in seq)
    bad = [k for k in out if k not in KINDS]
    if bad or not out or len(set(out)) != len(out):
        raise ValueError(
            f"kinds must be distinct values of {list(KINDS)} (or {list(_ALIASES)}), got {kinds!r}"
        )
    return out


class SummaryMap:
    """An affine summary map ``s = E @ matrix.T - offset`` of embeddings, fitted once.

    Build it with :meth:`fit` or :meth:`load`; the constructor takes the fitted arrays.

    Args:
        matrix: `(k, D)` linear map.
        offset: `(k,)` offset subtracted after the linear map.
        names: ``k`` summary names.
        within_var: `(k,)` pooled within-set variance of each summary on the fitting data (about
            1 by construction; ``NaN`` where the fitting data had no replicates).
        settings: JSON-serialisable description (kinds, options, diagnostics).
    """

    def __init__(
        self,
        matrix: np.ndarray,
        offset: np.ndarray,
        names: Sequence[str],
        within_var: np.ndarray,
        settings: Mapping[str, Any],
    ) -> None:
        lift_spec = settings.get("lift")
        self.lift = FeatureLift.from_spec(lift_spec) if lift_spec else None
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        self.offset = np.ascontiguousarray(offset, dtype=np.float64).reshape(-1)
        self.within_var = np.ascontiguousarray(within_var, dtype=np.float64).reshape(-1)
        self._names = tuple(str(n) for n in names)
        self.settings: dict[str, Any] = json.loads(json.dumps(dict(settings)))
        k = self.matrix.shape[0]
        if (
            self.matrix.ndim != 2
            or self.offset.shape != (k,)
            or self.within_var.shape != (k,)
            or len(self._names) != k
        ):
            raise ValueError(
                f"inconsistent summary map: matrix {self.matrix.shape}, offset "
                f"{self.offset.shape}, within_var {self.within_var.shape}, {len(self._names)} names"
            )

    # ---- fitting -------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        embeddings: ArrayLike,
        groups: Labels,
        params_encoded: ArrayLike | None = None,
        kinds: str | Sequence[str] = ("pca", "head"),
        n_components: int = 8,
        seed: int = 0,
        param_names: Sequence[str] | None = None,
        n_folds: int = 5,
        random_features: int = 0,
    ) -> SummaryMap:
        """Fit the summary map on a reference sample of embeddings.

        Args:
            embeddings: `(N, D)` embeddings of synthetic images.
            groups: `(N,)` set label of each image (replicate renders of one parameter set share
                a label); any hashable, sortable values.
            params_encoded: `(N, p)` generator parameters of each image (e.g. from
                :func:`head_targets`); required by ``"head"``.
            kinds: Summary kinds in output order: ``"pca"`` and/or ``"head"``.
            n_components: Principal components of ``"pca"`` (at most ``min(N - 1, D)``).
            seed: Seed of the head's cross-validation folds.
            param_names: Names of the ``p`` head targets (default ``0..p-1``).
            n_folds: Cross-validation folds of the head (over whole sets).
            random_features: Random Fourier features offered to the head (0: linear ridge only);
                each parameter keeps the non-linear head only where it wins on held-out sets.

        Returns:
            The fitted map.

        Raises:
            ValueError: Bad shapes, non-finite values, unknown kinds or a missing
                ``params_encoded``.
        """
        # The matrices are small: multi-threaded BLAS only adds contention, which once torch's
        # OpenMP pool exists in the process turned an 18 ms fit into 1.5 s on two shared cores.
        with threadpool_limits(limits=1, user_api="blas"):
            return cls._fit(
                embeddings,
                groups,
                params_encoded,
                kinds,
                n_components,
                seed,
                param_names,
                n_folds,
                int(random_features),
            )

    @classmethod
    def _fit(
        cls,
        embeddings: ArrayLike,
        groups: Labels,
        params_encoded: ArrayLike | None,
        kinds: str | Sequence[str],
        n_components: int,
        seed: int,
        param_names: Sequence[str] | None,
        n_folds: int,
        random_features: int = 0,
    ) -> SummaryMap:
        kinds_t = _check_kinds(kinds)
        E = _as_2d(embeddings, "embeddings")
        N, D = E.shape
        labels, inverse = _group_index(groups, N)
        G = labels.shape[0]
        blocks_m: list[np.ndarray] = []
        blocks_c: list[np.ndarray] = []
        blocks_v: list[np.ndarray] = []
        names: list[str] = []
        settings: dict[str, Any] = {
            "format_version": _FORMAT_VERSION,
            "kinds": list(kinds_t),
            "n_features": D,
            "n_fit": N,
            "n_sets": G,
            "seed": int(seed),
        }
        if "pca" in kinds_t:
            k = int(n_components)
            if k < 1 or k > min(N - 1, D):
                raise ValueError(
                    f"n_components={n_components} must lie in [1, min(N - 1, D) = {min(N - 1, D)}]"
                )
            mu = E.mean(axis=0)
            _, sv, Vt = np.linalg.svd(E - mu, full_matrices=False)
            comps = _sign_fix(Vt[:k])
            total_var = sv**2 / max(N - 1, 1)
            P = (E - mu) @ comps.T
            W, df = _within(P, inverse, G)
            if df >= 2 * k:
                T = _inv_sqrt(W, _WHITEN_RIDGE)
                whitening = "within"
            else:
                T = _inv_sqrt(np.diag(total_var[:k]), _FALLBACK_RIDGE)
                whitening = "total"
            A = T @ comps
            blocks_m.append(A)
            blocks_c.append(A @ mu)
            S = P @ T.T
            Wk, dfk = _within(S, inverse, G)
            # Without replicates the replicate variance is unknown (the total variance would
            # count the signal as noise).
            blocks_v.append(np.diag(Wk) if dfk > 0 else np.full(k, np.nan))
            names += [f"pca_{i + 1}" for i in range(k)]
            settings["pca"] = {
                "n_components": k,
                "whitening": whitening,
                "within_df": df,
                "explained_variance_ratio": (total_var[:k] / max(total_var.sum(), 1e-300)).tolist(),
            }
        if "head" in kinds_t:
            if params_encoded is None:
                raise ValueError("kind 'head' needs params_encoded (the generator parameters)")
            Tgt = _as_2d(params_encoded, "params_encoded")
            if Tgt.shape[0] != N:
                raise ValueError(f"params_encoded has {Tgt.shape[0]} rows for {N} embeddings")
            p = Tgt.shape[1]
            pnames = [str(i) for i in range(p)] if param_names is None else list(param_names)
            if len(pnames) != p:
                raise ValueError(f"{len(pnames)} param_names for {p} parameter columns")
            coef, intercept, alpha, r2, oof = _fit_head(E, Tgt, inverse, G, int(n_folds), int(seed))
            lift: FeatureLift | None = None
            chosen = ["linear"] * p
            r2_lin = r2.copy()
            r2_rff = np.full(p, np.nan)
            if random_features > 0 and oof is not None:
                lift = FeatureLift.fit(E, random_features, int(seed))
                L = lift.apply(E)
                c2, i2, a2, r2_rff, oof2 = _fit_head(L, Tgt, inverse, G, int(n_folds), int(seed))
                assert oof2 is not None  # same folds as the linear head's
                pad = np.zeros((L.shape[1] - D, p))
                coef = np.vstack([coef, pad])
                for j in range(p):
                    if np.isfinite(r2_rff[j]) and r2_rff[j] > (r2[j] if np.isfinite(r2[j]) else -1):
                        chosen[j] = "rff"
                        coef[:, j], intercept[j], alpha[j], r2[j] = (
                            c2[:, j],
                            i2[j],
                            a2[j],
                            r2_rff[j],
                        )
                        oof[:, j] = oof2[:, j]
                if "rff" not in chosen:
                    lift, coef = None, coef[:D]
            # In-sample predictions understate the replicate spread (the ridge has partly fitted
            # the training images' noise towards their set's parameters; by 25-35 % in a test
            # with 40 features); out-of-fold predictions of whole held-out sets do not.
            pred = (E if lift is None else lift.apply(E)) @ coef + intercept if oof is None else oof
            W, df = _within(pred, inverse, G)
            var = np.diag(W) if df > 0 else pred.var(axis=0, ddof=1)
            scale = 1.0 / np.sqrt(np.maximum(var, 1e-12 * max(float(var.max()), 1e-300)))
            A = (coef * scale).T
            blocks_m.append(A)
            blocks_c.append(-intercept * scale)
            blocks_v.append(np.ones(p) if df > 0 else np.full(p, np.nan))
            names += [f"head_{n}" for n in pnames]
            settings["head"] = {
                "targets": pnames,
                "scaling": "within" if df > 0 else "total",
                "within_df": df,
                "alpha_relative": alpha.tolist(),
                "cv_r2": [None if not np.isfinite(v) else float(v) for v in r2],
                "n_folds": int(min(n_folds, G)),
            }
            if random_features > 0:
                settings["head"].update(
                    chosen=chosen,
                    cv_r2_linear=_nan_to_none(r2_lin),
                    cv_r2_nonlinear=_nan_to_none(r2_rff),
                )
            if lift is not None:
                settings["lift"] = lift.spec()
                # the blocks before the head read only the raw embedding: zero weight on the lift
                blocks_m = [
                    *(np.hstack([b, np.zeros((b.shape[0], lift.n_random))]) for b in blocks_m[:-1]),
                    A,
                ]
        return cls(
            np.concatenate(blocks_m, axis=0),
            np.concatenate(blocks_c),
            names,
            np.concatenate(blocks_v),
            settings,
        )

    # ---- applying ------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the ``k`` summaries, in output order."""
        return self._names

    @property
    def n_features(self) -> int:
        """Embedding dimension ``D`` the map expects."""
        return int(self.matrix.shape[1]) if self.lift is None else self.lift.n_in

    @property
    def n_summaries(self) -> int:
        """Number of summaries ``k``."""
        return int(self.matrix.shape[0])

    def transform(self, embeddings: ArrayLike) -> np.ndarray:
        """Apply the map.

        Args:
            embeddings: `(N, D)` embeddings (or one `(D,)` embedding).

        Returns:
            `(N, k)` summaries (`(k,)` for one embedding).

        Raises:
            ValueError: Wrong number of features or non-finite values.
        """
        E = np.asarray(embeddings, dtype=np.float64)
        single = E.ndim == 1
        E = _as_2d(E.reshape(1, -1) if single else E, "embeddings")
        if E.shape[1] != self.n_features:
            raise ValueError(
                f"embeddings have {E.shape[1]} features; the summary map was fitted on "
                f"{self.n_features}"
            )
        if self.lift is not None:
            E = self.lift.apply(E)
        S = E @ self.matrix.T - self.offset
        return S[0] if single else S

    # ---- identity and persistence --------------------------------------------------------------

    def fingerprint(self) -> str:
        """``summaries:<sha256>`` of the arrays, names and settings (changes with any of them)."""
        h = hashlib.sha256()
        for arr in (self.matrix, self.offset, self.within_var):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
        h.update(json.dumps(list(self._names)).encode())
        h.update(json.dumps(self.settings, sort_keys=True).encode())
        return f"summaries:{h.hexdigest()}"

    def to_dict(self) -> JsonObject:
        """A small JSON-serialisable description (no arrays beyond per-summary diagnostics)."""
        return {
            "fingerprint": self.fingerprint(),
            "names": list(self._names),
            "n_features": self.n_features,
            "n_summaries": self.n_summaries,
            "within_var": _nan_to_none(self.within_var),
            **{k: v for k, v in self.settings.items() if k != "format_version"},
        }

    def state_dict(self) -> JsonObject:
        """The whole map as strict JSON (nested float lists, ``NaN`` as ``null``), exact.

        Python floats survive a JSON round trip bit for bit, so :meth:`from_state_dict` of it
        has the same :meth:`transform` and :meth:`fingerprint`.
        """
        return {
            "format_version": _FORMAT_VERSION,
            "matrix": self.matrix.tolist(),
            "offset": self.offset.tolist(),
            "names": list(self._names),
            "within_var": _nan_to_none(self.within_var),
            "settings": self.settings,
            "fingerprint": self.fingerprint(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SummaryMap:
        """Rebuild a map from :meth:`state_dict`.

        Raises:
            StateError: Another format, or a fingerprint that does not match the content.
        """
        if state.get("format_version") != _FORMAT_VERSION:
            raise StateError(f"unsupported SummaryMap state (format {state.get('format_version')})")
        try:
            smap = cls(
                np.asarray(state["matrix"], dtype=np.float64),
                np.asarray(state["offset"], dtype=np.float64),
                state["names"],
                np.array([np.nan if v is None else v for v in state["within_var"]], dtype=float),
                state["settings"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"invalid SummaryMap state: {exc}") from exc
        if "fingerprint" in state and state["fingerprint"] != smap.fingerprint():
            raise StateError("SummaryMap state does not match its fingerprint")
        return smap

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the map to an ``.npz`` file atomically, without pickle (name used as given).

        Args:
            path: Destination file.

        Returns:
            The destination path.

        Raises:
            StateError: The file cannot be written.
        """
        return write_npz(
            Path(path),
            {
                "matrix": self.matrix,
                "offset": self.offset,
                "within_var": self.within_var,
                "names": np.array(self._names, dtype=np.str_),
                "settings": np.array(json.dumps(self.settings, sort_keys=True), dtype=np.str_),
            },
            format_version=_FORMAT_VERSION,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SummaryMap:
        """Restore a map written by :meth:`save` (read with ``allow_pickle=False``).

        Args:
            path: File written by :meth:`save`.

        Returns:
            A map whose :meth:`transform` and :meth:`fingerprint` equal the saved one's.

        Raises:
            StateError: Missing, unreadable or inconsistent file.
        """
        keys = ("matrix", "offset", "within_var", "names", "settings")
        arrays = read_npz(Path(path), keys, kind="SummaryMap", format_version=_FORMAT_VERSION)
        try:
            return cls(
                arrays["matrix"],
                arrays["offset"],
                [str(n) for n in arrays["names"].reshape(-1)],
                arrays["within_var"],
                json.loads(str(arrays["settings"])),
            )
        except ValueError as exc:
            raise StateError(f"{path}: {exc}") from exc

    def __repr__(self) -> str:
        return (
            f"SummaryMap(kinds={self.settings.get('kinds')}, D={self.n_features}, "
            f"k={self.n_summaries})"
        )


class FeatureLift:
    """The lift ``e → [e, φ(e)]`` of the non-linear head: random Fourier features of ``e``.

    ``φ`` is scikit-learn's :class:`~sklearn.kernel_approximation.RBFSampler` on the
    standardised embedding (bandwidth ``γ = 1 / median squared distance``); its weights are
    redrawn from the seed, never stored, and checked against the recorded hash.

    Args:
        mean: `(D,)` standardising mean.
        scale: `(D,)` standardising scale.
        gamma: RBF bandwidth.
        n_random: Number ``m`` of random features.
        seed: Seed of the random weights.
        weights_sha256: Hash the redrawn weights must match (``None``: not checked).
    """

    def __init__(
        self,
        mean: ArrayLike,
        scale: ArrayLike,
        gamma: float,
        n_random: int,
        seed: int,
        weights_sha256: str | None = None,
    ) -> None:
        from sklearn.kernel_approximation import RBFSampler

        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        self.gamma, self.n_random, self.seed = float(gamma), int(n_random), int(seed) % 2**32
        sampler = RBFSampler(gamma=self.gamma, n_components=self.n_random, random_state=self.seed)
        sampler.fit(np.zeros((1, self.mean.shape[0])))
        self._weights = np.asarray(sampler.random_weights_, dtype=np.float64)
        self._offset = np.asarray(sampler.random_offset_, dtype=np.float64)
        digest = hashlib.sha256(self._weights.astype("<f8").tobytes()).hexdigest()
        if weights_sha256 is not None and digest != weights_sha256:
            raise StateError(
                "the summary map's random features cannot be rebuilt identically here "
                "(another scikit-learn/numpy draw); refit the summaries"
            )
        self.weights_sha256 = digest

    @classmethod
    def fit(cls, E: np.ndarray, n_random: int, seed: int) -> FeatureLift:
        """Standardise ``E`` and pick the bandwidth by the median heuristic."""
        mean, scale = E.mean(axis=0), E.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        Z = (E - mean) / scale
        sub = Z[np.random.default_rng(seed).permutation(Z.shape[0])[:256]]
        d2 = ((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1)
        med = float(np.median(d2[np.triu_indices(sub.shape[0], 1)])) if sub.shape[0] > 1 else 1.0
        return cls(mean, scale, 1.0 / max(med, 1e-12), n_random, seed)

    @property
    def n_in(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.mean.shape[0])

    @property
    def n_out(self) -> int:
        """Lifted dimension ``D + m``."""
        return self.n_in + self.n_random

    def apply(self, E: np.ndarray) -> np.ndarray:
        """`(N, D + m)`: the embeddings and their random features."""
        Z = (E - self.mean) / self.scale
        phi = np.sqrt(2.0 / self.n_random) * np.cos(Z @ self._weights + self._offset)
        return np.hstack([E, phi])

    def spec(self) -> JsonObject:
        """JSON form (stored in the map's settings)."""
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "gamma": self.gamma,
            "n_random": self.n_random,
            "seed": self.seed,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FeatureLift:
        """Rebuild from :meth:`spec` (the weights redrawn and checked)."""
        return cls(
            spec["mean"],
            spec["scale"],
            spec["gamma"],
            spec["n_random"],
            spec["seed"],
            spec.get("weights_sha256"),
        )


# ---------------------------------------------------------------------------------------------
# Regression targets and per-set statistics
# ---------------------------------------------------------------------------------------------


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def head_targets(
    space: SearchSpace, param_sets: Sequence[ParamMapping]
) -> tuple[np.ndarray, list[str]]:
    """Regression targets of the parameter head: one-hot categories, range-normalised numbers.

    Args:
        space: A :class:`~bo_voids.space.SearchSpace`.
        param_sets: ``N`` parameter sets (one per image: repeat a set for its replicates).

    Returns:
        `(N, p)` targets and their ``p`` names (``void_shape=circle``, ..., ``void_count``, ...).
    """
    return space.to_features(param_sets), space.feature_names


@dataclass(frozen=True)
class SetStatistics:
    """Per-set means of summaries and the variance of those means.

    Attributes:
        labels: `(n_sets,)` sorted unique set labels (row order of the arrays below).
        counts: `(n_sets,)` replicates per set.
        means: `(n_sets, k)` per-set mean summaries.
        mean_var: `(n_sets, k)` variance of each mean: the shrunk per-set variance over the count.
        pooled_var: `(k,)` pooled within-set variance used as the shrinkage target.
        pooled_df: Degrees of freedom of the replicate estimate used (0 when ``pooled_var`` was
            given for every summary).
    """

    labels: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    mean_var: np.ndarray
    pooled_var: np.ndarray
    pooled_df: int


def set_means(summaries: ArrayLike, groups: Labels) -> np.ndarray:
    """Per-set mean summaries, rows in the order of ``np.unique(groups)``.

    Args:
        summaries: `(N, k)` summaries of single images.
        groups: `(N,)` set label of each image.

    Returns:
        `(n_sets, k)` means.
    """
    S = _as_2d(summaries, "summaries")
    labels, inverse = _group_index(groups, S.shape[0])
    sums = np.zeros((labels.shape[0], S.shape[1]))
    np.add.at(sums, inverse, S)
    return sums / np.bincount(inverse, minlength=labels.shape[0])[:, None]


def set_statistics(
    summaries: ArrayLike,
    groups: Labels,
    prior_df: float = 4.0,
    pooled_var: ArrayLike | None = None,
) -> SetStatistics:
    """Per-set means and the variance of each mean, moderated towards the pooled variance.

    A set's sample variance from ``r`` replicates has ``r - 1`` degrees of freedom, far too few to
    trust on its own (from 3 replicates, ``s²/σ²`` is ``χ²₂/2``: off by more than a factor 2
    in more than half of the sets). It is shrunk towards the pooled within-set variance ``s²_p``
    as if that were a prior worth ``prior_df`` observations (the moderated variance of limma,
    Smyth 2004): ``v = ((r - 1) s² + prior_df s²_p) / (r - 1 + prior_df)``; the variance of the
    mean is ``v / r``. A single-replicate set gets ``s²_p / 1``.

    Args:
        summaries: `(N, k)` summaries of single images.
        groups: `(N,)` set label of each image.
        prior_df: Weight of the pooled variance, in degrees of freedom (``> 0``).
        pooled_var: `(k,)` or scalar pooled within-set variance to use instead of the one
            estimated from these replicates (e.g. :attr:`SummaryMap.within_var`); ``NaN``
            entries are estimated from the replicates. Needed when no set has two replicates.

    Returns:
        The :class:`SetStatistics`.

    Raises:
        ValueError: Bad shapes, ``prior_df <= 0``, or no replicates and no ``pooled_var``.
    """
    if not prior_df > 0:
        raise ValueError(f"prior_df must be > 0, got {prior_df!r}")
    S = _as_2d(summaries, "summaries")
    labels, inverse = _group_index(groups, S.shape[0])
    G, k = labels.shape[0], S.shape[1]
    counts = np.bincount(inverse, minlength=G).astype(np.float64)
    sums = np.zeros((G, k))
    np.add.at(sums, inverse, S)
    means = sums / counts[:, None]
    sq = np.zeros((G, k))
    np.add.at(sq, inverse, (S - means[inverse]) ** 2)
    df_g = counts - 1.0
    df_total = int(df_g.sum())
    estimate = sq.sum(axis=0) / df_total if df_total > 0 else np.full(k, np.nan)
    if pooled_var is None:
        pooled, pooled_df = estimate, df_total
    else:
        given = np.broadcast_to(np.asarray(pooled_var, dtype=np.float64), (k,)).copy()
        if np.any(np.isinf(given)) or np.any(given < 0):
            raise ValueError(f"pooled_var must be finite (or NaN) and >= 0, got {pooled_var!r}")
        pooled = np.where(np.isnan(given), estimate, given)
        pooled_df = df_total if np.isnan(given).any() else 0
    if np.isnan(pooled).any():
        raise ValueError(
            "no set has two replicates and no pooled_var was given for every summary "
            "(e.g. SummaryMap.within_var of a map fitted on replicates)"
        )
    shrunk = (sq + prior_df * pooled[None, :]) / (df_g[:, None] + prior_df)
    return SetStatistics(
        labels=labels,
        counts=counts.astype(np.int64),
        means=means,
        mean_var=shrunk / counts[:, None],
        pooled_var=pooled,
        pooled_df=pooled_df,
    )
