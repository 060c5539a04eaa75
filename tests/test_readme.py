"""README.md stays a front page: every ```python block runs, in order, so it cannot rot; it stays under 10 KB,
its table of the documentation names every page (and only pages that exist), it links no file outside the
repository, and the changelog beside it names this version.

Blocks of one ``## `` section share a namespace and run in a temporary directory, offline: the hub model is the
tiny Qwen3 (with the real Qwen3 tokenizer). A block that cannot run here is marked in the README by
``<!-- test: why -->`` right before it; the set of marked blocks is asserted, so a new one is a deliberate
choice."""
import re

README_MODEL = '"Alibaba-NLP/E2Rank-0.6B"'
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


def test_every_python_block_of_the_readme_runs(repo_dir, tiny_qwen_dir, tmp_path, monkeypatch, capsys):
    blocks = readme_blocks((repo_dir / "README.md").read_text())
    assert {first for _, first, _, mark in blocks if mark} == MARKED
    monkeypatch.chdir(tmp_path)
    namespaces, replaced = {}, False
    for section, first, code, mark in blocks:
        if mark:
            continue
        replaced |= README_MODEL in code
        namespace = namespaces.setdefault(section, {"__name__": "readme"})
        code = code.replace(README_MODEL, repr(str(tiny_qwen_dir)))
        exec(compile(code, f"README.md ({section}: {first})", "exec"), namespace)
    assert replaced  # the substitution still meets its text in the README
    assert len(namespaces["## Quick start"]["index"]) == 3
    assert "what do antibodies do" in capsys.readouterr().out  # the quick start printed its rankings


def test_the_readme_is_a_front_page(repo_dir):
    """Under 10 KB; its documentation table links every page, each of which exists; every relative link points
    inside the repository (``../shared`` appears only in the notes on the test machine's data)."""
    text = (repo_dir / "README.md").read_text()
    assert len(text.encode()) < 10_000
    links = re.findall(r"\]\(([^)#]+)\)", text)
    local = [link for link in links if not re.match(r"https?://", link)]
    assert local and all((repo_dir / link).exists() for link in local), local
    assert all((repo_dir / link).resolve().is_relative_to(repo_dir) for link in local)
    pages = {p.name for p in (repo_dir / "pyterrier_e2rank" / "pt_docs").glob("*.rst")}
    assert {link.rsplit("/", 1)[1] for link in local if link.endswith(".rst")} == pages
    assert all("Two commands" in section for section in re.split(r"^## ", text, flags=re.M) if "../shared" in section)


def test_one_version_everywhere(repo_dir):
    """The version is written once (``pyterrier_e2rank.__version__``): the installed metadata and CHANGELOG.md
    ("this version") say the same."""
    from importlib.metadata import version

    import pyterrier_e2rank
    assert version("pyterrier-e2rank") == pyterrier_e2rank.__version__
    assert f"## {pyterrier_e2rank.__version__} (this version" in (repo_dir / "CHANGELOG.md").read_text()
