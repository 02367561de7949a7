"""The package's import graph: no circle, and nothing the pipeline is built from imports it.

A small AST scan of ``bo_voids/`` (no third-party tool): every ``import`` and ``from ... import``
of a ``bo_voids`` module is an edge, wherever it stands (a function-level import closes a circle
as surely as a top-level one, only later), except under ``if TYPE_CHECKING:``, which never runs.
``from package import name`` is an edge to the submodule when ``name`` is one, else to the
package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bo_voids"
PIPELINE = "bo_voids.pipeline"
#: What the pipeline may use but that must never use the pipeline back, even where the pipeline
#: does not import it (yet): the library layers below the loop.
LOWER_LAYERS = (
    "bo_voids._io",
    "bo_voids.config",
    "bo_voids.embedding",
    "bo_voids.evaluation",
    "bo_voids.exceptions",
    "bo_voids.executors",
    "bo_voids.generation",
    "bo_voids.metrics",
    "bo_voids.optimizers",
    "bo_voids.projection",
    "bo_voids.scoring",
    "bo_voids.seeding",
    "bo_voids.space",
    "bo_voids.state",
    "bo_voids.summaries",
    "bo_voids.surrogates",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """``(imported module, imported names)`` of every import outside ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base, [a.name for a in node.names]
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """``{module: the bo_voids modules it imports}`` for every module of the package."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps: set[str] = set()
        for target, names in _imports(tree, module, path.name == "__init__.py"):
            if target != "bo_voids" and not target.startswith("bo_voids."):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            deps.update(subs or ([target] if target in files else []))
            if names and len(subs) < len(names) and target in files:
                deps.add(target)  # names defined in the package itself
        deps.discard(module)
        graph[module] = deps
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_the_scan_sees_the_package() -> None:
    graph = import_graph()
    assert PIPELINE in graph and "bo_voids.executors.dask" in graph
    assert "bo_voids.evaluation" in graph["bo_voids.executors.local"]
    assert "bo_voids.executors.dask" in graph["bo_voids.executors.factory"]  # in a function


def test_no_import_circle() -> None:
    assert strongly_connected(import_graph()) == []


def test_nothing_below_the_pipeline_imports_it() -> None:
    graph = import_graph()
    below = _reachable(graph, PIPELINE) | {
        m for m in graph if any(m == p or m.startswith(f"{p}.") for p in LOWER_LAYERS)
    }
    offenders = sorted(m for m in below if PIPELINE in graph[m])
    assert offenders == [], f"modules below the pipeline import it: {offenders}"


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
