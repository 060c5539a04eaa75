"""Packaging a user can install beside other things: every dependency is a range (no exact pin, which would
forbid every other version of, say, torch), and the environment the suite runs in satisfies every range it
declares, so the ranges are the ones CI tests (their lower bounds are the versions CI installs)."""
import os
from importlib.metadata import PackageNotFoundError, requires, version

import pytest
from packaging.requirements import Requirement

DISTRIBUTION = "pyterrier-e2rank"


def _requirements(extra=None):
    found = []
    for line in requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if extra is None and marker is None:
            found.append(requirement)
        elif extra is not None and marker is not None and marker.evaluate({"extra": extra}):
            found.append(requirement)
    return found


def test_no_dependency_is_pinned_to_one_version():
    pinned = [str(r) for r in _requirements() + _requirements("test") if any(s.operator in ("==", "===")
                                                                          for s in r.specifier)]
    assert not pinned, f"exact pins in setup.cfg (use a range): {pinned}"
    unbounded = [str(r) for r in _requirements() if not any(s.operator in ("<", "<=", "~=") for s in r.specifier)]
    assert not unbounded, f"install_requires without an upper bound (the next major may break us): {unbounded}"


#: The extras this environment installs: ``test``, or what scripts/lowest-env.sh names.
TESTED_EXTRAS = os.environ.get("E2RANK_TESTED_EXTRAS", "test").split(",")


@pytest.mark.parametrize("extra", [None, *TESTED_EXTRAS])
def test_the_tested_environment_satisfies_every_declared_range(extra):
    wrong = []
    for requirement in _requirements(extra):
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            wrong.append(f"{requirement}: not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            wrong.append(f"{requirement}: {installed} installed")
    assert not wrong, "setup.cfg declares ranges this environment does not satisfy:\n" + "\n".join(wrong)
