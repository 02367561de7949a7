"""Bayesian optimisation of the per-set MMD² with a BoTorch GP over the mixed space.

Model (fitted in ``float64`` on the CPU, from scratch at every call: the optimiser is stateless):

* inputs: the **raw** encoding of :meth:`~bo_voids.space.SearchSpace.to_raw` (category index,
  integer, continuous values); numeric columns scaled to ``[0, 1]`` by BoTorch's ``Normalize``
  with the space's fixed ``raw_bounds``; the category column is left as an index;
* outcome: ``y = -MMD²`` (BoTorch maximises), standardised by ``Standardize(m=1)``;
* surrogate ``"mixed"`` (default): ``MixedSingleTaskGP`` — a sum and a product of an RBF kernel
  on the numeric columns and a categorical (Hamming) kernel on the shape; ``"onehot"``: a
  ``SingleTaskGP`` (RBF, ARD, dimension-scaled priors) on the numeric columns plus a one-hot
  encoding of the shape
  (``NumericToCategoricalEncoding``), so both take the same raw inputs and share the acquisition
  optimiser;
* noise: each set's MMD² comes from a few replications and is noisy. ``"fixed+learned"``
  (default) uses the per-set variance from the replications (moderated jackknife, see
  :mod:`bo_voids.optimizers.base`) as a heteroskedastic *lower bound* and learns one extra
  homoskedastic noise on top (``FixedNoiseGaussianLikelihood(learn_additional_noise=True)``), which
  absorbs both an underestimated replication variance and model misfit; ``"fixed"`` uses the
  per-set variance alone; ``"learned"`` learns a homoskedastic noise whose lower bound is the
  median per-set variance;
* hyper-parameters: maximum marginal likelihood with L-BFGS-B capped at ``maxiter`` iterations
  (the uncapped ``MixedSingleTaskGP`` fit runs thousands of closures for no gain in likelihood),
  on a seeded subset of ``fit_subsample`` sets when the history is longer (the model is still
  conditioned on every set); no warm start, since it would make proposals depend on call history;
* speed (``benchmarks/results/proposal_speed.md``): one torch thread (small matrices; the cores
  are shared with rendering), 4 alternating steps instead of BoTorch's 64 (same acquisition
  value), and the ``nei`` baseline limited to the best ``nei_max_baseline`` sets.

Acquisition (on ``-MMD²``; ``q = batch_size``): ``"ucb"`` ``qUpperConfidenceBound(beta)``,
``"ei"`` ``qLogExpectedImprovement`` with ``best_f`` = the best posterior mean at the observed
sets (the raw minimum of a noisy score is a biased incumbent), ``"nei"``
``qLogNoisyExpectedImprovement(prune_baseline=True)``, ``"pi"``
``qProbabilityOfImprovement`` (same ``best_f`` as ``"ei"``). It is optimised over the mixed space
with ``optimize_acqf_mixed_alternating`` (the shape and the integer count kept discrete, the
continuous columns by L-BFGS-B), or with ``"enumerate"``: ``optimize_acqf_mixed`` over the three
shapes with the count relaxed and rounded.

Falls back to a scrambled Sobol batch — with a :class:`~bo_voids.exceptions.FallbackWarning` and
the reason in ``info['fallback']`` — below ``min_observations`` scored sets, for a constant
objective, or when fitting or optimising fails (``ModelFittingError``, ``NotPSDError``, linear
algebra errors, non-finite candidates).

Example:
    >>> opt = BoTorchOptimizer(space, seed=0, acquisition="nei")  # doctest: +SKIP
    >>> out = opt.recommend_next_batch(emb, meta, targets, batch_size=8)  # doctest: +SKIP
    >>> out["info"]["model"]  # doctest: +SKIP
    'MixedSingleTaskGP'
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
from botorch.acquisition import (
    AcquisitionFunction,
    qLogExpectedImprovement,
    qLogNoisyExpectedImprovement,
    qProbabilityOfImprovement,
    qUpperConfidenceBound,
)
from botorch.exceptions import CandidateGenerationError, ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.generation.gen import gen_candidates_scipy
from botorch.models import MixedSingleTaskGP, SingleTaskGP
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.transforms.input import (
    ChainedInputTransform,
    Normalize,
    NumericToCategoricalEncoding,
)
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf_mixed
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating
from gpytorch.constraints import GreaterThan
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.utils.errors import NanError, NotPSDError

from bo_voids.config import ACQUISITIONS, BOSettings, ExperimentConfig
from bo_voids.exceptions import ConfigError
from bo_voids.optimizers.base import BaseOptimizer, Proposal, ProposalRequest
from bo_voids.scoring import Observation
from bo_voids.seeding import derive_seed
from bo_voids.space import SearchSpace

#: Options of every GP optimiser that the ``bo:`` section also sets, with its defaults (one
#: place: :class:`~bo_voids.config.BOSettings` and the experiment's ``acquisition_function``).
GP_OPTIONS: dict[str, Any] = {
    "acquisition": ExperimentConfig.acquisition_function,
    "ucb_beta": BOSettings.ucb_beta,
    "maxiter": BOSettings.maxiter,
    "min_observations": BOSettings.min_observations,
}

logger = logging.getLogger(__name__)

#: Scalar surrogates of this optimiser (``bo.surrogate: composite`` is
#: :class:`~bo_voids.optimizers.composite_gp.CompositeGPOptimizer`).
SURROGATES: tuple[str, ...] = ("mixed", "onehot")
NOISE_MODELS: tuple[str, ...] = ("fixed+learned", "fixed", "learned")
ACQF_OPTIMIZERS: tuple[str, ...] = ("alternating", "enumerate", "joint")
#: Numerical failures of fitting or optimising that trigger the Sobol fallback; anything else
#: is a programming error and propagates.
RECOVERABLE: tuple[type[BaseException], ...] = (
    ModelFittingError,
    CandidateGenerationError,
    NotPSDError,
    NanError,
    torch.linalg.LinAlgError,
)


class BoTorchOptimizer(BaseOptimizer):
    """GP-based batch Bayesian optimisation of the per-set MMD² over the mixed space.

    Args:
        space: The search space.
        seed: Experiment seed.
        top_k: Number of sets in ``current_best``.
        acquisition: ``"ucb"``, ``"ei"``, ``"nei"`` or ``"pi"``.
        ucb_beta: ``beta`` of UCB (``mean + sqrt(beta) * std`` in BoTorch's q-form).
        surrogate: ``"mixed"`` (``MixedSingleTaskGP``) or ``"onehot"`` (``SingleTaskGP``).
        noise: ``"fixed+learned"``, ``"fixed"`` or ``"learned"`` (see the module docstring).
        num_restarts: Restarts of the acquisition optimiser.
        raw_samples: Raw samples to choose the restarts from.
        maxiter: L-BFGS-B iterations cap of the GP hyper-parameter fit.
        acqf_maxiter: Iteration cap of each continuous L-BFGS-B step of the acquisition optimiser.
        acqf_alternating_steps: Alternating (discrete / continuous) steps of
            ``optimize_acqf_mixed_alternating`` (BoTorch's default 64 costs 5-6x the time of 4 for
            the same acquisition value here; see the benchmark).
        acqf_optimizer: ``"alternating"`` (BoTorch's sequential-greedy mixed optimiser),
            ``"enumerate"`` (one optimisation per category) or ``"joint"`` (the whole batch in
            one L-BFGS-B run, each point's category fixed at its start; several times faster).
        fit_subsample: Above this many observations, hyper-parameters are fitted on a seeded
            random subset of this size (the model is still conditioned on all of them).
        nei_max_baseline: ``nei`` baseline: the observed sets with the best posterior means, at
            most this many (then pruned by BoTorch).
        torch_threads: Intra-op threads used while fitting and optimising (restored after). The
            matrices are small (``n <= ~1000``), so one thread avoids OpenMP overhead and is
            faster, markedly so when the cores are shared with rendering and embedding.
        min_observations: Scored sets needed before the GP is used (Sobol batches before).

    Raises:
        ConfigError: An invalid option.
    """

    name: ClassVar[str] = "botorch"
    default_options: ClassVar[dict[str, Any]] = {
        **GP_OPTIONS,
        "surrogate": "mixed",
        "noise": "fixed+learned",
        "num_restarts": BOSettings.num_restarts,
        "raw_samples": BOSettings.raw_samples,
        "acqf_maxiter": 8,
        "acqf_alternating_steps": 4,
        "acqf_optimizer": "alternating",
        "torch_threads": 1,
        "fit_subsample": 400,
        "nei_max_baseline": 128,
    }

    def __init__(
        self, space: SearchSpace, *, seed: int = 0, top_k: int = 5, **options: object
    ) -> None:
        super().__init__(space, seed=seed, top_k=top_k, **options)
        o = self.options
        for key, allowed in (
            ("acquisition", ACQUISITIONS),
            ("surrogate", SURROGATES),
            ("noise", NOISE_MODELS),
            ("acqf_optimizer", ACQF_OPTIMIZERS),
        ):
            if o[key] not in allowed:
                raise ConfigError(f"{key} must be one of {list(allowed)}, got {o[key]!r}")
        self._check_int_options(
            {
                "num_restarts": 1,
                "raw_samples": 1,
                "maxiter": 1,
                "acqf_maxiter": 1,
                "acqf_alternating_steps": 1,
                "torch_threads": 1,
                "fit_subsample": 10,
                "nei_max_baseline": 1,
                "min_observations": 2,
            }
        )
        beta = o["ucb_beta"]
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
            raise ConfigError(f"ucb_beta must be a number >= 0, got {beta!r}")
        if not space.categorical_dims:
            raise ConfigError("BoTorchOptimizer expects a space with a categorical column")

    # ---- proposal ------------------------------------------------------------------------------

    def _propose(self, request: ProposalRequest) -> Proposal:
        """Fit the GP and optimise the batch acquisition (or fall back to Sobol).

        Args:
            request: The observations, batch size, seed and warm state of this call.

        Returns:
            A :class:`~bo_voids.optimizers.base.Proposal`, ranked by the GP posterior mean.
        """
        observations, batch_size, seed = request.observations, request.batch_size, request.seed
        o = self.options
        info: dict[str, Any] = {
            "model": None,
            "surrogate": o["surrogate"],
            "noise": o["noise"],
            "acquisition": o["acquisition"],
            "acqf_optimizer": o["acqf_optimizer"],
            "fallback": None,
        }
        sets = list(observations.sets)
        n = len(sets)
        y = observations.mmd2
        if n < o["min_observations"]:
            return self.sobol_fallback(
                f"only {n} scored parameter sets (min_observations={o['min_observations']}); "
                "using a Sobol batch",
                batch_size,
                seed,
                info,
                warn=n > 0,
            )
        if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
            return self.sobol_fallback(
                "the objective is constant over the observations", batch_size, seed, info
            )
        failure: str | None = None
        with (
            torch.random.fork_rng(),
            _torch_threads(int(o["torch_threads"])),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            torch.manual_seed(seed)
            try:
                t0 = time.perf_counter()
                model = self.fit_model(sets)
                info["fit_seconds"] = time.perf_counter() - t0
                info["model"] = type(model).__name__
                t0 = time.perf_counter()
                X_train = self._train_X(sets)
                with torch.no_grad():
                    mean = model.posterior(X_train).mean.squeeze(-1)
                predicted = (-mean).numpy().astype(np.float64)
                acqf = self.build_acquisition(model, X_train, mean)
                cand, acq_value = self.optimize_acquisition(acqf, batch_size)
                info["propose_seconds"] = time.perf_counter() - t0
                info["acq_value"] = float(acq_value)
            except RECOVERABLE as exc:
                logger.warning("GP step failed; falling back to Sobol", exc_info=True)
                failure = f"GP fit/acquisition failed ({type(exc).__name__}: {exc})"
        # Outside catch_warnings, so that the FallbackWarning reaches the caller.
        _record_warnings(caught, info)
        if failure is not None:
            return self.sobol_fallback(failure, batch_size, seed, info)
        if not np.all(np.isfinite(cand)) or not np.all(np.isfinite(predicted)):
            return self.sobol_fallback(
                "non-finite candidates or predictions", batch_size, seed, info
            )
        params = tuple(self.space.from_raw(row) for row in cand)
        info["noise_learned"] = _learned_noise(model)
        return Proposal(
            next_params=params,
            predicted_mmd2={s.uid: float(v) for s, v in zip(sets, predicted, strict=True)},
            info=info,
        )

    # ---- building blocks (public so benchmarks can time them separately) ------------------------

    def fit_model(self, observations: Sequence[Observation]) -> GPyTorchModel:
        """Build and fit the surrogate of ``-MMD²`` on the observed sets.

        With more than ``fit_subsample`` observations the hyper-parameters are fitted on a seeded
        random subset of that size and copied into the model conditioned on all observations
        (the fit costs ``O(n³)`` per L-BFGS step; the posterior needs one ``O(n³)`` solve).

        Args:
            observations: Valid scored sets.

        Returns:
            The fitted model (``eval`` mode), in ``float64``.

        Raises:
            ModelFittingError: The marginal likelihood could not be optimised.
        """
        X = self._train_X(observations)
        Y = torch.tensor([[-s.mmd2] for s in observations], dtype=torch.float64)
        Yvar = torch.tensor([[s.mmd2_var] for s in observations], dtype=torch.float64)
        model = self._build_model(X, Y, Yvar)
        n, m = X.shape[0], int(self.options["fit_subsample"])
        if n > m:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "optimizer", "fit", n))
            idx = torch.randperm(n, generator=gen)[:m].sort().values
            sub = self._build_model(X[idx], Y[idx], Yvar[idx])
            self._fit(sub)
            _copy_hyperparameters(sub, model)
        else:
            self._fit(model)
        model.eval()
        return model

    def _fit(self, model: GPyTorchModel) -> None:
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        fit_gpytorch_mll(
            mll,
            optimizer_kwargs={"options": {"maxiter": int(self.options["maxiter"])}},
            max_attempts=2,
        )

    def _build_model(self, X: torch.Tensor, Y: torch.Tensor, Yvar: torch.Tensor) -> GPyTorchModel:
        """The unfitted surrogate (transforms, kernel and likelihood) on ``X, Y, Yvar``."""
        o = self.options
        d = self.space.dim
        bounds = torch.as_tensor(self.space.raw_bounds, dtype=torch.float64)
        cat = self.space.categorical_dims
        ordinal = [i for i in range(d) if i not in cat]
        normalize = Normalize(d, indices=ordinal, bounds=bounds)
        train_Yvar = None if o["noise"] == "learned" else Yvar
        if o["surrogate"] == "mixed":
            model: GPyTorchModel = MixedSingleTaskGP(
                X,
                Y,
                cat_dims=cat,
                train_Yvar=train_Yvar,
                input_transform=normalize,
                outcome_transform=Standardize(m=1),
            )
        else:
            levels = {c: int(self.space.parameters[c].high) + 1 for c in cat}
            onehot = NumericToCategoricalEncoding(
                dim=d,
                categorical_features=levels,
                encoders={
                    c: partial(torch.nn.functional.one_hot, num_classes=k)
                    for c, k in levels.items()
                },
            )
            model = SingleTaskGP(
                X,
                Y,
                train_Yvar=train_Yvar,
                input_transform=ChainedInputTransform(normalize=normalize, onehot=onehot),
                outcome_transform=Standardize(m=1),
            )
        y_var = float(Y.var()) if Y.numel() > 1 else 1.0
        if o["noise"] == "fixed+learned":
            model.likelihood = FixedNoiseGaussianLikelihood(
                noise=model.likelihood.noise_covar.noise.detach().clone(),
                learn_additional_noise=True,
                batch_shape=model._aug_batch_shape,
            )
        elif o["noise"] == "learned":
            floor = max(float(Yvar.median()) / max(y_var, 1e-300), 1e-6)
            model.likelihood = GaussianLikelihood(
                noise_constraint=GreaterThan(min(floor, 0.5)),
                batch_shape=model._aug_batch_shape,
            )
        return model.to(torch.float64)

    def build_acquisition(
        self, model: GPyTorchModel, X_train: torch.Tensor, mean: torch.Tensor
    ) -> AcquisitionFunction:
        """The configured batch acquisition on ``-MMD²``.

        Args:
            model: The fitted surrogate.
            X_train: `n x d` raw inputs of the observed sets.
            mean: `n` posterior mean of ``-MMD²`` at ``X_train`` (incumbent for ``ei``/``pi``).

        Returns:
            The acquisition function.
        """
        name = self.options["acquisition"]
        best_f = float(mean.max())
        if name == "ucb":
            return qUpperConfidenceBound(model, beta=float(self.options["ucb_beta"]))
        if name == "ei":
            return qLogExpectedImprovement(model, best_f=best_f)
        if name == "pi":
            return qProbabilityOfImprovement(model, best_f=best_f)
        # The baseline only needs points that might be the best: pre-select the top ones by
        # posterior mean (prune_baseline then keeps those with a positive probability of being
        # the best), so a long history does not make every acquisition evaluation O(n).
        k = min(int(self.options["nei_max_baseline"]), X_train.shape[0])
        top = torch.topk(mean, k).indices.sort().values
        return qLogNoisyExpectedImprovement(model, X_baseline=X_train[top], prune_baseline=True)

    def optimize_acquisition(self, acqf: AcquisitionFunction, q: int) -> tuple[np.ndarray, float]:
        """Optimise a batch acquisition over the mixed space.

        Args:
            acqf: The acquisition function.
            q: Batch size.

        Returns:
            `(q x d)` raw candidates (categories and integers exact) and the joint acquisition
            value of the batch.
        """
        o = self.options
        bounds = torch.as_tensor(self.space.raw_bounds, dtype=torch.float64)
        discrete = self.space.raw_discrete_values()
        cat_dims = {i: discrete[i] for i in self.space.categorical_dims}
        int_dims = {i: discrete[i] for i in self.space.integer_dims}
        if o["acqf_optimizer"] == "alternating":
            cand, _ = optimize_acqf_mixed_alternating(
                acqf,
                bounds=bounds,
                discrete_dims=int_dims,
                cat_dims=cat_dims,
                q=q,
                num_restarts=int(o["num_restarts"]),
                raw_samples=int(o["raw_samples"]),
                options={
                    "maxiter_continuous": int(o["acqf_maxiter"]),
                    "maxiter_alternating": int(o["acqf_alternating_steps"]),
                },
            )
        elif o["acqf_optimizer"] == "joint":
            cand = self._joint_batch(acqf, q, bounds, list(cat_dims))
        else:
            fixed = [{i: v for i in cat_dims} for v in next(iter(cat_dims.values()))]
            cand, _ = optimize_acqf_mixed(
                acqf,
                bounds=bounds,
                q=q,
                num_restarts=int(o["num_restarts"]),
                raw_samples=int(o["raw_samples"]),
                fixed_features_list=fixed,
                options={"maxiter": int(o["acqf_maxiter"]) * 8},
                post_processing_func=partial(_round_columns, dims=list(int_dims)),
            )
        cand = _round_columns(cand.detach(), dims=list(int_dims) + list(cat_dims))
        with torch.no_grad():
            value = float(acqf(cand.unsqueeze(0)).item())
        return cand.numpy().astype(np.float64), value

    def _joint_batch(
        self,
        acqf: AcquisitionFunction,
        q: int,
        bounds: torch.Tensor,
        cat_dims: list[int],
    ) -> torch.Tensor:
        """All ``q`` points optimised together in one batched L-BFGS-B run.

        Valid random batches are scored, and the best ``num_restarts`` of them are moved with
        each point's category fixed (integers relaxed, then rounded by the caller). One
        optimisation of the whole batch replaces BoTorch's sequential-greedy loop, which
        redoes its continuous-relaxation initialisation for each of the ``q`` points.
        """
        o = self.options
        n_raw = int(o["raw_samples"])
        # the space's own uniform sampler, seeded from this call's seeded torch stream
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        sets = self.space.sample_uniform(n_raw * q, seed)
        X = torch.tensor(np.stack([self.space.to_raw(p) for p in sets]), dtype=torch.float64)
        X = X.reshape(n_raw, q, -1)
        with torch.no_grad():
            values = torch.cat([acqf(chunk) for chunk in X.split(64)])
        ics = X[torch.topk(values, min(int(o["num_restarts"]), n_raw)).indices]
        xs, vals = gen_candidates_scipy(
            ics,
            acqf,
            lower_bounds=bounds[0],
            upper_bounds=bounds[1],
            options={"maxiter": 4 * int(o["acqf_maxiter"])},
            fixed_features={c: ics[..., c].clone() for c in cat_dims},
        )
        return xs[int(torch.argmax(vals))].detach()

    # ---- helpers -------------------------------------------------------------------------------

    def _train_X(self, observations: Sequence[Observation]) -> torch.Tensor:
        return torch.tensor(
            np.stack([self.space.to_raw(s.params) for s in observations]), dtype=torch.float64
        )


# ---------------------------------------------------------------------------------------------
# Private helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op torch threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _copy_hyperparameters(source: GPyTorchModel, target: GPyTorchModel) -> None:
    """Copy the fitted hyper-parameters of ``source`` into ``target`` (same architecture)."""
    params = dict(target.named_parameters())
    with torch.no_grad():
        for name, value in source.named_parameters():
            if name in params and params[name].shape == value.shape:
                params[name].copy_(value)


def _round_columns(X: torch.Tensor, dims: list[int]) -> torch.Tensor:
    X = X.clone()
    if dims:
        X[..., dims] = X[..., dims].round()
    return X


def _record_warnings(caught: list[warnings.WarningMessage], info: dict[str, Any]) -> None:
    msgs = sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught})
    info["n_warnings"] = len(caught)
    if msgs:
        info["warnings"] = msgs[:10]
        for m in msgs:
            logger.debug("botorch warning: %s", m)


def _learned_noise(model: GPyTorchModel) -> float | None:
    lik = model.likelihood
    try:
        if isinstance(lik, FixedNoiseGaussianLikelihood):
            second = getattr(lik, "second_noise_covar", None)
            return None if second is None else float(second.noise.detach().reshape(-1)[0])
        return float(lik.noise.detach().reshape(-1)[0])
    except (AttributeError, RuntimeError):
        return None
