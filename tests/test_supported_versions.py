"""The supported range is said once in pyproject.toml, installed exactly by CI's lowest leg
(.ci/lowest.txt) and stated in the README: the three agree."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED = ["jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "scikit-learn"]


def _declared_lowest() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["examples"]]
    requirements += project["optional-dependencies"]["test"]
    lowest = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        if match and match[1] in PINNED:
            assert lowest.setdefault(match[1], match[2]) == match[2], requirement
    return lowest


def _ci_lowest() -> dict[str, str]:
    lines = (ROOT / ".ci" / "lowest.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_every_pinned_package_has_a_lower_bound_that_ci_installs_exactly():
    assert _declared_lowest() == _ci_lowest()
    assert set(_ci_lowest()) == set(PINNED)


def test_the_readme_states_the_declared_range():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    text = " ".join(section.split())
    lowest = _ci_lowest()
    assert lowest["jax"] == lowest["jaxlib"]
    assert f"jax and jaxlib {lowest['jax']} or later" in text
    assert f"optax {lowest['optax']} or later" in text
    assert (
        f"flax {lowest['flax']} and orbax-checkpoint {lowest['orbax-checkpoint']} or later" in text
    )
    assert f"scikit-learn {lowest['scikit-learn']} or later" in text
    for name in PINNED:
        assert f"{name} {lowest[name]}" in text, name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low_python = project["requires-python"].removeprefix(">=")
    classifiers = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if "Python :: 3." in c]
    assert low_python == classifiers[0]
    assert f"Python {classifiers[0]} to {classifiers[-1]}" in text


def test_this_python_is_admitted():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    low = tuple(int(p) for p in project["requires-python"].removeprefix(">=").split("."))
    assert sys.version_info[:2] >= low
