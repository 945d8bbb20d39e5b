"""Every public name has a docstring example, and pytest runs the examples.

The examples themselves run as doctests: ``pyproject.toml`` puts ``bcejax`` in
``testpaths`` with ``--doctest-modules``, so ``python -m pytest`` collects them
(``python -m pytest bcejax`` runs them alone). This file checks that none is
missing: a new public function, class or metric without a ``>>>`` example fails
here, and so does one whose example the doctest finder cannot see.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import types
from pathlib import Path

import pytest
from helpers import public_modules, public_names

ROOT = Path(__file__).resolve().parents[1]


def documented_objects() -> dict[str, object]:
    """Each public function, class and metric once, under the name of its defining module."""
    objects = {}
    for module in public_modules():
        for name in public_names(module):
            value = getattr(importlib.import_module(module), name)
            if isinstance(value, types.ModuleType) or not callable(value):
                continue  # submodules and __version__: nothing to call
            objects[f"{value.__module__}.{value.__qualname__}"] = value
    return objects


OBJECTS = documented_objects()


def test_the_public_api_is_found():
    # 64 when this test was written; fewer would mean the lookup above broke.
    assert len(OBJECTS) >= 60, sorted(OBJECTS)


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_every_public_name_has_an_example(name):
    doc = OBJECTS[name].__doc__ or ""  # the object's own docstring, not an inherited one
    assert ">>>" in doc, f"{name}: add an Examples: section with a >>> example to its docstring"
    assert "Examples:" in doc, f"{name}: put the >>> example under an Examples: heading"


def test_the_doctest_finder_sees_every_example():
    """The examples pytest collects: a decorated function's must be found in its module."""
    found = set()
    finder = doctest.DocTestFinder()
    for module in {name.rsplit(".", 1)[0] for name in OBJECTS}:
        for test in finder.find(importlib.import_module(module)):
            if test.examples:
                found.add(test.name)
    assert not set(OBJECTS) - found, sorted(set(OBJECTS) - found)


def test_pytest_runs_the_doctests():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    options = config["ini_options"]
    assert "bcejax" in options["testpaths"]
    assert "--doctest-modules" in options["addopts"].split()


def test_the_examples_import_what_they_use():
    """Each example runs on its own: it imports jax.numpy and bcejax itself."""
    for name, value in OBJECTS.items():
        source = inspect.cleandoc(value.__doc__ or "")
        if "jnp." in source:
            assert ">>> import jax.numpy as jnp" in source, name
        assert ">>> import bcejax" in source, name
