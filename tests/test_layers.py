"""The package's layers, read from its source with ``ast`` so nothing is imported. A module's layer is where it lies in
the tree: ``model/``, ``rerank/``, ``index/`` and the shared top-level helpers (``io``, ``checks``, ``equality``,
``deprecation``) are the core; the other top-level modules (``data``, ``bright``, ``records``, ``bm25``,
``pyserini``, ``mteb_adapter``, ``testing``) the integrations; ``cli/`` the application (every command line);
``training/`` the training library; the package's ``__init__`` is the surface, which re-exports what the docs teach.
No layer imports one above it, and no modules import each other in a cycle, counting every import (inside functions
too, relative or absolute). An import names a module, or the package's ``__init__`` when it names a package; the
modules the surface's ``_EXPORTS`` table names are its imports too (made on first use, PEP 562)."""
import ast
from pathlib import Path
from typing import Dict, List, NamedTuple

import pytest

PACKAGE = "pyterrier_e2rank"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
#: The layers by folder; the top-level modules are the integrations but ``__init__`` and the shared helpers.
FOLDERS = {"model": "core", "rerank": "core", "index": "core", "cli": "application", "study": "application",
           "training": "training"}
SHARED = {"io", "checks", "equality", "deprecation"}
#: The surface's table of the modules it imports names from on first use.
LAZY_TABLE = "_EXPORTS"
FORBIDDEN = {"core": {"integration", "application", "training", "surface"},
             "integration": {"application", "training", "surface"},
             "training": {"application", "surface"},
             "surface": {"application"}}


def module_name(path: Path) -> str:
    parts = (PACKAGE,) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of a module, from its place in the tree alone."""
    path = MODULES[module].relative_to(ROOT)
    if len(path.parts) > 1:
        return FOLDERS[path.parts[0]]  # a new sub-package must be given a layer here
    if path.name == "__init__.py":
        return "surface"
    return "core" if path.stem in SHARED else "integration"


class Import(NamedTuple):
    source: str
    target: str
    lineno: int
    at_load: bool  # runs when the module is loaded: not inside a function, not under ``if TYPE_CHECKING``

    def __str__(self):
        line = MODULES[self.source].read_text().splitlines()[self.lineno - 1].strip()
        return f"{MODULES[self.source].relative_to(ROOT.parent)}:{self.lineno}: {line}"


def _named_module(name: str) -> str:
    """The longest prefix of ``name`` that is one of our modules (``a.b.c`` runs ``a.b.c``, else ``a.b``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return name


def imports_of(module: str) -> List[Import]:
    """The package-internal imports of ``module``, each with the module it names."""
    is_package = MODULES[module].name == "__init__.py"
    found = []

    def visit(node, at_load):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            at_load = False
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, at_load)
            return
        if isinstance(node, ast.Import):
            targets = [_named_module(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else _named_module(base) for a in node.names]
        elif module == PACKAGE and isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == LAZY_TABLE:
            found.extend(Import(module, f"{PACKAGE}.{ast.literal_eval(key)}", key.lineno, False)
                         for key in node.value.keys)
            targets = []
        else:
            targets = []
        found.extend(Import(module, target, node.lineno, at_load) for target in dict.fromkeys(targets)
                     if target.split(".")[0] == PACKAGE)
        for child in ast.iter_child_nodes(node):
            visit(child, at_load)

    visit(ast.parse(MODULES[module].read_text(), str(MODULES[module])), True)
    return found


IMPORTS = [imp for module in MODULES for imp in imports_of(module)]


def test_every_layer_and_integration_is_found():
    """Guards the rules below against passing vacuously after a rename or a move."""
    assert {layer(m) for m in MODULES} == {"core", "integration", "application", "training", "surface"}
    integrations = ("data", "bright", "bm25", "pyserini", "mteb_adapter", "records", "testing")
    assert {m for m in MODULES if layer(m) == "integration"} == {f"{PACKAGE}.{name}" for name in integrations}
    assert any(imp.at_load for imp in IMPORTS) and any(not imp.at_load for imp in IMPORTS)
    assert {imp.target for imp in IMPORTS if imp.source == PACKAGE} >= {f"{PACKAGE}.model.e2rank", f"{PACKAGE}.data"}


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(lower):
    wrong = [f"{imp}  ({layer(imp.target)} module {imp.target})" for imp in IMPORTS
             if layer(imp.source) == lower and layer(imp.target) in FORBIDDEN[lower]]
    assert not wrong, f"{lower} modules import {' or '.join(sorted(FORBIDDEN[lower]))} code:\n" + "\n".join(wrong)


def _cycles(edges: Dict[str, set]) -> List[List[str]]:
    """Strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle():
    """Every import counts, a function-level one too: a cycle hidden in a function is still a cycle."""
    internal = [imp for imp in IMPORTS if imp.target in MODULES]
    edges = {}
    for imp in internal:
        edges.setdefault(imp.source, set()).add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n\n".join(
        "\n".join(str(imp) for imp in internal if imp.source in cycle and imp.target in cycle) for cycle in cycles)


def test_no_loop_between_layers():
    """Counting every import (inside functions too): a function-level import may break a module cycle, never
    make two layers depend on each other."""
    crossing = [imp for imp in IMPORTS if imp.target in MODULES and layer(imp.source) != layer(imp.target)]
    edges = {}
    for imp in crossing:
        edges.setdefault(layer(imp.source), set()).add(layer(imp.target))
    loops = _cycles(edges)
    assert not loops, "layers importing each other:\n" + "\n\n".join(
        "\n".join(f"{imp}  ({layer(imp.source)} -> {layer(imp.target)})" for imp in crossing
                  if layer(imp.source) in loop and layer(imp.target) in loop) for loop in loops)
