"""Run a notebook's code cells in order in one namespace, from the repository root.

Usage: ``python tests/notebooks/run_notebook.py notebooks/01_layers_tour.ipynb``.
Prints each cell's output; exits non-zero on the first cell that raises,
naming the cell. No Jupyter kernel needed, so the notebooks are tested by the
default suite with the packages ``make setup`` installs.
"""

import json
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def code_cells(path):
    notebook = json.loads(Path(path).read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            yield index, "".join(cell["source"])


def run(path):
    sys.path.insert(0, str(REPO))
    namespace = {"__name__": "__main__"}
    for index, source in code_cells(path):
        try:
            exec(compile(source, f"{path}[cell {index}]", "exec"), namespace)
        except Exception:
            traceback.print_exc()
            print(f"{path}: cell {index} failed", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: run_notebook.py NOTEBOOK.ipynb")
    sys.exit(run(sys.argv[1]))
