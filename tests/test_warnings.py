"""Deprecations raised from bcejax are errors in the suite (pyproject.toml, filterwarnings)."""

from __future__ import annotations

import warnings

import pytest


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_a_deprecation_raised_from_bcejax_fails(category):
    # What a deprecated JAX or optax API does when bcejax calls it: the warning is attributed,
    # through its stacklevel, to the bcejax module that made the call.
    with pytest.raises(category, match="removed"):
        warnings.warn_explicit(
            "removed in the next release", category, "checks.py", 1, "bcejax.checks"
        )


def test_a_deprecation_raised_elsewhere_stays_a_warning():
    with pytest.warns(DeprecationWarning):
        warnings.warn_explicit("removed", DeprecationWarning, "x.py", 1, "some_other_package")
