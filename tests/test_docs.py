"""The PyTerrier documentation pages (``pyterrier_e2rank/pt_docs/``): they build with Sphinx without a warning (the
API page from the docstrings, by autodoc), every ``.. code-block:: python`` of them runs, the specification's
numbered sections (cited in code as ``pt_docs/specification.rst §N``) keep their numbers, what it states agrees
with the constants of the code, and the pages ship in the wheel and the sdist, where PyTerrier's documentation
build finds them.

Blocks run as ``test_readme.py`` runs the README's: those of one page share a namespace, in a temporary
directory, offline: the hub model is the tiny Qwen3 (which carries the real Qwen3 tokenizer and chat template),
SciFact is a BEIR folder of its first documents plus those judged for three test queries, and the Pyserini page
gets the JSONL collection and Lucene index it expects. A block that cannot run here is marked in the page by the
comment ``.. test: why`` right before it; the set of marked blocks is asserted, so a new one is a deliberate
choice."""
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "pyterrier_e2rank" / "pt_docs"
PAGES = ("index.rst", "retrieval-and-reranking.rst", "indexing.rst", "sharing.rst", "efficiency.rst",
         "datasets-and-bm25.rst", "pyserini.rst", "training.rst", "command-lines.rst", "reproducing.rst", "study.rst",
         "guarantees.rst", "specification.rst", "api.rst")
HUB_MODEL = '"Alibaba-NLP/E2Rank-0.6B"'
SCIFACT = 'pt.get_dataset("irds:beir/scifact/test")'
BEIR_FOLDER = '"path/to/my-beir-folder"'
LUCENE = '"indexes/lucene"'
#: Leave-one-out influence renders a prompt per prompt document: 5 documents instead of 20 make it 16x cheaper.
INFLUENCE = "feedback_influence(model, candidates, index=index)"
#: The pages whose blocks read SciFact (the small BEIR folder stands in for it).
ON_SCIFACT = {"retrieval-and-reranking.rst", "indexing.rst", "datasets-and-bm25.rst"}
#: Blocks marked ``.. test: ...`` (not run), by page and first line: none today.
MARKED = {("sharing.rst", 'index.to_hf("my-name/my-docs.e2rank")')}
#: The specification's sections. Code cites them by number, so a number never changes meaning: a new section
#: is appended (and added here), never inserted.
SECTIONS = {1: "Sources and what \"exact\" means", 2: "Model, pooling and scores", 3: "Queries", 4: "Documents",
            5: "The listwise prompt", 6: "Re-scoring: listwise pseudo-relevance feedback",
            7: "The evaluation protocol", 8: "The paper's figures", 9: "Training, for reference"}


def rst_python_blocks(text: str):
    """``(first line, code, mark)`` of each ``.. code-block:: python``; ``mark`` is the ``.. test: ...`` comment
    right before it, else ``None``."""
    lines, blocks = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body, j = [], i + 1
        while j < len(lines) and lines[j].strip().startswith(":"):  # the directive's options
            j += 1
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        margin = min(len(b) - len(b.lstrip()) for b in body if b.strip())
        code = "\n".join(b[margin:] for b in body)
        before = next((b.strip() for b in reversed(lines[:i]) if b.strip()), "")
        blocks.append((code.splitlines()[0], code, before if before.startswith(".. test:") else None))
    return blocks


def numbered_sections(text: str):
    """``(number, title, label)`` of each ``N. Title`` section; ``label`` is the ``.. _name:`` target before it."""
    lines, found = text.splitlines(), []
    for i, line in enumerate(lines[:-1]):
        match = re.fullmatch(r"(\d+)\. (.+)", line)
        if match and re.fullmatch(r"-{3,}", lines[i + 1]) and len(lines[i + 1]) >= len(line):
            before = next((b.strip() for b in reversed(lines[:i]) if b.strip()), "")
            label = re.fullmatch(r"\.\. _([\w-]+):", before)
            found.append((int(match[1]), match[2], label and label[1]))
    return found


def list_table(text: str, after: str):
    """The rows (lists of cell texts) of the first ``list-table`` after the line ``after``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == ".. list-table::" and i > lines.index(after))
    rows = []
    for line in lines[start + 1:]:
        if line.strip() and not line.startswith("   "):
            break
        if line.strip().startswith("* - "):
            rows.append([line.strip()[4:]])
        elif line.strip().startswith("- ") and rows:
            rows[-1].append(line.strip()[2:])
        elif line.strip() and rows and not line.strip().startswith(":"):
            rows[-1][-1] += " " + line.strip()  # a cell continued on the next line
    return rows


def spec_text() -> str:
    return (DOCS / "specification.rst").read_text()


@pytest.mark.slow
def test_the_pages_build_with_sphinx_without_a_warning(repo_dir, tmp_path):
    """As PyTerrier's documentation builds them: autodoc reads the Google-style docstrings (napoleon); type hints
    stay out of the signatures, whose targets (pandas, torch) no page of this package defines."""
    if find_spec("mteb") is None:
        pytest.skip("api.rst documents E2RankMTEB, which needs the [mteb] extra (not in the lowest environment)")
    if find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed (it is in the [test] extra: pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_dir), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                             "-C", "-D", "root_doc=index", "-D", "project=pyterrier-e2rank",
                             "-D", "extensions=sphinx.ext.autodoc,sphinx.ext.napoleon", "-D", "autodoc_typehints=none",
                             "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {page.removesuffix(".rst") for page in PAGES} <= {p.stem for p in (tmp_path / "html").glob("*.html")}
    api = (tmp_path / "html" / "api.html").read_text()
    assert "pyterrier_e2rank.E2Rank.reranker" in api and "pyterrier_e2rank.pyserini.HitReranker" in api


@pytest.fixture(scope="module")
def pyserini_inputs(small_scifact, tmp_path_factory):
    """``collection/`` (Pyserini JSONL) and ``indexes/lucene`` (stored raw), as the Pyserini page expects."""
    pytest.importorskip("pyserini", reason="Pyserini is not installed (scripts/install-pyserini.sh installs it)")
    root = tmp_path_factory.mktemp("pyserini")
    (root / "collection").mkdir()
    with open(small_scifact / "corpus.jsonl") as corpus, open(root / "collection" / "docs.jsonl", "w") as out:
        for doc in map(json.loads, corpus):
            out.write(json.dumps({"id": doc["_id"], "contents": f"{doc['title']} {doc['text']}"}) + "\n")
    subprocess.run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection",
                    "--input", str(root / "collection"), "--index", str(root / "indexes" / "lucene"),
                    "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--storeRaw"],
                   check=True, capture_output=True)
    return root


def test_every_substitution_meets_its_text():
    """The texts the block runner replaces are still in the pages (else a block would reach for the hub)."""
    text = {page: (DOCS / page).read_text() for page in PAGES}
    assert all(SCIFACT in text[page] or BEIR_FOLDER in text[page] for page in ON_SCIFACT)
    assert LUCENE in text["pyserini.rst"] and INFLUENCE in text["retrieval-and-reranking.rst"]
    assert [page for page in PAGES if HUB_MODEL in text[page] and rst_python_blocks(text[page])]


def run_blocks(page: str, replacements: dict) -> dict:
    """Runs the page's unmarked blocks in one namespace, which it returns; asserts the marked ones."""
    namespace, marked = {"__name__": "pt_docs"}, set()
    for first, code, mark in rst_python_blocks((DOCS / page).read_text()):
        if mark:
            marked.add((page, first))
            continue
        for old, new in replacements.items():
            code = code.replace(old, new)
        exec(compile(code, f"pt_docs/{page} (block: {first})", "exec"), namespace)
    assert marked == {(p, first) for p, first in MARKED if p == page}
    return namespace


#: Pages whose blocks take 3 s or more (a whole pt.Experiment with 20-document prompts: 35-45 s): slow tier.
SLOW = {"retrieval-and-reranking.rst", "indexing.rst", "datasets-and-bm25.rst"}


@pytest.mark.parametrize("page", [pytest.param(page, marks=[pytest.mark.slow] if page in SLOW else [])
                                  for page in PAGES if page != "pyserini.rst"])
def test_every_python_block_of_the_page_runs(page, tiny_qwen_dir, tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("E2RANK_CACHE", str(tmp_path / "cache"))  # exported backbones: not the user's cache
    monkeypatch.setenv("PYTERRIER_HOME", str(tmp_path / "pyterrier"))  # downloaded artifacts: not the user's
    replacements = {HUB_MODEL: repr(str(tiny_qwen_dir))}
    if page in ON_SCIFACT:
        folder = request.getfixturevalue("small_scifact")
        replacements |= {SCIFACT: f"__import__('pyterrier_e2rank').dataset({str(folder)!r})",
                         BEIR_FOLDER: repr(str(folder)), INFLUENCE: INFLUENCE[:-1] + ", num_input_docs=5)"}
    namespace = run_blocks(page, replacements)
    if page == "index.rst":
        assert "what do antibodies do" in capsys.readouterr().out  # the quick start printed its rankings
    if page == "retrieval-and-reranking.rst":
        assert len(namespace["results"]) == 5 and len(namespace["influence"]) > 0


@pytest.mark.slow
def test_the_pyserini_page_runs(tiny_qwen_dir, pyserini_inputs, monkeypatch, capsys):
    monkeypatch.chdir(pyserini_inputs)
    # the JVM resolves relative paths against its own start directory, not the test's
    namespace = run_blocks("pyserini.rst", {HUB_MODEL: repr(str(tiny_qwen_dir)),
                                            LUCENE: repr(str(pyserini_inputs / "indexes" / "lucene"))})
    assert len(namespace["reranked"]) > 0
    assert "[(" in capsys.readouterr().out  # it printed its top 5


def test_the_specification_keeps_its_section_numbers_and_labels():
    sections = numbered_sections(spec_text())
    assert {number: title for number, title, _ in sections} == SECTIONS
    assert [number for number, _, _ in sections] == sorted(SECTIONS)
    assert [label for _, _, label in sections] == [f"e2rank-spec-{number}" for number, _, _ in sections]


def test_the_specification_states_the_code_word_for_word():
    """The dataset instructions, the task sentences and the paper's figures, as the code holds them."""
    from pyterrier_e2rank.cli.paper import PAPER_COLUMNS, PAPER_FIGURES
    from pyterrier_e2rank.model.text import DATASET_QUERY_TASKS, DEFAULT_QUERY_TASK, DEFAULT_RERANK_TASK

    text = spec_text()
    tasks = {name.strip("`"): task for name, task in list_table(text, "3. Queries")[1:]}
    assert tasks == DATASET_QUERY_TASKS
    for sentence in (DEFAULT_QUERY_TASK, DEFAULT_RERANK_TASK):  # each on a line of a literal block
        assert re.search(rf"^ +{re.escape(sentence)}:?$", text, re.MULTILINE), sentence
    header, *rows = list_table(text, "8. The paper's figures")
    assert header[1:len(PAPER_COLUMNS) + 1] == list(PAPER_COLUMNS)
    figures = {row[0]: tuple(float(cell) for cell in row[1:len(PAPER_COLUMNS) + 1]) for row in rows}
    assert {name: figures.get(name) for name in PAPER_FIGURES} == PAPER_FIGURES


def test_the_pages_ship_in_the_wheel_and_the_sdist(repo_dir, tmp_path):
    """Built from a copy of what makes the distribution, so the repository gains no build/ or egg-info."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "CHANGELOG.md", "CONTRIBUTING.md"):
        if (repo_dir / name).exists():
            (source / name).write_bytes((repo_dir / name).read_bytes())
    for path in (repo_dir / "pyterrier_e2rank").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            (source / path.relative_to(repo_dir)).parent.mkdir(parents=True, exist_ok=True)
            (source / path.relative_to(repo_dir)).write_bytes(path.read_bytes())
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; b.build_wheel('dist'); "
                    "b.build_sdist('dist')"], cwd=source, check=True, capture_output=True)
    wheel, = (source / "dist").glob("*.whl")
    sdist, = (source / "dist").glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if "/pt_docs/" in name}
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {f"pyterrier_e2rank/pt_docs/{name}" for name in (*PAGES, *(p.name for p in DOCS.glob("*.png")))}
    assert {p.name for p in DOCS.glob("*.rst")} == set(PAGES)
    assert in_wheel == expected
    assert in_sdist >= expected | {"CHANGELOG.md", "CONTRIBUTING.md"}
