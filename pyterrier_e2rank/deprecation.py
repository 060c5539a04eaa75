"""Old spellings kept for one release, each served with a ``DeprecationWarning`` naming the new one: renamed
keywords (``renamed_keywords``), settings once passed by position (``keyword_only_since``), an argument whose
value moved to another (``renamed_argument``) and moved modules (``MOVED_MODULES``, served by an import hook)."""
import functools
import importlib
import importlib.abc
import importlib.util
import inspect
import numbers
import sys
import warnings
from typing import Callable

# 0.4.0 cut the package by idea: core/ became model/, rerank/ and index/ (and a few shared modules); app/ became cli/.
_OLD = {
    "io": "io", "checks": "checks", "deprecation": "deprecation", "equality": "equality", "records": "records",
    "model": "model.e2rank", "loading": "model.loading", "pooling": "model.pooling", "text": "model.text",
    "backends": "model.backends", "fingerprint": "model.fingerprint", "provenance": "model.provenance",
    "stats": "model.stats", "encoders": "model.encoders",
    "prompt": "rerank.prompt", "prompt_encoder": "rerank.prompt_encoder", "reranker": "rerank.reranker",
    "scorer": "rerank.scorer", "vectors": "rerank.vectors", "prompt_cache": "rerank.prompt_cache",
    "influence": "rerank.influence",
    "index": "index.artifact", "indexing": "index.indexer", "docnos": "index.docnos", "retriever": "index.retriever",
    "ann": "index.ann", "quantized": "index.ann",
}
MOVED_MODULES = {f"pyterrier_e2rank.core.{old}": f"pyterrier_e2rank.{new}" for old, new in _OLD.items()}
MOVED_MODULES.update({f"pyterrier_e2rank.app.{old}": f"pyterrier_e2rank.cli.{old}" for old in
                      ["arguments", "experiment", "index_command", "reproduce", "runs", "sharding", "train_command"]})
MOVED_MODULES["pyterrier_e2rank.app.cli"] = "pyterrier_e2rank.cli.main"
_OLD_PACKAGES = {"pyterrier_e2rank.core", "pyterrier_e2rank.app"}


def renamed_argument(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that the spelling ``old`` is deprecated, naming ``new``; ``stacklevel`` 3 blames the caller of the
    function that calls this one (one more per function in between)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release: use {new}", DeprecationWarning,
                  stacklevel=stacklevel)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module it moved to (the same module object, so patches reach it)."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED_MODULES or name in _OLD_PACKAGES:
            return importlib.util.spec_from_loader(name, self, is_package=name in _OLD_PACKAGES)
        return None

    def create_module(self, spec):
        if spec.name in _OLD_PACKAGES:
            return None
        renamed_argument(spec.name, MOVED_MODULES[spec.name])
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self._real_spec = module.__spec__  # importlib sets __spec__ to the old name's; put it back in exec_module
        return module

    def exec_module(self, module):
        if module.__spec__.name not in _OLD_PACKAGES:
            module.__spec__ = self._real_spec


def install_moved_modules() -> None:
    """Serves ``MOVED_MODULES`` (called once, by the package's ``__init__``)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())


def renamed_keywords(**renamed: str) -> Callable:
    """Decorator: an old keyword of ``renamed`` (old=new) is passed on as the new one, with a ``DeprecationWarning``;
    giving both raises ``TypeError``."""
    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__qualname__}() got {old}= and {new}=: pass {new}= only")
                    renamed_argument(f"{function.__qualname__}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        return wrapper
    return decorate


def keyword_only_since(*old: str) -> Callable:
    """Decorator: a call passing ``old`` (settings, in their previous positional order) by position after the
    function's other positional parameters is passed on by keyword, with a ``DeprecationWarning``. Such a call is
    recognised by an integer in the first of those slots (``num_input_docs``: an index is never an int)."""
    def decorate(function: Callable) -> Callable:
        fixed = sum(1 for p in inspect.signature(function).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in old)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            given = args[fixed:]
            old_call = given and len(given) <= len(old) and isinstance(given[0], numbers.Integral)
            if old_call and not isinstance(given[0], bool):
                names = old[:len(given)]
                renamed_argument(f"{function.__qualname__}() with {', '.join(names)} by position",
                      f"{', '.join(f'{name}=' for name in names)} by keyword (index is the one positional argument)")
                return function(*args[:fixed], **dict(zip(names, given)), **kwargs)
            return function(*args, **kwargs)
        return wrapper
    return decorate
