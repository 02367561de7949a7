"""HTML building blocks of the report: escaping, number formatting, tables, embedded figures.

Every value is HTML-escaped; numbers are formatted compactly and stably (``—`` for a missing or
non-finite value), so every section of :mod:`bo_voids.report` shows them alike.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "e",
    "embedded_figure",
    "fmt",
    "num",
    "pct",
    "render_value",
    "seconds",
    "table",
]


def embedded_figure(png: Path, key: str, title: str, caption: str) -> str:
    """A ``<figure>`` with the PNG file embedded as base64 (``""`` when it cannot be read)."""
    try:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
    except OSError:
        return ""
    return (
        f'<figure id="fig-{e(key)}"><h3>{e(title)}</h3>'
        f'<img alt="{e(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: object) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]  # anything: refused below
    except (TypeError, ValueError):
        return math.nan


def fmt(value: object) -> str:
    """Compact, stable formatting of scores and parameters (``—`` for missing)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def seconds(value: object) -> str:
    v = num(value)
    return f"{v:.2f}" if math.isfinite(v) else "—"


def pct(value: object) -> str:
    v = num(value)
    return f"{100 * v:.0f}%" if math.isfinite(v) else "—"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table(
    head: Sequence[str], rows: Iterable[tuple[Sequence[str], str]], table_id: str | None = None
) -> str:
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = []
    for cells, cls in rows:
        tds = "".join(
            f'<td class="num">{e(c)}</td>' if _is_number(str(c)) else f"<td>{e(c)}</td>"
            for c in cells
        )
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    ident = f' id="{e(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _scalar(value: object) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return fmt(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return fmt(value)


def render_value(value: object, depth: int = 0) -> str:
    """Render arbitrary JSON generically: mappings and record lists as tables, scalars as text."""
    if isinstance(value, Mapping):
        if not value:
            return '<p class="note">(empty)</p>'
        if depth < 2 and all(isinstance(v, Mapping) for v in value.values()):
            # {name: {field: value}}: one row per name
            cols = list(dict.fromkeys(k for v in value.values() for k in v))
            rows = [([str(k), *(_scalar(v.get(c)) for c in cols)], "") for k, v in value.items()]
            return f'<div class="scroll">{table(["", *map(str, cols)], rows)}</div>'
        rows = [
            (
                [str(k), _scalar(v)],
                "",
            )
            for k, v in value.items()
            if not (isinstance(v, Mapping | list) and depth < 2 and _is_structured(v))
        ]
        nested = "".join(
            f"<h3>{e(k)}</h3>{render_value(v, depth + 1)}"
            for k, v in value.items()
            if isinstance(v, Mapping | list) and depth < 2 and _is_structured(v)
        )
        flat = table(["key", "value"], rows) if rows else ""
        return flat + nested
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            cols = list(dict.fromkeys(k for v in value for k in v))
            rows = [([_scalar(v.get(c)) for c in cols], "") for v in value]
            return f'<div class="scroll">{table(list(map(str, cols)), rows)}</div>'
        return f"<p>{e(', '.join(_scalar(v) for v in value))}</p>"
    return f"<p>{e(_scalar(value))}</p>"


def _is_structured(value: Any) -> bool:
    if isinstance(value, Mapping):
        return bool(value)
    return bool(value) and all(isinstance(v, Mapping) for v in value)
