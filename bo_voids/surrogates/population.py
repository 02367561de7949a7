"""Population parameters ψ fitted through the composite surrogate: no new simulation per ψ.

Real images come from a process with variation, so the answer to "which settings reproduce
them?" is a distribution ``p_ψ`` of parameters, in the config's ``param_distributions`` form:
for every categorical parameter its probabilities, for every numeric one a mean and a standard
deviation of a normal clipped to the bounds (what :meth:`~bo_voids.space.SearchSpace.sample`
draws).

**Model.** An image's summary vector ``s`` (the composite surrogate's summaries) given its
parameters is ``s = f(θ) + ε`` with ``f`` the surrogate's per-set mean and ``ε ~ N(0, Σ_w)`` the
pooled within-set (render) scatter. A target cluster is ``r`` renders of one ``θ ~ p_ψ`` (``r = 1``
for a folder of real images), so its mean summary is approximately
``N(μ(ψ), B(ψ) + Σ_w / r)`` with ``μ(ψ) = E_ψ[f(θ)]`` and ``B(ψ) = Cov_ψ[f(θ)]``: a Gaussian
synthetic likelihood (Wood 2010; Price et al. 2018) whose moments come from the emulator instead
of fresh simulations. The expectations are exact sums over the categorical combinations and
quasi-Monte-Carlo averages (fixed scrambled-Sobol normal draws, reparameterised
``θ = clip(m + s·z)``) over the numeric parameters, so the likelihood is a smooth, deterministic
function of ψ and is maximised by L-BFGS-B with autograd gradients. Integer parameters are
relaxed to the real line inside the expectation (the surrogate interpolates between integers;
the sampler's rounding adds a variance of 1/12, negligible against any real spread).

**Prior.** Uniform on the probability simplex, on the bounds for each mean and on
``[STD_MIN, STD_MAX]`` × range for each std (the Jacobians of the unconstrained coordinates make
it a proper log-density there); the reported ψ is the posterior mode.

**Emulator uncertainty in the likelihood.** The posterior mean of a GP is smoother than the
function it models, so a population seen through it alone looks too narrow for the targets'
scatter and ψ's stds come out too wide (worst early in a run). The predictive covariance of a
cluster mean therefore adds the surrogate's posterior variance of ``f`` averaged under ``p_ψ``:
``B(ψ) + E_ψ[Var f(θ)] + Σ_w / r``.

**Uncertainty.** Two sources, combined as a mixture: the finite number of target clusters (a
Laplace approximation, the inverse Hessian of the negative log posterior in the unconstrained
coordinates) and the surrogate's own uncertainty (``f`` replaced by posterior sample paths of
:meth:`~bo_voids.surrogates.composite.CompositeSurrogate.function_samples`, ψ refitted for each).
Draws of ψ from every path's Laplace Gaussian give the reported quantile intervals.

Example:
    >>> model = PopulationModel(space, surrogate.mean_function(), within_cov)  # doctest: +SKIP
    >>> fit = fit_population(model, cluster_means, cluster_sizes)  # doctest: +SKIP
    >>> fit.psi.to_distribution()["void_count"]  # doctest: +SKIP
    {'mean': 8.1, 'std': 2.7}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import OptimizeResult, minimize
from scipy.stats import norm, qmc
from torch import Tensor

from bo_voids._types import Labels
from bo_voids.config import CategoricalDistribution, NormalDistribution
from bo_voids.space import ParamMapping, SearchSpace
from bo_voids.statistics.intervals import dirichlet_weights, one_step_bootstrap
from bo_voids.summaries import set_means, within_covariance

__all__ = [
    "INTERVAL_METHODS",
    "STD_MAX",
    "STD_MIN",
    "PopulationFit",
    "PopulationModel",
    "PopulationParameters",
    "cluster_means",
    "fit_population",
    "pooled_within_covariance",
    "population_intervals",
    "starts_from_sets",
]

_DTYPE = torch.float64
#: How :func:`population_intervals` spreads its draws around each mode.
INTERVAL_METHODS: tuple[str, ...] = ("laplace", "bootstrap")
#: Smallest and largest std of ψ, as fractions of each numeric parameter's range.
STD_MIN = 0.005
STD_MAX = 0.5
#: Ridge added to every cluster-mean covariance (relative to its mean diagonal).
_JITTER = 1e-6


@dataclass(frozen=True)
class PopulationParameters:
    """ψ: probabilities of every categorical parameter, mean and std of every numeric one.

    Attributes:
        probabilities: ``{categorical name: {choice: p}}``.
        means: ``{numeric name: mean}`` (raw units, inside the bounds).
        stds: ``{numeric name: std}`` (raw units).
    """

    probabilities: dict[str, dict[str, float]]
    means: dict[str, float]
    stds: dict[str, float]

    def to_distribution(self, decimals: int = 6) -> dict[str, dict[str, float]]:
        """The config's ``param_distributions`` form (probabilities summing to 1 exactly).

        Args:
            decimals: Decimal places kept.
        """
        out: dict[str, dict[str, float]] = {}
        for name, probs in self.probabilities.items():
            rounded = {k: round(float(v), decimals) for k, v in probs.items()}
            top = max(rounded, key=rounded.__getitem__)
            rounded[top] = round(rounded[top] + 1.0 - sum(rounded.values()), decimals)
            out[name] = rounded
        for name in self.means:
            out[name] = {
                "mean": round(float(self.means[name]), decimals),
                "std": round(float(self.stds[name]), decimals),
            }
        return out

    @classmethod
    def from_distribution(
        cls, distribution: Mapping[str, object], space: SearchSpace
    ) -> PopulationParameters:
        """Read the config form (``{name: {choice: p}}`` / ``{name: {"mean", "std"}}``).

        Raises:
            ValueError: A parameter of ``space`` is missing or malformed.
        """
        probs: dict[str, dict[str, float]] = {}
        means: dict[str, float] = {}
        stds: dict[str, float] = {}
        for p in space.parameters:
            entry = distribution.get(p.name)
            if not isinstance(entry, Mapping):
                raise ValueError(f"distribution has no entry for {p.name!r}")
            try:
                if p.kind == "categorical":
                    probs[p.name] = {c: float(entry.get(c, 0.0)) for c in p.choices}
                else:
                    means[p.name] = float(entry["mean"])
                    stds[p.name] = float(entry["std"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"malformed distribution entry for {p.name!r}: {exc}") from exc
        return cls(probs, means, stds)

    def to_typed(self) -> dict[str, CategoricalDistribution | NormalDistribution]:
        """Typed distributions, for :meth:`~bo_voids.space.SearchSpace.sample`."""
        out: dict[str, CategoricalDistribution | NormalDistribution] = {
            n: CategoricalDistribution(dict(p)) for n, p in self.probabilities.items()
        }
        for n in self.means:
            out[n] = NormalDistribution(float(self.means[n]), float(self.stds[n]))
        return out

    def flat(self) -> dict[str, float]:
        """Every component as ``"name.choice"``, ``"name.mean"``, ``"name.std"`` → value."""
        out = {
            f"{n}.{c}": float(p)
            for n, probs in self.probabilities.items()
            for c, p in probs.items()
        }
        for n in self.means:
            out[f"{n}.mean"] = float(self.means[n])
            out[f"{n}.std"] = float(self.stds[n])
        return out


@dataclass(frozen=True)
class _Numeric:
    name: str
    column: int  # feature column
    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class _Categorical:
    name: str
    start: int  # first one-hot feature column
    choices: tuple[str, ...]


class PopulationModel:
    """Moments of the summaries of a population ``p_ψ``, through a surrogate of ``f``.

    Args:
        space: The :class:`~bo_voids.space.SearchSpace` (its parameter order fixes the feature
            layout of :class:`~bo_voids.surrogates.composite.FeatureEncoder`).
        mean_fn: ``f``: `(n, d_f)` features → `(n, k)` per-set mean summaries (differentiable),
            e.g. :meth:`CompositeSurrogate.mean_function` or one of its ``function_samples``.
        within_cov: `(k, k)` pooled within-set covariance ``Σ_w`` of single-image summaries.
        n_draws: Quasi-Monte-Carlo draws of the numeric parameters per categorical combination.
        seed: Seed of the scrambled Sobol draws.
        var_fn: The emulator's posterior variance of ``f`` (features → `(n, k)`); its average
            under ``p_ψ`` is added to the between-set covariance, so a target cluster the
            emulator cannot place is not read as population spread.
        discrepancy: `(k,)` variance of an error of ``f`` *shared by every target cluster*
            (model discrepancy: the emulator's systematic error near the population, or what
            the generator cannot reproduce). Unlike ``var_fn`` it does not average away over
            the clusters, so it keeps ψ's uncertainty from shrinking below what ``f``'s own
            error allows (see :meth:`log_likelihood`). ``None``: no such term.

    Raises:
        ValueError: Bad shapes or options.
    """

    def __init__(
        self,
        space: SearchSpace,
        mean_fn: Callable[[Tensor], Tensor],
        within_cov: ArrayLike,
        *,
        n_draws: int = 128,
        seed: int = 0,
        var_fn: Callable[[Tensor], Tensor] | None = None,
        discrepancy: ArrayLike | None = None,
    ) -> None:
        if int(n_draws) < 2:
            raise ValueError(f"n_draws must be >= 2, got {n_draws!r}")
        self.space = space
        self.mean_fn = mean_fn
        self.var_fn = var_fn
        numeric, categorical, start = [], [], 0
        for p in space.parameters:
            if p.kind == "categorical":
                categorical.append(_Categorical(p.name, start, tuple(p.choices)))
                start += len(p.choices)
            else:
                numeric.append(_Numeric(p.name, start, float(p.low), float(p.high)))
                start += 1
        self.numeric: tuple[_Numeric, ...] = tuple(numeric)
        self.categorical: tuple[_Categorical, ...] = tuple(categorical)
        self.d_features = start
        W = np.asarray(within_cov, dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise ValueError(f"within_cov must be a square (k, k) matrix, got {W.shape}")
        self.within = torch.as_tensor(0.5 * (W + W.T), dtype=_DTYPE)
        self.k = W.shape[0]
        self.discrepancy: Tensor | None = None
        if discrepancy is not None:
            d = np.asarray(discrepancy, dtype=np.float64)
            if d.shape != (self.k,) or not np.all(np.isfinite(d)) or np.any(d < 0):
                raise ValueError(f"discrepancy must be ({self.k},) finite and >= 0, got {d}")
            self.discrepancy = torch.as_tensor(d, dtype=_DTYPE)
        n_num = len(self.numeric)
        if n_num:
            sobol = qmc.Sobol(n_num, scramble=True, seed=np.random.default_rng(seed))
            u = sobol.random(int(n_draws))
            z = norm.ppf(np.clip(u, 1e-9, 1 - 1e-9))
        else:
            z = np.zeros((1, 0))
        self.z = torch.as_tensor(z, dtype=_DTYPE)  # (M, n_num)
        levels = [range(len(c.choices)) for c in self.categorical]
        self.combos = list(itertools.product(*levels))  # every categorical combination
        onehot = torch.zeros(len(self.combos), self.d_features, dtype=_DTYPE)
        for i, combo in enumerate(self.combos):
            for c, level in zip(self.categorical, combo, strict=True):
                onehot[i, c.start + level] = 1.0
        self._onehot = onehot  # (C, d_f)
        self.dim = sum(len(c.choices) - 1 for c in self.categorical) + 2 * n_num

    # ---- coordinates ---------------------------------------------------------------------------

    def unpack(self, u: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Unconstrained coordinates → (probabilities per categorical, means, stds) tensors."""
        probs, i = [], 0
        for c in self.categorical:
            n = len(c.choices) - 1
            logits = torch.cat([u.new_zeros(1), u[i : i + n]])
            probs.append(torch.softmax(logits, 0))
            i += n
        n_num = len(self.numeric)
        a, b = u[i : i + n_num], u[i + n_num : i + 2 * n_num]
        low = u.new_tensor([p.low for p in self.numeric])
        span = u.new_tensor([p.span for p in self.numeric])
        means = low + span * torch.sigmoid(a)
        stds = span * (STD_MIN + (STD_MAX - STD_MIN) * torch.sigmoid(b))
        return probs, means, stds

    def pack(self, psi: PopulationParameters) -> np.ndarray:
        """ψ → unconstrained coordinates (probabilities, means and stds clipped into range)."""
        out: list[float] = []
        for c in self.categorical:
            p = np.array(
                [max(1e-6, float(psi.probabilities[c.name].get(x, 0.0))) for x in c.choices]
            )
            p = p / p.sum()
            out += list(np.log(p[1:] / p[0]))
        a, b = [], []
        for n in self.numeric:
            frac = (float(psi.means[n.name]) - n.low) / n.span if n.span > 0 else 0.5
            a.append(_logit(frac))
            s = float(psi.stds[n.name]) / n.span if n.span > 0 else STD_MIN
            b.append(_logit((s - STD_MIN) / (STD_MAX - STD_MIN)))
        return np.asarray(out + a + b, dtype=np.float64)

    def parameters(self, u: ArrayLike) -> PopulationParameters:
        """Unconstrained coordinates → :class:`PopulationParameters`."""
        with torch.no_grad():
            probs, means, stds = self.unpack(torch.as_tensor(np.asarray(u), dtype=_DTYPE))
        return PopulationParameters(
            probabilities={
                c.name: {x: float(v) for x, v in zip(c.choices, p.tolist(), strict=True)}
                for c, p in zip(self.categorical, probs, strict=True)
            },
            means={n.name: float(v) for n, v in zip(self.numeric, means.tolist(), strict=True)},
            stds={n.name: float(v) for n, v in zip(self.numeric, stds.tolist(), strict=True)},
        )

    def log_prior(self, u: Tensor) -> Tensor:
        """Uniform priors on the simplex, the mean bounds and the std range (in ``u``)."""
        probs, _, _ = self.unpack(u)
        lp = sum((torch.log(p).sum() for p in probs), u.new_zeros(()))
        i = sum(len(c.choices) - 1 for c in self.categorical)
        ab = u[i:]
        return lp + (torch.nn.functional.logsigmoid(ab) + torch.nn.functional.logsigmoid(-ab)).sum()

    # ---- moments -------------------------------------------------------------------------------

    def features(self, means: Tensor, stds: Tensor) -> Tensor:
        """`(C, M, d_f)` features of the fixed draws under (``means``, ``stds``)."""
        C, M = len(self.combos), self.z.shape[0]
        X = self._onehot[:, None, :].expand(C, M, self.d_features).clone()
        if self.numeric:
            low = means.new_tensor([p.low for p in self.numeric])
            high = means.new_tensor([p.high for p in self.numeric])
            theta = torch.minimum(torch.maximum(means + stds * self.z, low), high)  # (M, n)
            frac = (theta - low) / (high - low).clamp_min(1e-12)
            for j, p in enumerate(self.numeric):
                X[:, :, p.column] = frac[:, j]
        return X

    def combo_weights(self, probs: Sequence[Tensor]) -> Tensor:
        """`(C,)` probability of each categorical combination (independent parameters)."""
        w = []
        for combo in self.combos:
            v = probs[0].new_ones(()) if probs else torch.ones((), dtype=_DTYPE)
            for p, level in zip(probs, combo, strict=True):
                v = v * p[level]
            w.append(v)
        return torch.stack(w)

    def moments(
        self, u: Tensor, mean_fn: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Population mean `(k,)` and between-set covariance `(k, k)` of ``f`` under ``p_ψ``."""
        fn = mean_fn or self.mean_fn
        probs, means, stds = self.unpack(u)
        X = self.features(means, stds)
        C, M, d = X.shape
        flat = X.reshape(C * M, d)
        F = fn(flat).reshape(C, M, -1)
        w = self.combo_weights(probs)  # (C,)
        mu = (w[:, None] * F.mean(1)).sum(0)
        D = F - mu
        B = torch.einsum("c,cmi,cmj->ij", w, D, D) / M
        if self.var_fn is not None:
            # the emulator's own uncertainty at each θ widens the spread of new cluster means
            # (kept under a sample path too: the paths revert to the mean between anchors, so
            # dropping it there would shift every path's mode; the intervals err on the wide side)
            V = self.var_fn(flat).reshape(C, M, -1)
            B = B + torch.diag((w[:, None] * V.mean(1)).sum(0))
        return mu, B

    def log_likelihood(
        self,
        u: Tensor,
        means: Tensor,
        sizes: Tensor,
        weights: Tensor | None = None,
        mean_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Gaussian synthetic log-likelihood of the target cluster means.

        Args:
            u: Unconstrained ψ.
            means: `(n, k)` target cluster mean summaries.
            sizes: `(n,)` renders per cluster.
            weights: `(n,)` cluster weights (default 1 each).
            mean_fn: ``f`` to use instead of the model's.
        """
        mu, B = self.moments(u, mean_fn)
        total = u.new_zeros(())
        w = torch.ones_like(sizes) if weights is None else weights
        scale = float(torch.diagonal(self.within).mean())
        eye = torch.eye(self.k, dtype=_DTYPE)
        precision = torch.zeros_like(B)
        weighted = torch.zeros_like(mu)
        for r in torch.unique(sizes):
            sel = sizes == r
            cov = B + self.within / r + _JITTER * scale * eye
            dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
            total = total + (w[sel] * dist.log_prob(means[sel])).sum()
            if self.discrepancy is not None:
                inv = torch.linalg.inv(cov)
                precision = precision + w[sel].sum() * inv
                weighted = weighted + inv @ (w[sel, None] * means[sel]).sum(0)
        if self.discrepancy is not None:
            # a shift δ ~ N(0, D) shared by every cluster: integrating it out replaces the
            # precision-weighted mean's N(ȳ; μ, V) factor by N(ȳ; μ, V + D), exactly
            V = torch.linalg.inv(precision)
            V = 0.5 * (V + V.T)
            y_bar = V @ weighted
            alone = torch.distributions.MultivariateNormal(mu, covariance_matrix=V)
            shared = torch.distributions.MultivariateNormal(
                mu, covariance_matrix=V + torch.diag(self.discrepancy)
            )
            total = total - alone.log_prob(y_bar) + shared.log_prob(y_bar)
        return total


@dataclass
class PopulationFit:
    """A fitted ψ and what its uncertainty needs.

    Attributes:
        psi: The posterior mode.
        u: Its unconstrained coordinates.
        log_posterior: Log posterior (synthetic likelihood + prior) at the mode.
        log_likelihood: The synthetic log-likelihood there.
        n_clusters: Target clusters fitted.
        converged: Whether L-BFGS-B reported convergence at the mode.
        n_starts: Starting points tried.
        hessian: Hessian of the negative log posterior in ``u`` (``None`` until computed).
        intervals: Quantile intervals (``None`` until :func:`population_intervals`).
        draws: `(n, dim)` ψ draws in ``u`` coordinates behind the intervals.
        info: Other figures (fit evaluations, seconds, ...).
    """

    psi: PopulationParameters
    u: np.ndarray
    log_posterior: float
    log_likelihood: float
    n_clusters: int
    converged: bool
    n_starts: int
    hessian: np.ndarray | None = None
    intervals: dict[str, dict[str, list[float]]] | None = None
    draws: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def cluster_means(summaries: ArrayLike, groups: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Mean summary and size of every target cluster.

    Args:
        summaries: `(N, k)` summaries of the target images.
        groups: `(N,)` cluster label of each image (a unique label per image for an iid folder).

    Returns:
        `(n, k)` means and `(n,)` sizes, clusters in the order of ``np.unique(groups)``.
    """
    _, sizes = np.unique(np.asarray(groups), return_counts=True)
    return set_means(summaries, groups), sizes.astype(np.float64)


def pooled_within_covariance(summaries: ArrayLike, groups: Labels) -> np.ndarray:
    """Pooled within-set covariance `(k, k)` of single-image summaries (sets of ≥ 2 images).

    Raises:
        ValueError: No set has two images.
    """
    cov, df = within_covariance(summaries, groups)
    if df == 0:
        raise ValueError("no set has two images: the within-set covariance is unknown")
    return cov


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _objective(
    model: PopulationModel,
    means: Tensor,
    sizes: Tensor,
    weights: Tensor | None,
    mean_fn: Callable[[Tensor], Tensor] | None,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        u = torch.as_tensor(x, dtype=_DTYPE).requires_grad_(True)
        loss = -(model.log_likelihood(u, means, sizes, weights, mean_fn) + model.log_prior(u))
        (g,) = torch.autograd.grad(loss, u)
        value = float(loss.detach())
        if not math.isfinite(value):
            return 1e12, np.zeros_like(x)
        return value, g.detach().numpy().astype(np.float64)

    return f


def _minimise(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, maxiter: int
) -> OptimizeResult:
    return minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-12.0, 12.0)] * x0.size,
        # a log posterior of a few hundred nats: 1e-8 relative is far below its MC error
        options={"maxiter": int(maxiter), "ftol": 1e-8, "gtol": 1e-5},
    )


def fit_population(
    model: PopulationModel,
    means: ArrayLike,
    sizes: ArrayLike,
    *,
    starts: Sequence[PopulationParameters] = (),
    default_start: bool = True,
    weights: ArrayLike | None = None,
    maxiter: int = 200,
    threads: int = 1,
) -> PopulationFit:
    """Posterior mode of ψ under the synthetic likelihood of the target cluster means.

    Args:
        model: The :class:`PopulationModel`.
        means: `(n, k)` target cluster mean summaries (:func:`cluster_means`).
        sizes: `(n,)` renders per target cluster.
        starts: Starting ψs (e.g. the spread of the best observed sets, an earlier fit).
        default_start: Also start from the centre of the bounds with a wide spread and uniform
            probabilities (always done when ``starts`` is empty).
        weights: `(n,)` cluster weights (default 1).
        maxiter: L-BFGS-B iterations per start.
        threads: Torch intra-op threads while fitting.

    Returns:
        The :class:`PopulationFit` of the best start.

    Raises:
        ValueError: Shapes that do not match the model.
    """
    M = torch.as_tensor(np.asarray(means, dtype=np.float64))
    R = torch.as_tensor(np.asarray(sizes, dtype=np.float64))
    if M.ndim != 2 or M.shape[1] != model.k or R.shape != (M.shape[0],):
        raise ValueError(
            f"means must be (n, {model.k}) and sizes (n,), got {tuple(M.shape)}, {tuple(R.shape)}"
        )
    Wt = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
    x0s = [model.pack(p) for p in starts]
    if default_start or not x0s:
        x0s.append(_default_start(model))
    fun = _objective(model, M, R, Wt, None)
    best = None
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        for x0 in x0s:
            res = _minimise(fun, x0, maxiter)
            if best is None or res.fun < best.fun:
                best = res
    finally:
        torch.set_num_threads(previous)
    assert best is not None
    u = np.asarray(best.x, dtype=np.float64)
    with torch.no_grad():
        ut = torch.as_tensor(u, dtype=_DTYPE)
        ll = float(model.log_likelihood(ut, M, R, Wt))
    return PopulationFit(
        psi=model.parameters(u),
        u=u,
        log_posterior=-float(best.fun),
        log_likelihood=ll,
        n_clusters=int(M.shape[0]),
        converged=bool(best.success),
        n_starts=len(x0s),
        info={"n_evaluations": int(best.nfev)},
    )


def _default_start(model: PopulationModel) -> np.ndarray:
    psi = PopulationParameters(
        probabilities={
            c.name: {x: 1.0 / len(c.choices) for x in c.choices} for c in model.categorical
        },
        means={n.name: 0.5 * (n.low + n.high) for n in model.numeric},
        stds={n.name: 0.2 * n.span for n in model.numeric},
    )
    return model.pack(psi)


def _hessian(fun_t: Callable[[Tensor], Tensor], u: np.ndarray) -> np.ndarray:
    ut = torch.as_tensor(u, dtype=_DTYPE)
    H = torch.autograd.functional.hessian(fun_t, ut).detach().numpy()
    return 0.5 * (H + H.T)


def _newton_mode(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    u0: np.ndarray,
    cov: np.ndarray,
    steps: int,
    max_step: float = 2.0,
) -> np.ndarray:
    """Steps ``u ← u - H⁻¹ ∇`` from ``u0`` (each step capped at ``max_step`` in ``u``)."""
    u = np.asarray(u0, dtype=np.float64).copy()
    for _ in range(int(steps)):
        _, g = fun(u)
        step = cov @ g
        norm_ = float(np.max(np.abs(step)))
        if norm_ > max_step:
            step *= max_step / norm_
        u = np.clip(u - step, -12.0, 12.0)
    return u


def _cluster_scores(model: PopulationModel, u: np.ndarray, M: Tensor, R: Tensor) -> np.ndarray:
    """`(n, dim)` gradient of each target cluster's log-likelihood at ``u``."""
    out = []
    for c in range(M.shape[0]):
        w = torch.zeros(M.shape[0], dtype=_DTYPE)
        w[c] = 1.0
        ut = torch.as_tensor(u, dtype=_DTYPE).requires_grad_(True)
        (g,) = torch.autograd.grad(model.log_likelihood(ut, M, R, w), ut)
        out.append(g.detach().numpy().astype(np.float64))
    return np.stack(out)


def population_intervals(
    model: PopulationModel,
    fit: PopulationFit,
    means: ArrayLike,
    sizes: ArrayLike,
    *,
    paths: Sequence[Callable[[Tensor], Tensor]] = (),
    n_draws: int = 400,
    level: float = 0.9,
    seed: int = 0,
    newton_steps: int = 2,
    threads: int = 1,
    method: str = "laplace",
) -> PopulationFit:
    """Quantile intervals of ψ around the mode of each surrogate sample path.

    Every path in ``paths`` (posterior sample paths of ``f``; none: the posterior mean only)
    gets its own mode, found by ``newton_steps`` quasi-Newton steps from the fitted mode with
    the fitted mode's Hessian ``H`` (a path moves the mode little, so a full refit per path is
    not needed: each step costs one gradient); the draws are Gaussian around each mode with
    the covariance ``H⁻¹`` (eigenvalues floored so it is positive definite), mapped back to ψ
    (``method="laplace"``), or shifted by a Bayesian bootstrap over the target clusters
    (``method="bootstrap"``: one Newton step of the refit under Dirichlet weights,
    :func:`~bo_voids.statistics.intervals.one_step_bootstrap`, whose spread is the sandwich
    ``H⁻¹ J H⁻¹`` and so holds when the synthetic likelihood is misspecified too). The interval
    of each component is the central ``level`` quantile range of the draws.

    Args:
        model: The :class:`PopulationModel` of ``fit``.
        fit: From :func:`fit_population`; updated in place and returned.
        means: `(n, k)` target cluster means (as fitted).
        sizes: `(n,)` renders per cluster.
        paths: Surrogate sample paths.
        n_draws: ψ draws in all.
        level: Central probability of each interval.
        seed: Seed of the draws.
        newton_steps: Quasi-Newton steps of each path's mode.
        threads: Torch intra-op threads.
        method: ``"laplace"`` or ``"bootstrap"`` (see above).

    Returns:
        ``fit`` with ``hessian``, ``intervals``, ``draws`` and ``info["path_modes"]`` set.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if method not in INTERVAL_METHODS:
        raise ValueError(f"method must be one of {INTERVAL_METHODS}, got {method!r}")
    M = torch.as_tensor(np.asarray(means, dtype=np.float64))
    R = torch.as_tensor(np.asarray(sizes, dtype=np.float64))
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:

        def neg_log_post(u: Tensor) -> Tensor:
            return -(model.log_likelihood(u, M, R) + model.log_prior(u))

        H = _hessian(neg_log_post, fit.u)
        evals, evecs = np.linalg.eigh(H)
        floor = max(1e-6, 1e-6 * float(np.max(np.abs(evals))))
        cov = (evecs / np.maximum(evals, floor)) @ evecs.T
        modes = [fit.u]
        for fn in paths:
            modes.append(_newton_mode(_objective(model, M, R, None, fn), fit.u, cov, newton_steps))
        scores = _cluster_scores(model, fit.u, M, R) if method == "bootstrap" else None
    finally:
        torch.set_num_threads(previous)
    gen = np.random.default_rng(seed)
    per = max(1, int(n_draws) // len(modes))
    if scores is None:
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(cov.shape[0]))
        noise = [gen.standard_normal((per, fit.u.size)) @ chol.T for _ in modes]
    else:
        n = scores.shape[0]
        noise = [
            one_step_bootstrap(scores, cov, dirichlet_weights(n, per, int(gen.integers(2**62))))
            for _ in modes
        ]
    draws = np.concatenate([m + z for m, z in zip(modes, noise, strict=True)]).clip(-12.0, 12.0)
    flat = np.array([list(model.parameters(d).flat().values()) for d in draws])
    keys = list(fit.psi.flat())
    lo, hi = np.quantile(flat, [(1 - level) / 2, (1 + level) / 2], axis=0)
    intervals: dict[str, dict[str, list[float]]] = {}
    for key, a, b in zip(keys, lo, hi, strict=True):
        name, part = key.split(".", 1)
        intervals.setdefault(name, {})[part] = [float(a), float(b)]
    fit.hessian = H
    fit.intervals = intervals
    fit.draws = draws
    fit.info.update(
        interval_method=method,
        level=float(level),
        n_paths=len(paths),
        path_modes=[model.parameters(m).to_distribution() for m in modes[1:]],
        n_interval_draws=int(draws.shape[0]),
    )
    return fit


def starts_from_sets(
    space: SearchSpace, params: Sequence[ParamMapping], min_std: float = 0.05
) -> PopulationParameters:
    """A starting ψ from observed parameter sets: their frequencies, means and stds.

    Args:
        space: The search space.
        params: Parameter sets (e.g. the best-ranked observed sets).
        min_std: Smallest std, as a fraction of each range.
    """
    probs, means, stds = {}, {}, {}
    for p in space.parameters:
        values = [s[p.name] for s in params]
        if p.kind == "categorical":
            counts = {c: 0.5 + sum(v == c for v in values) for c in p.choices}
            total = sum(counts.values())
            probs[p.name] = {c: v / total for c, v in counts.items()}
        else:
            x = np.asarray(values, dtype=np.float64)
            span = float(p.high) - float(p.low)
            means[p.name] = float(np.clip(x.mean(), p.low, p.high))
            stds[p.name] = float(max(x.std(ddof=1) if x.size > 1 else 0.0, min_std * span))
    return PopulationParameters(probs, means, stds)
