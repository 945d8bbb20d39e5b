"""Small helpers that several modules of bcejax share: dtypes, config, tangents, bounds."""

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


def finite(x, big=None):
    """``x`` with ``+-inf`` replaced by the largest finite float of its sign.

    Two mins and two negations instead of one ``clip``: XLA:CPU does not fuse its
    clamp into a reduction. ``big`` is that float (see ``apart`` for why it may
    be an array).
    """
    big = jnp.finfo(x.dtype).max if big is None else big
    return -jnp.minimum(-jnp.minimum(x, big), big)


def overflow_to_inf(value):
    """``value`` unchanged, except that values above ``2**64`` below the largest float become inf.

    That is ``|value| > max / 2**64`` (about 1.8e19 in float32): the largest-float
    stand-in for infinity (see :func:`finite`) becomes ``inf`` again. Chosen when
    the program is lowered: on CPU, multiplying by 2**64 and back, exact below
    the bound, with the factor passed through an optimization barrier so that
    XLA cannot fold it to 1 (a select would split XLA:CPU's fusion); elsewhere,
    a select.
    """
    return jax.lax.platform_dependent(
        value, cpu=_overflow_to_inf_by_scaling, default=_overflow_to_inf_by_select
    )


def _overflow_to_inf_by_scaling(value):
    up, down = jax.lax.optimization_barrier(
        (jnp.asarray(2.0**64, value.dtype), jnp.asarray(2.0**-64, value.dtype))
    )
    return value * up * down


def _overflow_to_inf_by_select(value):
    bound = jnp.asarray(jnp.finfo(value.dtype).max * 2.0**-64, value.dtype)
    return jnp.where(jnp.abs(value) > bound, jnp.sign(value) * jnp.inf, value)


def apart(*arrays):
    """The arrays, hidden from XLA:CPU behind an optimization barrier; elsewhere as they are.

    On CPU, a fused loss's derivative computed from its inputs passed through
    the barrier keeps XLA from sharing intermediates between the loss and the
    derivative, which would materialize them (see _kernels). The choice is made
    when the program is lowered, for the platform it is lowered for.
    """
    return jax.lax.platform_dependent(*arrays, cpu=_barrier, default=lambda *a: a)


def _barrier(*arrays):
    # One barrier each: inside shard_map, a barrier's outputs vary over the devices if any
    # of its inputs does, and each array keeps its own type on every branch.
    return tuple(jax.lax.optimization_barrier(a) for a in arrays)
