"""Micro-benchmarks of bo_voids (run as ``python -m benchmarks.<name>``)."""
