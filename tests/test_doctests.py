"""Every doctest in the package runs in CI: one case per module whose source holds an example."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import sftpipe

SRC = Path(sftpipe.__file__).parent


def modules_with_examples() -> list[str]:
    """Dotted names of the sftpipe modules whose source contains a `>>>` line."""
    names = []
    for info in pkgutil.walk_packages([str(SRC)], prefix="sftpipe."):
        rel = Path(*info.name.split(".")[1:])
        path = SRC / rel / "__init__.py" if info.ispkg else (SRC / rel).with_suffix(".py")
        if any(line.lstrip().startswith(">>>") for line in path.read_text(encoding="utf-8").splitlines()):
            names.append(info.name)
    return names


MODULES = modules_with_examples()


def test_the_package_has_doctests_to_run():
    assert len(MODULES) >= 50, MODULES  # a walk that finds nothing must not pass quietly


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name}: its examples were not collected"
    assert result.failed == 0
