"""One writer for every benchmark's results: rows to CSV, JSON and Markdown, with a machine block.

A benchmark produces a list of flat rows (one dict per measured case) and calls
:func:`write_results`, which writes, atomically:

* ``{name}.csv``: every field of every row, in the order fields first appear;
* ``{name}.json``: ``{"name", "machine", "meta", "rows"}`` (numpy values converted, non-finite
  floats stored as ``null``);
* ``{name}.md``: a title, optional notes, a table of chosen columns and the machine block.

:func:`machine_info` records what the timings depend on (platform, CPU, load, thread counts,
library versions), and :func:`print_table` prints the same table on the console.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from bo_voids.state import atomic_write_json, atomic_write_text, utc_timestamp

__all__ = [
    "RESULTS_DIR",
    "ResultPaths",
    "cli_args",
    "format_value",
    "machine_info",
    "markdown_table",
    "print_table",
    "write_results",
]

#: Where benchmarks write by default (``benchmarks/results``).
RESULTS_DIR = Path(__file__).resolve().parent / "results"

Columns = Sequence[str] | Mapping[str, str]
"""Table columns: field names, or field name → header."""

_VERSIONS = ("numpy", "scipy", "torch", "gpytorch", "botorch", "optuna")


class ResultPaths(NamedTuple):
    """The three files :func:`write_results` wrote."""

    csv: Path
    json: Path
    md: Path


def cli_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command-line arguments for ``meta``, without ``out`` (a machine-local path)."""
    return {k: v for k, v in vars(args).items() if k != "out"}


def machine_info() -> dict[str, Any]:
    """Describe the machine and the moment a benchmark ran.

    Thread counts are those in effect when called: torch's only if torch is already imported
    (importing it here would cost seconds), BLAS pools if ``threadpoolctl`` is installed.

    Returns:
        JSON-ready mapping: ``platform``, ``python``, ``versions`` (of the installed numeric
        libraries), ``cpu_model``, ``cpu_count``, ``load_average`` (1, 5, 15 min, ``None`` where
        the OS has none), ``torch_threads``, ``blas_threads`` and ``timestamp_utc``.
    """
    versions = {}
    for dist in _VERSIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "blas_threads": _blas_threads(),
        "timestamp_utc": utc_timestamp(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(pools, default=None)


def format_value(value: Any) -> str:
    """Format one cell for a human-read table (the CSV and JSON keep full precision).

    Floats get four significant digits (thousands grouped, no exponent, from 1,000 up),
    booleans ``yes`` / ``no``, ``None`` and NaN an empty cell, sequences their formatted items.
    """
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "" if np.isnan(v) else str(v)
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _header(rows: Sequence[Mapping[str, Any]], columns: Columns | None) -> dict[str, str]:
    if columns is None:
        return {k: k for k in _fields(rows)}
    if isinstance(columns, Mapping):
        return dict(columns)
    return {k: k for k in columns}


def _fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Columns | None = None) -> str:
    """Render ``rows`` as a GitHub Markdown table (numbers right-aligned).

    Args:
        rows: One mapping per table row; missing fields are empty cells.
        columns: Fields to show, or field → header (default: every field).
    """
    head = _header(rows, columns)
    numeric = {k: all(_is_number(r.get(k)) for r in rows if r.get(k) is not None) for k in head}
    lines = [
        "| " + " | ".join(head.values()) + " |",
        "|" + "|".join("---:" if numeric[k] else "---" for k in head) + "|",
    ]
    for r in rows:
        cells = (format_value(r.get(k)).replace("|", "\\|") for k in head)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Columns | None = None,
    *,
    file: IO[str] | None = None,
) -> None:
    """Print ``rows`` as an aligned plain-text table (see :func:`markdown_table` for arguments)."""
    head = _header(rows, columns)
    body = [[format_value(r.get(k)) for k in head] for r in rows]
    table = [list(head.values()), *body]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=file)


def _machine_markdown(m: Mapping[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = m["load_average"]
    load_text = " / ".join(f"{x:.2f}" for x in load) if load else "n/a"
    return (
        f"Machine: {m['platform']}, Python {m['python']}, {versions}; {m['cpu_count']} CPUs "
        f"({m['cpu_model']}); load average {load_text} (1 / 5 / 15 min) at the end; torch "
        f"threads {m['torch_threads'] or 'n/a'}, BLAS threads {m['blas_threads'] or 'n/a'}; "
        f"{m['timestamp_utc']}."
    )


def _csv_cell(value: Any) -> Any:
    # Sequences and mappings as JSON, so that a CSV reader can parse them back.
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value, default=str)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    return value


def write_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    out_dir: str | Path = RESULTS_DIR,
    meta: Mapping[str, Any] | None = None,
    columns: Columns | None = None,
    markdown_title: str | None = None,
    notes: str | Sequence[str] | None = None,
    table_rows: Sequence[Mapping[str, Any]] | None = None,
) -> ResultPaths:
    """Write ``{name}.csv``, ``{name}.json`` and ``{name}.md`` under ``out_dir``.

    Args:
        name: File stem.
        rows: The measurements, one flat mapping per case (the CSV and JSON rows).
        out_dir: Output folder (created if needed).
        meta: Run description stored in the JSON (arguments, method, summary).
        columns: Columns of the Markdown table: field names or field → header (default all).
        markdown_title: First heading of the Markdown file (default ``name``).
        notes: Markdown paragraphs placed between the title and the table.
        table_rows: Rows of the Markdown table when they differ from ``rows`` (a summary of a
            long CSV, say).

    Returns:
        The paths written.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError(f"{name}: no rows to write")
    out = Path(out_dir)
    paths = ResultPaths(out / f"{name}.csv", out / f"{name}.json", out / f"{name}.md")
    machine = machine_info()

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_fields(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
    atomic_write_text(paths.csv, buf.getvalue())

    record = {"name": name, "machine": machine, "meta": dict(meta or {}), "rows": list(rows)}
    atomic_write_json(paths.json, record)

    parts = [f"# {markdown_title or name}"]
    if notes:
        parts += [notes] if isinstance(notes, str) else list(notes)
    parts += [markdown_table(rows if table_rows is None else table_rows, columns)]
    parts += [_machine_markdown(machine)]
    atomic_write_text(paths.md, "\n\n".join(p.strip("\n") for p in parts) + "\n")
    return paths
