"""Small helpers that several modules of bcejax share: dtypes, config and tangents."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike


def compute_dtype(dtype):
    """The dtype a loss computes in: half precision in float32; float32 and float64 kept."""
    return jnp.promote_types(dtype, jnp.float32)


def known_zero(value: ArrayLike) -> bool:
    """True for config known at trace time to be exactly 0 (the term can be skipped)."""
    return not isinstance(value, jax.core.Tracer) and bool(np.all(np.asarray(value) == 0))


def safe_divide(num, den, empty=0.0):
    """``num / den``, or ``empty`` where ``den`` is 0."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), empty)


def is_symbolic_zero(tangent: object) -> bool:
    """True for the tangent of an input that is not differentiated."""
    return isinstance(tangent, SymbolicZero)


def accumulate(total, term):
    """``total + term``, where a ``total`` of None is 0."""
    return term if total is None else total + term


def finish(total, like):
    """An accumulated tangent as an array of ``like``'s shape (zeros when nothing was added)."""
    return jnp.zeros_like(like) if total is None else jnp.broadcast_to(total, like.shape)


def linear_tangent(like, *terms):
    """The tangent ``sum(factor * tangent)`` over ``(factor, tangent)`` terms, shaped as ``like``.

    Terms whose tangent is a symbolic zero (an input not differentiated) are
    skipped, so an infinite factor there never turns into NaN.
    """
    total = None
    for factor, tangent in terms:
        if not is_symbolic_zero(tangent):
            total = accumulate(total, factor * tangent)
    return finish(total, like)
