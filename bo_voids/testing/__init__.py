"""What the test suite and the benchmarks share: fixtures, test problems and contract suites.

In the style of ``optuna.testing``, this package ships with bo_voids so that an optimiser or an
embedder written outside the package can be checked against the same contract as the built-in
ones:

* :mod:`~bo_voids.testing.dinov2`: a tiny randomly initialised DINOv2 saved as user weights;
* :mod:`~bo_voids.testing.synthetic`: a smooth synthetic calibration problem with a known
  optimum (no rendering), and an ask/evaluate loop over it;
* :mod:`~bo_voids.testing.runs`: tiny experiment configs and evaluation tasks on the bundled
  base chips, and the comparison of evaluation results across executors;
* :mod:`~bo_voids.testing.faults`: fault injection for crash tests (stop or kill a run at a
  named phase of an iteration), and a CLI entry point that takes the points from the
  environment;
* :mod:`~bo_voids.testing.optimizer_contract` and :mod:`~bo_voids.testing.embedder_contract`:
  pytest suites (classes whose ``test_*`` methods a test module inherits; they need pytest and
  are not imported here).

Example:
    A test module of a new optimiser::

        from bo_voids.testing.optimizer_contract import OptimizerContract

        class TestMyOptimizer(OptimizerContract):
            @pytest.fixture
            def make(self):
                return lambda space, seed=0, **kw: MyOptimizer(space, seed=seed, **kw)
"""

from __future__ import annotations

from typing import Any

from bo_voids.testing.dinov2 import TINY_DINOV2_CONFIG, make_tiny_dinov2, save_dinov2_state_dict
from bo_voids.testing.synthetic import (
    DEFAULT_OPTIMUM,
    SyntheticProblem,
    default_space,
    run_loop,
)

__all__ = [
    "DEFAULT_OPTIMUM",
    "REAL_MEANS",
    "TINY_DINOV2_CONFIG",
    "SyntheticProblem",
    "default_space",
    "make_tiny_dinov2",
    "run_loop",
    "save_dinov2_state_dict",
]

#: The centre of the design's ``real`` distribution (``configs/experiment_config.yaml``): a
#: convenient "true" parameter set for tests and benchmarks that render images.
REAL_MEANS: dict[str, Any] = {
    "void_shape": "ellipse",
    "void_count": 8,
    "base_size": 20.0,
    "brightness_factor": 0.6,
    "size_std": 7.0,
    "position_spread": 0.5,
}
