"""Run the course notebooks from top to bottom and store their outputs in them (what the repository ships).

    python scripts/execute_notebooks.py [examples/02_inside_the_prompt.ipynb ...]

Without arguments: every ``examples/*.ipynb``, one after another, from the repository root (as
``tests/test_notebooks.py`` runs them, but at full size and written back). The environment is passed on:
``E2RANK_MODEL`` chooses the model (``pick_model``), ``E2RANK_EXAMPLE_INDEX_DIR`` where indexes are kept.
A notebook that fails is not written; the error names it and the cell.
"""
import sys
from pathlib import Path

import nbclient
import nbformat

from pyterrier_e2rank.io import atomic_file

REPO = Path(__file__).resolve().parent.parent


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    try:
        nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3",
                                resources={"metadata": {"path": str(REPO)}}).execute()
    except nbclient.exceptions.CellExecutionError as e:
        raise SystemExit(f"{path}: a cell failed, the notebook is left as it was:\n{e}") from None
    with atomic_file(path) as out:
        nbformat.write(notebook, out)


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(str(p) for p in (REPO / "examples").glob("*.ipynb")):
        print("executing", name, flush=True)
        execute(Path(name))
