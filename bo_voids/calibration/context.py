"""What a finished run provides the calibration: its targets' design and every observation.

:class:`TargetDesign` says how the targets were drawn (clusters of renders of one parameter set,
or a folder of i.i.d. images); :class:`CalibrationContext` holds the run's observations, targets,
scorer and search space, read once from the experiment folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.config import ExperimentConfig
from bo_voids.exceptions import CalibrationError
from bo_voids.metrics import MMDScorer
from bo_voids.scoring import TARGET_TYPES, Observation, ScoreBook, score_book_from_iterations
from bo_voids.space import ParamSet, SearchSpace
from bo_voids.state import ExperimentRun, load_experiment

if TYPE_CHECKING:
    from bo_voids.evaluation import Evaluator

from .distribution import (
    implied_distribution,
)

__all__ = ["CalibrationContext", "TargetDesign"]


@dataclass(frozen=True)
class TargetDesign:
    """The cluster structure of the targets, and the validation shape it calls for.

    Attributes:
        source: ``"simulated"`` (rendered from the config's real distribution) or ``"folder"``.
        groups: Cluster label of every target image.
        n_units: Distinct clusters (images, for an iid folder).
        clustered: Whether some cluster holds more than one image.
        cluster_size: Renders per set of a validation sample: the targets' most common cluster
            size (1 for an iid folder), so that validation and target units are exchangeable.
    """

    source: str
    groups: np.ndarray
    n_units: int
    clustered: bool
    cluster_size: int

    @classmethod
    def from_groups(cls, groups: np.ndarray, source: str) -> TargetDesign:
        """Build from per-image cluster labels."""
        labels, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
        clustered = bool((counts > 1).any())
        size = int(np.bincount(counts).argmax()) if clustered else 1
        return cls(source, np.asarray(groups).astype(str), len(labels), clustered, size)

    @property
    def n_images(self) -> int:
        """Number of target images."""
        return int(self.groups.size)

    @property
    def test_groups(self) -> np.ndarray | None:
        """``y_groups`` for a permutation test: the labels if clustered, ``None`` if iid."""
        return self.groups if self.clustered else None

    @property
    def scheme(self) -> str:
        """The permutation scheme a validation against these targets uses."""
        return "cluster" if self.clustered else "image"

    def to_dict(self) -> JsonObject:
        """JSON form."""
        return {
            "source": self.source,
            "n_images": self.n_images,
            "n_clusters": self.n_units,
            "clustered": self.clustered,
            "renders_per_validation_set": self.cluster_size,
            "permutation_scheme": self.scheme,
        }


@dataclass
class CalibrationContext:
    """What calibration needs from a run: targets, kernel, observations, seeds, evaluator.

    Build with :meth:`from_run`. Observations come from the run's
    :class:`~bo_voids.scoring.ScoreBook` (one record per distinct parameter set, replications
    merged). The evaluator (generator + embedder) is built lazily, and its embedder's
    fingerprint must equal the one recorded in the run's manifest.

    Attributes:
        run: The loaded experiment.
        space: Its search space.
        scorer: The run's MMD² scorer (bandwidths fixed by the targets).
        targets: ``(m, d)`` target embeddings.
        design: Their cluster structure.
        observations: The valid observations, in evaluation order.
        set_seeds: Render seed of every image of every observation, by ``uid``.
        used_seeds: Every render seed the run used (fresh seeds must avoid them).
        evaluator: The generator + embedder (``None`` until first needed).
    """

    run: ExperimentRun
    space: SearchSpace
    scorer: MMDScorer
    targets: np.ndarray
    design: TargetDesign
    observations: tuple[Observation, ...]
    set_seeds: dict[str, tuple[int | None, ...]]
    used_seeds: set[int]
    evaluator: Evaluator | None = None

    @classmethod
    def from_run(
        cls,
        run: ExperimentRun | str | Path,
        evaluator: Evaluator | None = None,
        book: ScoreBook | None = None,
    ) -> CalibrationContext:
        """Collect everything calibration needs from a run (or its folder).

        Args:
            run: The run, or its folder.
            evaluator: A prebuilt evaluator (default: built when first needed).
            book: The run's own score book, when the caller holds it (the pipeline at the end
                of a run); else it is rebuilt from the stored iterations by
                :func:`~bo_voids.scoring.score_book_from_iterations`.

        Raises:
            CalibrationError: No iteration 0, fewer than 2 targets or no usable observation.
            StateError: The folder is not a readable experiment.
        """
        if not isinstance(run, ExperimentRun):
            run = load_experiment(run)
        if not run.iterations:
            raise CalibrationError(f"{run.root} has no complete iteration: nothing to calibrate")
        cfg = run.config
        it0 = run.iterations[0]
        is_target = np.array([m["dataset_type"] in TARGET_TYPES for m in it0.metadata], bool)
        if is_target.sum() < 2:
            where = (
                f"target_image_dir {cfg.target_image_dir}"
                if cfg.target_image_dir is not None
                else "the simulated real set"
            )
            raise CalibrationError(
                f"{run.root}: {where} gave {int(is_target.sum())} target image(s); calibration "
                "needs at least 2"
            )
        space = SearchSpace.from_config(cfg)
        if book is None:
            targets = np.asarray(it0.embeddings[is_target], dtype=np.float64)
            stored = it0.scores.scorer
            bandwidth: str | MMDScorer = (
                MMDScorer.from_dict(stored, targets) if stored else cfg.metric.bandwidth
            )
            book = score_book_from_iterations(
                space, run.iterations, bandwidth=bandwidth, top_k=cfg.bo.top_k
            )
        observations = book.observations().sets
        if not observations:
            raise CalibrationError(f"{run.root}: no evaluated parameter set with ≥ 2 images")
        by_iteration = {it.iteration: it for it in run.iterations}
        set_seeds = {
            o.uid: tuple(
                _seed_or_none(by_iteration[int(k)].metadata[int(r)].get("render_seed"))
                for k, r in zip(o.image_iterations, o.local_rows, strict=True)
            )
            for o in observations
        }
        used = {
            int(seed)
            for it in run.iterations
            for m in it.metadata
            if (seed := m.get("render_seed")) is not None
        }
        source = "folder" if cfg.target_image_dir is not None else "simulated"
        return cls(
            run=run,
            space=space,
            scorer=book.scorer,
            targets=book.targets,
            design=TargetDesign.from_groups(book.target_groups, source),
            observations=tuple(observations),
            set_seeds=set_seeds,
            used_seeds=used,
            evaluator=evaluator,
        )

    @property
    def config(self) -> ExperimentConfig:
        """The run's config."""
        return self.run.config

    @property
    def n_permutations(self) -> int:
        """Permutation-test resamples (the run's ``metric.permutations``)."""
        return int(self.config.metric.permutations)

    def observation(self, uid: str) -> Observation:
        """The observation with this ``uid``.

        Raises:
            KeyError: No such observation.
        """
        for o in self.observations:
            if o.uid == uid:
                return o
        raise KeyError(uid)

    def get_evaluator(self) -> Evaluator:
        """The run's generator + embedder (built on first use, fingerprint checked).

        Raises:
            CalibrationError: The base images are missing or the embedder differs from the run's.
        """
        if self.evaluator is None:
            from bo_voids.evaluation import EvaluatorSpec

            cfg = self.config
            if not Path(cfg.base_image_dir).is_dir():
                raise CalibrationError(
                    f"base_image_dir {cfg.base_image_dir} (from the run's config) does not exist; "
                    "run from the folder the experiment was started in"
                )
            self.evaluator = EvaluatorSpec.from_config(cfg).build()
        expected = (self.run.manifest.get("embedder") or {}).get("fingerprint")
        have = self.evaluator.embedder.fingerprint()
        if expected is not None and have != expected:
            raise CalibrationError(
                f"embedder fingerprint {have} differs from the run's {expected}; validation "
                "embeddings would not be comparable with the targets"
            )
        return self.evaluator

    def nominal_distribution(self) -> dict[str, dict[str, float]]:
        """The config's ``param_distributions.real`` in config form (the simulated truth)."""
        return {k: v.to_yaml() for k, v in self.config.param_distributions["real"].items()}

    def realised_distribution(self) -> dict[str, dict[str, float]] | None:
        """The realised target sets' own distribution (``None`` for a target folder).

        What a perfect fit to these targets gives: their frequencies, mean and (small-sample
        corrected) std, as :func:`~bo_voids.calibration.distribution.implied_distribution`.
        """
        sets = self.real_param_sets()
        if not sets:
            return None
        return implied_distribution([(p, 1.0) for p in sets], self.config.param_bounds, decimals=9)

    def real_param_sets(self) -> list[ParamSet]:
        """The parameter sets of the simulated targets (empty for a target folder)."""
        seen: dict[str, ParamSet] = {}
        for m in self.run.iterations[0].metadata:
            if m["dataset_type"] in TARGET_TYPES and (params := m.get("params")) is not None:
                seen.setdefault(str(m["param_set_id"]), dict(params))
        return list(seen.values())


def _seed_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
