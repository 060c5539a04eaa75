"""The PyTerrier documentation pages (``pyterrier_e2rank/pt_docs/``): they build with Sphinx without a warning,
every ``.. code-block:: python`` of them runs, the specification's numbered sections (cited in code as
``pt_docs/specification.rst §N``) keep their numbers, what it states agrees with the constants of the code, and
the pages ship in the wheel and the sdist, where PyTerrier's documentation build finds them.

Blocks run as ``test_readme.py`` runs the README's: those of one page share a namespace, in a temporary
directory, with the hub model replaced by the tiny Qwen3 (which carries the real Qwen3 tokenizer and chat
template). A block that cannot run here is marked in the page by the comment ``.. test: why`` right before it;
the set of marked blocks is asserted, so a new one is a deliberate choice."""
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "pyterrier_e2rank" / "pt_docs"
PAGES = ("index.rst", "specification.rst")
HUB_MODEL = '"Alibaba-NLP/E2Rank-0.6B"'
#: Blocks marked ``.. test: ...`` (not run), by page and first line: none today.
MARKED = set()
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


def test_the_pages_build_with_sphinx_without_a_warning(tmp_path):
    if find_spec("sphinx") is None:
        pytest.skip("Sphinx is not installed (it is in the [test] extra: pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                             "-C", "-D", "root_doc=index", "-D", "project=pyterrier-e2rank",
                             "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {page.removesuffix(".rst") for page in PAGES} <= {p.stem for p in (tmp_path / "html").glob("*.html")}


def test_every_python_block_of_the_pages_runs(tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marked, ran, replaced = set(), [], False
    for page in PAGES:
        namespace = {"__name__": "pt_docs"}
        for first, code, mark in rst_python_blocks((DOCS / page).read_text()):
            if mark:
                marked.add((page, first))
                continue
            replaced |= HUB_MODEL in code
            code = code.replace(HUB_MODEL, repr(str(tiny_qwen_dir)))
            exec(compile(code, f"pt_docs/{page} (block: {first})", "exec"), namespace)
            ran.append((page, first))
    assert marked == MARKED
    assert replaced  # the substitution still meets its text in the pages
    assert {page for page, _ in ran} == set(PAGES)
    assert "what do antibodies do" in capsys.readouterr().out  # the quick start printed its rankings


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
    for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
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
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/pt_docs/" in name}
    expected = {f"pyterrier_e2rank/pt_docs/{page}" for page in PAGES}
    assert {p.name for p in DOCS.glob("*.rst")} == set(PAGES)
    assert in_wheel == expected
    assert in_sdist >= expected
