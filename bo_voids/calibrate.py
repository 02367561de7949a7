"""``python -m bo_voids.calibrate EXPERIMENT_DIR``: runs ``python -m bo_voids.calibration``."""

from bo_voids.calibration.__main__ import main

if __name__ == "__main__":  # pragma: no cover
    from bo_voids.cli import run_module

    run_module(main)
