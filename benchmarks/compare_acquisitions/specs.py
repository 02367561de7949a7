"""What the acquisition benchmark runs: methods, targets and one run's specification."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "compare_acquisitions"
#: Fresh images each recommendation is re-scored on (seeds shared by every method).
N_FRESH = 24
#: Iterations at which recommendations are judged.
CHECKPOINTS: tuple[int, ...] = (0, 3, 6, 10)

#: Methods: config overrides and, for peers outside the package registry, the peer's name.
METHODS: dict[str, dict[str, Any]] = {
    "random": {"config": {"optimizer": "random"}},
    "optuna_tpe": {"config": {"optimizer": "random"}, "peer": "optuna_tpe"},
    "optuna_gp": {"config": {"optimizer": "random"}, "peer": "optuna_gp"},
    "scalar_ei": {
        "config": {"optimizer": "botorch", "acquisition_function": "ei"},
        "bo": {"surrogate": "mixed", "replicate_slots": 0},
    },
    "composite_ei": {
        "config": {"optimizer": "botorch", "acquisition_function": "ei"},
        "bo": {"surrogate": "composite", "population_slots": 0},
    },
    "composite_ucb": {
        "config": {"optimizer": "botorch", "acquisition_function": "ucb"},
        "bo": {"surrogate": "composite", "population_slots": 0},
    },
    # one slot of each batch drawn from the population fit p_psi (bo.population_slots)
    "composite_pop": {
        "config": {"optimizer": "botorch", "acquisition_function": "ei"},
        "bo": {"surrogate": "composite", "population_slots": 1},
    },
    # trained on the random-search run of the same seed (see sbi_peer.py): no run of its own
    "sbi_npe": {"config": {"optimizer": "random"}, "from_run": "random"},
}
#: Methods that need an optional package: ``(module, pyproject extra that installs it)``. A
#: method whose module is missing is skipped with one line naming the extra.
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "optuna_tpe": ("optuna", "bench"),
    "optuna_gp": ("optuna", "bench"),
    "sbi_npe": ("sbi", "bench"),
}
NUMERIC: tuple[str, ...] = (
    "void_count",
    "base_size",
    "brightness_factor",
    "size_std",
    "position_spread",
)
#: Target distributions replacing ``param_distributions.real`` (``None``: the config's own).
TARGETS: dict[str, dict[str, Any] | None] = {
    "real": None,
    "small_dense": {
        "void_shape": {"circle": 0.7, "ellipse": 0.2, "irregular": 0.1},
        "void_count": {"mean": 16, "std": 2},
        "base_size": {"mean": 8.0, "std": 1.5},
        "brightness_factor": {"mean": 0.5, "std": 0.05},
        "size_std": {"mean": 2.0, "std": 0.7},
        "position_spread": {"mean": 0.7, "std": 0.05},
    },
    "few_large_faint": {
        "void_shape": {"circle": 0.1, "ellipse": 0.25, "irregular": 0.65},
        "void_count": {"mean": 4, "std": 1},
        "base_size": {"mean": 32.0, "std": 3.0},
        "brightness_factor": {"mean": 0.75, "std": 0.03},
        "size_std": {"mean": 4.0, "std": 1.0},
        "position_spread": {"mean": 0.4, "std": 0.08},
    },
}
#: Smoke mode: tiny images, a small iteration 0, cheap acquisition optimisation.
SMOKE: dict[str, Any] = {
    "real": {"param_sets": 3, "replications": 2},
    "close": {"param_sets": 4, "replications": 2},
    "far": {"param_sets": 4, "replications": 2},
    "iteration_batch_size": 4,
    "replications_per_iteration": 2,
}
SMOKE_BO: dict[str, Any] = {"num_restarts": 1, "raw_samples": 16, "maxiter": 10}


@dataclass(frozen=True)
class RunSpec:
    """One (target, method, seed) experiment.

    Attributes:
        target: A key of :data:`TARGETS`.
        method: A key of :data:`METHODS`.
        seed: The experiment seed (shared by every method: paired comparison).
        iterations: Iterations after iteration 0.
        image_size: Rendered image size.
        config_path: The base config.
        work_dir: Where the experiment folders live.
        smoke: Tiny settings for the tests.
    """

    target: str
    method: str
    seed: int
    iterations: int
    image_size: int
    config_path: str
    work_dir: str
    smoke: bool = False

    @property
    def run_dir(self) -> Path:
        """The experiment folder of this run."""
        return Path(self.work_dir) / self.target / self.method / f"seed_{self.seed}"

    def fingerprint(self) -> str:
        """A hash of the spec and the method's definition (a changed method reruns).

        The work folder is left out: a moved or copied work folder holds the same runs.
        """
        spec = {k: v for k, v in asdict(self).items() if k != "work_dir"}
        blob = json.dumps({**spec, "def": METHODS[self.method]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_config(spec: RunSpec) -> Any:
    """The validated config of one run: every stopping rule off, no plots or calibration.

    Args:
        spec: The run.

    Returns:
        The :class:`~bo_voids.config.ExperimentConfig`.
    """
    from bo_voids.config import load_config

    cfg = load_config(spec.config_path, check_paths=False)
    raw = cfg.to_dict()
    method = METHODS[spec.method]
    base = Path(raw["base_image_dir"])
    changes: dict[str, Any] = {
        "experiment_name": f"bench_{spec.target}_{spec.method}_s{spec.seed}",
        "experiment_dir": str(spec.run_dir),
        "base_image_dir": str(base if base.is_absolute() else ROOT / base),
        "seed": spec.seed,
        "image_size": spec.image_size,
        "embedder": "handcrafted",
        "device": "cpu",
        "executor": "local",
        "max_iterations": spec.iterations,
        "convergence_threshold": -1e9,
        "stop_at_noise_floor": False,
        "early_stop_patience": 100_000,
        "calibrate": False,
        **method["config"],
    }
    bo = {**raw["bo"], **method.get("bo", {})}
    # the benchmark re-scores on its own seeds, and never stops at the noise floor
    metric = {**raw["metric"], "fresh_images": 0, "null_draws": 0}
    if spec.smoke:
        changes.update(SMOKE)
        bo.update(SMOKE_BO)
        metric.update(noise_floor_splits=10, permutations=50)
    changes["bo"] = bo
    changes["metric"] = metric
    dist = TARGETS.get(spec.target)
    if dist is not None:
        changes["param_distributions"] = {**raw["param_distributions"], "real": dist}
    return cfg.replace(**changes)
