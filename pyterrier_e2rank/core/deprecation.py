"""Renamed public names kept for one release: the one mechanism (a module ``__getattr__``) that serves an old
name with a ``DeprecationWarning`` naming the new one (CONTRIBUTING.md: deprecations)."""
import warnings
from typing import Callable, Dict


def renamed_names(module: str, renamed: Dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``module`` (its ``__name__``): an old name of ``renamed`` (old -> new) gives
    ``namespace[new]`` with a ``DeprecationWarning`` naming the new name; any other missing name raises
    ``AttributeError`` as Python does."""
    def __getattr__(name: str):
        if name in renamed:
            warnings.warn(f"{module}.{name} is deprecated and will be removed in the next release: use "
                          f"{module}.{renamed[name]}", DeprecationWarning, stacklevel=2)
            return namespace[renamed[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__
