"""Distribution-level calibration: which *distribution* of parameters reproduces the targets?

The targets come from several parameter sets (manufacturing variation), so a single best point
cannot match them; a mixture of parameter sets can. This package recovers that mixture from the
observations an optimisation run already made, turns it into a ``real``-style
``param_distributions`` entry and validates it on freshly rendered images, in-sample and held
out, each figure with a cluster-aware permutation test and a null band for its own sample size.

Modules:

* :mod:`~bo_voids.calibration.mixture` — the simplex mixture fit (an MMD² quadratic programme
  over the observed sets; cross pairs sharing a render seed are dropped).
* :mod:`~bo_voids.calibration.distribution` — the implied distribution (std corrected for the
  effective number of components), its YAML snippet, errors against a known distribution.
* :mod:`~bo_voids.calibration.population` — the parametric population ``p_ψ`` fitted through
  the composite surrogate, with intervals, validated the same way.
* :mod:`~bo_voids.calibration.validate` — fresh renders, the tests, the null bands and the
  held-out scheme.
* ``python -m bo_voids.calibration EXPERIMENT_DIR`` — the command line
  (:mod:`~bo_voids.calibration.__main__`).

:func:`calibrate_experiment` runs everything and writes ``calibration.json`` (and
``plots/calibration_pca.png``).

Example:
    >>> from bo_voids.calibration import calibrate_experiment
    >>> result = calibrate_experiment("experiments/quickstart")  # doctest: +SKIP
    >>> print(result["yaml_snippet"])  # doctest: +SKIP
"""

from __future__ import annotations

from bo_voids.exceptions import CalibrationError

from .distribution import (
    distribution_errors,
    distribution_from_yaml,
    effective_sample_size,
    implied_distribution,
    point_distribution,
    std_correction_factor,
    yaml_snippet,
)
from .experiment import (
    CALIBRATION_FILE,
    CALIBRATION_PLOT,
    CALIBRATION_VERSION,
    calibrate_experiment,
)
from .mixture import MixtureFit, fit_mixture, mixture_terms
from .population import (
    MARGINALS_PLOT,
    PopulationOptions,
    PopulationPlan,
    build_emulator,
    plan_population,
    score_population,
    write_marginals_plot,
)
from .validate import (
    CalibrationContext,
    FitOptions,
    HeldOutResult,
    ImpliedFit,
    TargetDesign,
    ValidationResult,
    fit_implied,
    target_folds,
    validate_distribution,
    validate_param_sets,
)

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_PLOT",
    "CALIBRATION_VERSION",
    "MARGINALS_PLOT",
    "CalibrationContext",
    "CalibrationError",
    "FitOptions",
    "HeldOutResult",
    "ImpliedFit",
    "MixtureFit",
    "PopulationOptions",
    "PopulationPlan",
    "TargetDesign",
    "ValidationResult",
    "build_emulator",
    "calibrate_experiment",
    "distribution_errors",
    "distribution_from_yaml",
    "effective_sample_size",
    "fit_implied",
    "fit_mixture",
    "implied_distribution",
    "mixture_terms",
    "plan_population",
    "point_distribution",
    "score_population",
    "std_correction_factor",
    "target_folds",
    "validate_distribution",
    "validate_param_sets",
    "write_marginals_plot",
    "yaml_snippet",
]
