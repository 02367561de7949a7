"""MkDocs hook: publish the benchmark plots that live outside ``docs/``.

``benchmarks/results/**/*.png`` are added to the site as ``assets/benchmarks/results/...`` without
copying them into ``docs/``, so the benchmark pages show the committed plots and a plot that goes
missing breaks ``mkdocs build --strict`` (its link no longer resolves). The Markdown tables are
included by ``pymdownx.snippets`` (``--8<--``) in the same spirit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Add every committed benchmark PNG to the site's files."""
    root = Path(config.config_file_path).resolve().parent
    for png in sorted((root / "benchmarks" / "results").rglob("*.png")):
        rel = png.relative_to(root).as_posix()
        files.append(File.generated(config, f"assets/{rel}", abs_src_path=str(png)))
    return files
