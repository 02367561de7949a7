"""The simulation-based-inference peer: sbi's neural posterior estimation on the same simulations.

NPE (Papamakarios & Murray 2016; Greenberg et al. 2019; the ``sbi`` package) learns ``p(θ | x)``
from simulations ``(θ, x)``. It needs simulations from the prior, which is exactly what random
search renders: the peer is trained on the random-search run of the same seed (iteration 0's
close / far sets and every uniformly drawn set up to the checkpoint — the same number of
simulations the other methods used), with ``θ`` the unit-cube encoding of a parameter set
(:meth:`~bo_voids.space.SearchSpace.encode`, prior ``BoxUniform(0, 1)``) and ``x`` the mean
embedding of its images. The observation ``x_o`` is the mean embedding of the target images
(pooled over the target sets). Its recommendation is the posterior summary point: the modal
shape and integer count, the posterior mean of the continuous parameters, decoded through the
space.

``sbi`` is imported lazily: it is a benchmark-only dependency (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def sbi_available() -> bool:
    """Whether ``sbi`` can be imported."""
    try:
        import sbi  # noqa: F401
    except ImportError:
        return False
    return True


def train_npe(thetas: np.ndarray, xs: np.ndarray, max_epochs: int = 300) -> Any:
    """Train sbi's NPE (a masked autoregressive flow) on ``(θ, x)`` under a unit-cube prior.

    Draws from torch's global generator: call it inside ``torch.random.fork_rng()`` after
    seeding, and sample the posterior in the same block, so training and sampling form one
    seeded stream.

    Args:
        thetas: `(n, d)` unit-cube parameters of the simulations.
        xs: `(n, D)` simulated summaries.
        max_epochs: Training epochs at most (early stopping on a validation split).

    Returns:
        sbi's posterior object (``.sample((n,), x=...)``).
    """
    import torch
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    d = thetas.shape[1]
    prior = BoxUniform(torch.zeros(d), torch.ones(d))
    inference = NPE(prior=prior, density_estimator="maf", show_progress_bars=False)
    inference.append_simulations(
        torch.as_tensor(thetas, dtype=torch.float32), torch.as_tensor(xs, dtype=torch.float32)
    )
    estimator = inference.train(
        max_num_epochs=max_epochs, training_batch_size=32, show_train_summary=False
    )
    return inference.build_posterior(estimator)


def npe_recommendation(
    space: Any,
    thetas: np.ndarray,
    xs: np.ndarray,
    x_o: np.ndarray,
    seed: int,
    n_samples: int = 2000,
    max_epochs: int = 300,
) -> dict[str, Any]:
    """Train NPE on ``(θ, x)`` and summarise its posterior at ``x_o`` as one parameter set.

    Args:
        space: The search space.
        thetas: `(n, d)` unit-cube parameters of the simulations.
        xs: `(n, D)` simulated summaries (mean embeddings).
        x_o: `(D,)` the observation.
        seed: Seed of training and sampling.
        n_samples: Posterior samples drawn.
        max_epochs: Training epochs at most (early stopping on a validation split).

    Returns:
        The recommended parameter set.
    """
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed % 2**63)
        posterior = train_npe(thetas, xs, max_epochs)
        samples = posterior.sample(
            (n_samples,), x=torch.as_tensor(x_o, dtype=torch.float32), show_progress_bars=False
        ).numpy()
    decoded = space.decode_many(np.clip(samples, 0.0, 1.0))
    point: dict[str, Any] = {}
    for p in space.parameters:
        values = [s[p.name] for s in decoded]
        if p.kind == "continuous":
            point[p.name] = float(np.mean(values))
        else:
            point[p.name] = Counter(values).most_common(1)[0][0]
    return space.validate(point)
