"""Every notebook under notebooks/ runs top to bottom in a Jupyter kernel, with ``nbclient`` (a maintained runner).

The kernel is ipykernel's native one (this interpreter), started in the
repository root, so a notebook imports ``layers``, ``pipelines`` and ``apps``
as a user's would. The executed notebook is not written back.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook):
    document = nbformat.read(notebook, as_version=4)
    client = NotebookClient(document, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{notebook.name}: a cell raised\n{str(error)[-4000:]}")
    executed = [cell for cell in document.cells if cell.cell_type == "code"]
    assert executed and all(cell.execution_count for cell in executed)
