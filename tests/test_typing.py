"""The package type-checks with mypy, and every public signature is fully annotated.

mypy is configured in ``pyproject.toml`` (``[tool.mypy]``) and pinned in the
``test`` extra. A cold run over ``bcejax/`` takes about 15 s; the cache goes to
a temporary folder, so each run checks from scratch and leaves nothing behind.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import bcejax

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_reports_no_errors(tmp_path):
    command = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "bcejax"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-10000:] + result.stderr[-5000:]


def public_objects() -> dict[str, object]:
    """Each public function and class once, under the name of its defining module."""
    found = pkgutil.iter_modules(bcejax.__path__)
    modules = ["bcejax", *(f"bcejax.{m.name}" for m in found if not m.name.startswith("_"))]
    objects = {}
    for name in modules:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None)
        if names is None:  # the names bcejax re-exports from it
            names = [
                n for n in bcejax.__all__ if getattr(getattr(bcejax, n), "__module__", None) == name
            ]
        for attr in names:
            value = getattr(module, attr)
            if callable(value) and not isinstance(value, types.ModuleType):
                objects[f"{value.__module__}.{value.__qualname__}"] = value
    return objects


def signatures(name: str, value: object) -> list[tuple[str, inspect.Signature]]:
    """The signatures to check: a function's, or a class's public methods and properties."""
    if not inspect.isclass(value):
        return [(name, inspect.signature(value))]
    out = []
    for attr, member in vars(value).items():
        if attr.startswith("_") and attr != "__call__":
            continue
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        elif isinstance(member, property):
            member = member.fget
        if inspect.isfunction(member):
            out.append((f"{name}.{attr}", inspect.signature(member)))
    return out


OBJECTS = public_objects()


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_public_signatures_are_fully_annotated(name):
    for qualname, signature in signatures(name, OBJECTS[name]):
        missing = [
            p.name
            for p in signature.parameters.values()
            if p.annotation is inspect.Parameter.empty and p.name not in ("self", "cls")
        ]
        assert not missing, f"{qualname}: parameters without a type annotation: {missing}"
        assert signature.return_annotation is not inspect.Signature.empty, (
            f"{qualname}: no return annotation"
        )
