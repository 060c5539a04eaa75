"""Every ```python block of README.md runs, in order, so the README cannot rot.

Blocks of one ``## `` section share a namespace (the Caching block uses the Usage block's model and index).
They run in a temporary directory (their relative ``indexes/``, ``caches/``, ``collection/`` paths land
there) on SciFact cut small: the hub model is the tiny Qwen3, the corpus is a BEIR folder of SciFact's
first documents plus those judged for three test queries, and the topics are those three queries; the
Pyserini block gets the JSONL collection and the Lucene index (``--storeRaw``) it expects. A block that
cannot run here is marked in the README by ``<!-- test: why -->`` right before it; the set of marked
blocks is asserted, so a new one is a deliberate choice."""
import json
import subprocess
import sys

import pytest

from pyterrier_e2rank.data import corpus_iter

README_MODEL = '"Alibaba-NLP/E2Rank-0.6B"'
NUM_QUERIES = 3  # the small_scifact fixture's
#: Blocks marked ``<!-- test: ... -->`` (not run), by their first line: none today.
MARKED = set()


def readme_blocks(text: str):
    """``(section, first line, code, mark)`` of each ```python block; ``mark`` is the ``<!-- test: ... -->``
    comment right before it, else ``None``."""
    lines, section, blocks, i = text.splitlines(), "", [], 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i]
        elif lines[i].strip() == "```python":
            indent = len(lines[i]) - len(lines[i].lstrip())
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            code = "\n".join(line[indent:] for line in lines[i + 1:end])
            before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            blocks.append((section, code.splitlines()[0], code, before if before.startswith("<!-- test:") else None))
            i = end
        i += 1
    return blocks


def substituted(code: str, replacements: dict) -> str:
    for old, new in replacements.items():
        code = code.replace(old, new)
    return code


@pytest.fixture(scope="module")
def pyserini_inputs(small_scifact, tmp_path_factory):
    """``collection/`` (Pyserini JSONL) and ``indexes/lucene`` (stored raw), as the Pyserini block expects."""
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


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(repo_dir, small_scifact, pyserini_inputs, tiny_qwen_dir,
                                               monkeypatch, capsys):
    blocks = readme_blocks((repo_dir / "README.md").read_text())
    assert {first for _, first, _, mark in blocks if mark} == MARKED
    replacements = {
        README_MODEL: repr(str(tiny_qwen_dir)),
        'pt.get_dataset("irds:beir/scifact/test")':
            f"__import__('pyterrier_e2rank.data').data.dataset({str(small_scifact)!r})",
        "dataset.get_topics()": f"dataset.get_topics().head({NUM_QUERIES})",
        '"path/to/my-beir-folder"': repr(str(small_scifact)),
        # the JVM resolves relative paths against its own start directory, not the test's
        '"indexes/lucene"': repr(str(pyserini_inputs / "indexes" / "lucene")),
    }
    used = set()
    monkeypatch.chdir(pyserini_inputs)
    namespaces = {}
    for section, first, code, mark in blocks:
        if mark:
            continue
        used |= {old for old in replacements if old in code}
        namespace = namespaces.setdefault(section, {"__name__": "readme"})
        exec(compile(substituted(code, replacements), f"README.md ({section}: {first})", "exec"), namespace)
    assert used == set(replacements)  # every substitution still meets its text in the README
    assert len(namespaces["## Usage"]["index"]) == len(corpus_iter(small_scifact))
    assert len(namespaces["## Pyserini"]["reranked"]) > 0
    assert "[(" in capsys.readouterr().out  # the Pyserini block printed its top 5


def test_one_version_everywhere(repo_dir):
    """The version is written once (``pyterrier_e2rank.__version__``): the installed metadata and the
    changelog ("this version"; CHANGELOG.md, else README.md) say the same."""
    from importlib.metadata import version

    import pyterrier_e2rank
    assert version("pyterrier-e2rank") == pyterrier_e2rank.__version__
    changelog = next(path for path in (repo_dir / "CHANGELOG.md", repo_dir / "README.md") if path.exists())
    assert f"**{pyterrier_e2rank.__version__}** (this version" in changelog.read_text()
