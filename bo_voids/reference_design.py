"""A space-filling reference design of the generator, rendered once, for fitting the summaries.

The composite surrogate's summaries (:class:`~bo_voids.summaries.SummaryMap`) were fitted on the
first iteration's 16 sets: parameters correlated at ``|r|`` 0.36–0.63 and all near the config's
guesses, so a head that "recovers" the parameters there need not do so far from them. A reference
design removes that: ``n_sets`` scrambled-Sobol points over the whole search space — the imaging
nuisance parameters included, so the head learns what the imaging chain does not change — each
rendered ``replications`` times and embedded.

Rendering it costs seconds to minutes, so it is cached (``reference_design.npz``: embeddings,
set index and the parameter sets as JSON; written atomically, read without pickle) under a
fingerprint of everything it depends on: the generator's settings, the embedder's fingerprint,
the search space's bounds, and the design's size and seed. A second run or a resume with the same
fingerprint pays nothing; a cached design with another fingerprint is refused with a
:class:`~bo_voids.exceptions.StateError` naming both (delete it, or start a new experiment).

Example:
    >>> design = load_or_build(  # doctest: +SKIP
    ...     path, space, evaluator, n_sets=64, replications=2, seed=0,
    ...     generator_settings={}, embedder_fingerprint="e")
    >>> smap = design.fit_summary_map(space, random_features=256)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import qmc

from bo_voids._io import read_npz, write_npz
from bo_voids._types import JsonValue
from bo_voids.config import ExperimentConfig
from bo_voids.exceptions import StateError
from bo_voids.seeding import derive_seed
from bo_voids.space import ParamSet, SearchSpace
from bo_voids.state import REFERENCE_DESIGN
from bo_voids.summaries import SummaryMap, head_targets

if TYPE_CHECKING:
    from bo_voids.evaluation import Evaluator
    from bo_voids.optimizers.base import BaseOptimizer

__all__ = ["REFERENCE_FILE", "ReferenceDesign", "attach", "design_fingerprint", "load_or_build"]

#: File name of the cached design inside an experiment folder (the layout's owner names it).
REFERENCE_FILE = REFERENCE_DESIGN
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ReferenceDesign:
    """Rendered and embedded reference sets.

    Attributes:
        param_sets: The ``n_sets`` parameter sets (nuisance parameters included).
        embeddings: `(n_sets · replications, D)` embeddings, set by set.
        groups: `(n_sets · replications,)` index of each row's set.
        fingerprint: What the design was built for (:func:`design_fingerprint`).
        seconds: Time it took to render and embed (0 when loaded from the cache).
        from_cache: Whether it was loaded rather than rendered.
    """

    param_sets: tuple[ParamSet, ...]
    embeddings: np.ndarray
    groups: np.ndarray
    fingerprint: str
    seconds: float = 0.0
    from_cache: bool = False

    def fit_summary_map(
        self,
        space: SearchSpace,
        *,
        kinds: Sequence[str] = ("pca", "head"),
        n_components: int = 8,
        random_features: int = 0,
        seed: int = 0,
    ) -> SummaryMap:
        """Fit the summaries on the design (head targets from ``space``, nuisance included).

        Args:
            space: The search space the design was drawn from.
            kinds: Summary kinds.
            n_components: Principal components of ``pca``.
            random_features: Random Fourier features offered to the head (0: linear only).
            seed: Seed of the head's folds and random features.

        Returns:
            The fitted map; its settings record the design's fingerprint.
        """
        per_image = [self.param_sets[int(g)] for g in self.groups]
        theta, names = head_targets(space, per_image)
        k = int(min(n_components, len(self.param_sets) - 1, self.embeddings.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            smap = SummaryMap.fit(
                self.embeddings,
                self.groups,
                theta,
                kinds=tuple(kinds),
                n_components=k,
                seed=seed,
                param_names=names,
                random_features=random_features,
            )
        smap.settings["reference_design"] = self.fingerprint
        return SummaryMap(smap.matrix, smap.offset, smap.names, smap.within_var, smap.settings)


def design_fingerprint(
    space: SearchSpace,
    generator: Mapping[str, JsonValue],
    embedder_fingerprint: str,
    n_sets: int,
    replications: int,
    seed: int,
) -> str:
    """``reference:<sha256>`` of everything a reference design depends on.

    Args:
        space: The search space (its parameters, kinds and bounds).
        generator: The generator's settings (image size, edge blur, imaging chain, base chips).
        embedder_fingerprint: The embedder's fingerprint.
        n_sets: Parameter sets.
        replications: Renders per set.
        seed: Seed of the design and its renders.
    """
    bounds = [
        [p.name, p.kind, p.low, p.high, list(getattr(p.bounds, "choices", ()))]
        for p in space.parameters
    ]
    blob = json.dumps(
        {
            "bounds": bounds,
            "generator": generator,
            "embedder": embedder_fingerprint,
            "n_sets": int(n_sets),
            "replications": int(replications),
            "seed": int(seed),
            "format": _FORMAT_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return "reference:" + hashlib.sha256(blob.encode()).hexdigest()


def sobol_sets(space: SearchSpace, n_sets: int, seed: int) -> list[ParamSet]:
    """``n_sets`` scrambled-Sobol parameter sets over the whole space (unit-cube decode)."""
    sampler = qmc.Sobol(d=space.dim, scramble=True, seed=derive_seed(seed, "reference", "sobol"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a non-power-of-2 n is fine here
        u = sampler.random(n_sets)
    return space.decode_many(u)


def render_design(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    n_sets: int,
    replications: int,
    seed: int,
    fingerprint: str,
) -> ReferenceDesign:
    """Render and embed a Sobol design with an :class:`~bo_voids.evaluation.Evaluator`."""
    t0 = time.perf_counter()
    sets = sobol_sets(space, n_sets, seed)
    images = [
        evaluator.generator.render(params, derive_seed(seed, "reference", i, r)).image
        for i, params in enumerate(sets)
        for r in range(replications)
    ]
    emb = np.asarray(evaluator.embedder.embed(images), dtype=np.float64)
    groups = np.repeat(np.arange(n_sets), replications)
    return ReferenceDesign(tuple(sets), emb, groups, fingerprint, time.perf_counter() - t0)


def save(design: ReferenceDesign, path: str | Path) -> Path:
    """Write the design atomically as ``.npz`` (parameter sets as a JSON string; no pickle)."""
    return write_npz(
        path,
        {
            "embeddings": design.embeddings,
            "groups": design.groups,
            "param_sets": np.array(json.dumps(list(design.param_sets)), dtype=np.str_),
            "fingerprint": np.array(design.fingerprint, dtype=np.str_),
        },
        format_version=_FORMAT_VERSION,
    )


def load(path: str | Path, fingerprint: str | None = None) -> ReferenceDesign:
    """Read a cached design; with ``fingerprint``, refuse one built for anything else.

    Raises:
        StateError: Unreadable file, or a design built for another fingerprint.
    """
    keys = ("embeddings", "groups", "param_sets", "fingerprint")
    arrays = read_npz(path, keys, kind="ReferenceDesign", format_version=_FORMAT_VERSION)
    stored = str(arrays["fingerprint"])
    if fingerprint is not None and stored != fingerprint:
        raise StateError(
            f"the reference design cached at {path} was rendered for {stored[:22]}…, this run "
            f"needs {fingerprint[:22]}… (generator, embedder, bounds or design size changed); "
            "delete the file to render it again, or use a new experiment folder"
        )
    return ReferenceDesign(
        tuple(json.loads(str(arrays["param_sets"]))),
        np.asarray(arrays["embeddings"], dtype=np.float64),
        np.asarray(arrays["groups"]),
        stored,
        0.0,
        True,
    )


def load_or_build(
    path: str | Path,
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    n_sets: int,
    replications: int,
    seed: int,
    generator_settings: Mapping[str, JsonValue],
    embedder_fingerprint: str,
) -> ReferenceDesign:
    """The cached design at ``path`` when its fingerprint matches, else render and cache it.

    Args:
        path: The cache file (e.g. ``<experiment>/reference_design.npz``).
        space: The search space.
        evaluator: Renders (``.generator``) and embeds (``.embedder``).
        n_sets: Parameter sets of the design.
        replications: Renders per set.
        seed: Seed of the design.
        generator_settings: The generator's settings, for the fingerprint.
        embedder_fingerprint: The embedder's fingerprint.

    Returns:
        The design (``from_cache`` tells which).

    Raises:
        StateError: A file at ``path`` built for another fingerprint (it is never overwritten).
    """
    fp = design_fingerprint(
        space, generator_settings, embedder_fingerprint, n_sets, replications, seed
    )
    if Path(path).exists():
        return load(path, fp)
    design = render_design(
        space, evaluator, n_sets=n_sets, replications=replications, seed=seed, fingerprint=fp
    )
    save(design, path)
    return design


def attach(
    optimizer: BaseOptimizer,
    root: Path,
    config: ExperimentConfig,
    space: SearchSpace,
    evaluator: Callable[[], Evaluator],
    generator_settings: Mapping[str, JsonValue],
    embedder_info: Callable[[], Mapping[str, JsonValue]],
    log: Callable[[str], None],
) -> bool:
    """Give a run's optimiser its reference design (cached in the experiment folder ``root``).

    Args:
        optimizer: The run's optimiser; only one with ``use_reference_design`` takes a design.
        root: The experiment folder.
        config: The experiment config (``bo.reference_sets`` etc.).
        space: The search space.
        evaluator: Returns the run's evaluator (built on first use).
        generator_settings: The generator's settings, for the fingerprint.
        embedder_info: Returns the embedder's identity (its ``fingerprint``).
        log: Where the one progress line goes.

    Returns:
        Whether a design was attached.

    Raises:
        StateError: A cached design with another fingerprint.
    """
    use = getattr(optimizer, "use_reference_design", None)
    bo = config.bo
    if use is None or bo.reference_sets <= 0:
        return False
    design = load_or_build(
        root / REFERENCE_FILE,
        space,
        evaluator(),
        n_sets=bo.reference_sets,
        replications=bo.reference_replications,
        seed=derive_seed(config.seed, "reference_design"),
        generator_settings=generator_settings,
        embedder_fingerprint=str(embedder_info().get("fingerprint")),
    )
    how = "loaded from the cache" if design.from_cache else f"rendered in {design.seconds:.1f}s"
    log(f"reference design: {bo.reference_sets} sets x {bo.reference_replications}, {how}")
    use(design, random_features=bo.random_features)
    return True
