"""The analysis notebook: committed clean, parametrisable, and runs headlessly on a tiny run."""

from __future__ import annotations

import nbformat
import pytest

from bo_voids.testing.runs import REPO_ROOT as REPO
from bo_voids.testing.runs import build_tiny_run

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


def _load() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    return cells[0]


def test_committed_notebook_is_clean_and_parametrised() -> None:
    nb = _load()
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], "outputs must be cleared in the committed notebook"
            assert cell.execution_count is None
    cell = _parameters_cell(nb)
    assert cell.source.strip() == 'EXPERIMENT_DIR = "experiments/quickstart"'
    source = "\n".join(c.source for c in nb.cells)
    assert "from bo_voids.state import load_experiment" in source
    assert "from bo_voids import plots" in source
    assert "import pandas" not in source  # plain Python tables only


def test_notebook_executes_on_a_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    from nbclient import NotebookClient

    run_dir = build_tiny_run(tmp_path_factory.getbasetemp())
    nb = _load()
    _parameters_cell(nb).source = f"EXPERIMENT_DIR = {str(run_dir)!r}"
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 4, "the four figures are shown inline"
    markdown = "\n".join(
        o["data"]["text/markdown"] for o in outputs if "data" in o and "text/markdown" in o["data"]
    )
    assert "| iteration |" in markdown and "distribution similarity" in markdown
    assert "real" in markdown and "distribution mean / mode" in markdown
