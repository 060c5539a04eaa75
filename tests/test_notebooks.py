"""The course notebooks (``examples/0*.ipynb``) run from top to bottom in a reduced form: the tiny random
Qwen3, SciFact cut small (``small_scifact``: two queries), indexes and checkpoints in a temporary folder
(shared by the notebooks, so the BM25 and dense indexes are built once). Each must show its tables and at least
one figure. Nothing is written back into the notebooks."""
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("ipykernel")

#: notebook -> texts its outputs must contain (table rows and columns that show it did its job)
NOTEBOOKS = {
    "01_retrieval_and_reranking.ipynb": ["bm25>>e2rank-prf", "p-value corrected", "ms/query"],
    "02_inside_the_prompt.ipynb": ["Search Query:", "num_input_docs", "forward passes/query", "PRF re-retrieval",
                                   "pseudo_query_shift", "rank_change"],
    "03_efficiency.ipynb": ["e2rank, re-encoding", "generative, windows 20/10", "not meaningful"],
    "04_training.ipynb": ["ranknet", "trained, PRF reranker", "base, plain embedding"],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_qwen_dir, scifact):
    """One folder for every notebook's indexes and checkpoints; ``scifact`` seeds the ir_datasets cache."""
    return tmp_path_factory.mktemp("course-notebooks")


def test_every_course_notebook_is_tested(repo_dir):
    assert sorted(p.name for p in (repo_dir / "examples").glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_course_notebook_runs(name, workdir, tiny_qwen_dir, small_scifact, repo_dir, monkeypatch):
    for key, value in {"E2RANK_MODEL": str(tiny_qwen_dir), "E2RANK_EXAMPLE_QUERIES": "2",
                       "E2RANK_EXAMPLE_DATASET": str(small_scifact),
                       "E2RANK_EXAMPLE_INDEX_DIR": str(workdir / "indexes"),
                       "E2RANK_EXAMPLE_WORK_DIR": str(workdir / "work"),
                       "E2RANK_EXAMPLE_GENERATIVE_QUERIES": "1", "E2RANK_EXAMPLE_BASELINE_SHAPE": "tiny",
                       "E2RANK_EXAMPLE_TRAIN_LISTS": "4",
                       "MPLBACKEND": "module://matplotlib_inline.backend_inline"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(repo_dir / "examples" / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(repo_dir)}}).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{name} drew no figure"
    shown = "\n".join([out.get("text", "") for out in outputs]
                      + [str(v) for out in outputs for k, v in out.get("data", {}).items() if k.startswith("text/")])
    missing = [text for text in NOTEBOOKS[name] + ["set by $E2RANK_MODEL"] if text not in shown]
    assert not missing, f"{name}: not in the outputs: {missing}"
    assert not os.path.exists(repo_dir / "examples" / "runs"), "a notebook wrote into examples/"
