"""The composite surrogate's posterior and objective.

The posterior is computed directly from the fitted GP's hyper-parameters; the objective is the
expected summary distance to the targets.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from botorch.acquisition import (
    AcquisitionFunction,
)
from botorch.acquisition.objective import PosteriorTransform
from botorch.exceptions import UnsupportedError
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors import GPyTorchPosterior
from botorch.utils.transforms import t_batch_mode_transform
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from linear_operator.operators import DenseLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

__all__ = ["ExactPosterior", "ExpectedObjective", "distance_moments"]


# ---------------------------------------------------------------------------------------------
# Posterior
# ---------------------------------------------------------------------------------------------


class ExactPosterior(Model):
    """The fitted batched GP's posterior, computed directly from its hyper-parameters.

    GPyTorch multiplies the ``(t, k, q, n)`` test-train covariance by the ``(k, n, n)`` cached
    root through broadcasting, which materialises a copy of the cache per ``t``-batch (about
    2 s per 64 candidate batches at ``n = 1000``, ``k = 8``). Here one Cholesky factor per
    output is solved against all test points at once, and with shared lengthscales the kernel
    rows are computed once for all outputs. The result is the same Gaussian posterior (tests
    compare it with ``SingleTaskGP.posterior``), returned as BoTorch's ``GPyTorchPosterior``
    over `(q, k)` with independent outputs.

    :meth:`restrict_covariance` conditions the covariance on a subset of the training points
    (the mean still uses all of them): a conditional on fewer points is a valid posterior, only
    wider, and keeps an evaluation ``O(m²)`` per test point instead of ``O(n²)``.
    """

    # buffers (register_buffer), declared for the type checker
    Z: Tensor
    ls: Tensor
    scale: Tensor
    const: Tensor
    y_mean: Tensor
    y_std: Tensor
    alpha: Tensor
    noise: Tensor
    L: Tensor
    Zc: Tensor
    Lc: Tensor

    def __init__(self, gp: SingleTaskGP, Z: Tensor) -> None:
        super().__init__()
        k = gp.num_outputs
        n = Z.shape[0]
        with torch.no_grad():
            lik = gp.likelihood
            noise = lik.noise_covar.noise.reshape(k, n)
            if getattr(lik, "second_noise_covar", None) is not None:
                noise = noise + lik.second_noise.reshape(k, 1)
            kern = gp.covar_module
            ls = kern.base_kernel.lengthscale
            shared = ls.numel() == Z.shape[-1]
            ls = ls.reshape(1, -1) if shared else ls.reshape(k, 1, -1)
            scale = kern.outputscale.reshape(k)
            const = gp.mean_module.constant.reshape(k)
            y = gp.train_targets.reshape(k, n)
            ot = cast(Standardize, gp.outcome_transform)
            self._k, self._shared = k, shared
            self.register_buffer("Z", Z)
            self.register_buffer("ls", ls.clone())
            self.register_buffer("scale", scale.clone())
            self.register_buffer("const", const.clone())
            self.register_buffer("y_mean", ot.means.reshape(k).clone())
            self.register_buffer("y_std", ot.stdvs.reshape(k).clone())
            K = self._kernel(Z, Z)  # (k, n, n)
            L = psd_safe_cholesky(K + torch.diag_embed(noise))
            alpha = torch.cholesky_solve((y - const[:, None]).unsqueeze(-1), L)
            self.register_buffer("alpha", alpha.squeeze(-1))  # (k, n)
            self.register_buffer("noise", noise.clone())
            self.register_buffer("L", L)
        self.restrict_covariance(None)

    def restrict_covariance(self, index: Tensor | None) -> None:
        """Condition the covariance on the training points ``index`` only (``None``: all)."""
        self._subset = index is not None
        if index is None:
            self.Zc, self.Lc = self.Z, self.L
            return
        with torch.no_grad():
            Zc = self.Z[index]
            self.Zc = Zc
            self.Lc = psd_safe_cholesky(
                self._kernel(Zc, Zc) + torch.diag_embed(self.noise[:, index])
            )

    @property
    def num_outputs(self) -> int:
        """Number of summary outputs."""
        return self._k

    @property
    def batch_shape(self) -> torch.Size:
        """No model batch dimension."""
        return torch.Size([])

    def _kernel(self, A: Tensor, B: Tensor) -> Tensor:
        """Scaled RBF kernel `(..., k, a, b)` between `(..., a, d)` and `(b, d)` points."""
        if self._shared:
            a, b = A / self.ls, B / self.ls
        else:
            a, b = A.unsqueeze(-3) / self.ls, B / self.ls
        sq = (
            (a * a).sum(-1, keepdim=True)
            + (b * b).sum(-1).unsqueeze(-2)
            - 2.0 * a @ b.transpose(-1, -2)
        )
        base = torch.exp(-0.5 * sq.clamp_min(0.0))
        if self._shared:
            base = base.unsqueeze(-3)
        return self.scale[:, None, None] * base

    def _kernel_self(self, A: Tensor) -> Tensor:
        """Kernel among the points of `(..., q, d)`, exact zero distance on the diagonal."""
        if self._shared:
            a = (A / self.ls).unsqueeze(-3)
        else:
            a = A.unsqueeze(-3) / self.ls
        diff = a.unsqueeze(-2) - a.unsqueeze(-3)
        return self.scale[:, None, None] * torch.exp(-0.5 * (diff * diff).sum(-1))

    def mean(self, X: Tensor) -> Tensor:
        """Posterior mean `(..., q, k)` in the original output units (no covariance)."""
        Ks = self._kernel(X, self.Z)
        mean = self.const[:, None] + (Ks * self.alpha[:, None, :]).sum(-1)
        return (self.y_mean[:, None] + self.y_std[:, None] * mean).transpose(-1, -2)

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean `(..., k, q)` and covariance `(..., k, q, q)` in the original output units."""
        batch = X.shape[:-2]
        q = X.shape[-2]
        Ks = self._kernel(X, self.Z)  # (..., k, q, n)
        mean = self.const[:, None] + (Ks * self.alpha[:, None, :]).sum(-1)
        Kc = self._kernel(X, self.Zc) if self._subset else Ks
        m = Kc.shape[-1]
        # (..., k, q, m) -> (k, m, B*q): one triangular solve per output for every test point.
        rhs = Kc.reshape(-1, self._k, q, m).permute(1, 3, 0, 2).reshape(self._k, m, -1)
        V = torch.linalg.solve_triangular(self.Lc, rhs, upper=False)
        V = V.reshape(self._k, m, -1, q).permute(2, 0, 1, 3)  # (B, k, m, q)
        cov = self._kernel_self(X).reshape(-1, self._k, q, q) - V.transpose(-1, -2) @ V
        cov = cov.reshape(*batch, self._k, q, q)
        std = self.y_std[:, None]
        return self.y_mean[:, None] + std * mean, (std * std)[..., None] * cov

    def cross_weights(self, A: Tensor, beta: Tensor) -> Tensor:
        """``γ = Lc⁻ᵀ Lc⁻¹ K(Zc, A) β`` `(..., k, m)` for anchor weights ``β`` `(..., k, a)`.

        With it ``Σ_a C(x, a) β_a = K(x, A) β - K(x, Zc) γ`` (posterior cross-covariance in
        standardised units), so a sample path costs two kernel evaluations per point.
        """
        KA = self._kernel(A, self.Zc)  # (k, a, m)
        v = (KA.transpose(-1, -2) @ beta.unsqueeze(-1)).squeeze(-1)  # (..., k, m)
        return torch.cholesky_solve(v.unsqueeze(-1), self.Lc).squeeze(-1)

    def posterior(
        self,
        X: Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | Tensor = False,
        posterior_transform: PosteriorTransform | None = None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """Joint posterior of the latent outputs at `(..., q, d_f)` features."""
        if output_indices is not None or observation_noise is not False:
            raise UnsupportedError("the composite posterior has no output subsets or noise")
        mean, cov = self.moments(X)
        # A linear operator, not a dense tensor: torch's MultivariateNormal would factorise a
        # dense covariance at once without jitter and fail on coincident points (a candidate
        # equal to a pending one); GPyTorch factorises lazily with jitter when sampling.
        if self._k == 1:  # like BoTorch: a single output is a plain MVN over the q points
            dist = MultivariateNormal(mean[..., 0, :], DenseLinearOperator(cov[..., 0, :, :]))
        else:
            mvn = MultivariateNormal(mean, DenseLinearOperator(cov))
            dist = MultitaskMultivariateNormal.from_batch_mvn(mvn, task_dim=-1)
        post = GPyTorchPosterior(dist)
        return post if posterior_transform is None else posterior_transform(post)


# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------


def distance_moments(mean: Tensor, var: Tensor, target: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``D = (f - t)ᵀ W (f - t)`` for independent Gaussian outputs.

    With ``f ~ N(μ, diag(v))`` and ``δ = μ - t``: ``E[D] = δᵀWδ + Σ_j W_jj v_j`` and
    ``Var[D] = 2 Σ_ij W_ij² v_i v_j + 4 Σ_j v_j (Wδ)_j²`` (the outputs of a batched multi-output
    GP are independent given its hyper-parameters).
    """
    delta = mean - target
    Wd = delta @ W
    e = (Wd * delta).sum(-1) + (var * torch.diagonal(W)).sum(-1)
    v = 2.0 * ((var @ (W * W)) * var).sum(-1) + 4.0 * (var * Wd * Wd).sum(-1)
    return e, v.clamp_min(0.0)


class ExpectedObjective(AcquisitionFunction):
    """Analytic posterior mean of ``-D`` at single points (``q = 1``), for polishing."""

    target: Tensor
    W: Tensor

    def __init__(self, model: Model, target: Tensor, W: Tensor) -> None:
        super().__init__(model=model)
        self.register_buffer("target", target)
        self.register_buffer("W", W)

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]
    def forward(self, X: Tensor) -> Tensor:
        """Minus the expected distance at each point of ``X``."""
        post = cast(GPyTorchPosterior, self.model.posterior(X))
        e, _ = distance_moments(
            post.mean.squeeze(-2), post.variance.squeeze(-2), self.target, self.W
        )
        return -e
