r"""The benchmark that decides: which optimiser's *recommendation* is closest to the real images.

Every method runs whole experiments through :class:`~bo_voids.pipeline.OptimizationPipeline` with
the same budget — iteration 0 (the design's real / close / far sets) plus ``--iterations`` batches
of 8 parameter sets × 3 images, every stopping rule off — on **paired seeds** (same targets and
iteration 0 for every method; the SHA-256 of the iteration-0 embeddings is checked):

* ``random`` (uniform random search), ``optuna_tpe`` (multivariate TPE), ``optuna_gp`` (Optuna's
  GP sampler) through :mod:`benchmarks.peers`;
* ``scalar_ei``: the first release's GP (``MixedSingleTaskGP`` on the noisy per-set MMD², qLogEI);
* ``composite_ei`` / ``composite_ucb``: the composite GP on embedding summaries (the default).

Each method's recommendation (the set it ranks best) at iterations 0 / 3 / 6 / 10 is re-rendered
on :data:`~benchmarks.compare_acquisitions.specs.N_FRESH` images with seeds shared by every method
and scored (``fresh_mmd2``); its parameter error is measured against the distribution's nominal
means (``err_true_*``) and against the mean of the realised target sets (``err_realised_*``); the
oracle row is the realised mean point, fresh-scored the same way. Paired two-sided Wilcoxon
signed-rank tests of the default method against TPE and random, Holm-corrected per target.

Usage::

    python -m benchmarks.compare_acquisitions --seeds 20 --extra-seeds 10 --workers 2
    python -m benchmarks.compare_acquisitions --smoke --out /tmp/x --work-dir /tmp/w
"""
